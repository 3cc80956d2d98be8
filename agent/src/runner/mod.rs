//! The runner: drives one backend through one trial, and owns the trial's cgroups
//! ([`isolab_backends::lifecycle::Lifecycle`]: the engine makes, limits, reads, kills and
//! removes them; the backend only prepares, starts and stops what is its own).
//!
//! Preparing → prepare → start every instance together → Running → collect samples, logs and
//! statistics (every `stats_interval`) until every instance ended, the deadline (the trial's
//! timeout, counted from the start of preparation) passed, or the trial was cancelled → on
//! deadline or cancel kill everything → final statistics → teardown, always → leak check (the
//! leftover scan of the trial's cgroups and of the backend's own resources, taken after
//! teardown, and every instance's main process) → one final status. A leak fails the trial,
//! whatever else happened.

mod collect;
mod drive;
mod noise;
mod outcome;

use std::time::Duration;

pub use drive::run_trial;

/// How the runner behaves; the defaults suit every backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerOptions {
    /// Host name put in statuses.
    pub host: String,
    /// How often statistics of running instances are sampled.
    pub stats_interval: Duration,
    /// How long instances get to end after being killed.
    pub kill_wait: Duration,
    /// How long output readers get to reach the end of their streams after the instances ended.
    pub drain_wait: Duration,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self {
            host: String::new(),
            stats_interval: Duration::from_millis(100),
            kill_wait: Duration::from_secs(10),
            drain_wait: Duration::from_secs(5),
        }
    }
}
