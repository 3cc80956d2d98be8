//! Counts and an estimated duration of a plan, for `isolab plan`.

use std::fmt;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Serialize;

use super::Trial;
use crate::pipeline::BackendKind;

/// What a plan amounts to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanSummary {
    /// All trials, warm-ups included.
    pub total_trials: usize,
    /// Trials whose results are recorded.
    pub measured_trials: usize,
    /// Warm-up trials (run, not recorded).
    pub warmup_trials: usize,
    /// Trials per experiment, in plan order.
    pub per_experiment: IndexMap<String, usize>,
    /// Trials per platform, in order of first appearance.
    pub per_platform: IndexMap<String, usize>,
    /// Sum of trial durations plus each backend's start cost, run one after another.
    pub estimated_duration_ms: u64,
}

impl PlanSummary {
    /// The estimated wall-clock time of running every trial in sequence.
    pub fn estimated_duration(&self) -> Duration {
        Duration::from_millis(self.estimated_duration_ms)
    }
}

impl fmt::Display for PlanSummary {
    /// Four lines: trial counts, per experiment, per platform, estimated duration.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |m: &IndexMap<String, usize>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(
            f,
            "trials: {} ({} measured, {} warm-up)",
            self.total_trials, self.measured_trials, self.warmup_trials
        )?;
        writeln!(f, "per experiment: {}", list(&self.per_experiment))?;
        writeln!(f, "per platform: {}", list(&self.per_platform))?;
        write!(
            f,
            "estimated duration: {}",
            human(self.estimated_duration())
        )
    }
}

/// `950ms`, `31.5s`, `4m 05s`, `2h 03m`.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        format!("{}ms", d.as_millis())
    } else if secs < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if secs < 3600 {
        format!("{}m {:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h {:02}m", secs / 3600, (secs % 3600) / 60)
    }
}

/// The rough cost of starting and tearing down one trial's instances on a backend, dispatch
/// included, as measured on a 2-core host (the quick start: 108 trials of 500 ms in 2m06s, VMs
/// under QEMU TCG booting and powering off in about 1.6 s).
pub fn start_cost(backend: BackendKind) -> Duration {
    match backend {
        BackendKind::Native => Duration::from_millis(100),
        BackendKind::Container | BackendKind::Lxc => Duration::from_millis(200),
        BackendKind::Docker => Duration::from_millis(300),
        BackendKind::Vm => Duration::from_secs(2),
    }
}

/// Counts `trials` and estimates how long they take.
pub fn summarize(trials: &[Trial]) -> PlanSummary {
    let mut per_experiment = IndexMap::new();
    let mut per_platform = IndexMap::new();
    let mut total = Duration::ZERO;
    for t in trials {
        *per_experiment.entry(t.experiment.clone()).or_insert(0) += 1;
        *per_platform.entry(t.platform.clone()).or_insert(0) += 1;
        total = total
            .saturating_add(t.duration.0)
            .saturating_add(start_cost(t.platform_spec.backend));
    }
    let warmup_trials = trials.iter().filter(|t| t.warmup).count();
    PlanSummary {
        total_trials: trials.len(),
        measured_trials: trials.len() - warmup_trials,
        warmup_trials,
        per_experiment,
        per_platform,
        estimated_duration_ms: u64::try_from(total.as_millis()).unwrap_or(u64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_millis(950)), "950ms");
        assert_eq!(human(Duration::from_millis(31_500)), "31.5s");
        assert_eq!(human(Duration::from_secs(245)), "4m 05s");
        assert_eq!(human(Duration::from_secs(7380)), "2h 03m");
    }
}
