//! Isolation: how much each adversary degrades the victim on each platform, relative to the
//! baseline trials without an adversary (`none`), and how the adversary itself ended.
//!
//! Degradation is the overhead of the victim's median under the adversary against its median in
//! the baseline on the same platform, in percent, positive when worse (see
//! [`crate::overhead::overhead`]), from the Hodges–Lehmann ratio and its exact interval
//! ([`crate::ratio`]; with too few repetitions for 95% the widest interval, of lower level). The adversary's outcome
//! comes from its own rows (`oom_kills` or `adversary_killed`, and [`LIMIT_METRICS`] such as `pids_limit_hits`,
//! `refused`, `full`) and from the manifest (trial status, teardown leaks).

use std::collections::{BTreeSet, HashMap};

use crate::aggregate::{Experiment, MetricKey, labels};
use crate::metrics::{ADVERSARY_KILLED, LIMIT_METRICS, OOM_KILLS, is_headline};
use crate::overhead::{overhead, overhead_interval};
use crate::summary::{AdversaryOutcome, IsolationCell, IsolationMetric, IsolationSummary};
use crate::{ratio, stats};

/// The adversary value of baseline trials (a missing adversary counts as this too).
pub const BASELINE_ADVERSARY: &str = "none";

/// The isolation section of an `isolation` experiment; `None` without victim data.
pub(crate) fn isolation(e: &Experiment<'_>) -> Option<IsolationSummary> {
    let t = &e.run.table;
    let adversary_of =
        |a: Option<crate::table::Sym>| t.opt_str(a).unwrap_or(BASELINE_ADVERSARY).to_owned();
    // Victim metrics per (key, platform, adversary); adversary outcomes per trial.
    let mut values: HashMap<(MetricKey, String, String), Vec<f64>> = HashMap::new();
    let mut killed: HashMap<(String, String), BTreeSet<&str>> = HashMap::new();
    let mut limited: HashMap<(String, String), BTreeSet<&str>> = HashMap::new();
    let has_victims = e
        .reps()
        .any(|r| t.str(t.series[r.series as usize].role) == "victim");
    for r in e.reps() {
        let s = &t.series[r.series as usize];
        let (role, metric) = (t.str(s.role), t.str(s.metric));
        let platform = t.str(r.trial.platform).to_owned();
        let adversary = adversary_of(r.trial.adversary);
        if role == "adversary" {
            let cell = (platform, adversary);
            if (metric == OOM_KILLS || metric == ADVERSARY_KILLED) && r.value > 0.0 {
                killed
                    .entry(cell)
                    .or_default()
                    .insert(t.str(r.trial.trial_id));
            } else if LIMIT_METRICS.contains(&metric) && r.value > 0.0 {
                limited
                    .entry(cell)
                    .or_default()
                    .insert(t.str(r.trial.trial_id));
            }
            continue;
        }
        if !is_headline(metric) || (has_victims && role != "victim") {
            continue;
        }
        let key = MetricKey {
            adversary: None,
            n_instances: 0,
            ..MetricKey::of(t, r)
        };
        values
            .entry((key, platform, adversary))
            .or_default()
            .push(r.value);
    }
    if values.is_empty() {
        return None;
    }
    let adversaries = adversary_order(e, values.keys().map(|(_, _, a)| a.as_str()));
    let keys: Vec<MetricKey> = values
        .keys()
        .map(|(k, _, _)| *k)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let labels = labels(t, &keys);
    let mut metrics: Vec<IsolationMetric> = keys
        .iter()
        .map(|key| {
            let hib = key.higher_is_better;
            let mut cells = Vec::new();
            for p in e.platforms {
                let Some(base) = values.get(&(*key, p.clone(), BASELINE_ADVERSARY.to_owned()))
                else {
                    continue;
                };
                for a in &adversaries {
                    let Some(v) = values.get(&(*key, p.clone(), a.clone())) else {
                        continue;
                    };
                    let Some(r) = ratio::ratio(v, base) else {
                        continue;
                    };
                    let ci = overhead_interval([r.ci_low, r.ci_high], hib);
                    cells.push(IsolationCell {
                        platform: p.clone(),
                        adversary: a.clone(),
                        n: v.len(),
                        median: stats::median(v).unwrap_or(f64::NAN),
                        baseline_median: stats::median(base).unwrap_or(f64::NAN),
                        degradation_pct: 100.0 * overhead(r.ratio, hib),
                        degradation_ci_pct: Some([100.0 * ci[0], 100.0 * ci[1]]),
                        degradation_ci_level: Some(r.level),
                    });
                }
            }
            IsolationMetric {
                label: labels[key].clone(),
                unit: t.str(key.unit).to_owned(),
                higher_is_better: hib,
                cells,
            }
        })
        .collect();
    metrics.sort_by(|a, b| a.label.cmp(&b.label));
    let outcomes = outcomes(e, &adversaries, &killed, &limited);
    Some(IsolationSummary {
        baseline: BASELINE_ADVERSARY.to_owned(),
        adversaries,
        metrics,
        outcomes,
    })
}

/// Adversaries in pipeline order, then any others found, sorted; the baseline left out.
fn adversary_order<'a>(e: &Experiment<'_>, found: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut order: Vec<String> = e
        .pipeline_experiment()
        .map(|x| x.adversaries)
        .unwrap_or_default();
    let found: BTreeSet<&str> = found.collect();
    for a in found {
        if !order.iter().any(|o| o == a) {
            order.push(a.to_owned());
        }
    }
    order.retain(|a| a != BASELINE_ADVERSARY);
    order
}

fn outcomes(
    e: &Experiment<'_>,
    adversaries: &[String],
    killed: &HashMap<(String, String), BTreeSet<&str>>,
    limited: &HashMap<(String, String), BTreeSet<&str>>,
) -> Vec<AdversaryOutcome> {
    let count = |m: &HashMap<(String, String), BTreeSet<&str>>, k: &(String, String)| {
        u32::try_from(m.get(k).map_or(0, BTreeSet::len)).unwrap_or(u32::MAX)
    };
    let mut out = Vec::new();
    for p in e.platforms {
        for a in adversaries {
            let trials: Vec<_> = e
                .run
                .manifest
                .trials
                .iter()
                .filter(|tr| !tr.warmup && tr.experiment == e.name && &tr.platform == p)
                .filter(|tr| tr.adversary.as_deref().unwrap_or(BASELINE_ADVERSARY) == a)
                .collect();
            let failed = trials
                .iter()
                .filter(|tr| tr.status != isolab_model::manifest::TrialState::Ok)
                .count();
            let leaks: BTreeSet<String> = trials
                .iter()
                .flat_map(|tr| tr.leaks.iter().cloned())
                .collect();
            let key = (p.clone(), a.clone());
            out.push(AdversaryOutcome {
                platform: p.clone(),
                adversary: a.clone(),
                trials: u32::try_from(trials.len()).unwrap_or(u32::MAX),
                failed: u32::try_from(failed).unwrap_or(u32::MAX),
                killed: count(killed, &key),
                limit_hit: count(limited, &key),
                contained: leaks.is_empty() && failed == 0,
                leaks: leaks.into_iter().collect(),
            });
        }
    }
    out
}
