//! Process and kernel-entry workloads: `syscall`, `fork_exit`, `fork_exec`, `ctxsw`.
//!
//! Children created here only call async-signal-safe functions between `fork` and `_exit`/`execve`
//! (`read`, `write`, `close`, `sigaction`, `execve`, `_exit`), which keeps `fork` sound even from a
//! process that has other threads.

use std::ffi::CString;
use std::hint::black_box;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sched::{CpuSet, sched_getaffinity, sched_getcpu, sched_setaffinity};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{AccessFlags, ForkResult, Pid, access, fork, pipe};

use super::{WorkloadError, report_per_op};
use crate::emit::Emitter;
use crate::measure::{check_stop, measure, reset_stop_handlers};
use crate::params::Params;

/// Exit status of a child whose `execve` failed.
pub(super) const EXEC_FAILED: i32 = 127;

/// `syscall`: `getppid` through `syscall(2)`, so no library can cache it.
pub(super) fn syscall(params: &Params, em: &mut Emitter<'_>) -> Result<(), WorkloadError> {
    let m = measure(params.budget(), || {
        // SAFETY: getppid takes no arguments, touches no memory of ours and cannot fail.
        black_box(unsafe { libc::syscall(libc::SYS_getppid) });
        Ok(())
    })?;
    report_per_op(em, &m, "ns_per_call", "ns", 1.0)
}

/// `fork_exit`: fork a child that exits at once, then reap it.
pub(super) fn fork_exit(params: &Params, em: &mut Emitter<'_>) -> Result<(), WorkloadError> {
    const W: &str = "fork_exit";
    let m = measure(params.budget(), || {
        let child = spawn(W, || {
            // SAFETY: _exit is async-signal-safe and ends the child without running anything.
            unsafe { libc::_exit(0) }
        })?;
        wait_success(W, child, "")
    })?;
    report_per_op(em, &m, "us_per_process", "us", 1.0)
}

/// `fork_exec`: fork, exec this binary's no-op subcommand, reap it.
pub(super) fn fork_exec(params: &Params, em: &mut Emitter<'_>) -> Result<(), WorkloadError> {
    const W: &str = "fork_exec";
    let exe = own_executable(W)?;
    let path = CString::new(exe.as_os_str().as_bytes()).map_err(|_| WorkloadError::Child {
        workload: W,
        what: format!(
            "cannot be started: path {} contains a NUL byte",
            exe.display()
        ),
    })?;
    let noop = CString::new(crate::NOOP_SUBCOMMAND).unwrap_or_default();
    let argv: [*const libc::c_char; 3] = [path.as_ptr(), noop.as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let context = format!(" (exec of {})", exe.display());
    let m = measure(params.budget(), || {
        let child = spawn(W, || {
            // SAFETY: argv and envp are NULL-terminated arrays of pointers to NUL-terminated
            // strings that outlive this call (they belong to the parent's frame, copied by fork).
            unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(EXEC_FAILED) }
        })?;
        wait_success(W, child, &context)
    })?;
    report_per_op(em, &m, "us_per_process", "us", 1.0)
}

/// `ctxsw`: two processes on one CPU pass a byte back and forth over two pipes.
pub(super) fn ctxsw(params: &Params, em: &mut Emitter<'_>) -> Result<(), WorkloadError> {
    const W: &str = "ctxsw";
    let (to_child_r, to_child_w) = pipe().map_err(|e| WorkloadError::sys(W, "pipe", e))?;
    let (to_parent_r, to_parent_w) = pipe().map_err(|e| WorkloadError::sys(W, "pipe", e))?;
    // Both processes on one CPU, so a round trip is two real context switches rather than two
    // cross-CPU wake-ups. Best effort: without it the numbers are still round trips.
    let _pin = PinToCurrentCpu::new();
    let (rd, wr) = (to_child_r.as_raw_fd(), to_parent_w.as_raw_fd());
    let (unused_w, unused_r) = (to_child_w.as_raw_fd(), to_parent_r.as_raw_fd());
    let child = spawn(W, || {
        reset_stop_handlers();
        // SAFETY: closing descriptors this child does not use; no Rust object will touch them,
        // since the child leaves through _exit without running destructors.
        unsafe {
            libc::close(unused_w);
            libc::close(unused_r);
        }
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(echo_loop(rd, wr)) }
    })?;
    drop(to_child_r);
    drop(to_parent_w);
    let result = measure(params.budget(), || round_trip(&to_child_w, &to_parent_r));
    // Closing our write end gives the child end-of-file, so it exits and can be reaped.
    drop(to_child_w);
    drop(to_parent_r);
    let reaped = wait_success(W, child, " (ctxsw partner)");
    let m = result?;
    reaped?;
    report_per_op(em, &m, "us_per_switch", "us", 2.0)
}

