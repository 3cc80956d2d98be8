//! Expansion of a pipeline into trials, and content-derived trial ids.

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{InstanceSpec, Role, Trial};
use crate::pipeline::{
    AnalysisKind, Experiment, Group, ParamValue, Params, Pipeline, Platform, WorkloadRef,
};
use crate::units::{HumanDuration, Percent};

/// Version of the id scheme, hashed with every id so that a change of scheme changes all ids.
const ID_SCHEME: u32 = 1;

/// Expands a validated pipeline into trials: experiments (file order) × platforms (listed order)
/// × matrix points × (warm-ups, then measured repetitions).
///
/// Matrix points: overhead runs each workload with `instances` peers (default 1); scaling each
/// instance count of `matrix.instances`; fairness the groups, one instance per member, with
/// `cpu_weight` = weight × 100 (raised for a reserved group, see [`reserved_weight`]) and the
/// reservation's share split over its group; isolation the
/// victim (instance 0) against each adversary (instance 1; none for `none`). Every combination
/// of `matrix.params` multiplies the points. An unvalidated pipeline never panics: what cannot
/// be expanded (an unknown platform, a missing workload) yields no trials.
pub fn plan(p: &Pipeline) -> Vec<Trial> {
    let mut trials = Vec::new();
    for e in &p.experiments {
        let duration = e.duration.unwrap_or(p.defaults.duration);
        let timeout = e
            .timeout
            .or(p.defaults.timeout)
            .unwrap_or_else(|| default_timeout(duration));
        let repetitions = e.repetitions.unwrap_or(p.defaults.repetitions);
        let warmup = e.warmup.unwrap_or(p.defaults.warmup);
        let points = points(e, duration);
        for name in &e.platforms {
            let Some(spec) = p.platforms.get(name) else {
                continue;
            };
            let Ok(resolved) = crate::resolve::resolve(spec) else {
                continue;
            };
            for point in &points {
                let runs = (0..warmup)
                    .map(|r| (r, true))
                    .chain((0..repetitions).map(|r| (r, false)));
                for (repetition, is_warmup) in runs {
                    let mut t = Trial {
                        id: String::new(),
                        experiment: e.name.clone(),
                        analysis: e.analysis,
                        platform: name.clone(),
                        platform_spec: spec.clone(),
                        resolved: resolved.clone(),
                        repetition,
                        warmup: is_warmup,
                        workload: point.workload.clone(),
                        adversary: point.adversary.clone(),
                        params: point.params.clone(),
                        instances: point.instances.clone(),
                        duration,
                        timeout,
                        retries: p.defaults.retries,
                    };
                    t.id = trial_id(&t);
                    trials.push(t);
                }
            }
        }
    }
    trials
}

/// The trial for a further measured repetition `rep` of `trial` (adaptive repetition with
/// `until_stable`): same content, `warmup: false`, a new id by the same rule.
pub fn extra_repetition(trial: &Trial, rep: u32) -> Trial {
    let mut t = trial.clone();
    t.repetition = rep;
    t.warmup = false;
    t.id = trial_id(&t);
    t
}

/// The content-derived id of a trial: the first 16 hex digits of SHA-256 over a canonical JSON
/// of everything that defines what runs (experiment, analysis, platform and its settings,
/// instances, duration, repetition, warm-up flag, adversary, parameters). Neither the position
/// in the file, the pipeline's name, the timeout nor the retry count enter it.
pub fn trial_id(t: &Trial) -> String {
    #[derive(Serialize)]
    struct IdInput<'a> {
        scheme: u32,
        experiment: &'a str,
        analysis: AnalysisKind,
        platform: &'a str,
        platform_spec: &'a Platform,
        instances: &'a [InstanceSpec],
        duration: HumanDuration,
        repetition: u32,
        warmup: bool,
        adversary: Option<&'a str>,
        params: &'a Params,
    }
    let input = IdInput {
        scheme: ID_SCHEME,
        experiment: &t.experiment,
        analysis: t.analysis,
        platform: &t.platform,
        platform_spec: &t.platform_spec,
        instances: &t.instances,
        duration: t.duration,
        repetition: t.repetition,
        warmup: t.warmup,
        adversary: t.adversary.as_deref(),
        params: &t.params,
    };
    // Serializing these plain structs cannot fail; an empty input would still hash.
    let json = serde_json::to_vec(&input).unwrap_or_default();
    let mut id = hex::encode(Sha256::digest(&json));
    id.truncate(16);
    id
}

/// The default trial deadline: duration × 3 + 30 s.
fn default_timeout(duration: HumanDuration) -> HumanDuration {
    HumanDuration(
        duration
            .0
            .saturating_mul(3)
            .saturating_add(std::time::Duration::from_secs(30)),
    )
}

/// One matrix point of an experiment, shared by all its platforms and repetitions.
struct Point {
    workload: String,
    adversary: Option<String>,
    params: Params,
    instances: Vec<InstanceSpec>,
}

