//! A fresh directory of our own for a workload's files, removed with its contents on drop (so
//! also on error and after SIGINT/SIGTERM, which end workloads through an error).

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

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
    /// A fresh directory in `base` when given, else in the first usable default place
    /// ([`WorkDir::create_default`]).
    pub(crate) fn create(
        workload: &'static str,
        base: Option<&Path>,
    ) -> Result<Self, WorkloadError> {
        match base {
            Some(base) => Self::create_in(workload, base).map_err(|source| WorkloadError::Io {
                workload,
                op: "create a work directory in",
                path: base.to_owned(),
                source,
            }),
            None => Self::create_default(workload),
        }
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
    fn missing_base_is_an_error() {
        let e = WorkDir::create_in("test", Path::new("/nonexistent/isolab")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let e = WorkDir::create("test", Some(Path::new("/nonexistent/isolab"))).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/isolab"), "{e}");
    }
}
