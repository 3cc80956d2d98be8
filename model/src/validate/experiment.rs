//! Rules for one experiment: platform and workload references, counts, the matrix, fairness
//! groups, and which keys each analysis needs or does not accept.

use std::collections::HashSet;

use super::{Checker, MAX_GROUP_WEIGHT};
use crate::catalog::{self, WorkloadInfo, WorkloadKind};
use crate::location::{At, child, index};
use crate::pipeline::{AnalysisKind, Experiment, Pipeline, WorkloadRef};
use crate::suggest;

use AnalysisKind::{Fairness, Isolation, Overhead, Scaling};

/// Keys whose presence depends on the analysis: the key, the analyses that accept it, whether
/// those analyses require it, and an example for the error message.
const ANALYSIS_KEYS: &[(&str, &[AnalysisKind], bool, &str)] = &[
    (
        "workloads",
        &[Overhead],
        true,
        "a list of benchmarks, e.g. `[syscall, fork_exit]`",
    ),
    (
        "workload",
        &[Scaling, Fairness],
        true,
        "the benchmark every instance runs, e.g. `cpu_spin`",
    ),
    (
        "matrix.instances",
        &[Scaling],
        true,
        "the instance counts to run, e.g. `matrix: { instances: [1, 2, 4] }`",
    ),
    (
        "groups",
        &[Fairness],
        true,
        "e.g. `[{ name: a, count: 1, weight: 1 }]`",
    ),
    ("reservation", &[Fairness], false, ""),
    (
        "victim",
        &[Isolation],
        true,
        "the measured benchmark, e.g. `syscall`",
    ),
    ("adversaries", &[Isolation], true, "e.g. `[none, cpu_hog]`"),
    ("instances", &[Overhead], false, ""),
    ("baseline", &[Overhead], false, ""),
];

/// Whether the experiment sets `key` (one of [`ANALYSIS_KEYS`]).
fn present(e: &Experiment, key: &str) -> bool {
    match key {
        "workloads" => !e.workloads.is_empty(),
        "workload" => e.workload.is_some(),
        "matrix.instances" => e.matrix.as_ref().is_some_and(|m| !m.instances.is_empty()),
        "groups" => !e.groups.is_empty(),
        "reservation" => e.reservation.is_some(),
        "victim" => e.victim.is_some(),
        "adversaries" => !e.adversaries.is_empty(),
        "instances" => e.instances.is_some(),
        "baseline" => e.baseline.is_some(),
        _ => false,
    }
}

/// Catalog names of one kind, for "expected one of" lists.
fn names_of(kind: WorkloadKind) -> Vec<&'static str> {
    catalog::WORKLOADS
        .iter()
        .filter(|w| w.kind == kind)
        .map(|w| w.name)
        .collect()
}

/// The name of the baseline adversary (no attacker).
const NO_ADVERSARY: &str = "none";

impl Checker {
    pub(super) fn experiment(&mut self, path: &str, e: &Experiment, p: &Pipeline) {
        self.identifier(&child(path, "name"), "experiment name", &e.name);
        self.platform_refs(path, e, p);
        self.analysis_keys(path, e);

        let workloads = child(path, "workloads");
        let mut seen = Vec::new();
        for (j, w) in e.workloads.iter().enumerate() {
            let wp = index(&workloads, j);
            self.workload(&wp, w);
            let key = (w.name(), w.params());
            if let Some(k) = seen.iter().position(|s| *s == key) {
                self.push(
                    wp,
                    At::Value,
                    format!(
                        "duplicate workload `{}` (same parameters as workloads[{k}])",
                        w.name()
                    ),
                );
            } else {
                seen.push(key);
            }
        }
        if let Some(w) = &e.workload {
            self.workload(&child(path, "workload"), w);
        }
        if let Some(w) = &e.victim {
            self.workload(&child(path, "victim"), w);
        }
        self.adversaries(path, e);
        self.counts(path, e, p);
        self.matrix(path, e);
        self.groups(path, e);
        if let Some(pl) = &e.placement {
            let pp = child(path, "placement");
            if pl.pack && pl.spread_by.is_some() {
                self.push(
                    child(&pp, "pack"),
                    At::Key,
                    "`pack` and `spread_by` exclude each other",
                );
            }
            for (key, v) in [("spread_by", &pl.spread_by), ("host", &pl.host)] {
                if v.as_deref().is_some_and(|s| s.trim().is_empty()) {
                    self.push(child(&pp, key), At::Value, "must not be empty");
                }
            }
        }
    }

