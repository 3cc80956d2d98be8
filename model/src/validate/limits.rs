//! Size limits of a plan, checked arithmetically before anything is expanded.
//!
//! Expansion materializes one [`crate::plan::Trial`] per warm-up and repetition of every matrix
//! point on every platform; `repetitions: 200000` with `instances: [64]` took 27 s and 10 GB to
//! expand. The counts here are computed with saturating arithmetic from the same factors, so a
//! plan over [`MAX_TRIALS`] trials or [`MAX_INSTANCE_STARTS`] instance starts is refused at
//! once, pointing at the experiment's `repetitions` or `matrix` key.

use crate::location::{At, child};
use crate::pipeline::{AnalysisKind, Experiment, Pipeline};

use super::Checker;

/// Most trials (warm-ups included) one pipeline may expand to.
pub const MAX_TRIALS: u64 = 100_000;

/// Most instance starts (trials × instances per trial, summed) one pipeline may expand to.
pub const MAX_INSTANCE_STARTS: u64 = 1_000_000;

/// The size of one experiment's share of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// Trials, warm-ups included.
    pub trials: u64,
    /// Instance starts over those trials.
    pub instance_starts: u64,
    /// Matrix points (one platform, one repetition).
    pub points: u64,
    /// Warm-ups plus measured repetitions per point.
    pub runs_per_point: u64,
}

/// The number of trials and instance starts `e` expands to, without expanding it.
pub fn size(e: &Experiment, p: &Pipeline) -> Size {
    let combos = e
        .matrix
        .iter()
        .flat_map(|m| m.params.values())
        .fold(1u64, |acc, v| acc.saturating_mul(v.len() as u64));
    // (points, instance starts over those points) per combination of params.
    let (points, instances): (u64, u64) = match e.analysis {
        AnalysisKind::Overhead => {
            let n = e.workloads.len() as u64;
            (n, n.saturating_mul(u64::from(e.instances.unwrap_or(1))))
        }
        AnalysisKind::Scaling => {
            let counts = e
                .matrix
                .as_ref()
                .map(|m| m.instances.as_slice())
                .unwrap_or_default();
            let w = u64::from(e.workload.is_some());
            let sum = counts
                .iter()
                .fold(0u64, |acc, &n| acc.saturating_add(u64::from(n)));
            (w.saturating_mul(counts.len() as u64), w.saturating_mul(sum))
        }
        AnalysisKind::Fairness => {
            let w = u64::from(e.workload.is_some());
            let members = e
                .groups
                .iter()
                .fold(0u64, |acc, g| acc.saturating_add(u64::from(g.count)));
            (w, w.saturating_mul(members))
        }
        AnalysisKind::Isolation => {
            if e.victim.is_none() {
                (0, 0)
            } else {
                let n = e.adversaries.len() as u64;
                let with_adversary = e.adversaries.iter().filter(|a| *a != "none").count() as u64;
                (n, n.saturating_add(with_adversary))
            }
        }
    };
    let runs_per_point = u64::from(e.repetitions.unwrap_or(p.defaults.repetitions))
        .saturating_add(u64::from(e.warmup.unwrap_or(p.defaults.warmup)));
    let per_run = (e.platforms.len() as u64)
        .saturating_mul(runs_per_point)
        .saturating_mul(combos);
    Size {
        trials: points.saturating_mul(per_run),
        instance_starts: instances.saturating_mul(per_run),
        points: points.saturating_mul(combos),
        runs_per_point,
    }
}

impl Checker {
    /// Refuses a pipeline whose plan would exceed [`MAX_TRIALS`] or [`MAX_INSTANCE_STARTS`],
    /// at the experiment that crosses the limit.
    pub(super) fn plan_size(&mut self, p: &Pipeline) {
        let (mut trials, mut starts) = (0u64, 0u64);
        for (i, e) in p.experiments.iter().enumerate() {
            let s = size(e, p);
            trials = trials.saturating_add(s.trials);
            starts = starts.saturating_add(s.instance_starts);
            let over = if trials > MAX_TRIALS {
                format!("the plan would have {} trials", show(trials))
                    + &format!(", more than the limit of {}", show(MAX_TRIALS))
            } else if starts > MAX_INSTANCE_STARTS {
                format!("the plan would start {} instances", show(starts))
                    + &format!(", more than the limit of {}", show(MAX_INSTANCE_STARTS))
            } else {
                continue;
            };
            let path = format!("experiments[{i}]");
            let key = if e.repetitions.is_some()
                && (e.matrix.is_none() || s.runs_per_point >= s.points)
            {
                child(&path, "repetitions")
            } else if e.matrix.is_some() {
                child(&path, "matrix")
            } else if e.repetitions.is_some() {
                child(&path, "repetitions")
            } else {
                path
            };
            self.push(
                key,
                At::Key,
                format!(
                    "{over} ({} points × {} runs per point × {} platforms); \
                     lower repetitions or the matrix, or split the pipeline",
                    show(s.points),
                    show(s.runs_per_point),
                    e.platforms.len()
                ),
            );
            return;
        }
    }
}

/// A count, or "more than 2^64" when the arithmetic saturated.
fn show(n: u64) -> String {
    if n == u64::MAX {
        "more than 18446744073709551615".to_owned()
    } else {
        n.to_string()
    }
}
