//! The pipeline file format (`apiVersion: isolab/v1`, `kind: Pipeline`).
//!
//! These types mirror the YAML one to one; every struct denies unknown keys so that a typo is an
//! error with a position rather than a silently ignored setting. Rules that involve more than one
//! field (a platform name that must exist, a field that applies only to one backend) live in
//! [`crate::validate`].

use std::collections::BTreeMap;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::{Bytes, HumanDuration, Percent};

mod de;

/// The only `apiVersion` this version of isolab reads.
pub const API_VERSION: &str = "isolab/v1";
/// The only `kind` this version of isolab reads.
pub const KIND: &str = "Pipeline";

/// A whole pipeline: platforms to compare and experiments to run on them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Pipeline {
    /// Must be `isolab/v1`.
    #[schemars(extend("const" = API_VERSION))]
    pub api_version: String,
    /// Must be `Pipeline`.
    #[schemars(extend("const" = KIND))]
    pub kind: String,
    /// Name of the pipeline (letters, digits, `-`, `_`), part of every run id.
    pub name: String,
    /// Free text shown in reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Settings every experiment inherits unless it overrides them.
    #[serde(default)]
    pub defaults: Defaults,
    /// Named platforms: how an instance is isolated.
    pub platforms: IndexMap<String, Platform>,
    /// The experiments, run in file order.
    pub experiments: Vec<Experiment>,
    /// Named sets of overrides chosen with `--profile NAME` (e.g. `quick` for CI): dotted keys
    /// as in `--set` (`defaults.duration`, `experiments.scale.matrix.instances`) mapped to YAML
    /// values. A profile is applied before the user's `--set`s.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub profiles: IndexMap<String, IndexMap<String, serde_json::Value>>,
}

/// Settings inherited by every experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Measured repetitions of every trial (at least 1).
    #[serde(default = "default_repetitions")]
    pub repetitions: u32,
    /// Unmeasured warm-up repetitions run before the measured ones.
    #[serde(default)]
    pub warmup: u32,
    /// How long each workload runs (workloads that count iterations ignore it).
    #[serde(default = "default_duration")]
    pub duration: HumanDuration,
    /// Wall-clock deadline of a trial; default: duration × 3 + 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Keep repeating until the 95% CI of the median is tight enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_stable: Option<UntilStable>,
    /// How often a failed trial is retried before it counts as failed.
    #[serde(default)]
    pub retries: u32,
    /// The order trials run in (default `random`: randomized multiple interleaved trials).
    #[serde(default)]
    pub order: TrialOrder,
    /// Seed of the `random` order; absent: `isolab run` draws one and records it in the
    /// manifest, so `--resume` and a re-run can keep the same order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// The order in which the trials of an experiment run. Experiments always run in file order.
///
/// Execution order is part of the method: on a shared host, drift over minutes (a neighbour's
/// load, CPU frequency, page cache) becomes a platform effect when one platform's trials all run
/// before another's. Randomized multiple interleaved trials (Abedi and Brecht, ICPE 2017) remove
/// it: round r runs repetition r of every cell (platform × workload × parameters × instances).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrialOrder {
    /// Round r runs repetition r of every cell, in an order shuffled anew for each round by a
    /// seeded generator; warm-ups form the first rounds.
    #[default]
    Random,
    /// Rounds as in `random`, each round in the same fixed order (the file's).
    Interleaved,
    /// Every repetition of one cell back to back, cells in file order (for the rare experiment
    /// that needs it; drift then shows up as a platform effect).
    Blocked,
}

impl TrialOrder {
    /// The lower-case name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Random => "random",
            Self::Interleaved => "interleaved",
            Self::Blocked => "blocked",
        }
    }
}

fn default_repetitions() -> u32 {
    3
}
fn default_duration() -> HumanDuration {
    HumanDuration::from_millis(2000)
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            repetitions: default_repetitions(),
            warmup: 0,
            duration: default_duration(),
            timeout: None,
            until_stable: None,
            retries: 0,
            order: TrialOrder::default(),
            seed: None,
        }
    }
}

