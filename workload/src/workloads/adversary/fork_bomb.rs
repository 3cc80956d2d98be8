//! `fork_bomb`: forks children as fast as it can until the kernel refuses (`EAGAIN` from a pids
//! limit or `RLIMIT_NPROC`, `ENOMEM`), then keeps asking every 10 ms for the rest of the
//! duration, so the limit stays saturated. `max_forks` caps the children (default: none).
//!
//! Children only sleep: each is set to die with its parent (`PR_SET_PDEATHSIG`) and sleeps until
//! the run's end on the monotonic clock, then exits, so the bomb ends by itself when the
//! duration passes; the parent reaps them all. At SIGINT/SIGTERM the parent kills its children
//! (by pid) at once. Children that die early (an OOM kill) are reaped as the run goes, which
//! frees their slots for new forks.
//!
//! Series every 100 ms: `forks` (made so far), `refused` (refusals so far). Summary: `forks`,
//! `refused`, `ops` (forks), `elapsed_s`.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use super::clock::Clock;
use crate::emit::Emitter;
use crate::measure::{Measured, check_stop, reset_stop_handlers, to_f64};
use crate::params::Params;
use crate::workloads::{WorkloadError, report_totals};

const W: &str = "fork_bomb";

/// Pause after a refusal before asking again.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// `fork_bomb`: see the module documentation.
pub(crate) fn fork_bomb(params: &Params, em: &mut Emitter<'_>) -> Result<(), WorkloadError> {
    let max_forks = params.count_opt("max_forks");
    let mut clock = Clock::new(params.run_duration());
    let end = to_timespec(clock.end());
    let parent = std::process::id();
    let mut children = Children::default();
    let (mut forks, mut refused) = (0u64, 0u64);
    let mut outcome = Ok(());
    while !clock.done() {
        if let Some(t) = clock.tick() {
            em.series("forks", to_f64(forks), "forks", true, t)?;
            em.series("refused", to_f64(refused), "refusals", true, t)?;
        }
        children.reap_exited();
        if max_forks.is_some_and(|m| children.alive.len() as u64 >= m) {
            clock.nap(RETRY_PAUSE);
            continue;
        }
        // SAFETY: the child only calls async-signal-safe functions (prctl, getppid, sigaction,
        // clock_nanosleep, _exit) and never returns into Rust code.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => child(parent, &end),
            Ok(ForkResult::Parent { child }) => {
                children.alive.push(child);
                forks += 1;
            }
            Err(Errno::EAGAIN | Errno::ENOMEM) => {
                refused += 1;
                clock.nap(RETRY_PAUSE);
            }
            Err(e) => {
                outcome = Err(WorkloadError::sys(W, "fork", e));
                break;
            }
        }
    }
    if check_stop().is_err() || outcome.is_err() {
        children.kill_all();
    }
    children.wait_all();
    let t = clock.t_offset_s();
    em.series("forks", to_f64(forks), "forks", true, t)?;
    em.series("refused", to_f64(refused), "refusals", true, t)?;
    outcome?;
    em.summary("forks", to_f64(forks), "forks", true)?;
    em.summary("refused", to_f64(refused), "refusals", true)?;
    report_totals(
        em,
        &Measured {
            ops: forks,
            elapsed: clock.elapsed(),
        },
    )?;
    check_stop()
}

/// The child: die with the parent, sleep until `end`, exit.
fn child(parent: u32, end: &libc::timespec) -> ! {
    reset_stop_handlers();
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers; async-signal-safe.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // The parent may have died before the prctl: then we were re-parented.
    // SAFETY: getppid has no preconditions.
    if u32::try_from(unsafe { libc::getppid() }).ok() != Some(parent) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(0) }
    }
    loop {
        // SAFETY: `end` is a valid timespec; the remaining-time pointer may be null with
        // TIMER_ABSTIME.
        let rc = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                end,
                std::ptr::null_mut(),
            )
        };
        if rc != libc::EINTR {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(0) }
        }
    }
}

/// `end` as an absolute `CLOCK_MONOTONIC` time.
fn to_timespec(end: Instant) -> libc::timespec {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writing into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut now) };
    let left = end.saturating_duration_since(Instant::now());
    let nanos = now.tv_nsec + i64::from(left.subsec_nanos());
    libc::timespec {
        tv_sec: now.tv_sec
            + i64::try_from(left.as_secs()).unwrap_or(i64::MAX / 2)
            + nanos / 1_000_000_000,
        tv_nsec: nanos % 1_000_000_000,
    }
}

/// The children still to reap; killed and reaped on drop.
#[derive(Default)]
struct Children {
    alive: Vec<Pid>,
}

impl Children {
    /// Reaps children that already exited, without blocking.
    fn reap_exited(&mut self) {
        while !self.alive.is_empty() {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => {
                    if let Some(pid) = status.pid() {
                        self.alive.retain(|p| *p != pid);
                    }
                }
            }
        }
    }

    fn kill_all(&self) {
        for pid in &self.alive {
            let _ = kill(*pid, Signal::SIGKILL);
        }
    }

    /// Waits for every child (they exit at the run's end, or were killed).
    fn wait_all(&mut self) {
        for pid in self.alive.drain(..) {
            while let Err(Errno::EINTR) = waitpid(pid, None) {}
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.kill_all();
        self.wait_all();
    }
}
