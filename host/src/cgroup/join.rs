//! Joining a cgroup from a freshly forked child, before `exec`, so the workload never runs
//! outside its cgroup and the agent never moves a process after the fact.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::CgroupError;

/// The `cgroup.procs` files of one cgroup, prepared (as C strings) so that a `pre_exec` hook can
/// join them without allocating.
///
/// ```no_run
/// # use std::os::unix::process::CommandExt;
/// # fn demo(cg: &isolab_host::cgroup::AnyCgroup) -> Result<(), Box<dyn std::error::Error>> {
/// let target = cg.join_target()?;
/// let mut cmd = std::process::Command::new("sleep");
/// cmd.arg("1");
/// // SAFETY: `join_current` only calls async-signal-safe functions (open, write, close).
/// unsafe { cmd.pre_exec(move || target.join_current()) };
/// let child = cmd.spawn()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct JoinTarget {
    files: Vec<CString>,
}

impl JoinTarget {
    /// Prepares the given `cgroup.procs` files.
    pub fn new(files: &[PathBuf]) -> Result<Self, CgroupError> {
        let files = files
            .iter()
            .map(|p| {
                CString::new(p.as_os_str().as_bytes())
                    .map_err(|_| CgroupError::NulInPath { path: p.clone() })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { files })
    }

    /// Writes `0` (the calling process) into every file. Async-signal-safe: meant for
    /// `CommandExt::pre_exec`, where a failure aborts the spawn with this error.
    pub fn join_current(&self) -> io::Result<()> {
        for file in &self.files {
            // SAFETY: `file` is a valid NUL-terminated string that outlives the call.
            let fd = unsafe { libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` is open and ours; the buffer is a static one-byte slice.
            let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
            let err = (n != 1).then(io::Error::last_os_error);
            // SAFETY: `fd` is open and ours, closed exactly once.
            unsafe { libc::close(fd) };
            if let Some(e) = err {
                return Err(e);
            }
        }
        Ok(())
    }
}
