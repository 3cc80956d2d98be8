//! File helpers shared by v1 and v2: reads and writes with context, `mkdir -p` that reports what
//! it made, recursive pid listing, depth-first removal.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use super::CgroupError;

/// How often, and how long apart, `rmdir` is retried on `EBUSY`.
const RMDIR_ATTEMPTS: u32 = 100;
const RMDIR_BACKOFF: Duration = Duration::from_millis(10);

/// Checks that `rel` names a cgroup strictly below our own: relative, no `.`/`..`, not empty.
pub(crate) fn validate_rel(rel: &str) -> Result<(), CgroupError> {
    let bad = |reason| CgroupError::InvalidPath {
        rel: rel.to_owned(),
        reason,
    };
    if rel.is_empty() {
        return Err(bad("empty (would be our own cgroup)"));
    }
    if rel.contains('\0') {
        return Err(bad("NUL byte"));
    }
    if rel.starts_with('/') {
        return Err(bad("absolute"));
    }
    if rel.split('/').any(str::is_empty) {
        return Err(bad("empty component"));
    }
    if rel.split('/').any(|part| part == "." || part == "..") {
        return Err(bad("`.` or `..` component"));
    }
    Ok(())
}

/// Reads a whole file.
pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads a file, `None` if it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Reads a file holding one unsigned number; `None` if the file does not exist.
pub(crate) fn read_u64_optional(path: &Path) -> Result<Option<u64>, CgroupError> {
    read_optional(path)?
        .map(|s| {
            super::stats::parse_u64(&s).map_err(|reason| CgroupError::Parse {
                path: path.to_owned(),
                reason,
            })
        })
        .transpose()
}

/// Writes `value` to a control file in one `write(2)`.
pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    let wrap = |source| CgroupError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    };
    // O_CREAT is harmless on cgroupfs (the file exists or the open fails) and lets a fake
    // cgroupfs in a temp dir gain files the kernel would have made.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(wrap)?;
    f.write_all(value.as_bytes()).map_err(wrap)
}

/// Writes `value` to `dir/file`, which must exist, else [`CgroupError::MissingControl`].
pub(crate) fn write_control(
    dir: &Path,
    file: &str,
    value: &str,
    hint: &'static str,
) -> Result<(), CgroupError> {
    let path = dir.join(file);
    if !path.exists() {
        return Err(CgroupError::MissingControl { path, hint });
    }
    write(&path, value)
}

/// `mkdir -p base/rel`; returns the directories it created, top-down.
pub(crate) fn mkdir_levels(base: &Path, rel: &str) -> Result<Vec<PathBuf>, CgroupError> {
    let mut created = Vec::new();
    let mut path = base.to_owned();
    for part in rel.split('/') {
        path.push(part);
        match std::fs::create_dir(&path) {
            Ok(()) => created.push(path.clone()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(CgroupError::Create { path, source }),
        }
    }
    Ok(created)
}

/// Names of the child directories of `dir` (empty if `dir` does not exist).
pub(crate) fn child_dirs(dir: &Path) -> Result<Vec<String>, CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CgroupError::Read {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| CgroupError::Read {
            path: dir.to_owned(),
            source,
        })?;
        // A vanished entry is not a child any more.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Adds the pids of `dir/cgroup.procs` and of every child cgroup to `out`.
pub(crate) fn collect_pids(dir: &Path, out: &mut BTreeSet<u32>) -> Result<(), CgroupError> {
    let procs = dir.join("cgroup.procs");
    let text = read_optional(&procs)?.unwrap_or_default();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let pid = line.parse().map_err(|e| CgroupError::Parse {
            path: procs.clone(),
            reason: format!("{line:?}: {e}"),
        })?;
        out.insert(pid);
    }
    for child in child_dirs(dir)? {
        collect_pids(&dir.join(child), out)?;
    }
    Ok(())
}

/// Whether `dir` is on a real cgroup filesystem (v1 or v2) rather than a test directory.
fn on_cgroupfs(dir: &Path) -> bool {
    use nix::sys::statfs::{CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC, statfs};
    statfs(dir).is_ok_and(|s| {
        let t = s.filesystem_type();
        t == CGROUP_SUPER_MAGIC || t == CGROUP2_SUPER_MAGIC
    })
}

/// Removes `dir` and its child cgroups depth-first; `Ok` if already gone.
pub(crate) fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    for child in child_dirs(dir)? {
        remove_tree(&dir.join(child))?;
    }
    if !dir.exists() {
        return Ok(());
    }
    if !on_cgroupfs(dir) {
        // A fake cgroupfs: drop the control files the kernel would drop with the directory.
        remove_plain_files(dir)?;
    }
    rmdir_retry(dir)
}

fn remove_plain_files(dir: &Path) -> Result<(), CgroupError> {
    let wrap = |source| CgroupError::Remove {
        path: dir.to_owned(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(wrap)? {
        let entry = entry.map_err(wrap)?;
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::remove_file(entry.path()).map_err(wrap)?;
        }
    }
    Ok(())
}

fn rmdir_retry(dir: &Path) -> Result<(), CgroupError> {
    let mut attempt = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt + 1 < RMDIR_ATTEMPTS => {
                attempt += 1;
                thread::sleep(RMDIR_BACKOFF);
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_owned(),
                    source,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_paths_that_escape_are_refused() {
        for bad in [
            "", "/abs", "a/../b", "..", "a//b", "a/", "./a", "a/.", "x\0y",
        ] {
            assert!(validate_rel(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "isolab-1/trial-2/inst-0", "a.b", "..a"] {
            assert!(validate_rel(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn mkdir_levels_reports_only_new_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("a")).unwrap();
        let made = mkdir_levels(tmp.path(), "a/b/c").unwrap();
        assert_eq!(made, vec![tmp.path().join("a/b"), tmp.path().join("a/b/c")]);
        assert!(mkdir_levels(tmp.path(), "a/b/c").unwrap().is_empty());
    }

    #[test]
    fn remove_tree_of_fake_cgroup_removes_children_and_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("a");
        std::fs::create_dir_all(top.join("b/c")).unwrap();
        std::fs::write(top.join("b/cgroup.procs"), "").unwrap();
        std::fs::write(top.join("b/c/cgroup.procs"), "").unwrap();
        remove_tree(&top).unwrap();
        assert!(!top.exists());
        remove_tree(&top).unwrap();
    }
}
