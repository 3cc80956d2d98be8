//! The checklist's findings about scaling, fair shares, the reservation and isolation (see
//! [`super`] for the rules).

use indexmap::IndexMap;

use super::{
    Backends, CHECK_MARGIN_PCT, CONTAINER_BACKENDS, Finding, JAIN_FAIR, Status, not_measured,
};
use crate::markdown::fmt_num;
use crate::stats::CONFIDENCE;
use crate::summary::ExperimentSummary;

pub(super) fn scaling(
    experiments: &IndexMap<String, ExperimentSummary>,
    cores: Option<u64>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for e in experiments.values() {
        let Some(s) = &e.scaling else { continue };
        for series in &s.series {
            let finding = format!(
                "Aggregate throughput grows with N up to the cores: {} on `{}`",
                series.label, series.platform
            );
            let Some(first) = series.points.first() else {
                continue;
            };
            let limit = cores
                .and_then(|c| i32::try_from(c).ok())
                .unwrap_or(i32::MAX);
            let Some(top) = series
                .points
                .iter()
                .rev()
                .find(|p| p.n_instances <= limit && p.n_instances > first.n_instances)
            else {
                out.push(not_measured(&finding, "only one instance count"));
                continue;
            };
            let stat = |p: &crate::summary::ScalingPoint| {
                format!(
                    "{} [{}, {}] at N={} ({} repetition{})",
                    fmt_num(p.aggregate.median),
                    fmt_num(p.aggregate.ci_low),
                    fmt_num(p.aggregate.ci_high),
                    p.n_instances,
                    p.n,
                    if p.n == 1 { "" } else { "s" }
                )
            };
            let measured = format!("aggregate {} vs {}", stat(top), stat(first));
            let status = if top.n < 2 || first.n < 2 {
                Status::Inconclusive
            } else if top.aggregate.ci_low > first.aggregate.ci_high {
                Status::Reproduced
            } else if top.aggregate.ci_high <= first.aggregate.ci_low {
                Status::NotReproduced
            } else {
                Status::Inconclusive
            };
            out.push(Finding {
                finding,
                measured,
                status,
            });
        }
    }
    if out.is_empty() {
        out.push(not_measured(
            "Aggregate throughput grows with N up to the cores",
            "no scaling experiment",
        ));
    }
    out
}

pub(super) fn fairness(experiments: &IndexMap<String, ExperimentSummary>) -> Vec<Finding> {
    let mut fair = Vec::new();
    let mut reserved = Vec::new();
    for e in experiments.values() {
        let Some(f) = &e.fairness else { continue };
        for (p, fp) in &f.platforms {
            if let Some(r) = &fp.reservation {
                let status = if fp.n < 2 {
                    Status::Inconclusive
                } else if r.met {
                    Status::Reproduced
                } else {
                    Status::NotReproduced
                };
                reserved.push(Finding {
                    finding: format!(
                        "A {:.0}% reservation is honoured: group `{}` on `{p}`",
                        100.0 * r.cpu,
                        r.group
                    ),
                    measured: format!(
                        "at or above the reservation in {:.0}% of intervals (median of {} repetitions)",
                        100.0 * r.met_fraction,
                        fp.n
                    ),
                    status,
                });
            } else {
                let j = &fp.jain;
                let status = if fp.n < 2 {
                    Status::Inconclusive
                } else if j.ci_low >= JAIN_FAIR {
                    Status::Reproduced
                } else if j.ci_high < JAIN_FAIR {
                    Status::NotReproduced
                } else {
                    Status::Inconclusive
                };
                fair.push(Finding {
                    finding: format!("Equal weights get a fair share: `{p}` (Jain ≥ {JAIN_FAIR})"),
                    measured: format!(
                        "Jain {:.3} [{:.3}, {:.3}], {} repetitions",
                        j.median, j.ci_low, j.ci_high, fp.n
                    ),
                    status,
                });
            }
        }
    }
    if fair.is_empty() {
        fair.push(not_measured(
            "Equal weights get a fair share",
            "no fairness experiment without a reservation",
        ));
    }
    if reserved.is_empty() {
        reserved.push(not_measured(
            "A 25% reservation is honoured",
            "no fairness experiment with a reservation",
        ));
    }
    fair.extend(reserved);
    fair
}

pub(super) fn isolation(
    experiments: &IndexMap<String, ExperimentSummary>,
    backends: &Backends,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for e in experiments.values() {
        let Some(iso) = &e.isolation else { continue };
        for adversary in &iso.adversaries {
            let mut platforms: Vec<&str> = Vec::new();
            for c in iso.metrics.iter().flat_map(|m| &m.cells) {
                let b = backends
                    .get(&c.platform)
                    .map(String::as_str)
                    .unwrap_or_default();
                if CONTAINER_BACKENDS.contains(&b) && !platforms.contains(&c.platform.as_str()) {
                    platforms.push(&c.platform);
                }
            }
            for o in &iso.outcomes {
                let b = backends
                    .get(&o.platform)
                    .map(String::as_str)
                    .unwrap_or_default();
                if o.adversary == *adversary
                    && CONTAINER_BACKENDS.contains(&b)
                    && !platforms.contains(&o.platform.as_str())
                {
                    platforms.push(&o.platform);
                }
            }
            for p in platforms {
                let finding =
                    format!("The victim is isolated from `{adversary}` in a container: `{p}`");
                let outcome = iso
                    .outcomes
                    .iter()
                    .find(|o| o.platform == p && o.adversary == *adversary);
                let cells: Vec<_> = iso
                    .metrics
                    .iter()
                    .filter_map(|m| {
                        m.cells
                            .iter()
                            .find(|c| c.platform == p && c.adversary == *adversary)
                            .map(|c| (m, c))
                    })
                    .collect();
                let contained = outcome.is_none_or(|o| o.contained);
                let mut parts = Vec::new();
                if let Some(o) = outcome {
                    parts.push(if o.contained {
                        "contained".to_owned()
                    } else {
                        format!(
                            "NOT contained ({} of {} trials failed, leaks: {})",
                            o.failed,
                            o.trials,
                            if o.leaks.is_empty() {
                                "none".to_owned()
                            } else {
                                o.leaks.join("; ")
                            }
                        )
                    });
                }
                let (mut harmed, mut unharmed, mut n) = (false, true, 0);
                for (m, c) in &cells {
                    n += 1;
                    let full = c.degradation_ci_level.is_some_and(|l| l >= CONFIDENCE) && c.n >= 2;
                    match c.degradation_ci_pct {
                        Some([lo, hi]) => {
                            parts.push(format!(
                                "{}: {:+.1}% [{:+.1}, {:+.1}]",
                                m.label, c.degradation_pct, lo, hi
                            ));
                            harmed |= full && lo > CHECK_MARGIN_PCT;
                            unharmed &= full && hi <= CHECK_MARGIN_PCT;
                        }
                        None => {
                            parts.push(format!("{}: {:+.1}% (no CI)", m.label, c.degradation_pct));
                            unharmed = false;
                        }
                    }
                }
                let status = if n == 0 && outcome.is_none() {
                    Status::NotMeasured
                } else if !contained || harmed {
                    Status::NotReproduced
                } else if unharmed && n > 0 {
                    Status::Reproduced
                } else {
                    Status::Inconclusive
                };
                out.push(Finding {
                    finding,
                    measured: parts.join("; "),
                    status,
                });
            }
        }
    }
    if out.is_empty() {
        out.push(not_measured(
            "The victim is isolated from each adversary in a container",
            "no isolation experiment with a container platform",
        ));
    }
    out
}
