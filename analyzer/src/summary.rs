//! The analysis result: what `summary.json` holds, and what `report.md` and `report.html` show.
//!
//! # `summary.json` schema (format version 1)
//!
//! Keys appear in the order below; maps keep a fixed order too (experiments and platforms in
//! pipeline order, metrics by workload, metric, parameters and instance count), so the same run always gives the same bytes.
//!
//! ```text
//! {
//!   "format_version": 1,
//!   "run_id": "demo-20250101T000000Z-abcd",
//!   "pipeline": "demo",                        // pipeline name
//!   "pipeline_sha256": "…",
//!   "isolab_version": "0.1.0",
//!   "status": "ok",                            // run status from the manifest
//!   "started_at": "…", "finished_at": "…"|null,
//!   "hosts": ["host-a"],                       // hosts that ran trials or described themselves
//!   "trials": { "planned": 10, "ok": 9, "failed": 1, "timed_out": 0, "cancelled": 0,
//!               "not_run": 0, "unfinished": 0 },   // measured trials only, warm-ups excluded
//!   "failed_trials": [ { "id", "experiment", "platform", "workload", "repetition", "status",
//!                        "reason" } ],
//!   "missing_files": [],                       // files of ok trials not found on disk
//!   "noise": {                                 // host steal and background CPU per trial
//!     "recorded": true,                        // false: the agent recorded none
//!     "steal_threshold": 0.05, "background_threshold": 0.1,
//!     "platforms": [ { "experiment", "platform", "trials",
//!                      "steal_median": 0.0|null, "background_median": 0.02|null } ],
//!     "flagged": [ { "trial", "experiment", "platform", "workload", "repetition",
//!                    "steal": 0.0|null, "background": 0.14|null } ]   // above a threshold
//!   },
//!   "environment": [ { "host", "kernel", "os", "arch", "cpu_model", "cores", "memory_bytes",
//!                      "cgroup_version", "clock_source", "agent_version",   // null: not recorded
//!                      "backends": [ { "name", "available", "version", "accel", "reason",
//!                                      "used_by": ["<platform>"] } ] } ],
//!   "paper": { "paper": "Soltesz et al. …",  // runs of soltesz2007 only
//!              "findings": [ { "finding", "measured",
//!                              "status": "reproduced"|"not_reproduced"|"inconclusive"|"not_measured" } ] },
//!   "experiments": {
//!     "<experiment>": {
//!       "analysis": "overhead",
//!       "baseline": "native_a"|null,           // overhead experiments: the platform ratios are to
//!                                              // (the pipeline's `baseline:`, else the native one)
//!       "metrics": {
//!         "<label>": {                         // e.g. "syscall/ns_per_call", "oltp/tps [n=4]"
//!           "workload": "syscall", "metric": "ns_per_call", "unit": "ns",
//!           "higher_is_better": false,
//!           "params": "{…}",                   // workload parameters, canonical JSON
//!           "role": "peer", "group": null, "n_instances": 1, "adversary": null,
//!           "platforms": {
//!             "<platform>": {
//!               "n": 5,                        // repetitions (trials) with a value
//!               "trials": 5,                   // ok trials of the cell; > n: missing in some
//!               "stop_reason": "fixed"|"ci_within_target"|"max_repetitions"|"no_values"|null,
//!               "median": 110.0, "ci_low": 109.5, "ci_high": 110.5,   // percentile bootstrap
//!               "unit": "ns", "higher_is_better": false,
//!               "outliers": 0,                 // repetitions with |modified Z| > 3.5
//!               "ratio_to_baseline": 1.1|null, // Hodges–Lehmann ratio (1 for the baseline)
//!               "ratio_ci": [1.09, 1.11]|null, // its CI (null for the baseline)
//!               "ratio_method": "hodges_lehmann_log_moses"|null,
//!               "ratio_ci_level": 0.95|null,   // < 0.95: too few repetitions, widest CI
//!               "p_value": 0.008|null,         // exact two-sided Mann–Whitney
//!               "n_baseline": 5|null,          // repetitions of the baseline
//!               "overhead_pct": 10.0|null,     // positive = worse than the baseline
//!               "overhead_ci_pct": [9.0, 11.0]|null,
//!               "verdict": "within"|"worse"|"better"|"inconclusive"|"too_few_repetitions"|null,
//!               "values": [110.0, …]           // per repetition, in repetition order
//!             }
//!           }
//!         }
//!       },
//!       "scaling": {                           // analysis scaling only
//!         "knee_efficiency": 0.8,
//!         "series": [ { "label", "metric", "unit", "platform", "knee": 16|null,
//!                       "points": [ { "n_instances", "n", "aggregate": {median, ci_low, ci_high},
//!                                     "per_instance": {…}, "efficiency",
//!                                     "aggregate_values": [800.0, …] } ] } ]
//!       },
//!       "fairness": {                          // analysis fairness only
//!         "source": "cpu_usage_ns", "timeline_source": "units_per_s"|null, "interval_s": 0.5,
//!         "platforms": { "<platform>": {
//!           "n", "jain": {median, ci_low, ci_high}, "max_share_error": {…},
//!           "groups": { "<group>": { "instances", "weight", "entitled", "received": {…} } },
//!           "reservation": { "group", "cpu", "met_fraction", "met" }|null,
//!           "timeline": [ { "t_s", "shares": { "<group>": 0.25 } } ] } }
//!       },
//!       "isolation": {                         // analysis isolation only
//!         "baseline": "none", "adversaries": ["fork_bomb", …],
//!         "metrics": [ { "label", "unit", "higher_is_better",
//!                        "cells": [ { "platform", "adversary", "n", "median", "baseline_median",
//!                                     "degradation_pct", "degradation_ci_pct",
//!                                     "degradation_ci_level" } ] } ],   // < 0.95: widest CI
//!         "outcomes": [ { "platform", "adversary", "trials", "failed", "killed", "limit_hit",
//!                         "leaks", "contained" } ]
//!       }
//!     }
//!   }
//! }
//! ```
//!
//! A repetition's value is the mean over the trial's instances of the summary rows
//! (`t_offset_s` null) of that metric; the median and its CI are taken across repetitions.

