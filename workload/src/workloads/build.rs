//! `build`: a kernel-build-like load. Like `make -j`, it keeps `jobs` children running (default:
//! the CPUs online); each is a `fork` + `execve` of this binary as the hidden
//! [`COMPILE_SUBCOMMAND`], which generates `size` bytes (default 256KiB) of C-like source,
//! compresses and checksums it and writes the "object" into a fresh work directory, where the
//! parent checks and deletes it. New jobs start until the duration has passed; the ones running
//! then are waited for and counted.
//!
//! Metrics: `jobs_per_s` (jobs finished over the time until the last one was reaped), `ops`
//! (jobs), `elapsed_s`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Instant;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use super::compile::COMPILE_SUBCOMMAND;
use super::process::{EXEC_FAILED, own_executable, spawn};
use super::workdir::WorkDir;
use super::{WorkloadError, report_totals};
use crate::emit::Emitter;
use crate::measure::{Measured, check_stop, to_f64};
use crate::params::Params;

const W: &str = "build";

/// `build`: see the module documentation.
pub(crate) fn build(params: &Params, em: &mut Emitter<'_>) -> Result<(), WorkloadError> {
    let jobs = params
        .count_opt("jobs")
        .map_or_else(online_cpus, |j| usize::try_from(j).unwrap_or(1));
    let size = params.bytes("size", 256 << 10);
    if !(1..=256 << 20).contains(&size) {
        return Err(WorkloadError::InvalidParam {
            workload: W,
            param: "size",
            value: size.to_string(),
            expected: "from 1 byte to 256MiB".into(),
        });
    }
    let exe = own_executable(W)?;
    let dir = WorkDir::create(W, params.path("dir"))?;
    let mut running = Running::default();
    let duration = params.run_duration();
    let start = Instant::now();
    let mut started = 0u64;
    let mut finished = 0u64;
    loop {
        while running.jobs.len() < jobs && start.elapsed() < duration {
            let out = dir.path().join(format!("job{started}.o"));
            let pid = start_job(&exe, &out, started, size)?;
            running.jobs.push((pid, out));
            started += 1;
        }
        if running.jobs.is_empty() {
            break;
        }
        check_stop()?;
        running.reap_one()?;
        finished += 1;
    }
    let m = Measured {
        ops: finished,
        elapsed: start.elapsed(),
    };
    drop(dir);
    em.summary("jobs_per_s", m.ops_per_s(), "jobs/s", true)?;
    report_totals(em, &m)
}

/// The CPUs online (`sysconf(_SC_NPROCESSORS_ONLN)`), whatever share of them a cgroup grants
/// (a hog should contend for all of them); else the parallelism available to us; else 1.
pub(crate) fn online_cpus() -> usize {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN) {
        Ok(Some(n)) if n > 0 => usize::try_from(n).unwrap_or(1),
        _ => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
    }
}
fn start_job(
    exe: &std::path::Path,
    out: &std::path::Path,
    seed: u64,
    size: u64,
) -> Result<Pid, WorkloadError> {
    let cstr = |bytes: &[u8]| {
        CString::new(bytes).map_err(|_| WorkloadError::Child {
            workload: W,
            what: format!(
                "cannot be started: {} contains a NUL byte",
                String::from_utf8_lossy(bytes)
            ),
        })
    };
    let args = [
        cstr(exe.as_os_str().as_bytes())?,
        cstr(COMPILE_SUBCOMMAND.as_bytes())?,
        cstr(out.as_os_str().as_bytes())?,
        cstr(seed.to_string().as_bytes())?,
        cstr(size.to_string().as_bytes())?,
    ];
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    spawn(W, || {
        // SAFETY: argv and envp are NULL-terminated arrays of pointers to NUL-terminated strings
        // that live in the parent's frame, copied into the child by fork.
        unsafe { libc::execve(argv[0], argv.as_ptr(), envp.as_ptr()) };
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(EXEC_FAILED) }
    })
}

/// The jobs running; killed and reaped on drop (after an error or a stop signal).
#[derive(Default)]
struct Running {
    jobs: Vec<(Pid, PathBuf)>,
}

impl Running {
    /// Waits for any job to end; it must have exited 0 and written a non-empty object.
    fn reap_one(&mut self) -> Result<(), WorkloadError> {
        let status = loop {
            match waitpid(Pid::from_raw(-1), None) {
                Ok(status) => break status,
                Err(nix::errno::Errno::EINTR) => check_stop()?,
                Err(e) => return Err(WorkloadError::sys(W, "waitpid", e)),
            }
        };
        let Some(pid) = status.pid() else {
            return Ok(());
        };
        let Some(i) = self.jobs.iter().position(|(p, _)| *p == pid) else {
            return Ok(());
        };
        let (_, out) = self.jobs.swap_remove(i);
        let fail = |what: String| Err(WorkloadError::Child { workload: W, what });
        match status {
            WaitStatus::Exited(_, 0) => {}
            WaitStatus::Exited(_, code) => {
                return fail(format!("(job {}) exited with status {code}", out.display()));
            }
            other => {
                return fail(format!(
                    "(job {}) ended abnormally: {other:?}",
                    out.display()
                ));
            }
        }
        let len = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        if len == 0 {
            return fail(format!("(job) left no object at {}", out.display()));
        }
        std::hint::black_box(to_f64(len));
        std::fs::remove_file(&out).map_err(|source| WorkloadError::Io {
            workload: W,
            op: "remove",
            path: out,
            source,
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for (pid, _) in self.jobs.drain(..) {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }
}
