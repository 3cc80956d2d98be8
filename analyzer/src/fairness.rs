//! Fairness: CPU share received versus entitled, Jain's index, the largest share error, and
//! whether a reservation was met, overall and over time.
//!
//! Entitlements come from the pipeline (group weights, then the reservation: a reserved group
//! below its reservation is raised to it and the others share the rest by weight); without a
//! pipeline every instance is entitled to an equal share. What an instance received is its
//! share of the total, from the cgroup's `cpu_usage_ns` at the end of the trial when the agent
//! reported it, else from the workload's `units_per_s`. Over time, `units_per_s` points (or the
//! differences of `cpu_usage_ns` points) are averaged per [`TIMELINE_INTERVAL_S`] interval.
//! Shares are of the CPU the instances consumed together, which for CPU-bound peers is the
//! machine's capacity.

use std::collections::{BTreeMap, HashMap};

use indexmap::IndexMap;

use crate::aggregate::Experiment;
use crate::metrics::{CPU_USAGE, UNITS_PER_S};
use crate::stats;
use crate::summary::{
    FairnessPlatform, FairnessSummary, GroupShare, ReservationResult, Stat, TimelinePoint,
};
use crate::table::{SampleTable, Sym};

/// Width of a timeline interval.
pub const TIMELINE_INTERVAL_S: f64 = 0.5;
/// An interval meets a reservation when the group's share is at least this close (relative) to it.
pub const RESERVATION_TOLERANCE: f64 = 0.05;
/// A reservation is met when at least this fraction of intervals meet it.
pub const RESERVATION_MET_FRACTION: f64 = 0.95;

/// Jain's fairness index `(Σx)² / (n·Σx²)`: 1 when all are equal, 1/n when one takes all.
pub fn jain_index(x: &[f64]) -> Option<f64> {
    let sum: f64 = x.iter().sum();
    let sq: f64 = x.iter().map(|v| v * v).sum();
    (sq > 0.0).then(|| sum * sum / (x.len() as f64 * sq))
}

/// Entitled shares of instances with these weights, with `reserved` (a mask of the reserved
/// group's instances) raised to `reservation` when the weights give it less.
pub fn entitlements(weights: &[f64], reserved: &[bool], reservation: Option<f64>) -> Vec<f64> {
    let total: f64 = weights.iter().sum();
    let mut shares: Vec<f64> = weights
        .iter()
        .map(|w| if total > 0.0 { w / total } else { 0.0 })
        .collect();
    let Some(r) = reservation else { return shares };
    let g: f64 = shares
        .iter()
        .zip(reserved)
        .filter(|(_, m)| **m)
        .map(|(s, _)| s)
        .sum();
    if g > 0.0 && g < r && g < 1.0 {
        for (s, m) in shares.iter_mut().zip(reserved) {
            *s *= if *m { r / g } else { (1.0 - r) / (1.0 - g) };
        }
    }
    shares
}

#[derive(Default)]
struct Instance {
    group: Option<Sym>,
    cpu: Option<f64>,
    units: Option<f64>,
    ts_units: Vec<(f64, f64)>,
    ts_cpu: Vec<(f64, f64)>,
}

struct Trial {
    platform: Sym,
    repetition: i32,
    id: Sym,
    instances: BTreeMap<i32, Instance>,
}

/// What one trial says.
struct TrialResult {
    jain: f64,
    max_error: f64,
    groups: IndexMap<String, (u32, f64, f64)>,
    met_fraction: Option<f64>,
    timeline: BTreeMap<i64, IndexMap<String, f64>>,
}

