//! The agent API's request, event and capability types, free of protobuf: what the agent's core
//! produces and what the coordinator reads, on both sides of the wire.

use std::collections::BTreeMap;
use std::fmt;

use isolab_model::pipeline::AnalysisKind;
use isolab_model::plan::{InstanceSpec, Trial};
use isolab_model::resolve::ResolvedPlatform;
use isolab_model::sample::Sample;
use isolab_model::units::HumanDuration;

/// One trial to run: what the coordinator sends in `RunTrial`.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialRequest {
    /// The run the trial belongs to.
    pub run_id: String,
    /// The trial, self-contained.
    pub trial: TrialSpec,
    /// Attempt number, 0 for the first try (retries count up).
    pub attempt: u32,
}

/// A trial as an agent runs it: the planner's [`Trial`] with its platform resolved, without
/// what only the coordinator needs (the platform as written, the matrix point, retries).
#[derive(Debug, Clone, PartialEq)]
pub struct TrialSpec {
    /// Content-derived id.
    pub id: String,
    /// Experiment name.
    pub experiment: String,
    /// How the experiment is analysed.
    pub analysis: AnalysisKind,
    /// Platform name.
    pub platform: String,
    /// The platform, every default applied: what the backends read.
    pub platform_spec: ResolvedPlatform,
    /// Measured repetition index.
    pub repetition: u32,
    /// Whether this is a warm-up.
    pub warmup: bool,
    /// The workload that names the trial.
    pub workload: String,
    /// The adversary of an isolation trial.
    pub adversary: Option<String>,
    /// Instances, started together.
    pub instances: Vec<InstanceSpec>,
    /// How long the workloads run.
    pub duration: HumanDuration,
    /// Wall-clock deadline for the whole trial.
    pub timeout: HumanDuration,
}

impl From<&Trial> for TrialSpec {
    /// What the agent would read from the wire for `trial` (in-process callers skip the wire).
    fn from(t: &Trial) -> Self {
        Self {
            id: t.id.clone(),
            experiment: t.experiment.clone(),
            analysis: t.analysis,
            platform: t.platform.clone(),
            platform_spec: t.resolved.clone(),
            repetition: t.repetition,
            warmup: t.warmup,
            workload: t.workload.clone(),
            adversary: t.adversary.clone(),
            instances: t.instances.clone(),
            duration: t.duration,
            timeout: t.timeout,
        }
    }
}

/// Where a trial is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrialState {
    /// Resources are being made (cgroups, bundles, network namespaces).
    Preparing,
    /// All instances were started.
    Running,
    /// Every instance ended well and nothing was left behind.
    Ok,
    /// Something failed; the message says what.
    Failed,
    /// Cancelled by a caller or by shutdown.
    Cancelled,
    /// The wall-clock deadline was hit and everything was killed.
    TimedOut,
}

impl TrialState {
    /// Whether the trial has ended.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Preparing | Self::Running)
    }

    /// The lower-case name used in logs and manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Preparing => "preparing",
            Self::Running => "running",
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
        }
    }
}

impl fmt::Display for TrialState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status change of a trial.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialStatus {
    /// The new state.
    pub state: TrialState,
    /// What happened, for people (empty when there is nothing to say).
    pub message: String,
    /// The host the trial runs on.
    pub host: String,
    /// The accelerator a VM backend used (`kvm`, `tcg`), if any.
    pub accel: Option<String>,
    /// What teardown found left behind; non-empty means the trial failed.
    pub leaks: Vec<String>,
}

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    /// The instance's standard output (lines that are not samples).
    Stdout,
    /// The instance's standard error.
    Stderr,
    /// A VM's console (kernel messages and the like).
    Console,
}

impl LogStream {
    /// The lower-case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::Console => "console",
        }
    }

    /// The inverse of [`LogStream::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Stdout, Self::Stderr, Self::Console]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// One event of a running trial, in the order the agent saw them.
#[derive(Debug, Clone, PartialEq)]
pub enum TrialEvent {
    /// The trial changed state; the last event of every trial is a final status.
    Status(TrialStatus),
    /// One measured value from one instance.
    Sample {
        /// Instance index.
        instance: u32,
        /// The value as the workload printed it.
        sample: Sample,
    },
    /// Cgroup statistics of one instance.
    Stats {
        /// Instance index.
        instance: u32,
        /// Seconds since the instances were started.
        t_offset_s: f64,
        /// The counters.
        stats: InstanceStats,
        /// True for the last statistics, taken after the instance stopped.
        final_: bool,
    },
    /// A line the instance printed that is not a sample.
    Log {
        /// Instance index.
        instance: u32,
        /// Where it was printed.
        stream: LogStream,
        /// The line, without its newline.
        text: String,
    },
    /// How busy the host was besides the trial while its instances ran.
    Noise(HostNoise),
}

