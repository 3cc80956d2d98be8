//! `file_ops`: create, write, close and unlink files in a fresh directory of our own.

use std::fs::{self, DirBuilder, File};
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::{WorkloadError, report_per_op};
use crate::emit::Emitter;
use crate::measure::measure;
use crate::params::Params;

const W: &str = "file_ops";

/// How many names to try before giving up on a base directory.
const NAME_ATTEMPTS: u32 = 100;

/// `file_ops`: one operation creates a file (`O_EXCL`), writes `size` bytes, closes and unlinks it.
pub(super) fn file_ops(params: &Params, em: &mut Emitter<'_>) -> Result<(), WorkloadError> {
    let size = params.bytes("size", 0);
    let len = usize::try_from(size).map_err(|_| WorkloadError::Alloc {
        workload: W,
        bytes: size,
    })?;
    let mut data = Vec::new();
    data.try_reserve_exact(len)
        .map_err(|_| WorkloadError::Alloc {
            workload: W,
            bytes: size,
        })?;
    data.resize(len, 0xa5_u8);

    let dir = match params.path("dir") {
        Some(base) => WorkDir::create_in(base).map_err(|source| WorkloadError::Io {
            workload: W,
            op: "create a work directory in",
            path: base.to_owned(),
            source,
        })?,
        None => WorkDir::create_default()?,
    };
    let mut n = 0u64;
    let m = measure(params.budget(), || {
        n += 1;
        let path = dir.path.join(format!("f{n}"));
        let io_err = |op: &'static str| {
            let path = path.clone();
            move |source| WorkloadError::Io {
                workload: W,
                op,
                path,
                source,
            }
        };
        let mut file = File::create_new(&path).map_err(io_err("create"))?;
        if !data.is_empty() {
            file.write_all(&data).map_err(io_err("write"))?;
        }
        drop(file);
        fs::remove_file(&path).map_err(io_err("unlink"))
    })?;
    drop(dir);
    report_per_op(em, &m, "us_per_file", "us", 1.0)
}

/// A directory this process created, removed with its contents on drop.
#[derive(Debug)]
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    /// Creates `base/isolab-file_ops-<pid>-<n>` (mode 0700) with the first free `n`.
    fn create_in(base: &Path) -> io::Result<Self> {
        let pid = std::process::id();
        let mut builder = DirBuilder::new();
        builder.mode(0o700);
        for attempt in 0..NAME_ATTEMPTS {
            let path = base.join(format!("isolab-{W}-{pid}-{attempt}"));
            match builder.create(&path) {
                Ok(()) => return Ok(Self { path }),
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
    fn create_default() -> Result<Self, WorkloadError> {
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
            match Self::create_in(&base) {
                Ok(dir) => return Ok(dir),
                Err(e) => tried.push(format!("{}: {e}", base.display())),
            }
        }
        Err(WorkloadError::NoTempDir {
            workload: W,
            tried: tried.join("; "),
        })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!(
                "isolab-workload: {W}: cannot remove {}: {e}",
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
        let a = WorkDir::create_in(&base).unwrap();
        let b = WorkDir::create_in(&base).unwrap();
        assert_ne!(a.path, b.path);
        fs::write(a.path.join("x"), b"x").unwrap();
        let path = a.path.clone();
        drop(a);
        assert!(!path.exists());
        assert!(b.path.is_dir());
    }

    #[test]
    fn missing_base_is_an_error() {
        let e = WorkDir::create_in(Path::new("/nonexistent/isolab")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