pub use crate::environment::{BackendEnvironment, HostEnvironment};
pub use crate::findings::{Finding, PaperChecklist};
use indexmap::IndexMap;
pub use isolab_model::manifest::StopReason;
use serde::{Deserialize, Serialize};

/// Version of the `summary.json` format.
pub const SUMMARY_FORMAT_VERSION: u32 = 1;

/// Everything the reports say about one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// [`SUMMARY_FORMAT_VERSION`].
    pub format_version: u32,
    /// Run id.
    pub run_id: String,
    /// Pipeline name.
    pub pipeline: String,
    /// SHA-256 of the pipeline text.
    pub pipeline_sha256: String,
    /// isolab version that ran the pipeline.
    pub isolab_version: String,
    /// Run status from the manifest (`running`, `ok`, `failed`, `interrupted`).
    pub status: String,
    /// RFC 3339 start time.
    pub started_at: String,
    /// RFC 3339 end time, if the run finished.
    pub finished_at: Option<String>,
    /// Hosts that ran trials or wrote an `env/<host>.json`, sorted.
    pub hosts: Vec<String>,
    /// Counts of measured trials by state.
    pub trials: TrialCounts,
    /// Trials that failed, timed out or were cancelled, with the manifest's reason.
    pub failed_trials: Vec<FailedTrial>,
    /// Files the manifest lists for `ok` trials that are missing.
    pub missing_files: Vec<String>,
    /// How busy the host was during the trials (see [`crate::noise`]).
    pub noise: NoiseSummary,
    /// What each host said about itself (see [`crate::environment`]).
    #[serde(default)]
    pub environment: Vec<HostEnvironment>,
    /// The paper's findings next to this run's, for the paper's pipeline (see
    /// [`crate::findings`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paper: Option<PaperChecklist>,
    /// Per experiment, in pipeline order.
    pub experiments: IndexMap<String, ExperimentSummary>,
}