fn collect(t: &SampleTable, experiment: Sym) -> Vec<Trial> {
    let (ok, cpu, units) = (
        t.strings.get("ok"),
        t.strings.get(CPU_USAGE),
        t.strings.get(UNITS_PER_S),
    );
    let adversary = t.strings.get("adversary");
    let mut trials: HashMap<Sym, Trial> = HashMap::new();
    for seg in t
        .segments
        .iter()
        .filter(|s| s.key.experiment == experiment && Some(s.key.status) == ok)
    {
        let k = seg.key;
        let trial = trials.entry(k.trial_id).or_insert_with(|| Trial {
            platform: k.platform,
            repetition: k.repetition,
            id: k.trial_id,
            instances: BTreeMap::new(),
        });
        for i in seg.rows.clone() {
            let s = &t.series[t.series_id[i] as usize];
            let is_cpu = Some(s.metric) == cpu;
            if !(is_cpu || Some(s.metric) == units) || Some(s.role) == adversary {
                continue;
            }
            let inst = trial.instances.entry(t.instance[i]).or_default();
            inst.group = inst.group.or(s.group);
            let (v, at) = (t.value[i], t.t_offset_s[i]);
            match (is_cpu, at.is_nan()) {
                (true, true) => inst.cpu = Some(v),
                (false, true) => inst.units = Some(v),
                (true, false) => inst.ts_cpu.push((at, v)),
                (false, false) => inst.ts_units.push((at, v)),
            }
        }
    }
    let mut out: Vec<Trial> = trials.into_values().collect();
    out.sort_by(|a, b| (a.repetition, t.str(a.id)).cmp(&(b.repetition, t.str(b.id))));
    out
}

fn bin_of(t_s: f64) -> Option<i64> {
    // Finite, non-negative and far below 2^63 intervals for any real trial.
    #[allow(clippy::cast_possible_truncation)]
    (t_s.is_finite() && t_s >= 0.0).then(|| (t_s / TIMELINE_INTERVAL_S).floor() as i64)
}

/// Mean rate per interval: rate points as they are, counters as differences.
fn binned(points: &[(f64, f64)], counter: bool) -> BTreeMap<i64, f64> {
    let mut p = points.to_vec();
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    let rates: Vec<(f64, f64)> = if counter {
        p.windows(2)
            .filter(|w| w[1].0 > w[0].0)
            .map(|w| (w[1].0, (w[1].1 - w[0].1) / (w[1].0 - w[0].0)))
            .collect()
    } else {
        p
    };
    let mut acc: BTreeMap<i64, (f64, u32)> = BTreeMap::new();
    for (at, v) in rates {
        if let Some(b) = bin_of(at) {
            let e = acc.entry(b).or_default();
            e.0 += v;
            e.1 += 1;
        }
    }
    acc.into_iter()
        .map(|(b, (sum, n))| (b, sum / f64::from(n)))
        .collect()
}

/// Pipeline facts: group order and weights, the reservation.
struct Plan {
    groups: Vec<(String, f64)>,
    reservation: Option<(String, f64)>,
}

