//! Semantic rules of a pipeline, checked after the YAML has the right shape.
//!
//! [`check`] walks a [`Pipeline`] and returns every broken rule as an [`Issue`] naming the
//! path of the offending node (`experiments[0].workloads[1]`); [`validate`] turns issues into
//! [`Diagnostic`]s with positions taken from a [`LocationIndex`] of the file's text. Rules that
//! concern one experiment live in the `experiment` submodule; this file holds the pipeline-wide and
//! platform rules.

mod bounds;
mod experiment;
mod limits;
mod runtime;

pub use bounds::{
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_DURATION, DEFAULT_MAX_FORKS, DEFAULT_MAX_SIZE_BYTES,
    DEFAULT_MAX_THREADS, DEFAULT_MAX_TIMEOUT, NetContext, ParamBounds, check_dir, check_duration,
    check_host, check_param, check_timeout,
};
pub use limits::{MAX_INSTANCE_STARTS, MAX_TRIALS, Size, size};
pub use runtime::{
    AllowedArg, DEFAULT_RUNTIMES, allowed_runtime_args, check_runtime_arg, check_runtime_name,
    describe_allowed_args,
};

use std::collections::HashMap;

use crate::error::Diagnostic;
use crate::location::{At, LocationIndex, child};
use crate::pipeline::{API_VERSION, BackendKind, KIND, NetworkMode, Pipeline, Platform};
use crate::units::HumanDuration;

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// YAML path of the offending node, e.g. `platforms.vm.vcpus`.
    pub path: String,
    /// Whether the key or the value is at fault (decides the reported column).
    pub at: At,
    /// What is wrong and what was expected, lower-case, without the path.
    pub message: String,
}

impl Issue {
    /// `path: message`, or just the message for the document root.
    pub fn to_message(&self) -> String {
        if self.path.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.path, self.message)
        }
    }
}

/// QEMU machine types the vm backend knows.
pub const MACHINES: &[&str] = &["microvm", "q35"];

/// Highest `weight` of a fairness group: weights map to cgroup v2 `cpu.weight` as weight × 100,
/// whose maximum is 10000.
pub const MAX_GROUP_WEIGHT: u32 = 100;

/// Checks every rule and returns all broken ones (empty when the pipeline is valid).
pub fn check(p: &Pipeline) -> Vec<Issue> {
    let mut c = Checker::default();
    c.pipeline(p);
    c.issues
}

/// Checks `p` and places each broken rule in `file` using `index` (built from the same text).
/// The diagnostics are sorted in file order; each message starts with the node's path.
pub fn validate(file: &str, p: &Pipeline, index: &LocationIndex) -> Result<(), Vec<Diagnostic>> {
    let issues = check(p);
    if issues.is_empty() {
        return Ok(());
    }
    Err(to_diagnostics(file, &issues, index))
}

/// Places issues in `file` and sorts them by position (stable for issues at the same place).
pub fn to_diagnostics(file: &str, issues: &[Issue], index: &LocationIndex) -> Vec<Diagnostic> {
    let mut out: Vec<Diagnostic> = issues
        .iter()
        .map(|i| {
            let pos = index.locate(&i.path, i.at);
            Diagnostic::new(file, pos.line, pos.col, i.to_message())
        })
        .collect();
    out.sort_by_key(|d| (d.line, d.col));
    out
}

/// Whether `name` is a non-empty run of letters, digits, `-` and `_` (safe in file paths).
pub fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Accumulates issues.
#[derive(Default)]
struct Checker {
    issues: Vec<Issue>,
}

impl Checker {
    fn push(&mut self, path: impl Into<String>, at: At, message: impl Into<String>) {
        self.issues.push(Issue {
            path: path.into(),
            at,
            message: message.into(),
        });
    }

    fn identifier(&mut self, path: &str, what: &str, name: &str) {
        if name.is_empty() {
            self.push(path, At::Value, format!("{what} must not be empty"));
        } else if !is_identifier(name) {
            self.push(
                path,
                At::Value,
                format!("invalid {what} `{name}`: use only letters, digits, `-` and `_`"),
            );
        }
    }

    fn at_least_one(&mut self, path: &str, value: u64) {
        if value == 0 {
            self.push(path, At::Value, "must be at least 1, got 0");
        }
    }