/// Host steal and background CPU during the trials (see [`crate::noise`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoiseSummary {
    /// Whether the agent recorded any host values (runs by older agents have none).
    pub recorded: bool,
    /// Trials whose steal fraction exceeds this are listed.
    pub steal_threshold: f64,
    /// Trials whose background CPU fraction exceeds this are listed.
    pub background_threshold: f64,
    /// Per experiment and platform, in report order.
    pub platforms: Vec<NoisePlatform>,
    /// Trials that ran on a busy host.
    pub flagged: Vec<NoisyTrial>,
}

/// Host noise over one experiment's trials on one platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoisePlatform {
    /// Experiment.
    pub experiment: String,
    /// Platform.
    pub platform: String,
    /// Trials with host values.
    pub trials: usize,
    /// Median fraction of the host's CPU stolen by the hypervisor.
    pub steal_median: Option<f64>,
    /// Median fraction of the host's CPU used outside the trial's cgroups.
    pub background_median: Option<f64>,
}

/// A trial that ran on a busy host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoisyTrial {
    /// Trial id.
    pub trial: String,
    /// Experiment.
    pub experiment: String,
    /// Platform.
    pub platform: String,
    /// Workload.
    pub workload: String,
    /// Repetition index.
    pub repetition: i32,
    /// Fraction of the host's CPU stolen by the hypervisor.
    pub steal: Option<f64>,
    /// Fraction of the host's CPU used outside the trial's cgroups.
    pub background: Option<f64>,
}

/// Counts of measured (non-warm-up) trials by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialCounts {
    /// Trials in the manifest.
    pub planned: u64,
    /// Finished with data.
    pub ok: u64,
    /// Failed.
    pub failed: u64,
    /// Hit their deadline.
    pub timed_out: u64,
    /// Cancelled by the user.
    pub cancelled: u64,
    /// Not run because the run was interrupted.
    pub not_run: u64,
    /// Pending or running when the manifest was written.
    pub unfinished: u64,
}

/// A trial that did not finish `ok`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedTrial {
    /// Trial id.
    pub id: String,
    /// Experiment name.
    pub experiment: String,
    /// Platform name.
    pub platform: String,
    /// Workload.
    pub workload: String,
    /// Repetition index.
    pub repetition: u32,
    /// `failed`, `timed_out` or `cancelled`.
    pub status: String,
    /// Why, as the coordinator recorded it.
    pub reason: Option<String>,
}

/// The results of one experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentSummary {
    /// Analysis kind.
    pub analysis: String,
    /// The platform ratios are relative to: the one the experiment names (`baseline:`), else
    /// its first native-backend platform; `None` outside overhead experiments.
    pub baseline: Option<String>,
    /// Per metric label, sorted.
    pub metrics: IndexMap<String, MetricSummary>,
    /// Throughput versus instance count (analysis `scaling`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingSummary>,
    /// CPU share received versus entitled (analysis `fairness`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fairness: Option<FairnessSummary>,
    /// Victim degradation under each adversary (analysis `isolation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<IsolationSummary>,
}

/// One metric of one experiment across platforms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSummary {
    /// Workload that reported it.
    pub workload: String,
    /// Metric name.
    pub metric: String,
    /// Unit.
    pub unit: String,
    /// Whether larger is better.
    pub higher_is_better: bool,
    /// Workload parameters (canonical JSON).
    pub params: String,
    /// Role of the reporting instances.
    pub role: String,
    /// Fairness group, if any.
    pub group: Option<String>,
    /// Instances per trial.
    pub n_instances: i32,
    /// Adversary of the trials, if any.
    pub adversary: Option<String>,
    /// Per platform, in pipeline order.
    pub platforms: IndexMap<String, PlatformStats>,
}

