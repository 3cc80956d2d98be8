//! Noise on the record: how busy the host was while each trial ran.
//!
//! The agent records, per trial, rows with role [`HOST_ROLE`] and instance −1 holding two
//! summary values (fractions of the host's total CPU capacity during the trial):
//! [`STEAL_METRIC`], the time the hypervisor gave to other guests, and [`BACKGROUND_METRIC`], the
//! CPU time used outside the trial's cgroups. They describe the host, not the workload, so they
//! are kept out of the metric tables; the report shows, per experiment and platform, the median
//! of both, and lists the trials above [`BACKGROUND_THRESHOLD`] or [`STEAL_THRESHOLD`] so a reader
//! sees which repetitions ran on a busy host. Runs whose agent recorded none say so.

use std::collections::BTreeMap;

use crate::aggregate::RepValue;
use crate::read::Run;
use crate::stats;
use crate::summary::{NoisePlatform, NoiseSummary, NoisyTrial};

/// Role of the agent's per-trial host rows.
pub const HOST_ROLE: &str = "host";
/// Fraction of the host's CPU capacity stolen by the hypervisor during the trial.
pub const STEAL_METRIC: &str = "host_steal_fraction";
/// Fraction of the host's CPU capacity used outside the trial's cgroups during the trial.
pub const BACKGROUND_METRIC: &str = "host_background_cpu_fraction";
/// A trial whose background CPU exceeded this fraction of the host ran on a busy host.
pub const BACKGROUND_THRESHOLD: f64 = 0.10;
/// A trial whose steal exceeded this fraction of the host ran on a busy hypervisor.
pub const STEAL_THRESHOLD: f64 = 0.05;

/// Whether a repetition value is one of the agent's host rows.
pub(crate) fn is_host_row(run: &Run, r: &RepValue) -> bool {
    let t = &run.table;
    t.str(t.series[r.series as usize].role) == HOST_ROLE
}

/// One trial's host values.
#[derive(Debug, Default)]
struct TrialNoise {
    workload: String,
    repetition: i32,
    steal: Option<f64>,
    background: Option<f64>,
}

/// The noise section from the host rows of a run (`host_reps`, sorted as
/// [`crate::aggregate::repetition_values`] sorts them).
pub(crate) fn noise(run: &Run, host_reps: &[RepValue]) -> NoiseSummary {
    let t = &run.table;
    // experiment → platform → trial id → values; experiments and platforms in report order.
    let mut by_cell: BTreeMap<(String, String), BTreeMap<String, TrialNoise>> = BTreeMap::new();
    for r in host_reps {
        let s = &t.series[r.series as usize];
        let metric = t.str(s.metric);
        if metric != STEAL_METRIC && metric != BACKGROUND_METRIC {
            continue;
        }
        let cell = (
            t.str(r.trial.experiment).to_owned(),
            t.str(r.trial.platform).to_owned(),
        );
        let trial = by_cell
            .entry(cell)
            .or_default()
            .entry(t.str(r.trial.trial_id).to_owned())
            .or_insert_with(|| TrialNoise {
                workload: t.str(s.workload).to_owned(),
                repetition: r.trial.repetition,
                ..TrialNoise::default()
            });
        if metric == STEAL_METRIC {
            trial.steal = Some(r.value);
        } else {
            trial.background = Some(r.value);
        }
    }
    let order = crate::aggregate::experiment_order(run);
    let rank = |e: &str| order.iter().position(|o| o == e).unwrap_or(usize::MAX);
    let mut cells: Vec<_> = by_cell.into_iter().collect();
    cells.sort_by_key(|((e, p), _)| (rank(e), platform_rank(run, e, p), p.clone()));
    let mut platforms = Vec::new();
    let mut flagged = Vec::new();
    for ((experiment, platform), trials) in cells {
        let median_of = |f: fn(&TrialNoise) -> Option<f64>| {
            let v: Vec<f64> = trials.values().filter_map(f).collect();
            stats::median(&v)
        };
        platforms.push(NoisePlatform {
            experiment: experiment.clone(),
            platform: platform.clone(),
            trials: trials.len(),
            steal_median: median_of(|n| n.steal),
            background_median: median_of(|n| n.background),
        });
        let mut busy: Vec<NoisyTrial> = trials
            .into_iter()
            .filter(|(_, n)| {
                n.steal.is_some_and(|s| s > STEAL_THRESHOLD)
                    || n.background.is_some_and(|b| b > BACKGROUND_THRESHOLD)
            })
            .map(|(id, n)| NoisyTrial {
                trial: id,
                experiment: experiment.clone(),
                platform: platform.clone(),
                workload: n.workload,
                repetition: n.repetition,
                steal: n.steal,
                background: n.background,
            })
            .collect();
        busy.sort_by(|a, b| (a.repetition, &a.trial).cmp(&(b.repetition, &b.trial)));
        flagged.extend(busy);
    }
    NoiseSummary {
        recorded: !platforms.is_empty(),
        steal_threshold: STEAL_THRESHOLD,
        background_threshold: BACKGROUND_THRESHOLD,
        platforms,
        flagged,
    }
}

/// Position of a platform in its experiment's pipeline order.
fn platform_rank(run: &Run, experiment: &str, platform: &str) -> usize {
    run.manifest
        .experiments
        .iter()
        .find(|e| e.name == experiment)
        .and_then(|e| e.platforms.iter().position(|p| p == platform))
        .unwrap_or(usize::MAX)
}
