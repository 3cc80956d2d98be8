//! Scratch space of native instances: each gets a tmpfs of its own, as large as its memory
//! limit, at `<temp dir>/isolab-scratch/<agent dir>/<trial slug>/i<index>`; it is the instance's
//! working directory and `$TMPDIR`.
//!
//! Why: containers (runc, Docker, LXC) write to a `/tmp` tmpfs and a VM to its RAM-backed
//! initramfs, so a native instance writing to the host's disk made file workloads (`oltp`,
//! `fileserver`, `disk`, `file_ops`) compare a disk with memory; and a `disk_bomb` on native
//! could fill the host's file system, outside every envelope. A tmpfs is charged to the
//! instance's memory cgroup and bounded by its size: the bomb ends at `ENOSPC` or at the
//! instance's memory limit, and the host's disk never sees it.

use std::path::{Path, PathBuf};

use super::Leak;
use super::mounts::{mounts_under, unmount_detach};

/// Directory under the temp dir that holds every agent's scratch root.
const SCRATCH_DIR: &str = "isolab-scratch";

/// Why a scratch directory could not be made.
#[derive(Debug, thiserror::Error)]
#[error("scratch tmpfs {}: {op}: {source}", path.display())]
pub struct ScratchError {
    /// The directory.
    pub path: PathBuf,
    /// What failed.
    pub op: &'static str,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

/// The scratch root of one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scratch {
    root: PathBuf,
}

impl Scratch {
    /// The scratch root of the agent whose cgroup directory is named `agent` (`<prefix>-<pid>-<n>`),
    /// under `base` (normally the temp dir). Removes (and unmounts) what crashed agents of the
    /// same prefix left there.
    pub fn new(base: &Path, agent: &str) -> Self {
        let parent = base.join(SCRATCH_DIR);
        for stale in super::remove_stale_runtime(&parent, agent) {
            tracing::info!(dir = %stale.display(), "removed the scratch space of a dead agent");
        }
        Self {
            root: parent.join(agent),
        }
    }

    /// The directory of a trial attempt's scratch spaces.
    pub fn trial_dir(&self, slug: &str) -> PathBuf {
        self.root.join(slug)
    }

    /// Mounts instance `index`'s tmpfs of `size_bytes` (mode 0700, `nosuid`, `nodev`) and
    /// returns its path.
    pub fn create(&self, slug: &str, index: u32, size_bytes: u64) -> Result<PathBuf, ScratchError> {
        let path = self.trial_dir(slug).join(format!("i{index}"));
        let err = |op, source| ScratchError {
            path: path.clone(),
            op,
            source,
        };
        std::fs::create_dir_all(&path).map_err(|e| err("create the directory", e))?;
        let options = format!("size={size_bytes},mode=0700");
        nix::mount::mount(
            Some("tmpfs"),
            &path,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .map_err(|e| err("mount", std::io::Error::from(e)))?;
        Ok(path)
    }

    /// Unmounts and removes a trial's scratch spaces; returns what failed.
    pub fn destroy(&self, slug: &str) -> Vec<String> {
        let dir = self.trial_dir(slug);
        let mut errors = Vec::new();
        for point in mounts_under(&dir) {
            if let Err(e) = unmount_detach(&point) {
                errors.push(format!("unmounting {}: {e}", point.display()));
            }
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.push(format!("removing {}: {e}", dir.display())),
        }
        errors
    }

    /// What is left of a trial's scratch spaces: mounts, then the directory.
    pub fn leaks(&self, slug: &str) -> Vec<Leak> {
        let dir = self.trial_dir(slug);
        let mut leaks: Vec<Leak> = mounts_under(&dir)
            .into_iter()
            .map(|p| Leak::Mount {
                path: p.display().to_string(),
            })
            .collect();
        if dir.exists() {
            leaks.push(Leak::Other {
                what: format!("scratch directory {} still exists", dir.display()),
            });
        }
        leaks
    }

    /// Removes the agent's (empty) scratch root, at shutdown.
    pub fn release(&self) {
        let _ = std::fs::remove_dir(&self.root);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the test can mount (root); off CI it says why it skips.
    fn can_mount() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() == 0 };
        assert!(root || std::env::var_os("CI").is_none(), "CI runs as root");
        if !root {
            eprintln!("skipping: mounting a tmpfs needs root");
        }
        root
    }

    #[test]
    fn a_scratch_tmpfs_is_bounded_and_leaves_nothing() {
        if !can_mount() {
            return;
        }
        let base = tempfile::tempdir().unwrap();
        let scratch = Scratch::new(base.path(), "isolab-test-scratch-1-0");
        let dir = scratch.create("t-a0", 0, 1 << 20).unwrap();
        assert_eq!(mounts_under(&dir), vec![dir.clone()]);
        // Bounded: 2 MiB do not fit in a 1 MiB tmpfs.
        let err = std::fs::write(dir.join("big"), vec![1u8; 2 << 20]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        assert!(!scratch.leaks("t-a0").is_empty());
        assert!(scratch.destroy("t-a0").is_empty());
        assert!(
            scratch.leaks("t-a0").is_empty(),
            "{:?}",
            scratch.leaks("t-a0")
        );
        assert!(mounts_under(base.path()).is_empty());
    }

    #[test]
    fn scratch_of_a_dead_agent_is_unmounted_and_removed() {
        if !can_mount() {
            return;
        }
        let base = tempfile::tempdir().unwrap();
        // An agent whose pid cannot be alive (above pid_max) left a mounted scratch.
        let dead = Scratch::new(base.path(), "isolab-test-stale-4194999-0");
        let left = dead.create("t-a0", 3, 1 << 20).unwrap();
        std::fs::write(left.join("f"), b"x").unwrap();
        let _fresh = Scratch::new(base.path(), "isolab-test-stale-1-0");
        assert!(mounts_under(base.path()).is_empty());
        assert!(!dead.trial_dir("t-a0").exists());
    }
}