    fn positive_duration(&mut self, path: &str, d: Option<HumanDuration>) {
        if d.is_some_and(|d| d.0.is_zero()) {
            self.push(path, At::Value, "must be longer than 0s");
        }
    }

    fn pipeline(&mut self, p: &Pipeline) {
        if p.api_version != API_VERSION {
            self.push(
                "apiVersion",
                At::Value,
                format!(
                    "unsupported value `{}` (expected `{API_VERSION}`)",
                    p.api_version
                ),
            );
        }
        if p.kind != KIND {
            self.push(
                "kind",
                At::Value,
                format!("unsupported value `{}` (expected `{KIND}`)", p.kind),
            );
        }
        self.identifier("name", "pipeline name", &p.name);
        self.defaults(p);
        if p.platforms.is_empty() {
            self.push("platforms", At::Key, "at least one platform is required");
        }
        for (name, platform) in &p.platforms {
            self.platform(&child("platforms", name), name, platform);
        }
        if p.experiments.is_empty() {
            self.push(
                "experiments",
                At::Key,
                "at least one experiment is required",
            );
        }
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (i, e) in p.experiments.iter().enumerate() {
            let path = format!("experiments[{i}]");
            if let Some(j) = first.get(e.name.as_str()) {
                self.push(
                    child(&path, "name"),
                    At::Value,
                    format!(
                        "duplicate experiment name `{}` (also used by experiments[{j}])",
                        e.name
                    ),
                );
            } else {
                first.insert(&e.name, i);
            }
            self.experiment(&path, e, p);
            self.bounds(&path, e, p);
        }
        self.plan_size(p);
    }

    fn defaults(&mut self, p: &Pipeline) {
        let d = &p.defaults;
        self.at_least_one("defaults.repetitions", d.repetitions.into());
        self.positive_duration("defaults.duration", Some(d.duration));
        self.positive_duration("defaults.timeout", d.timeout);
        self.default_bounds(p);
        if let Some(t) = d.timeout
            && !t.0.is_zero()
            && t <= d.duration
        {
            self.push(
                "defaults.timeout",
                At::Value,
                format!(
                    "must be longer than the duration ({}), or every trial times out",
                    d.duration
                ),
            );
        }
        if let Some(u) = &d.until_stable {
            if !(u.rel_ci95.is_finite() && u.rel_ci95 > 0.0) {
                self.push(
                    "defaults.until_stable.rel_ci95",
                    At::Value,
                    format!(
                        "must be greater than 0 (e.g. 0.02 for ±2%), got {}",
                        u.rel_ci95
                    ),
                );
            }
            if u.max_repetitions < d.repetitions {
                self.push(
                    "defaults.until_stable.max_repetitions",
                    At::Value,
                    format!(
                        "must be at least defaults.repetitions ({}), got {}",
                        d.repetitions, u.max_repetitions
                    ),
                );
            }
        }
    }

    fn platform(&mut self, path: &str, name: &str, pl: &Platform) {
        self.identifier(path, "platform name", name);
        let b = pl.backend;
        let only = |this: &mut Self, key: &str, set: bool, on: &[BackendKind]| {
            if set && !on.contains(&b) {
                let list: Vec<&str> = on.iter().map(|k| k.as_str()).collect();
                let names = match list.split_last() {
                    Some((last, rest)) if !rest.is_empty() => {
                        format!("{} and {last} backends", rest.join(", "))
                    }
                    _ => format!("{} backend", list.join("")),
                };
                this.push(
                    child(path, key),
                    At::Key,
                    format!("applies only to the {names}, not to {}", b.as_str()),
                );
            }
        };
        use BackendKind::{Container, Docker, Lxc, Vm};
        only(self, "vcpus", pl.vcpus.is_some(), &[Vm]);
        only(self, "memory", pl.memory.is_some(), &[Vm]);
        only(self, "accel", pl.accel.is_some(), &[Vm]);
        only(self, "machine", pl.machine.is_some(), &[Vm]);
        only(self, "runtime", pl.runtime.is_some(), &[Container, Docker]);
        only(
            self,
            "runtime_args",
            !pl.runtime_args.is_empty(),
            &[Container],
        );
        only(
            self,
            "rootfs",
            pl.rootfs.is_some(),
            &[Container, Docker, Lxc],
        );
        if b == Vm && pl.network == Some(NetworkMode::Host) {
            self.push(
                child(path, "network"),
                At::Value,
                "`host` is not possible for a vm (use `bridge` or `none`)",
            );
        }
        if let Some(v) = pl.vcpus {
            self.at_least_one(&child(path, "vcpus"), v.into());
        }
        if pl.memory.is_some_and(|m| m.get() == 0) {
            self.push(child(path, "memory"), At::Value, "must be larger than 0");
        } else if b == Vm
            && let Err(e) = crate::resolve::guest_memory_mib(pl.memory.map(|m| m.get()))
        {
            // What the agent would otherwise find only when the guest fails to boot.
            self.push(child(path, "memory"), At::Value, e.reason);
        }
        if let Some(m) = &pl.machine
            && !MACHINES.contains(&m.as_str())
        {
            self.push(
                child(path, "machine"),
                At::Value,
                format!(
                    "unknown machine type `{m}` (expected one of: {}){}",
                    MACHINES.join(", "),
                    crate::suggest::hint(m, MACHINES.iter().copied())
                ),
            );
        }
        if matches!(b, Container | Docker) {
            self.runtime(path, pl);
        }
        self.limits(&child(path, "limits"), pl);
    }