/// Adaptive repetition: stop once the relative 95% CI half-width of the median is below
/// `rel_ci95`, or at `max_repetitions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UntilStable {
    /// Target relative half-width of the 95% confidence interval (e.g. 0.02 = ±2%).
    pub rel_ci95: f64,
    /// Upper bound on measured repetitions.
    pub max_repetitions: u32,
}

/// How instances are isolated.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// A plain process in an accounting cgroup: the baseline.
    Native,
    /// An OCI bundle run by an OCI runtime (runc, crun, youki, runsc).
    Container,
    /// A QEMU virtual machine with the workload as `/init`.
    Vm,
    /// A Docker Engine container.
    Docker,
    /// An LXC system container.
    Lxc,
}

impl BackendKind {
    /// The lower-case name used in files and columns.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Container => "container",
            Self::Vm => "vm",
            Self::Docker => "docker",
            Self::Lxc => "lxc",
        }
    }
}

/// Virtual machine accelerator choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Accel {
    /// KVM when a probe VM boots on it, else TCG.
    #[default]
    Auto,
    /// KVM or fail.
    Kvm,
    /// QEMU's software emulation.
    Tcg,
}

/// Network attachment of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// Loopback only.
    #[default]
    None,
    /// The host's network namespace (containers only).
    Host,
    /// A veth/tap on a bridge inside a per-trial network namespace.
    Bridge,
}

/// Container root filesystem flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RootfsKind {
    /// Only the static workload binary and `/proc`, `/dev` basics.
    #[default]
    Minimal,
    /// Read-only binds of the host's `/usr`, `/lib*`, `/bin`.
    HostRo,
}

/// Resource limits applied to each instance (cgroup for native and containers, the QEMU
/// process's cgroup for VMs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Memory limit (swap off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Bytes>,
    /// Maximum number of processes/threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// Relative CPU weight, 1..=10000 (v2 `cpu.weight` scale; v1 shares = weight × 1024 / 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u64>,
    /// Hard CPU cap as a share of one CPU (`50%`) or several (`200%`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<Percent>,
    /// CPUs the instance may run on, cpuset syntax (`0-1`, `0,2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<String>,
    /// Relative block I/O weight, 1..=10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_weight: Option<u64>,
    /// Block I/O bandwidth cap per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_bps: Option<Bytes>,
}

/// A named platform: backend plus its settings. Fields that do not apply to the chosen backend
/// are rejected by validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Platform {
    /// How instances are isolated.
    pub backend: BackendKind,
    /// OCI runtime by name (container and docker backends): `runc` (default), `crun`, `youki`,
    /// `runsc`, or another name the agent is configured with; never a path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Extra arguments for the runtime, from a per-runtime allowlist (runsc:
    /// `--platform=ptrace|systrap|kvm`; none for the others).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtime_args: Vec<String>,
    /// Container root filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<RootfsKind>,
    /// Network attachment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkMode>,
    /// Resource limits per instance.
    #[serde(default)]
    pub limits: Limits,
    /// Virtual CPUs (vm backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    /// Guest memory (vm backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Bytes>,
    /// Accelerator (vm backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel: Option<Accel>,
    /// QEMU machine type (vm backend): `microvm` (default) or `q35`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
}

/// What an experiment measures, and so how the analyzer reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnalysisKind {
    /// Each workload on each platform, relative to native.
    Overhead,
    /// Throughput versus instance count.
    Scaling,
    /// CPU share received versus entitled.
    Fairness,
    /// Victim degradation under each adversary.
    Isolation,
}

impl AnalysisKind {
    /// The lower-case name used in files and columns.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Overhead => "overhead",
            Self::Scaling => "scaling",
            Self::Fairness => "fairness",
            Self::Isolation => "isolation",
        }
    }
}

/// A parameter value given to a workload (`--param key=value`).
///
/// Deserialized by hand (not `untagged`) so that a wrong type is reported at its position with
/// what was expected.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ParamValue {
    /// A whole number.
    Int(i64),
    /// A real number.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// Anything else, passed as written (`10s`, `4KiB`).
    Str(String),
}

