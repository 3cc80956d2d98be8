//! The run manifest (`results/<run_id>/manifest.json`): what was asked, what ran, what failed.
//!
//! Written atomically by the coordinator after every trial, so a crash leaves the last consistent
//! state; the analyzer and `isolab run --resume` read it.

use serde::{Deserialize, Serialize};

/// Version of the manifest format.
pub const MANIFEST_VERSION: u32 = 1;

/// State of a whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Trials are still being run (or the coordinator died while running them).
    Running,
    /// Every trial finished `ok`.
    Ok,
    /// At least one trial failed.
    Failed,
    /// Stopped by a signal or cancel before all trials ran.
    Interrupted,
}

/// State of one trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialState {
    /// Not run yet.
    Pending,
    /// Dispatched to an agent.
    Running,
    /// Finished; its Parquet file is complete.
    Ok,
    /// Failed (see `reason`).
    Failed,
    /// Hit its wall-clock deadline.
    TimedOut,
    /// Cancelled by the user.
    Cancelled,
    /// Not run because the run was interrupted.
    NotRun,
}

impl TrialState {
    /// The lower-case name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
            Self::NotRun => "not_run",
        }
    }
}

/// Why a group of repetitions has as many repetitions as it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The pipeline asked for a fixed number of repetitions (no `until_stable`).
    Fixed,
    /// `until_stable`: the relative half-width of the 95% CI of the median reached the target.
    CiWithinTarget,
    /// `until_stable`: the CI stayed wider than the target up to `max_repetitions`.
    MaxRepetitions,
    /// `until_stable`: no repetition produced the primary metric (all failed), so no CI exists.
    NoValues,
}

impl StopReason {
    /// The lower-case name used in files and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fixed => "fixed",
            Self::CiWithinTarget => "ci_within_target",
            Self::MaxRepetitions => "max_repetitions",
            Self::NoValues => "no_values",
        }
    }
}

/// The measured repetitions of one (experiment, platform, workload, matrix point): how many
/// there were and why they stopped there. With `until_stable` the coordinator keeps adding
/// repetitions while the primary metric's 95% CI is too wide; `values` and `rel_ci95` are what
/// it decided on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepetitionGroup {
    /// Experiment name.
    pub experiment: String,
    /// Platform name.
    pub platform: String,
    /// Workload naming the trials.
    pub workload: String,
    /// Adversary (isolation).
    #[serde(default)]
    pub adversary: Option<String>,
    /// Instances per trial.
    pub n_instances: u32,
    /// The matrix point's workload parameters (canonical JSON).
    #[serde(default)]
    pub params: String,
    /// Measured trial ids, in repetition order (planned and added).
    pub trials: Vec<String>,
    /// Why the group has `trials.len()` repetitions; `None` while it is still being decided
    /// (trials running, or the run was interrupted first).
    #[serde(default)]
    pub stop_reason: Option<StopReason>,
    /// `until_stable` target: relative half-width of the 95% CI.
    #[serde(default)]
    pub target_rel_ci95: Option<f64>,
    /// `until_stable` bound on repetitions.
    #[serde(default)]
    pub max_repetitions: Option<u32>,
    /// The primary metric the CI is taken of (the workload's first headline summary value).
    #[serde(default)]
    pub metric: Option<String>,
    /// Its value per finished repetition (mean over the instances reporting it), in finishing
    /// order.
    #[serde(default)]
    pub values: Vec<f64>,
    /// Relative half-width of the 95% bootstrap CI of the median of `values` at the last
    /// decision.
    #[serde(default)]
    pub rel_ci95: Option<f64>,
}

/// One experiment as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentRecord {
    /// Experiment name.
    pub name: String,
    /// Analysis kind.
    pub analysis: String,
    /// Platform names.
    pub platforms: Vec<String>,
    /// The platform the others are compared with (overhead experiments), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    /// The order the experiment's trials ran in (`random`, `interleaved`, `blocked`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
}