    /// A runtime name (never a path) and only allowlisted `runtime_args` (see `runtime.rs`).
    fn runtime(&mut self, path: &str, pl: &Platform) {
        if let Some(name) = &pl.runtime
            && let Err(e) = check_runtime_name(name)
        {
            self.push(child(path, "runtime"), At::Value, e);
        }
        if pl.backend != BackendKind::Container {
            return;
        }
        let name = pl
            .runtime
            .as_deref()
            .unwrap_or(crate::resolve::DEFAULT_RUNTIME);
        for (i, arg) in pl.runtime_args.iter().enumerate() {
            if let Err(e) = check_runtime_arg(name, arg) {
                self.push(
                    crate::location::index(&child(path, "runtime_args"), i),
                    At::Value,
                    e,
                );
            }
        }
    }

    fn limits(&mut self, path: &str, pl: &Platform) {
        let l = &pl.limits;
        if l.memory.is_some_and(|m| m.get() == 0) {
            self.push(child(path, "memory"), At::Value, "must be larger than 0");
        }
        if let Some(p) = l.pids {
            self.at_least_one(&child(path, "pids"), p);
        }
        for (key, v) in [("cpu_weight", l.cpu_weight), ("io_weight", l.io_weight)] {
            if let Some(v) = v
                && !(1..=10_000).contains(&v)
            {
                self.push(
                    child(path, key),
                    At::Value,
                    format!("must be between 1 and 10000, got {v}"),
                );
            }
        }
        if let Some(q) = l.cpu_quota
            && !(q.fraction().is_finite() && q.fraction() > 0.0)
        {
            self.push(
                child(path, "cpu_quota"),
                At::Value,
                format!("must be greater than 0%, got {q}"),
            );
        }
        if l.io_bps.is_some_and(|b| b.get() == 0) {
            self.push(child(path, "io_bps"), At::Value, "must be larger than 0");
        }
        if let Some(set) = &l.cpuset
            && !is_cpuset(set)
        {
            self.push(
                child(path, "cpuset"),
                At::Value,
                format!("invalid cpuset `{set}` (expected CPU numbers and ranges such as `0-1` or `0,2`)"),
            );
        }
    }
}

/// Whether `s` is cpuset list syntax: `0`, `0-3`, `0,2-3`.
fn is_cpuset(s: &str) -> bool {
    !s.is_empty()
        && s.split(',').all(|part| {
            let mut ends = part.trim().splitn(2, '-').map(str::parse::<u32>);
            match (ends.next(), ends.next()) {
                (Some(Ok(_)), None) => true,
                (Some(Ok(lo)), Some(Ok(hi))) => lo <= hi,
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(is_identifier("micro-1_b"));
        assert!(!is_identifier(""));
        assert!(!is_identifier("a b"));
        assert!(!is_identifier("a/b"));
    }

    #[test]
    fn cpusets() {
        assert!(is_cpuset("0"));
        assert!(is_cpuset("0-1,3"));
        assert!(!is_cpuset("1-0"));
        assert!(!is_cpuset("a"));
        assert!(!is_cpuset(""));
        assert!(!is_cpuset("0,"));
    }
}