    fn platform_refs(&mut self, path: &str, e: &Experiment, p: &Pipeline) {
        let list = child(path, "platforms");
        let defined: Vec<&str> = p.platforms.keys().map(String::as_str).collect();
        if e.platforms.is_empty() {
            self.push(
                &list,
                At::Value,
                format!(
                    "at least one platform is required (defined: {})",
                    defined.join(", ")
                ),
            );
        }
        let mut seen = HashSet::new();
        for (j, name) in e.platforms.iter().enumerate() {
            if !p.platforms.contains_key(name) {
                self.push(
                    index(&list, j),
                    At::Value,
                    format!(
                        "unknown platform `{name}` (defined: {}){}",
                        defined.join(", "),
                        suggest::hint(name, defined.iter().copied())
                    ),
                );
            } else if !seen.insert(name) {
                self.push(
                    index(&list, j),
                    At::Value,
                    format!("platform `{name}` is listed twice"),
                );
            }
        }
        if let Some(b) = &e.baseline
            && !e.platforms.contains(b)
        {
            self.push(
                child(path, "baseline"),
                At::Value,
                format!(
                    "baseline `{b}` is not one of this experiment's platforms ({}){}",
                    e.platforms.join(", "),
                    suggest::hint(b, e.platforms.iter().map(String::as_str))
                ),
            );
        }
    }

    fn analysis_keys(&mut self, path: &str, e: &Experiment) {
        for &(key, accepted_by, required, example) in ANALYSIS_KEYS {
            let accepted = accepted_by.contains(&e.analysis);
            if accepted && required && !present(e, key) {
                self.push(
                    child(path, "analysis"),
                    At::Value,
                    format!(
                        "{} experiments need `{key}`: {example}",
                        e.analysis.as_str()
                    ),
                );
            } else if !accepted && present(e, key) {
                let owners: Vec<&str> = accepted_by.iter().map(|a| a.as_str()).collect();
                self.push(
                    child(path, key),
                    At::Key,
                    format!(
                        "does not apply to {} experiments (only to {})",
                        e.analysis.as_str(),
                        owners.join(" and ")
                    ),
                );
            }
        }
    }

