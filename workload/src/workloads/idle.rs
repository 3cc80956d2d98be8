//! `idle`: sleeps for its duration using no CPU, so many instances can stay alive at once (the
//! tenant that a density measurement packs onto a host).

use std::time::{Duration, Instant};

use super::{WorkloadError, report_totals};
use crate::emit::Emitter;
use crate::measure::{Measured, check_stop};
use crate::params::Params;

/// How often the sleep wakes to check for SIGINT/SIGTERM.
const WAKE_EVERY: Duration = Duration::from_millis(50);

/// `idle`: `awake` = 1 at once (the instance is up), then sleeps until the duration has passed
/// (or SIGINT/SIGTERM) and reports `ops` (1) and `elapsed_s`.
pub(super) fn idle(params: &Params, em: &mut Emitter<'_>) -> Result<(), WorkloadError> {
    let started = Instant::now();
    em.series("awake", 1.0, "bool", true, 0.0)?;
    let duration = params.run_duration();
    loop {
        check_stop()?;
        let left = duration.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(WAKE_EVERY));
    }
    report_totals(
        em,
        &Measured {
            ops: 1,
            elapsed: started.elapsed(),
        },
    )
}
