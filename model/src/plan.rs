//! Trial planning: a validated pipeline expanded into the list of trials to run.
//!
//! Experiments × platforms × matrix points × (warm-up + measured repetitions) become [`Trial`]s
//! whose ids are derived from their content (a hash of what is run, not of its position), so
//! the same pipeline always yields the same ids and `isolab run --resume` can tell what is missing.

use serde::{Deserialize, Serialize};

use crate::pipeline::{AnalysisKind, Params, Platform};
use crate::resolve::ResolvedPlatform;
use crate::units::{HumanDuration, Percent};

/// What an instance does in its trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The measured workload of an isolation trial.
    Victim,
    /// An attacker in an isolation trial.
    Adversary,
    /// Any instance of an overhead, scaling or fairness trial.
    Peer,
}

impl Role {
    /// The lower-case name used in columns.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Victim => "victim",
            Self::Adversary => "adversary",
            Self::Peer => "peer",
        }
    }
}

/// One instance of a trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// Index within the trial, 0-based.
    pub index: u32,
    /// What the instance does.
    pub role: Role,
    /// Fairness group, if any.
    pub group: Option<String>,
    /// Workload name from the catalog.
    pub workload: String,
    /// Workload parameters (`duration` is always set from the trial's duration unless given).
    pub params: Params,
    /// CPU weight of this instance, overriding the platform's limit.
    pub cpu_weight: Option<u64>,
    /// Guaranteed CPU share of this instance (reservation), if any.
    pub cpu_reservation: Option<Percent>,
}

/// One unit of work for an agent: N instances started together, measured, torn down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// Content-derived id: 16 lower-case hex digits.
    pub id: String,
    /// Experiment name.
    pub experiment: String,
    /// How the experiment is analysed.
    pub analysis: AnalysisKind,
    /// Platform name.
    pub platform: String,
    /// The platform's settings as written: what the trial id is derived from, and recorded.
    pub platform_spec: Platform,
    /// The same platform with every default applied and units typed: what the wire carries.
    pub resolved: ResolvedPlatform,
    /// Measured repetition index (0-based); warm-ups count separately.
    pub repetition: u32,
    /// Whether this is a warm-up (run, not recorded).
    pub warmup: bool,
    /// The workload that names the trial (victim, or the single workload).
    pub workload: String,
    /// The adversary of an isolation trial (`none` for the baseline).
    pub adversary: Option<String>,
    /// The matrix point and workload parameters that distinguish this trial.
    pub params: Params,
    /// Instances, started together.
    pub instances: Vec<InstanceSpec>,
    /// How long the workloads run.
    pub duration: HumanDuration,
    /// Wall-clock deadline for the whole trial.
    pub timeout: HumanDuration,
    /// Retries allowed after a failure.
    pub retries: u32,
}

mod expand;
mod filter;
mod order;
mod summary;

pub use expand::{
    MAX_CPU_WEIGHT, extra_repetition, plan, reserved_share, reserved_weight, trial_id,
};
pub use filter::{Filter, FilterError, FilterKey, glob_match};
pub use order::{arrange, order_of, round_of};
pub use summary::{PlanSummary, start_cost, summarize};