    /// Checks a benchmark reference; returns its catalog entry when it is one.
    fn workload(&mut self, path: &str, w: &WorkloadRef) -> Option<&'static WorkloadInfo> {
        let name = w.name();
        let name_path = match w {
            WorkloadRef::Name(_) => path.to_owned(),
            WorkloadRef::Full(_) => child(path, "name"),
        };
        let benchmarks = names_of(WorkloadKind::Benchmark);
        let info = match catalog::find(name) {
            Some(info) if info.kind == WorkloadKind::Benchmark => info,
            Some(_) => {
                self.push(
                    name_path,
                    At::Value,
                    format!(
                        "`{name}` is an adversary, not a benchmark; adversaries go in \
                         `adversaries` of an isolation experiment"
                    ),
                );
                return None;
            }
            None if name == NO_ADVERSARY => {
                self.push(
                    name_path,
                    At::Value,
                    "`none` is only allowed in `adversaries` of an isolation experiment",
                );
                return None;
            }
            None => {
                self.push(
                    name_path,
                    At::Value,
                    format!(
                        "unknown workload `{name}` (expected one of: {}){}",
                        benchmarks.join(", "),
                        suggest::hint(name, benchmarks.iter().copied())
                    ),
                );
                return None;
            }
        };
        if let WorkloadRef::Full(spec) = w {
            let accepted: Vec<&str> = info.params.iter().map(|p| p.name).collect();
            for key in spec
                .params
                .keys()
                .filter(|k| !accepted.contains(&k.as_str()))
            {
                self.push(
                    child(&child(path, "params"), key),
                    At::Key,
                    format!(
                        "unknown parameter `{key}` for workload `{name}` (expected one of: {}){}",
                        accepted.join(", "),
                        suggest::hint(key, accepted.iter().copied())
                    ),
                );
            }
        }
        Some(info)
    }

    fn adversaries(&mut self, path: &str, e: &Experiment) {
        let list = child(path, "adversaries");
        let mut expected = vec![NO_ADVERSARY];
        expected.extend(names_of(WorkloadKind::Adversary));
        let mut seen = HashSet::new();
        for (j, a) in e.adversaries.iter().enumerate() {
            let ap = index(&list, j);
            let known = a == NO_ADVERSARY
                || catalog::find(a).is_some_and(|w| w.kind == WorkloadKind::Adversary);
            if !known {
                let what = if catalog::find(a).is_some() {
                    format!("`{a}` is a benchmark, not an adversary")
                } else {
                    format!("unknown adversary `{a}`")
                };
                self.push(
                    ap,
                    At::Value,
                    format!(
                        "{what} (expected one of: {}){}",
                        expected.join(", "),
                        suggest::hint(a, expected.iter().copied())
                    ),
                );
            } else if !seen.insert(a) {
                self.push(ap, At::Value, format!("adversary `{a}` is listed twice"));
            }
        }
    }

    fn counts(&mut self, path: &str, e: &Experiment, p: &Pipeline) {
        if let Some(n) = e.instances {
            self.at_least_one(&child(path, "instances"), n.into());
        }
        if let Some(r) = e.repetitions {
            let rp = child(path, "repetitions");
            self.at_least_one(&rp, r.into());
            if let Some(u) = &p.defaults.until_stable
                && r > u.max_repetitions
            {
                self.push(
                    rp,
                    At::Value,
                    format!(
                        "{r} is more than defaults.until_stable.max_repetitions ({})",
                        u.max_repetitions
                    ),
                );
            }
        }
        self.positive_duration(&child(path, "duration"), e.duration);
        self.positive_duration(&child(path, "timeout"), e.timeout);
        if e.duration.is_some() || e.timeout.is_some() {
            let duration = e.duration.unwrap_or(p.defaults.duration);
            if let Some(t) = e.timeout.or(p.defaults.timeout)
                && !t.0.is_zero()
                && t <= duration
            {
                let key = if e.timeout.is_some() {
                    "timeout"
                } else {
                    "duration"
                };
                self.push(
                    child(path, key),
                    At::Value,
                    format!(
                        "the timeout ({t}) must be longer than the duration ({duration}), \
                         or every trial times out"
                    ),
                );
            }
        }
    }

    fn matrix(&mut self, path: &str, e: &Experiment) {
        let Some(m) = &e.matrix else { return };
        let mp = child(path, "matrix");
        let list = child(&mp, "instances");
        let mut seen = HashSet::new();
        for (k, &n) in m.instances.iter().enumerate() {
            self.at_least_one(&index(&list, k), n.into());
            if !seen.insert(n) {
                self.push(
                    index(&list, k),
                    At::Value,
                    format!("instance count {n} is listed twice"),
                );
            }
        }
        let targets: Vec<&WorkloadRef> = match e.analysis {
            Overhead => e.workloads.iter().collect(),
            Scaling | Fairness => e.workload.iter().collect(),
            Isolation => e.victim.iter().collect(),
        };
        let params = child(&mp, "params");
        for (key, values) in &m.params {
            let kp = child(&params, key);
            if values.is_empty() {
                self.push(&kp, At::Value, "needs at least one value");
            }
            for (k, v) in values.iter().enumerate() {
                if values[..k].contains(v) {
                    self.push(
                        index(&kp, k),
                        At::Value,
                        format!("value `{v}` is listed twice"),
                    );
                }
            }
            for w in &targets {
                let Some(info) = catalog::find(w.name()) else {
                    continue;
                };
                if info.kind != WorkloadKind::Benchmark {
                    continue;
                }
                let accepted: Vec<&str> = info.params.iter().map(|p| p.name).collect();
                if !accepted.contains(&key.as_str()) {
                    self.push(
                        &kp,
                        At::Key,
                        format!(
                            "parameter `{key}` is not accepted by workload `{}` (it accepts: {}){}",
                            info.name,
                            accepted.join(", "),
                            suggest::hint(key, accepted.iter().copied())
                        ),
                    );
                } else if w.params().contains_key(key) {
                    self.push(
                        &kp,
                        At::Key,
                        format!(
                            "`{key}` is swept here and also set in the params of workload `{}`; \
                             set it in one place",
                            info.name
                        ),
                    );
                }
            }
        }
    }

    fn groups(&mut self, path: &str, e: &Experiment) {
        let list = child(path, "groups");
        let mut names = Vec::new();
        for (j, g) in e.groups.iter().enumerate() {
            let gp = index(&list, j);
            self.identifier(&child(&gp, "name"), "group name", &g.name);
            if names.contains(&g.name.as_str()) {
                self.push(
                    child(&gp, "name"),
                    At::Value,
                    format!("duplicate group name `{}`", g.name),
                );
            } else {
                names.push(&g.name);
            }
            self.at_least_one(&child(&gp, "count"), g.count.into());
            if !(1..=MAX_GROUP_WEIGHT).contains(&g.weight) {
                self.push(
                    child(&gp, "weight"),
                    At::Value,
                    format!(
                        "must be between 1 and {MAX_GROUP_WEIGHT} (cpu.weight = weight × 100), got {}",
                        g.weight
                    ),
                );
            }
        }
        if let Some(r) = &e.reservation {
            let rp = child(path, "reservation");
            if !e.groups.is_empty() && !names.contains(&r.group.as_str()) {
                self.push(
                    child(&rp, "group"),
                    At::Value,
                    format!(
                        "unknown group `{}` (groups: {}){}",
                        r.group,
                        names.join(", "),
                        suggest::hint(&r.group, names.iter().copied())
                    ),
                );
            }
            let cpu = r.cpu.fraction();
            if !(cpu.is_finite() && cpu > 0.0 && cpu <= 1.0) {
                self.push(
                    child(&rp, "cpu"),
                    At::Value,
                    format!("must be greater than 0% and at most 100%, got {}", r.cpu),
                );
            } else if let Some(g) = e.groups.iter().find(|g| g.name == r.group)
                && e.groups
                    .iter()
                    .all(|g| g.count >= 1 && (1..=MAX_GROUP_WEIGHT).contains(&g.weight))
            {
                let share = crate::plan::reserved_share(&e.groups, g, r.cpu);
                if share.is_some_and(|share| share + 1e-9 < cpu) {
                    self.push(
                        child(&rp, "cpu"),
                        At::Value,
                        format!(
                            "{} cannot be guaranteed through CPU weights: group `{}` would need a \
                             cpu.weight above {} per instance; lower the reservation, or the other \
                             groups' counts or weights",
                            r.cpu,
                            g.name,
                            crate::plan::MAX_CPU_WEIGHT
                        ),
                    );
                }
            }
        }
    }
}
