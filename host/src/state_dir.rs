//! The agent's state directory: where everything it creates on disk lives, instead of the
//! world-writable temp dir.
//!
//! Default `/var/lib/isolab` (or `$STATE_DIRECTORY`, which systemd sets for `StateDirectory=`),
//! `--state-dir` otherwise. Created mode 0700 when missing; at start it must be a real directory
//! (not a symbolic link), owned by the agent's uid and writable by nobody else, or the agent
//! refuses to start. Below it, one subdirectory per purpose, each made the same way:
//!
//! - `containers/<agent dir>/`: runtime roots, bundles and trial directories of the container
//!   backend, the private `dockerd` (`dockerd/`) and the LXC path (`lxc/`);
//! - `scratch/<agent dir>/<trial>/i<n>`: the tmpfs scratch of native instances;
//! - `vm/<agent dir>/<trial>/`: VM working directories (initramfs, disks).
//!
//! `<agent dir>` is the agent's cgroup directory name `<prefix>-<owner>-<n>` (see
//! [`crate::owner`]), so a restarted agent finds and removes what a dead one left. The file
//! `boot_id` records the boot the contents belong to: the first agent of a new boot removes
//! every agent's directories (nothing of them survived the reboot, and owners are only unique
//! within a boot). Directories
//! below are created with [`create_dirs_beneath`] and files with [`create_file`]: neither follows
//! a symbolic link found in the way, and a file is never opened if it already exists.

use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// The state directory when neither `--state-dir` nor `$STATE_DIRECTORY` names one.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/isolab";
/// Subdirectory of the container, Docker and LXC backends.
pub const CONTAINERS: &str = "containers";
/// Subdirectory of native instances' scratch mounts.
pub const SCRATCH: &str = "scratch";
/// Subdirectory of VM working directories.
pub const VM: &str = "vm";
/// File holding the boot id of the boot the directory's contents belong to.
const BOOT_FILE: &str = "boot_id";
/// Lock file held while a starting agent checks the boot id.
const LOCK_FILE: &str = ".lock";

/// This boot's id (`/proc/sys/kernel/random/boot_id`), `None` when unreadable.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// Not an absolute path.
    #[error("state directory {}: must be an absolute path", path.display())]
    Relative {
        /// The path given.
        path: PathBuf,
    },
    /// A system call failed.
    #[error("state directory {}: {op}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A symbolic link where the directory should be.
    #[error(
        "state directory {}: is a symbolic link (to {target}); expected a directory owned by uid {uid} with mode 0700",
        path.display()
    )]
    Symlink {
        /// The path.
        path: PathBuf,
        /// Where the link points.
        target: String,
        /// The agent's uid.
        uid: u32,
    },
    /// Something else than a directory.
    #[error("state directory {}: is not a directory; expected a directory owned by uid {uid} with mode 0700", path.display())]
    NotDirectory {
        /// The path.
        path: PathBuf,
        /// The agent's uid.
        uid: u32,
    },
    /// Owned by another user.
    #[error(
        "state directory {}: owned by uid {found} (mode {mode:04o}); expected owner uid {expected} (the agent's) with mode 0700",
        path.display()
    )]
    Owner {
        /// The path.
        path: PathBuf,
        /// Its owner.
        found: u32,
        /// Its mode bits.
        mode: u32,
        /// The agent's uid.
        expected: u32,
    },
    /// Writable by group or others.
    #[error(
        "state directory {}: mode {mode:04o} (owner uid {uid}) lets group or others write; expected 0700 (chmod 0700 {})",
        path.display(), path.display()
    )]
    Mode {
        /// The path.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
        /// Its owner.
        uid: u32,
    },
}

/// A checked state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