fn analyse_trial(
    t: &SampleTable,
    trial: &Trial,
    plan: &Plan,
    use_cpu: bool,
    ts: Option<bool>,
) -> Option<TrialResult> {
    let names: Vec<String> = trial
        .instances
        .iter()
        .map(|(i, inst)| {
            t.opt_str(inst.group)
                .map_or_else(|| format!("instance-{i}"), str::to_owned)
        })
        .collect();
    let weight = |g: &str| {
        plan.groups
            .iter()
            .find(|(n, _)| n == g)
            .map_or(1.0, |(_, w)| *w)
    };
    let weights: Vec<f64> = names.iter().map(|g| weight(g)).collect();
    let reserved: Vec<bool> = names
        .iter()
        .map(|g| plan.reservation.as_ref().is_some_and(|(r, _)| r == g))
        .collect();
    let entitled = entitlements(
        &weights,
        &reserved,
        plan.reservation.as_ref().map(|(_, r)| *r),
    );
    let values: Option<Vec<f64>> = trial
        .instances
        .values()
        .map(|i| {
            let ts_mean = || stats::median(&i.ts_units.iter().map(|p| p.1).collect::<Vec<_>>());
            if use_cpu {
                i.cpu
            } else {
                i.units.or_else(ts_mean)
            }
        })
        .collect();
    let values = values?;
    let total: f64 = values.iter().sum();
    if total <= 0.0 {
        return None;
    }
    let received: Vec<f64> = values.iter().map(|v| v / total).collect();
    let ratios: Vec<f64> = received
        .iter()
        .zip(&entitled)
        .map(|(r, e)| if *e > 0.0 { r / e } else { 0.0 })
        .collect();
    let jain = jain_index(&ratios)?;
    let max_error = received
        .iter()
        .zip(&entitled)
        .map(|(r, e)| (r - e).abs())
        .fold(0.0, f64::max);
    let mut groups: IndexMap<String, (u32, f64, f64)> = IndexMap::new();
    for (g, _) in &plan.groups {
        if names.contains(g) {
            groups.insert(g.clone(), (0, 0.0, 0.0));
        }
    }
    for ((g, r), e) in names.iter().zip(&received).zip(&entitled) {
        let entry = groups.entry(g.clone()).or_insert((0, 0.0, 0.0));
        entry.0 += 1;
        entry.1 += e;
        entry.2 += r;
    }
    // Timeline: intervals in which every instance reported.
    let mut timeline = BTreeMap::new();
    if let Some(counter) = ts {
        let per_instance: Vec<BTreeMap<i64, f64>> = trial
            .instances
            .values()
            .map(|i| binned(if counter { &i.ts_cpu } else { &i.ts_units }, counter))
            .collect();
        let bins = per_instance
            .first()
            .map(|m| m.keys().copied().collect::<Vec<_>>())
            .unwrap_or_default();
        for b in bins {
            let Some(rates) = per_instance
                .iter()
                .map(|m| m.get(&b).copied())
                .collect::<Option<Vec<f64>>>()
            else {
                continue;
            };
            let sum: f64 = rates.iter().sum();
            if sum <= 0.0 {
                continue;
            }
            let mut shares: IndexMap<String, f64> =
                groups.keys().map(|g| (g.clone(), 0.0)).collect();
            for (g, r) in names.iter().zip(&rates) {
                *shares.entry(g.clone()).or_default() += r / sum;
            }
            timeline.insert(b, shares);
        }
    }
    let met_fraction = plan.reservation.as_ref().map(|(g, r)| {
        let floor = r * (1.0 - RESERVATION_TOLERANCE);
        if timeline.is_empty() {
            let got = groups.get(g).map_or(0.0, |x| x.2);
            return if got >= floor { 1.0 } else { 0.0 };
        }
        let met = timeline
            .values()
            .filter(|s| s.get(g).is_some_and(|v| *v >= floor))
            .count();
        met as f64 / timeline.len() as f64
    });
    Some(TrialResult {
        jain,
        max_error,
        groups,
        met_fraction,
        timeline,
    })
}

fn plan_of(e: &Experiment<'_>) -> Plan {
    match e.pipeline_experiment() {
        Some(x) => Plan {
            groups: x
                .groups
                .iter()
                .map(|g| (g.name.clone(), f64::from(g.weight)))
                .collect(),
            reservation: x.reservation.map(|r| (r.group, r.cpu.fraction())),
        },
        None => Plan {
            groups: Vec::new(),
            reservation: None,
        },
    }
}

/// The fairness section of a `fairness` experiment; `None` without CPU or work-rate data.
pub(crate) fn fairness(e: &Experiment<'_>) -> Option<FairnessSummary> {
    let t = &e.run.table;
    let trials = collect(t, t.strings.get(e.name)?);
    let all = || trials.iter().flat_map(|tr| tr.instances.values());
    let use_cpu = all().any(|i| i.cpu.is_some());
    let ts = if all().any(|i| !i.ts_units.is_empty()) {
        Some(false)
    } else if all().any(|i| i.ts_cpu.len() > 1) {
        Some(true)
    } else {
        None
    };
    let plan = plan_of(e);
    let mut platforms = IndexMap::new();
    for p in e.platforms {
        let results: Vec<(TrialResult, &Trial)> = trials
            .iter()
            .filter(|tr| t.str(tr.platform) == p)
            .filter_map(|tr| analyse_trial(t, tr, &plan, use_cpu, ts).map(|r| (r, tr)))
            .collect();
        if let Some(fp) = platform_summary(&results, &plan) {
            platforms.insert(p.clone(), fp);
        }
    }
    if platforms.is_empty() {
        return None;
    }
    Some(FairnessSummary {
        source: if use_cpu { CPU_USAGE } else { UNITS_PER_S }.to_owned(),
        timeline_source: ts.map(|counter| if counter { CPU_USAGE } else { UNITS_PER_S }.to_owned()),
        interval_s: TIMELINE_INTERVAL_S,
        platforms,
    })
}