/// One trial as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialRecord {
    /// Content-derived trial id.
    pub id: String,
    /// Experiment name.
    pub experiment: String,
    /// Platform name.
    pub platform: String,
    /// Backend kind.
    pub backend: String,
    /// Workload naming the trial.
    pub workload: String,
    /// Adversary (isolation).
    #[serde(default)]
    pub adversary: Option<String>,
    /// Measured repetition index.
    pub repetition: u32,
    /// Warm-up trials are run but not recorded as data.
    pub warmup: bool,
    /// Instances in the trial.
    pub n_instances: u32,
    /// Current state.
    pub status: TrialState,
    /// Attempts made so far.
    pub attempts: u32,
    /// Host that ran the last attempt.
    #[serde(default)]
    pub host: Option<String>,
    /// Accelerator used (VMs).
    #[serde(default)]
    pub accel: Option<String>,
    /// Why the trial failed, timed out or was cancelled.
    #[serde(default)]
    pub reason: Option<String>,
    /// Parquet file of the trial, relative to the run directory.
    #[serde(default)]
    pub file: Option<String>,
    /// Rows written.
    #[serde(default)]
    pub rows: u64,
    /// Wall-clock duration of the last attempt.
    #[serde(default)]
    pub duration_ms: u64,
    /// What teardown found left behind.
    #[serde(default)]
    pub leaks: Vec<String>,
    /// Round of the trial in its experiment's execution order (warm-ups first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u32>,
    /// RFC 3339 time (UTC, milliseconds) the last attempt was dispatched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// RFC 3339 time (UTC, milliseconds) the last attempt ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// What else decides the numbers besides the pipeline: the build of isolab and the binaries
/// the run used, as seen on the coordinator's host (the embedded agent's, in a local run).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildRecord {
    /// isolab version (Cargo).
    pub isolab_version: String,
    /// Git commit isolab was built from (`-dirty` with uncommitted changes; `unknown` outside
    /// git).
    pub git_commit: String,
    /// SHA-256 (hex) of each binary used: `isolab-workload`, `guest-kernel`, and each runtime
    /// by name (`runc`, `runsc`, `qemu-system-x86_64`, `docker`, `lxc-start`).
    #[serde(default)]
    pub sha256: std::collections::BTreeMap<String, String>,
    /// Binaries that were looked for but not found, with why.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub missing: std::collections::BTreeMap<String, String>,
}

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_VERSION`].
    pub format_version: u32,
    /// Run id (`<pipeline>-<UTC timestamp>-<short random>`).
    pub run_id: String,
    /// Pipeline name.
    pub pipeline_name: String,
    /// Path of the pipeline file as given.
    pub pipeline_file: String,
    /// SHA-256 of the pipeline text (after `--set` overrides).
    pub pipeline_sha256: String,
    /// The pipeline text that was run.
    pub pipeline_text: String,
    /// `--set` overrides applied.
    #[serde(default)]
    pub overrides: Vec<String>,
    /// `--profile` applied (before the overrides).
    #[serde(default)]
    pub profile: Option<String>,
    /// `--only` filter applied.
    #[serde(default)]
    pub only: Option<String>,
    /// isolab version.
    pub isolab_version: String,
    /// RFC 3339 start time.
    pub started_at: String,
    /// RFC 3339 end time.
    #[serde(default)]
    pub finished_at: Option<String>,
    /// Run state.
    pub status: RunStatus,
    /// Seed of the `random` trial order (absent in manifests written before it existed, whose
    /// trials ran in file order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Experiments in file order.
    pub experiments: Vec<ExperimentRecord>,
    /// Every planned trial, in execution order.
    pub trials: Vec<TrialRecord>,
    /// Measured repetitions per (experiment, platform, workload, matrix point) and why they
    /// stopped where they did (absent in manifests written before it existed).
    #[serde(default)]
    pub repetition_groups: Vec<RepetitionGroup>,
    /// The build of isolab and the hashes of the binaries it used (absent in manifests written
    /// before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildRecord>,
    /// What became of the run's live events on NATS (`--events nats://…`); absent without NATS.
    /// The Parquet files and this manifest are the results either way: events are a live view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<EventsRecord>,
}

/// The run's live events on NATS, counted by the coordinator's publisher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsRecord {
    /// The NATS server.
    pub url: String,
    /// Events JetStream acknowledged.
    pub published: u64,
    /// Events lost: NATS unreachable, the publishing queue full, or no acknowledgement.
    pub dropped: u64,
}

impl Manifest {
    /// The repetition group a trial belongs to, if recorded.
    pub fn group_of(&self, trial_id: &str) -> Option<&RepetitionGroup> {
        self.repetition_groups
            .iter()
            .find(|g| g.trials.iter().any(|t| t == trial_id))
    }
}