impl StateDir {
    /// Creates `path` (mode 0700) if missing, checks it (see [`StateDir::check`]) and makes the
    /// per-purpose subdirectories.
    pub fn open(path: &Path) -> Result<Self, StateDirError> {
        if !path.is_absolute() {
            return Err(StateDirError::Relative {
                path: path.to_owned(),
            });
        }
        let io_err = |op| {
            let path = path.to_owned();
            move |source| StateDirError::Io { path, op, source }
        };
        if let Err(e) = std::fs::symlink_metadata(path) {
            if e.kind() != io::ErrorKind::NotFound {
                return Err(io_err("reading its metadata")(e));
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io_err("creating its parent"))?;
            }
            match std::fs::DirBuilder::new().mode(0o700).create(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("creating it")(e)),
            }
        }
        Self::check(path)?;
        let dir = Self {
            root: path.to_owned(),
        };
        for sub in [CONTAINERS, SCRATCH, VM] {
            dir.sub(sub)?;
        }
        if let Some(boot) = boot_id() {
            dir.sweep_other_boot(&boot)?;
        }
        Ok(dir)
    }

    /// When the directory's contents are from another boot (its `boot_id` file differs from
    /// `boot`), removes every agent's directories in it: no process, mount or namespace of a
    /// previous boot survives, and owners (pid, start tick) are only unique within one boot.
    /// Then records `boot`. Under an exclusive lock, so that of two agents starting at once
    /// only the first sweeps, before either makes anything.
    fn sweep_other_boot(&self, boot: &str) -> Result<(), StateDirError> {
        let io_err = |path: PathBuf, op| move |source| StateDirError::Io { path, op, source };
        let lock_path = self.root.join(LOCK_FILE);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&lock_path)
            .map_err(io_err(lock_path.clone(), "opening its lock file"))?;
        let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io_err(lock_path, "locking it")(io::Error::from(e)))?;
        let boot_path = self.root.join(BOOT_FILE);
        let recorded = std::fs::read_to_string(&boot_path).unwrap_or_default();
        if recorded.trim() == boot {
            return Ok(());
        }
        for sub in [CONTAINERS, SCRATCH, VM] {
            let dir = self.root.join(sub);
            let entries = std::fs::read_dir(&dir).map_err(io_err(dir.clone(), "listing it"))?;
            for e in entries.flatten() {
                let path = e.path();
                tracing::warn!(path = %path.display(), "removing the state of an agent of a previous boot");
                // Symbolic links inside are removed, never followed.
                let removed = match e.file_type() {
                    Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
                    _ => std::fs::remove_file(&path),
                };
                removed.map_err(io_err(path, "removing what a previous boot left"))?;
            }
        }
        let tmp = self.root.join(format!("{BOOT_FILE}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let write = create_file(&tmp).and_then(|mut f| {
            use io::Write as _;
            f.write_all(format!("{boot}\n").as_bytes())
        });
        write
            .and_then(|()| std::fs::rename(&tmp, &boot_path))
            .map_err(io_err(boot_path, "recording the boot id"))
    }

    /// Checks that `path` is a directory, not a symbolic link, owned by the agent's uid and not
    /// writable by group or others.
    pub fn check(path: &Path) -> Result<(), StateDirError> {
        let uid = euid();
        let meta = std::fs::symlink_metadata(path).map_err(|source| StateDirError::Io {
            path: path.to_owned(),
            op: "reading its metadata",
            source,
        })?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(path)
                .map(|t| t.display().to_string())
                .unwrap_or_else(|e| format!("unreadable: {e}"));
            return Err(StateDirError::Symlink {
                path: path.to_owned(),
                target,
                uid,
            });
        }
        if !meta.is_dir() {
            return Err(StateDirError::NotDirectory {
                path: path.to_owned(),
                uid,
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if meta.uid() != uid {
            return Err(StateDirError::Owner {
                path: path.to_owned(),
                found: meta.uid(),
                mode,
                expected: uid,
            });
        }
        if mode & 0o022 != 0 {
            return Err(StateDirError::Mode {
                path: path.to_owned(),
                mode,
                uid: meta.uid(),
            });
        }
        Ok(())
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<purpose>`, created (0700) and checked like the root.
    pub fn sub(&self, purpose: &str) -> Result<PathBuf, StateDirError> {
        let path = create_dirs_beneath(&self.root, Path::new(purpose)).map_err(|source| {
            StateDirError::Io {
                path: self.root.join(purpose),
                op: "creating it",
                source,
            }
        })?;
        Self::check(&path)?;
        Ok(path)
    }
}

/// Creates `base/rel` and every missing directory between (mode 0700), never following a
/// symbolic link below `base`: an existing component must be a real directory, else the error
/// names it. `rel` must be relative without `..`. Returns the full path.
pub fn create_dirs_beneath(base: &Path, rel: &Path) -> io::Result<PathBuf> {
    let mut path = base.to_owned();
    for c in rel.components() {
        let Component::Normal(part) = c else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a plain relative path", rel.display()),
            ));
        };
        path.push(part);
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // mkdir does not follow a symbolic link at the last component; look at what is
                // there without following it either.
                let meta = std::fs::symlink_metadata(&path)?;
                if !meta.is_dir() {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!(
                            "{}: exists and is not a directory ({}); refusing to follow or replace it",
                            path.display(),
                            if meta.file_type().is_symlink() {
                                "a symbolic link"
                            } else {
                                "a file"
                            }
                        ),
                    ));
                }
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("creating {}: {e}", path.display()),
                ));
            }
        }
    }
    Ok(path)
}

/// Creates the new file `path` (mode 0600) for writing: `O_CREAT|O_EXCL|O_NOFOLLOW`, so an
/// existing file or a symbolic link planted there is an error, never opened.
pub fn create_file(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", path.display())))
}

#[cfg(test)]
#[path = "state_dir_tests.rs"]
mod tests;