/// A metric's statistics on one platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlatformStats {
    /// Repetitions with a value.
    pub n: usize,
    /// Trials of this platform and workload that finished `ok`; more than `n` when the metric
    /// is missing from some of them (a statistic that could not be read is missing, never 0).
    pub trials: usize,
    /// Why the repetitions stopped where they did (`fixed`, `ci_within_target`,
    /// `max_repetitions`, `no_values`), from the manifest's repetition groups; `None` when the
    /// run does not say (an older manifest of an `until_stable` pipeline, a group still open).
    #[serde(default)]
    pub stop_reason: Option<StopReason>,
    /// Median across repetitions.
    pub median: f64,
    /// Lower bound of the 95% bootstrap CI of the median.
    pub ci_low: f64,
    /// Upper bound of the 95% bootstrap CI of the median.
    pub ci_high: f64,
    /// Unit.
    pub unit: String,
    /// Whether larger is better.
    pub higher_is_better: bool,
    /// Repetitions flagged as outliers (modified Z-score).
    pub outliers: usize,
    /// Ratio to the baseline platform: the Hodges–Lehmann estimate `exp(median of ln x_i −
    /// ln y_j)` (see [`crate::ratio`]); exactly 1 for the baseline itself.
    pub ratio_to_baseline: Option<f64>,
    /// Confidence interval of that ratio, `[low, high]`; `None` for the baseline itself.
    pub ratio_ci: Option<[f64; 2]>,
    /// How the ratio and its interval were computed ([`crate::ratio::METHOD`]).
    pub ratio_method: Option<String>,
    /// Confidence level of `ratio_ci`: 0.95, or less when the repetitions allow no 95%
    /// interval (then the interval is the widest one and the verdict "too few repetitions").
    pub ratio_ci_level: Option<f64>,
    /// Exact two-sided Mann–Whitney p-value of the platform against the baseline.
    pub p_value: Option<f64>,
    /// Repetitions of the baseline the ratio was computed against.
    pub n_baseline: Option<usize>,
    /// Cost relative to the baseline in percent, positive when worse (slower, less throughput).
    pub overhead_pct: Option<f64>,
    /// 95% CI of the overhead in percent.
    pub overhead_ci_pct: Option<[f64; 2]>,
    /// What the CI says about the overhead (see [`crate::overhead`]); `None` for the baseline.
    pub verdict: Option<Verdict>,
    /// The per-repetition values, in repetition order.
    pub values: Vec<f64>,
}

/// What the overhead's confidence interval allows one to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The whole CI lies within ±[`crate::overhead::EQUIVALENCE_MARGIN`] of the baseline.
    Within,
    /// Significantly worse than the baseline.
    Worse,
    /// Significantly better than the baseline.
    Better,
    /// Neither equivalent nor significantly different: more repetitions needed.
    Inconclusive,
    /// The repetitions allow no 95% interval (3 against 3): no difference can be claimed.
    TooFewRepetitions,
}

/// A median across repetitions with its 95% bootstrap CI.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Median.
    pub median: f64,
    /// Lower bound of the 95% CI.
    pub ci_low: f64,
    /// Upper bound of the 95% CI.
    pub ci_high: f64,
}

impl Stat {
    /// Median and bootstrap CI of `values`; `None` when empty.
    pub fn of(values: &[f64]) -> Option<Self> {
        let median = crate::stats::median(values)?;
        let ci = crate::stats::bootstrap_median_ci(values)?;
        Some(Self {
            median,
            ci_low: ci.low,
            ci_high: ci.high,
        })
    }
}

/// Scaling: per throughput metric and platform, how the aggregate grows with instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingSummary {
    /// Efficiency below which scaling has hit its knee.
    pub knee_efficiency: f64,
    /// One series per metric label and platform.
    pub series: Vec<ScalingSeries>,
}

/// One metric on one platform across instance counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingSeries {
    /// Metric label (as in `metrics`, without the instance count).
    pub label: String,
    /// Metric name.
    pub metric: String,
    /// Unit of one instance's value.
    pub unit: String,
    /// Platform.
    pub platform: String,
    /// One point per instance count, ascending.
    pub points: Vec<ScalingPoint>,
    /// The first instance count whose efficiency is below `knee_efficiency`, if any.
    pub knee: Option<i32>,
}

/// One instance count of a scaling series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingPoint {
    /// Instances.
    pub n_instances: i32,
    /// Repetitions.
    pub n: usize,
    /// Sum over instances, median across repetitions.
    pub aggregate: Stat,
    /// Mean per instance, median across repetitions.
    pub per_instance: Stat,
    /// `aggregate(N) / ((N / N0) · aggregate(N0))`, N0 the smallest instance count; `None`
    /// when the aggregate at N0 is zero.
    pub efficiency: Option<f64>,
    /// The aggregate of each repetition, in the order the trials were read.
    #[serde(default)]
    pub aggregate_values: Vec<f64>,
}

