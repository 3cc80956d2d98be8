//! The kill loop shared by v1 and v2: freeze, SIGKILL every pid listed, thaw, repeat until the
//! cgroup is empty or the deadline passes. Freezing first means no task can fork (or exit and
//! have its pid reused) between listing and signalling, so a fork bomb cannot outrun the loop;
//! without a freezer the loop still converges because `pids.max` bounds the population.

use std::collections::BTreeSet;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{CgroupError, fsutil};

/// Pause between rounds, so that killed tasks get to exit.
const ROUND_PAUSE: Duration = Duration::from_millis(5);
/// Longest wait for a freezer to report frozen before killing anyway.
const FREEZE_WAIT: Duration = Duration::from_millis(500);

/// A way to stop every task of a cgroup from running.
pub(crate) trait Freeze {
    /// Freezes; `Ok(false)` when this cgroup cannot be frozen (no freezer).
    fn freeze(&self) -> Result<bool, CgroupError>;
    /// Thaws after a successful freeze.
    fn thaw(&self) -> Result<(), CgroupError>;
}

/// Kills everything `list` reports until it reports nothing; returns every pid signalled.
pub(crate) fn kill_loop(
    rel: &str,
    timeout: Duration,
    freezer: &dyn Freeze,
    list: &dyn Fn() -> Result<Vec<u32>, CgroupError>,
) -> Result<Vec<u32>, CgroupError> {
    let deadline = Instant::now() + timeout;
    let mut killed = BTreeSet::new();
    loop {
        // Nothing there: nothing to freeze either (the common case at teardown).
        if killed.is_empty() && list()?.is_empty() {
            return Ok(Vec::new());
        }
        let frozen = freezer.freeze().unwrap_or_else(|e| {
            // Killing without a freeze still converges (pids.max bounds the population).
            tracing::warn!(cgroup = rel, "freeze failed, killing without: {e}");
            let _ = freezer.thaw();
            false
        });
        let round = list().and_then(|pids| {
            for &pid in &pids {
                signal_kill(rel, pid)?;
                killed.insert(pid);
            }
            Ok(pids)
        });
        if frozen {
            freezer.thaw()?;
        }
        if round?.is_empty() {
            return Ok(killed.into_iter().collect());
        }
        if Instant::now() >= deadline {
            let pids = list()?;
            if pids.is_empty() {
                return Ok(killed.into_iter().collect());
            }
            return Err(CgroupError::KillTimeout {
                rel: rel.to_owned(),
                pids,
                timeout_ms: timeout.as_millis(),
            });
        }
        thread::sleep(ROUND_PAUSE);
    }
}

/// Waits (bounded) until `done` says the freeze took effect; true if it did.
pub(crate) fn wait_frozen(
    done: &dyn Fn() -> Result<bool, CgroupError>,
) -> Result<bool, CgroupError> {
    let until = Instant::now() + FREEZE_WAIT;
    loop {
        if done()? {
            return Ok(true);
        }
        if Instant::now() >= until {
            // A task in uninterruptible sleep can hold a freeze off; kill anyway.
            tracing::debug!("freeze did not complete in {FREEZE_WAIT:?}, killing anyway");
            return Ok(false);
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// Polls `list` until empty or the deadline; for `cgroup.kill`, which signals in the kernel.
pub(crate) fn wait_empty(
    rel: &str,
    timeout: Duration,
    kill_file: &Path,
    list: &dyn Fn() -> Result<Vec<u32>, CgroupError>,
) -> Result<Vec<u32>, CgroupError> {
    let deadline = Instant::now() + timeout;
    let mut seen = BTreeSet::new();
    loop {
        let pids = list()?;
        if pids.is_empty() {
            return Ok(seen.into_iter().collect());
        }
        seen.extend(pids.iter().copied());
        // Again each round: catches tasks that were mid-migration into the cgroup.
        fsutil::write(kill_file, "1")?;
        if Instant::now() >= deadline {
            return Err(CgroupError::KillTimeout {
                rel: rel.to_owned(),
                pids,
                timeout_ms: timeout.as_millis(),
            });
        }
        thread::sleep(ROUND_PAUSE);
    }
}

fn signal_kill(rel: &str, pid: u32) -> Result<(), CgroupError> {
    // Never ourselves, never init: only what the cgroup (which we never join) holds.
    let Ok(raw) = i32::try_from(pid) else {
        return Ok(());
    };
    if raw <= 1 || pid == std::process::id() {
        return Ok(());
    }
    match kill(Pid::from_raw(raw), Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(source) => Err(CgroupError::Signal {
            rel: rel.to_owned(),
            pid,
            source,
        }),
    }
}