/// The host's activity besides the trial while the trial's instances ran, as fractions of the
/// host's whole CPU capacity (all cores) over that span.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostNoise {
    /// Seconds from the instances' start to the end of the last one.
    pub span_s: f64,
    /// CPU time stolen by the hypervisor (`steal` in `/proc/stat`).
    pub steal_fraction: f64,
    /// CPU time used outside the trial's cgroups; `None` when an instance's CPU time is unknown.
    pub background_cpu_fraction: Option<f64>,
    /// CPU time of the agent's own process.
    pub agent_cpu_fraction: f64,
}

impl TrialEvent {
    /// The status, when this event is one.
    pub fn as_status(&self) -> Option<&TrialStatus> {
        match self {
            Self::Status(s) => Some(s),
            _ => None,
        }
    }
}

/// Facts about the host, as reported in capabilities and written to `env/<host>.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostInfo {
    /// Host name.
    pub hostname: String,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// Operating system (`PRETTY_NAME` of `/etc/os-release`).
    pub os: String,
    /// CPU model name.
    pub cpu_model: String,
    /// CPU flags.
    pub cpu_flags: Vec<String>,
    /// Online CPUs.
    pub cores: u32,
    /// Total memory.
    pub memory_bytes: u64,
    /// `v1` or `v2`.
    pub cgroup_version: String,
    /// The kernel's current clock source (`tsc`, `kvm-clock`…).
    pub clock_source: String,
    /// Machine architecture (`x86_64`).
    pub arch: String,
}

/// What this agent can do.
#[derive(Debug, Clone, PartialEq)]
pub struct Capabilities {
    /// The agent's version.
    pub agent_version: String,
    /// Facts about the host.
    pub host: HostInfo,
    /// Every backend and whether it works here.
    pub backends: Vec<BackendStatus>,
    /// The agent's labels.
    pub labels: BTreeMap<String, String>,
    /// Workloads it will run (the catalog).
    pub workloads: Vec<String>,
    /// Its host-wide budget; `None` from agents that do not report one.
    pub budget: Option<HostBudget>,
}

/// What all trials running on an agent together may hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostBudget {
    /// Sum of the memory limits of running instances.
    pub memory_bytes: u64,
    /// Sum of their `pids.max`.
    pub pids: u64,
    /// Sum of their scratch bytes (`/tmp` tmpfs sizes, VM disk images).
    pub disk_bytes: u64,
    /// Trials at once.
    pub max_trials: u64,
    /// Instances at once.
    pub max_instances: u64,
}

impl Capabilities {
    /// The status of the backend named `name`, if reported.
    pub fn backend(&self, name: &str) -> Option<&BackendStatus> {
        self.backends.iter().find(|b| b.name == name)
    }
}

/// Whether a backend works on this host, and why not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendStatus {
    /// Backend name (`native`, `container`, `vm`).
    pub name: String,
    /// Whether trials can run on it here.
    pub available: bool,
    /// Version of what implements it (agent, runtime, QEMU).
    pub version: String,
    /// Why it is not available (empty when it is).
    pub reason: String,
    /// Accelerator a VM backend would use (`kvm`, `tcg`), empty otherwise.
    pub accel: String,
}

impl BackendStatus {
    /// An unavailable backend with its reason.
    pub fn unavailable(name: &str, reason: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            reason: reason.into(),
            ..Self::default()
        }
    }
}

/// Version-neutral statistics of one instance's cgroup (hierarchical: children included).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct InstanceStats {
    /// User CPU time.
    pub cpu_user_ns: u64,
    /// System CPU time.
    pub cpu_system_ns: u64,
    /// Total CPU time (v1 cpuacct.usage; v2 usage_usec).
    pub cpu_usage_ns: u64,
    /// Memory in use now.
    pub memory_current_bytes: u64,
    /// Highest memory use seen (0 when the kernel does not track it).
    pub memory_peak_bytes: u64,
    /// Times the memory limit was hit (v1 failcnt / v2 `max` events).
    pub memory_limit_hits: u64,
    /// OOM events (v1: `oom_kill` of memory.oom_control, or `under_oom` on old kernels).
    pub oom_events: u64,
    /// Processes killed by the OOM killer.
    pub oom_kills: u64,
    /// Tasks now.
    pub pids_current: u64,
    /// Times a fork was refused by pids.max.
    pub pids_limit_hits: u64,
    /// Bytes read from block devices.
    pub io_read_bytes: u64,
    /// Bytes written to block devices.
    pub io_write_bytes: u64,
}
