//! The analysis result: what `summary.json` holds, and what `report.md` and `report.html` show.
//!
//! # `summary.json` schema (format version 1)
//!
//! Keys appear in the order below; maps keep a fixed order too (experiments and platforms in
//! pipeline order, metrics sorted by label), so the same run always gives the same bytes.
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
//!   "experiments": {
//!     "<experiment>": {
//!       "analysis": "overhead",
//!       "baseline": "native"|null,             // the platform ratios are relative to
//!       "metrics": {
//!         "<label>": {                         // e.g. "syscall/ns_per_call", "oltp/tps [n=4]"
//!           "workload": "syscall", "metric": "ns_per_call", "unit": "ns",
//!           "higher_is_better": false,
//!           "params": "{…}",                   // workload parameters, canonical JSON
//!           "role": "peer", "group": null, "n_instances": 1, "adversary": null,
//!           "platforms": {
//!             "<platform>": {
//!               "n": 5,                        // repetitions (trials) with a value
//!               "median": 110.0, "ci_low": 109.5, "ci_high": 110.5,   // 95% bootstrap CI
//!               "unit": "ns", "higher_is_better": false,
//!               "outliers": 0,                 // repetitions with |modified Z| > 3.5
//!               "ratio_to_native": 1.1|null,   // median / baseline median
//!               "ratio_ci": [1.09, 1.11]|null  // its 95% bootstrap CI (null for the baseline)
//!             }
//!           }
//!         }
//!       }
//!     }
//!   }
//! }
//! ```
//!
//! A repetition's value is the mean over the trial's instances of the summary rows
//! (`t_offset_s` null) of that metric; the median and its CI are taken across repetitions.

use indexmap::IndexMap;
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
    /// Per experiment, in pipeline order.
    pub experiments: IndexMap<String, ExperimentSummary>,
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
    /// The platform ratios are relative to (the experiment's native-backend platform).
    pub baseline: Option<String>,
    /// Per metric label, sorted.
    pub metrics: IndexMap<String, MetricSummary>,
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
    /// Median relative to the baseline platform's median.
    pub ratio_to_native: Option<f64>,
    /// 95% bootstrap CI of that ratio, `[low, high]`; `None` for the baseline itself.
    pub ratio_ci: Option<[f64; 2]>,
}