/// The child's side of `ctxsw`: echo bytes until end-of-file. Returns the exit status.
fn echo_loop(rd: RawFd, wr: RawFd) -> i32 {
    let mut byte = 0u8;
    loop {
        // SAFETY: reading one byte into a live local.
        let n = unsafe { libc::read(rd, (&raw mut byte).cast(), 1) };
        match n {
            1 => {
                // SAFETY: writing one byte from a live local.
                if unsafe { libc::write(wr, (&raw const byte).cast(), 1) } != 1 {
                    return 1;
                }
            }
            0 => return 0,
            _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
            _ => return 1,
        }
    }
}

/// The parent's side of `ctxsw`: one byte there and back.
fn round_trip(to_child: &OwnedFd, from_child: &OwnedFd) -> Result<(), WorkloadError> {
    const W: &str = "ctxsw";
    let byte = 1u8;
    loop {
        // SAFETY: writing one byte from a live local to a pipe we own.
        let n = unsafe { libc::write(to_child.as_raw_fd(), (&raw const byte).cast(), 1) };
        if n == 1 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            check_stop()?;
            return Err(WorkloadError::sys(W, "write to partner", e));
        }
    }
    let mut back = 0u8;
    loop {
        // SAFETY: reading one byte into a live local from a pipe we own.
        let n = unsafe { libc::read(from_child.as_raw_fd(), (&raw mut back).cast(), 1) };
        match n {
            1 => return Ok(()),
            0 => {
                check_stop()?;
                return Err(WorkloadError::Child {
                    workload: W,
                    what: "(ctxsw partner) exited early".into(),
                });
            }
            _ => {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    return Err(WorkloadError::sys(W, "read from partner", e));
                }
            }
        }
    }
}

/// Forks; the child runs `child`, which should not return (it ends in `_exit` or `execve`);
/// if it does, the child exits with status 127.
pub(super) fn spawn(workload: &'static str, child: impl FnOnce()) -> Result<Pid, WorkloadError> {
    // SAFETY: the child only runs `child`, which callers keep to async-signal-safe calls and
    // which never returns into Rust code of the parent.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            child();
            // SAFETY: _exit is async-signal-safe; reached only if `child` forgot to leave.
            unsafe { libc::_exit(EXEC_FAILED) }
        }
        Ok(ForkResult::Parent { child }) => Ok(child),
        Err(e) => Err(WorkloadError::sys(workload, "fork", e)),
    }
}

/// Reaps `pid` and fails unless it exited with status 0.
fn wait_success(workload: &'static str, pid: Pid, context: &str) -> Result<(), WorkloadError> {
    let status = loop {
        match waitpid(pid, None) {
            Ok(status) => break status,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(WorkloadError::sys(workload, "waitpid", e)),
        }
    };
    let what = match status {
        WaitStatus::Exited(_, 0) => return Ok(()),
        WaitStatus::Exited(_, EXEC_FAILED) if !context.is_empty() => {
            format!("{context} failed (exit status {EXEC_FAILED})")
        }
        WaitStatus::Exited(_, code) => format!("{context} exited with status {code}"),
        WaitStatus::Signaled(_, signal, _) => format!("{context} was killed by {signal}"),
        other => format!("{context} ended unexpectedly: {other:?}"),
    };
    Err(WorkloadError::Child {
        workload,
        what: what.trim_start().to_owned(),
    })
}

/// The path to execute this binary again: `/proc/self/exe` when `/proc` is mounted, else
/// `argv[0]` when it is a path (an empty container rootfs or an early VM may lack `/proc`).
pub(super) fn own_executable(workload: &'static str) -> Result<PathBuf, WorkloadError> {
    let proc_exe = Path::new("/proc/self/exe");
    if access(proc_exe, AccessFlags::X_OK).is_ok() {
        return Ok(proc_exe.to_owned());
    }
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let candidate = PathBuf::from(&argv0);
    if argv0.as_bytes().contains(&b'/') {
        let absolute = if candidate.is_absolute() {
            candidate
        } else {
            std::env::current_dir()
                .map(|d| d.join(&candidate))
                .unwrap_or(candidate)
        };
        if access(absolute.as_path(), AccessFlags::X_OK).is_ok() {
            return Ok(absolute);
        }
    }
    Err(WorkloadError::Child {
        workload,
        what: format!(
            "cannot be started: /proc/self/exe is not available (is /proc mounted?) and argv[0] {argv0:?} is not an executable path"
        ),
    })
}

/// Pins this process to the CPU it runs on and restores the old affinity on drop.
struct PinToCurrentCpu {
    previous: Option<CpuSet>,
}

impl PinToCurrentCpu {
    fn new() -> Self {
        let me = Pid::from_raw(0);
        let previous = (|| {
            let previous = sched_getaffinity(me).ok()?;
            let mut only = CpuSet::new();
            only.set(sched_getcpu().ok()?).ok()?;
            sched_setaffinity(me, &only).ok()?;
            Some(previous)
        })();
        Self { previous }
    }
}

impl Drop for PinToCurrentCpu {
    fn drop(&mut self) {
        if let Some(previous) = &self.previous {
            let _ = sched_setaffinity(Pid::from_raw(0), previous);
        }
    }
}