impl std::fmt::Display for ParamValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Int(v) => write!(f, "{v}"),
            Self::Float(v) => write!(f, "{v}"),
            Self::Bool(v) => write!(f, "{v}"),
            Self::Str(v) => f.write_str(v),
        }
    }
}

/// Workload parameters, sorted by name so that ids derived from them are stable.
pub type Params = BTreeMap<String, ParamValue>;

/// A workload by name, optionally with parameters: `syscall` or `{ name: syscall, params: {…} }`.
///
/// Deserialized by hand (not `untagged`) so that an unknown key inside the mapping form is
/// reported as such, with its position.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum WorkloadRef {
    /// Just the name.
    Name(String),
    /// Name and parameters.
    Full(WorkloadSpec),
}

/// A workload with parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Workload name from the catalog.
    pub name: String,
    /// Parameters passed as `--param k=v`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: Params,
}

impl WorkloadRef {
    /// The workload's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Name(n) => n,
            Self::Full(s) => &s.name,
        }
    }

    /// The workload's parameters (empty for a bare name).
    pub fn params(&self) -> Params {
        match self {
            Self::Name(_) => Params::new(),
            Self::Full(s) => s.params.clone(),
        }
    }
}

/// The parameter sweep of an experiment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Matrix {
    /// Instance counts to run (scaling).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<u32>,
    /// Workload parameter values to sweep: every combination becomes its own trial.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, Vec<ParamValue>>,
}

/// A group of instances with one CPU weight (fairness).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Group name, unique within the experiment.
    pub name: String,
    /// Number of instances in the group (at least 1).
    pub count: u32,
    /// Relative CPU weight of each instance in the group.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// A guaranteed CPU share for one group (fairness).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reservation {
    /// The group that must receive at least `cpu`.
    pub group: String,
    /// Its guaranteed share of the machine's CPU.
    pub cpu: Percent,
}

/// Where an experiment's trials may run (multi-host).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// Spread trials across values of this agent label (e.g. `rack`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_by: Option<String>,
    /// Pack trials onto as few agents as possible.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pack: bool,
    /// Run only on this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// One experiment: which platforms, which workloads, how they are combined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Experiment name, unique in the pipeline.
    pub name: String,
    /// How results are analysed; also decides which keys below are required.
    pub analysis: AnalysisKind,
    /// Names of platforms from the `platforms` map.
    pub platforms: Vec<String>,
    /// Workloads (overhead): each runs on each platform.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<WorkloadRef>,
    /// The single workload (scaling, fairness).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadRef>,
    /// Parameter sweep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrix: Option<Matrix>,
    /// Instance groups (fairness).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<Group>,
    /// CPU reservation (fairness).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<Reservation>,
    /// Victim workload (isolation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub victim: Option<WorkloadRef>,
    /// Adversaries (isolation); `none` is the baseline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adversaries: Vec<String>,
    /// Instances per trial when no matrix is given (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<u32>,
    /// Overrides `defaults.repetitions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetitions: Option<u32>,
    /// Overrides `defaults.warmup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<u32>,
    /// Overrides `defaults.duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<HumanDuration>,
    /// Overrides `defaults.timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Where trials may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// Overrides `defaults.order`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<TrialOrder>,
    /// The platform every other is compared with (overhead); default: the first listed platform
    /// whose backend is `native`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
}

impl Experiment {
    /// The baseline platform: `baseline` when set, else the first listed platform whose backend
    /// is `native`; `None` when there is neither.
    pub fn baseline_platform<'a>(&'a self, p: &'a Pipeline) -> Option<&'a str> {
        if let Some(b) = &self.baseline {
            return Some(b);
        }
        self.platforms
            .iter()
            .find(|name| {
                p.platforms
                    .get(*name)
                    .is_some_and(|spec| spec.backend == BackendKind::Native)
            })
            .map(String::as_str)
    }

    /// The order this experiment's trials run in.
    pub fn trial_order(&self, p: &Pipeline) -> TrialOrder {
        self.order.unwrap_or(p.defaults.order)
    }
}