/// Fairness: CPU share received versus entitled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FairnessSummary {
    /// Metric the overall shares come from (`cpu_usage_ns` or `units_per_s`).
    pub source: String,
    /// Metric the timeline comes from, if any time series was found.
    pub timeline_source: Option<String>,
    /// Width of a timeline interval, seconds.
    pub interval_s: f64,
    /// Per platform, in pipeline order.
    pub platforms: IndexMap<String, FairnessPlatform>,
}

/// Fairness on one platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FairnessPlatform {
    /// Repetitions analysed.
    pub n: usize,
    /// Jain's index of received/entitled over instances (1 = perfectly fair, 1/n = one takes all).
    pub jain: Stat,
    /// Largest |received − entitled| share of any instance (fraction of the total).
    pub max_share_error: Stat,
    /// Per group (or instance, when there are no groups).
    pub groups: IndexMap<String, GroupShare>,
    /// The reservation's outcome, if the experiment has one.
    pub reservation: Option<ReservationResult>,
    /// Median share of each group per interval.
    pub timeline: Vec<TimelinePoint>,
}

/// A group's share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupShare {
    /// Instances in the group.
    pub instances: u32,
    /// CPU weight of each instance.
    pub weight: u32,
    /// Entitled share of the total (weights, then the reservation).
    pub entitled: f64,
    /// Received share of the total.
    pub received: Stat,
}

/// Whether a CPU reservation was honoured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReservationResult {
    /// The reserved group.
    pub group: String,
    /// Reserved share (fraction).
    pub cpu: f64,
    /// Fraction of intervals in which the group received at least the reservation (within
    /// tolerance); median across repetitions. Without a timeline: 1 or 0 from the overall share.
    pub met_fraction: f64,
    /// `met_fraction` ≥ the required fraction.
    pub met: bool,
}

/// Shares in one timeline interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Start of the interval, seconds since the instances started.
    pub t_s: f64,
    /// Share per group, median across repetitions.
    pub shares: IndexMap<String, f64>,
}

/// Isolation: what each adversary does to the victim, per platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsolationSummary {
    /// Adversary value of the baseline trials.
    pub baseline: String,
    /// Adversaries in pipeline order (baseline excluded).
    pub adversaries: Vec<String>,
    /// One matrix per victim metric.
    pub metrics: Vec<IsolationMetric>,
    /// Per platform and adversary: how the adversary ended and whether it was contained.
    pub outcomes: Vec<AdversaryOutcome>,
}

/// One victim metric's degradation matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsolationMetric {
    /// Metric label (without the adversary).
    pub label: String,
    /// Unit.
    pub unit: String,
    /// Whether larger is better.
    pub higher_is_better: bool,
    /// One cell per platform × adversary.
    pub cells: Vec<IsolationCell>,
}

/// Victim degradation under one adversary on one platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsolationCell {
    /// Platform.
    pub platform: String,
    /// Adversary.
    pub adversary: String,
    /// Repetitions.
    pub n: usize,
    /// Victim median under the adversary.
    pub median: f64,
    /// Victim median in the baseline.
    pub baseline_median: f64,
    /// Degradation in percent (positive: worse than the baseline).
    pub degradation_pct: f64,
    /// Its CI.
    pub degradation_ci_pct: Option<[f64; 2]>,
    /// Level of that CI: 0.95, or less with too few repetitions for a 95% one (then the widest).
    pub degradation_ci_level: Option<f64>,
}

/// How one adversary ended on one platform, over its repetitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdversaryOutcome {
    /// Platform.
    pub platform: String,
    /// Adversary.
    pub adversary: String,
    /// Trials in the manifest (measured).
    pub trials: u32,
    /// Trials that did not finish `ok`.
    pub failed: u32,
    /// Repetitions in which the kernel OOM-killed the adversary.
    pub killed: u32,
    /// Repetitions in which the adversary hit a limit (pids, memory, disk) or was refused.
    pub limit_hit: u32,
    /// What teardown found left behind, over all trials.
    pub leaks: Vec<String>,
    /// No leaks and every trial finished `ok`.
    pub contained: bool,
}
