//! Scaling: aggregate and per-instance throughput versus instance count, efficiency and the knee.
//!
//! For every higher-is-better workload metric (throughput) of the peers, a trial contributes its
//! aggregate (the sum over instances) and its per-instance mean; medians and CIs are taken across
//! repetitions at each instance count N. Efficiency is `agg(N) / ((N / N0) · agg(N0))` with N0
//! the smallest count measured (normally 1, giving the textbook `agg(N) / (N · agg(1))`); the knee
//! is the first N whose efficiency falls below [`KNEE_EFFICIENCY`].

use std::collections::{BTreeMap, HashMap};

use crate::aggregate::{Experiment, MetricKey, labels};
use crate::metrics::is_headline;
use crate::summary::{ScalingPoint, ScalingSeries, ScalingSummary, Stat};
use crate::table::Sym;

/// Efficiency below which scaling has hit its knee.
pub const KNEE_EFFICIENCY: f64 = 0.8;

/// Per repetition: (aggregate, per-instance mean).
type Points = BTreeMap<i32, Vec<(f64, f64)>>;

/// The scaling section of a `scaling` experiment; `None` without throughput metrics.
pub(crate) fn scaling(e: &Experiment<'_>) -> Option<ScalingSummary> {
    let t = &e.run.table;
    let mut series: HashMap<(MetricKey, Sym), Points> = HashMap::new();
    for r in e.reps() {
        let s = &t.series[r.series as usize];
        if !s.higher_is_better || !is_headline(t.str(s.metric)) || t.str(s.role) == "adversary" {
            continue;
        }
        let key = MetricKey {
            n_instances: 0,
            ..MetricKey::of(t, r)
        };
        let aggregate = r.value * f64::from(r.rows);
        series
            .entry((key, r.trial.platform))
            .or_default()
            .entry(r.trial.n_instances)
            .or_default()
            .push((aggregate, r.value));
    }
    if series.is_empty() {
        return None;
    }
    let keys: Vec<MetricKey> = series.keys().map(|(k, _)| *k).collect();
    let labels = labels(t, &keys);
    let rank = |p: &str| {
        e.platforms
            .iter()
            .position(|x| x == p)
            .unwrap_or(usize::MAX)
    };
    let mut out: Vec<ScalingSeries> = series
        .into_iter()
        .map(|((key, platform), points)| {
            build_series(
                labels[&key].clone(),
                t.str(key.metric),
                t.str(key.unit),
                t.str(platform),
                &points,
            )
        })
        .collect();
    out.sort_by(|a, b| (&a.label, rank(&a.platform)).cmp(&(&b.label, rank(&b.platform))));
    Some(ScalingSummary {
        knee_efficiency: KNEE_EFFICIENCY,
        series: out,
    })
}

fn build_series(
    label: String,
    metric: &str,
    unit: &str,
    platform: &str,
    points: &Points,
) -> ScalingSeries {
    let mut out = Vec::new();
    let mut base: Option<(i32, f64)> = None;
    for (&n, reps) in points {
        let aggs: Vec<f64> = reps.iter().map(|(a, _)| *a).collect();
        let per: Vec<f64> = reps.iter().map(|(_, p)| *p).collect();
        let (Some(aggregate), Some(per_instance)) = (Stat::of(&aggs), Stat::of(&per)) else {
            continue;
        };
        let (n0, agg0) = *base.get_or_insert((n, aggregate.median));
        let expected = f64::from(n) / f64::from(n0) * agg0;
        let efficiency = (expected > 0.0).then(|| aggregate.median / expected);
        out.push(ScalingPoint {
            n_instances: n,
            n: reps.len(),
            aggregate,
            per_instance,
            efficiency,
            aggregate_values: aggs,
        });
    }
    ScalingSeries {
        label,
        metric: metric.to_owned(),
        unit: unit.to_owned(),
        platform: platform.to_owned(),
        knee: knee(&out),
        points: out,
    }
}

/// The first instance count whose efficiency is below [`KNEE_EFFICIENCY`].
pub fn knee(points: &[ScalingPoint]) -> Option<i32> {
    points
        .iter()
        .find(|p| p.efficiency.is_some_and(|e| e < KNEE_EFFICIENCY))
        .map(|p| p.n_instances)
}