fn points(e: &Experiment, duration: HumanDuration) -> Vec<Point> {
    let combos = combinations(e);
    let mut out = Vec::new();
    let single = |w: &WorkloadRef, combo: &Params, n: u32| {
        let params = merged(&w.params(), combo);
        let instances = (0..n)
            .map(|i| peer(i, w.name(), &params, duration))
            .collect();
        Point {
            workload: w.name().to_owned(),
            adversary: None,
            params,
            instances,
        }
    };
    match e.analysis {
        AnalysisKind::Overhead => {
            for w in &e.workloads {
                for c in &combos {
                    out.push(single(w, c, e.instances.unwrap_or(1)));
                }
            }
        }
        AnalysisKind::Scaling => {
            let counts = e
                .matrix
                .as_ref()
                .map(|m| m.instances.as_slice())
                .unwrap_or_default();
            for (w, &n) in e
                .workload
                .iter()
                .flat_map(|w| counts.iter().map(move |n| (w, n)))
            {
                for c in &combos {
                    out.push(single(w, c, n));
                }
            }
        }
        AnalysisKind::Fairness => {
            for (w, c) in e
                .workload
                .iter()
                .flat_map(|w| combos.iter().map(move |c| (w, c)))
            {
                let params = merged(&w.params(), c);
                let mut instances = Vec::new();
                for g in &e.groups {
                    let reserved = e.reservation.as_ref().filter(|r| r.group == g.name);
                    let weight = reserved.map_or(u64::from(g.weight) * 100, |r| {
                        reserved_weight(&e.groups, g, r.cpu)
                    });
                    for _ in 0..g.count {
                        let index = u32::try_from(instances.len()).unwrap_or(u32::MAX);
                        let mut inst = peer(index, w.name(), &params, duration);
                        inst.group = Some(g.name.clone());
                        inst.cpu_weight = Some(weight);
                        inst.cpu_reservation =
                            reserved.map(|r| Percent(r.cpu.fraction() / f64::from(g.count.max(1))));
                        instances.push(inst);
                    }
                }
                out.push(Point {
                    workload: w.name().to_owned(),
                    adversary: None,
                    params,
                    instances,
                });
            }
        }
        AnalysisKind::Isolation => {
            let Some(victim) = &e.victim else { return out };
            for a in &e.adversaries {
                for c in &combos {
                    let params = merged(&victim.params(), c);
                    let mut v = peer(0, victim.name(), &params, duration);
                    v.role = Role::Victim;
                    let mut instances = vec![v];
                    if a != "none" {
                        let mut adv = peer(1, a, &Params::new(), duration);
                        adv.role = Role::Adversary;
                        instances.push(adv);
                    }
                    out.push(Point {
                        workload: victim.name().to_owned(),
                        adversary: Some(a.clone()),
                        params,
                        instances,
                    });
                }
            }
        }
    }
    out
}

/// Every combination of `matrix.params` (keys in name order, values in listed order); one
/// empty combination when there is no sweep.
fn combinations(e: &Experiment) -> Vec<Params> {
    let mut combos = vec![Params::new()];
    for (key, values) in e.matrix.iter().flat_map(|m| &m.params) {
        combos = combos
            .iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.insert(key.clone(), v.clone());
                    c
                })
            })
            .collect();
    }
    combos
}

fn merged(a: &Params, b: &Params) -> Params {
    a.iter()
        .chain(b)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn peer(index: u32, workload: &str, params: &Params, duration: HumanDuration) -> InstanceSpec {
    let mut params = params.clone();
    params
        .entry("duration".to_owned())
        .or_insert_with(|| ParamValue::Str(duration.to_string()));
    InstanceSpec {
        index,
        role: Role::Peer,
        group: None,
        workload: workload.to_owned(),
        params,
        cpu_weight: None,
        cpu_reservation: None,
    }
}

/// Largest per-instance `cpu_weight` (cgroup v2 `cpu.weight` range is 1..=10000).
pub const MAX_CPU_WEIGHT: u64 = 10_000;

/// The `cpu_weight` of each instance of `group`, which holds a reservation of `cpu` of the CPU.
///
/// cgroups have no CPU floor (neither v1 `cpu.shares` nor v2 `cpu.weight` guarantees a minimum),
/// so a reservation is expressed through weights: under full contention sibling cgroups share CPU
/// in proportion to their weights, so the reserved group receives at least `r` when its total
/// weight `W_g` satisfies `W_g / (W_g + W_o) ≥ r`, i.e. `W_g ≥ W_o · r / (1 − r)` where `W_o` is
/// the other instances' total weight. Each of its `n` instances gets
/// `max(100 · weight, ⌈W_o · r / ((1 − r) · n)⌉)`, capped at [`MAX_CPU_WEIGHT`] (validation
/// rejects reservations that would need more). The mapping is work-conserving: nobody is capped,
/// so the reserved group may take more when the others idle, and the guarantee is a share of the
/// CPU the trial's parent cgroup receives. The weight becomes v1 `cpu.shares` = weight × 1024 / 100
/// and v2 `cpu.weight` = weight on the instance cgroup, which for a VM is its QEMU process's.
pub fn reserved_weight(groups: &[Group], group: &Group, cpu: Percent) -> u64 {
    let own = u64::from(group.weight) * 100;
    let others = other_weight(groups, group);
    let r = cpu.fraction();
    if others == 0 || !(r > 0.0 && r < 1.0) {
        return own;
    }
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "weights are small integers; the result is clamped to MAX_CPU_WEIGHT"
    )]
    let needed = (others as f64 * r / ((1.0 - r) * f64::from(group.count.max(1)))).ceil() as u64;
    own.max(needed).min(MAX_CPU_WEIGHT)
}

/// The total `cpu_weight` of every instance outside `group`.
fn other_weight(groups: &[Group], group: &Group) -> u64 {
    groups
        .iter()
        .filter(|g| g.name != group.name)
        .map(|g| u64::from(g.weight) * 100 * u64::from(g.count))
        .sum()
}

/// The CPU share `group` receives under full contention with the weight [`reserved_weight`]
/// gives it for a reservation of `cpu`; `None` when no other group competes.
pub fn reserved_share(groups: &[Group], group: &Group, cpu: Percent) -> Option<f64> {
    let others = other_weight(groups, group);
    if others == 0 {
        return None;
    }
    let mine = reserved_weight(groups, group, cpu) * u64::from(group.count);
    #[allow(clippy::cast_precision_loss, reason = "weights are small integers")]
    let share = mine as f64 / (mine + others) as f64;
    Some(share)
}
