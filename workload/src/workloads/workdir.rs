//! A fresh directory of our own for a workload's files, removed with its contents on drop (so
//! also on error and after SIGINT/SIGTERM, which end workloads through an error).
//!
//! A `dir` param never names a place on the host: it is a relative path (checked when params
//! are parsed) resolved beneath the instance's scratch ([`scratch`]: `$TMPDIR`, which the native
//! backend points at the instance's own tmpfs, else `/tmp`, private to a container or VM) one
//! component at a time with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, creating missing
//! components (mode 0700). A symlink planted in the scratch cannot lead the workload out of it.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use super::WorkloadError;

/// How many names to try before giving up on a base directory.
const NAME_ATTEMPTS: u32 = 100;

/// A directory this process created, removed with its contents on drop.
#[derive(Debug)]
pub(crate) struct WorkDir {
    workload: &'static str,
    path: PathBuf,
}

impl WorkDir {
    /// A fresh directory in `dir` (relative, beneath the instance's [`scratch`]) when given,
    /// else in the first usable default place ([`WorkDir::create_default`]).
    pub(crate) fn create(
        workload: &'static str,
        dir: Option<&Path>,
    ) -> Result<Self, WorkloadError> {
        let Some(dir) = dir else {
            return Self::create_default(workload);
        };
        let scratch = scratch();
        let base = resolve_beneath(&scratch, dir).map_err(|source| WorkloadError::Io {
            workload,
            op: "open beneath the instance's scratch",
            path: scratch.join(dir),
            source,
        })?;
        Self::create_in(workload, &base).map_err(|source| WorkloadError::Io {
            workload,
            op: "create a work directory in",
            path: base,
            source,
        })
    }

    /// Creates `base/isolab-<workload>-<pid>-<n>` (mode 0700) with the first free `n`.
    pub(crate) fn create_in(workload: &'static str, base: &Path) -> io::Result<Self> {
        let pid = std::process::id();
        let mut builder = DirBuilder::new();
        builder.mode(0o700);
        for attempt in 0..NAME_ATTEMPTS {
            let path = base.join(format!("isolab-{workload}-{pid}-{attempt}"));
            match builder.create(&path) {
                Ok(()) => return Ok(Self { workload, path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "every candidate name is taken",
        ))
    }

    /// Tries `$TMPDIR`, `/tmp`, the current directory and `/`, in that order: an empty
    /// container rootfs may have no `/tmp`.
    pub(crate) fn create_default(workload: &'static str) -> Result<Self, WorkloadError> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(tmp) = std::env::var_os("TMPDIR").filter(|t| !t.is_empty()) {
            candidates.push(tmp.into());
        }
        candidates.push("/tmp".into());
        if let Ok(cwd) = std::env::current_dir() {
            candidates.push(cwd);
        }
        candidates.push("/".into());
        let mut tried = Vec::new();
        for base in candidates {
            match Self::create_in(workload, &base) {
                Ok(dir) => return Ok(dir),
                Err(e) => tried.push(format!("{}: {e}", base.display())),
            }
        }
        Err(WorkloadError::NoTempDir {
            workload,
            tried: tried.join("; "),
        })
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// The instance's scratch directory: `$TMPDIR` when set (the native backend sets it to the
/// instance's tmpfs), else `/tmp` when it exists (private to a container or VM), else the
/// working directory.
pub(crate) fn scratch() -> PathBuf {
    if let Some(tmp) = std::env::var_os("TMPDIR").filter(|t| !t.is_empty()) {
        return tmp.into();
    }
    let tmp = Path::new("/tmp");
    if tmp.is_dir() {
        return tmp.to_owned();
    }
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
}

/// Opens `rel` beneath `base` one component at a time, creating missing directories (0700), with
/// `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`; returns `base` joined with `rel`'s plain
/// components. Absolute paths, `..` and symlinks anywhere below `base` are refused.
pub(crate) fn resolve_beneath(base: &Path, rel: &Path) -> io::Result<PathBuf> {
    let refuse = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
    let mut dir: OwnedFd = nix::fcntl::open(
        base,
        OFlag::O_DIRECTORY | OFlag::O_PATH | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut out = base.to_owned();
    for c in rel.components() {
        let name = match c {
            Component::Normal(name) => name,
            Component::CurDir => continue,
            Component::ParentDir => return Err(refuse("`..` leaves the scratch directory")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse("an absolute path leaves the scratch directory"));
            }
        };
        match nix::sys::stat::mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
        dir = open_child(&dir, name)?;
        out.push(name);
    }
    Ok(out)
}

/// Opens the directory `name` in `dir`, never following a symlink and never leaving `dir`.
fn open_child(dir: &OwnedFd, name: &std::ffi::OsStr) -> io::Result<OwnedFd> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    match nix::fcntl::openat2(dir.as_fd(), name, how) {
        Ok(fd) => Ok(fd),
        // Kernels before 5.6: one plain component opened with O_NOFOLLOW cannot leave `dir`
        // either (`..` and `/` were refused above).
        Err(Errno::ENOSYS) => Ok(nix::fcntl::openat(dir.as_fd(), name, flags, Mode::empty())?),
        Err(e) => Err(e.into()),
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!(
                "isolab-workload: {}: cannot remove {}: {e}",
                self.workload,
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_dir_is_fresh_and_removed() {
        let base = std::env::temp_dir();
        let a = WorkDir::create_in("test", &base).unwrap();
        let b = WorkDir::create_in("test", &base).unwrap();
        assert_ne!(a.path, b.path);
        fs::write(a.path.join("x"), b"x").unwrap();
        let path = a.path.clone();
        drop(a);
        assert!(!path.exists());
        assert!(b.path.is_dir());
    }

    #[test]
    fn dir_resolves_beneath_the_scratch_only() {
        let scratch = tempfile_dir();
        let p = resolve_beneath(&scratch, Path::new("a/./b")).unwrap();
        assert_eq!(p, scratch.join("a/b"));
        assert!(p.is_dir());
        let outside = tempfile_dir();
        std::os::unix::fs::symlink(&outside, scratch.join("link")).unwrap();
        std::os::unix::fs::symlink("..", scratch.join("up")).unwrap();
        for bad in ["link", "link/x", "up/x", "../x", "/etc", "a/../../x"] {
            assert!(
                resolve_beneath(&scratch, Path::new(bad)).is_err(),
                "{bad} escaped the scratch"
            );
        }
        assert!(!outside.join("x").exists());
        fs::remove_dir_all(&scratch).unwrap();
        fs::remove_dir_all(&outside).unwrap();
    }

    /// A fresh directory under the system's temp dir (this crate has no `tempfile`).
    fn tempfile_dir() -> PathBuf {
        WorkDir::create_in("test", &std::env::temp_dir())
            .map(|d| {
                let p = d.path.clone();
                std::mem::forget(d);
                p
            })
            .unwrap()
    }

    #[test]
    fn missing_base_is_an_error() {
        let e = WorkDir::create_in("test", Path::new("/nonexistent/isolab")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let e = WorkDir::create("test", Some(Path::new("/etc"))).unwrap_err();
        assert!(e.to_string().contains("scratch"), "{e}");
    }
}
