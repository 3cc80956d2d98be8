//! Mount points: finding those below a directory (from `/proc/self/mountinfo`) and detaching
//! them, for the teardown and leak checks of every backend that mounts.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Mount points at or below `dir` in our mount namespace, deepest first, each once.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    mount_points_under(&table, dir)
}

/// The mount points at or below `dir` in a `/proc/<pid>/mountinfo` text, deepest first, each
/// once (the parser of [`mounts_under`], separate for tests and fuzzing).
pub fn mount_points_under(table: &str, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`); byte-exact.
fn unescape(s: &str) -> PathBuf {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(oct) = s.get(i + 1..i + 4)
            && let Ok(v) = u8::from_str_radix(oct, 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(OsString::from_vec(out))
}

/// `umount2(path, MNT_DETACH)`.
pub fn unmount_detach(path: &Path) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call; umount2 reads it only.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Lazily unmounts `path` (`MNT_DETACH`), logging a failure.
pub fn detach(path: &Path) {
    if let Err(e) = unmount_detach(path) {
        tracing::warn!(path = %path.display(), "umount: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(unescape(r"/a\040b/c"), PathBuf::from("/a b/c"));
        assert_eq!(unescape(r"/tab\011x\134y"), PathBuf::from("/tab\tx\\y"));
        assert_eq!(unescape("/plain"), PathBuf::from("/plain"));
        assert!(mounts_under(Path::new("/nonexistent-isolab-dir")).is_empty());
        assert!(mounts_under(Path::new("/")).contains(&PathBuf::from("/")));
    }
}