fn platform_summary(results: &[(TrialResult, &Trial)], plan: &Plan) -> Option<FairnessPlatform> {
    let jain = Stat::of(&results.iter().map(|(r, _)| r.jain).collect::<Vec<_>>())?;
    let max_share_error = Stat::of(&results.iter().map(|(r, _)| r.max_error).collect::<Vec<_>>())?;
    let mut groups = IndexMap::new();
    for (name, &(count, entitled, _)) in &results[0].0.groups {
        let got: Vec<f64> = results
            .iter()
            .filter_map(|(r, _)| r.groups.get(name).map(|g| g.2))
            .collect();
        let count_u = count;
        let weight = plan
            .groups
            .iter()
            .find(|(n, _)| n == name)
            .map_or(1.0, |(_, w)| *w);
        // Weights are whole numbers in the pipeline.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let weight = weight as u32;
        if let Some(received) = Stat::of(&got) {
            groups.insert(
                name.clone(),
                GroupShare {
                    instances: count_u,
                    weight,
                    entitled,
                    received,
                },
            );
        }
    }
    let reservation = plan.reservation.as_ref().map(|(g, cpu)| {
        let fractions: Vec<f64> = results.iter().filter_map(|(r, _)| r.met_fraction).collect();
        let met_fraction = stats::median(&fractions).unwrap_or(0.0);
        ReservationResult {
            group: g.clone(),
            cpu: *cpu,
            met_fraction,
            met: met_fraction >= RESERVATION_MET_FRACTION,
        }
    });
    let mut bins: BTreeMap<i64, IndexMap<String, Vec<f64>>> = BTreeMap::new();
    for (r, _) in results {
        for (b, shares) in &r.timeline {
            let slot = bins.entry(*b).or_default();
            for (g, v) in shares {
                slot.entry(g.clone()).or_default().push(*v);
            }
        }
    }
    let timeline = bins
        .into_iter()
        .map(|(b, shares)| TimelinePoint {
            t_s: b as f64 * TIMELINE_INTERVAL_S,
            shares: shares
                .into_iter()
                .map(|(g, v)| (g, stats::median(&v).unwrap_or(0.0)))
                .collect(),
        })
        .collect();
    Some(FairnessPlatform {
        n: results.len(),
        jain,
        max_share_error,
        groups,
        reservation,
        timeline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jain_of_equal_shares_is_one_and_of_one_takes_all_is_one_over_n() {
        assert!((jain_index(&[0.25; 4]).unwrap() - 1.0).abs() < 1e-12);
        for n in 2..10usize {
            let mut x = vec![0.0; n];
            x[0] = 1.0;
            assert!((jain_index(&x).unwrap() - 1.0 / n as f64).abs() < 1e-12);
        }
        assert_eq!(jain_index(&[0.0, 0.0]), None);
    }

    #[test]
    fn reservation_raises_the_reserved_group() {
        // a: 1 of 4 equal weights = 25%; reserved 50%: the others split the other half.
        let e = entitlements(&[1.0; 4], &[true, false, false, false], Some(0.5));
        assert!((e[0] - 0.5).abs() < 1e-12);
        assert!(e[1..].iter().all(|s| (s - 0.5 / 3.0).abs() < 1e-12));
        // Already above its reservation: unchanged.
        let e = entitlements(&[3.0, 1.0], &[true, false], Some(0.25));
        assert!((e[0] - 0.75).abs() < 1e-12);
    }

    #[test]
    fn counters_become_rates_per_interval() {
        let pts = [(0.1, 0.0), (0.2, 10.0), (0.3, 20.0), (0.6, 50.0)];
        let b = binned(&pts, true);
        assert_eq!(b.len(), 2);
        assert!((b[&0] - 100.0).abs() < 1e-9 && (b[&1] - 100.0).abs() < 1e-9);
    }
}
