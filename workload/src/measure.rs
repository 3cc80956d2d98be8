//! The measuring loop shared by the per-operation workloads, and the stop flag that SIGINT and
//! SIGTERM raise so a workload can stop early and clean up.

use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use crate::workloads::WorkloadError;

/// The longest a batch between two clock reads should take.
const MAX_BATCH_TIME: Duration = Duration::from_millis(10);
/// The shortest, whatever the duration.
const MIN_BATCH_TIME: Duration = Duration::from_micros(100);
/// Upper bound on the batch size, so a broken clock cannot make a batch endless.
const MAX_BATCH: u64 = 1 << 26;

/// How long a workload measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Budget {
    /// Until this much time has passed.
    Duration(Duration),
    /// Exactly this many operations.
    Iterations(u64),
}

/// What a measuring loop did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Measured {
    /// Operations counted (calibration excluded).
    pub(crate) ops: u64,
    /// Wall-clock time they took.
    pub(crate) elapsed: Duration,
}

impl Measured {
    /// Seconds elapsed, never zero (so rates stay finite).
    pub(crate) fn elapsed_s(&self) -> f64 {
        self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Mean seconds per operation.
    pub(crate) fn secs_per_op(&self) -> f64 {
        self.elapsed_s() / to_f64(self.ops.max(1))
    }

    /// Operations per second.
    pub(crate) fn ops_per_s(&self) -> f64 {
        to_f64(self.ops) / self.elapsed_s()
    }
}

/// `u64` to `f64` (exact below 2^53, which any count here stays under).
pub(crate) fn to_f64(n: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let f = n as f64;
    f
}

/// Runs `op` for the budget. With a duration, a calibration first finds a batch size that takes
/// about a twentieth of the duration (at most 10 ms), then the clock is read once per batch.
pub(crate) fn measure<F>(budget: Budget, mut op: F) -> Result<Measured, WorkloadError>
where
    F: FnMut() -> Result<(), WorkloadError>,
{
    match budget {
        Budget::Iterations(n) => {
            let start = Instant::now();
            for _ in 0..n {
                check_stop()?;
                op()?;
            }
            Ok(Measured {
                ops: n,
                elapsed: start.elapsed(),
            })
        }
        Budget::Duration(duration) => {
            let target = (duration / 20).clamp(MIN_BATCH_TIME, MAX_BATCH_TIME);
            let batch = calibrate(target, &mut op)?;
            let start = Instant::now();
            let mut ops = 0;
            loop {
                for _ in 0..batch {
                    op()?;
                }
                ops += batch;
                check_stop()?;
                let elapsed = start.elapsed();
                if elapsed >= duration {
                    return Ok(Measured { ops, elapsed });
                }
            }
        }
    }
}

/// Doubles the batch until one takes at least `target`; these operations also warm up.
fn calibrate<F>(target: Duration, op: &mut F) -> Result<u64, WorkloadError>
where
    F: FnMut() -> Result<(), WorkloadError>,
{
    let mut batch = 1;
    loop {
        let start = Instant::now();
        for _ in 0..batch {
            op()?;
        }
        check_stop()?;
        if start.elapsed() >= target || batch >= MAX_BATCH {
            return Ok(batch);
        }
        batch *= 2;
    }
}

/// The signal that asked us to stop, 0 when none.
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop_signal(signal: libc::c_int) {
    STOP_SIGNAL.store(signal, Ordering::Relaxed);
}

/// Makes SIGINT and SIGTERM raise the stop flag instead of killing the process, so that
/// workloads stop at the next check and remove what they created.
pub(crate) fn install_stop_handlers() {
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
        if let Err(e) = unsafe { sigaction(signal, &action) } {
            eprintln!("isolab-workload: cannot handle {signal}: {e}");
        }
    }
}

/// Puts SIGINT and SIGTERM back to their defaults (in a forked child).
pub(crate) fn reset_stop_handlers() {
    let action = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: restoring the default disposition has no preconditions and is
        // async-signal-safe (it may run between fork and _exit).
        let _ = unsafe { sigaction(signal, &action) };
    }
}

/// Fails with [`WorkloadError::Interrupted`] once SIGINT or SIGTERM arrived.
pub(crate) fn check_stop() -> Result<(), WorkloadError> {
    match STOP_SIGNAL.load(Ordering::Relaxed) {
        0 => Ok(()),
        signal => Err(WorkloadError::Interrupted {
            signal: Signal::try_from(signal).map_or("a signal", Signal::as_str),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterations_are_exact() {
        let mut calls = 0u64;
        let m = measure(Budget::Iterations(17), || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!((m.ops, calls), (17, 17));
    }

    #[test]
    fn duration_runs_at_least_that_long_and_counts_only_measured_ops() {
        let mut calls = 0u64;
        let d = Duration::from_millis(30);
        let m = measure(Budget::Duration(d), || {
            calls += 1;
            std::hint::black_box(calls);
            Ok(())
        })
        .unwrap();
        assert!(m.elapsed >= d);
        assert!(m.ops > 0 && m.ops < calls, "ops {} calls {calls}", m.ops);
        assert!(m.ops_per_s() > 0.0 && m.secs_per_op() > 0.0);
    }

    #[test]
    fn errors_stop_the_loop() {
        let mut calls = 0;
        let r = measure(Budget::Iterations(10), || {
            calls += 1;
            if calls == 3 {
                Err(WorkloadError::NonFinite { metric: "x".into() })
            } else {
                Ok(())
            }
        });
        assert!(r.is_err());
        assert_eq!(calls, 3);
    }
}
