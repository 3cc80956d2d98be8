//! Synthetic run directories with planted values, for tests and benchmarks (the analyzer's own,
//! the coordinator's and `isolab-bench`).
//!
//! A run written here is laid out exactly as the coordinator lays one out: `manifest.json`,
//! `env/<host>.json` and one zstd Parquet file per `ok` trial under
//! `samples/experiment=<e>/platform=<p>/trial-<id>.parquet`, with
//! [`isolab_model::results::schema`]. Failed trials appear in the manifest only.
//!
//! ```
//! use isolab_analyzer::testkit::{RunSpec, write_synthetic_run};
//! let dir = tempfile::tempdir().unwrap();
//! let mut spec = RunSpec::new("demo-run", "demo");
//! spec.experiment("micro", "overhead", &[("native", "native"), ("container", "container")])
//!     .summary_metric("native", "syscall", "ns_per_call", "ns", false, &[100.0, 101.0, 99.0])
//!     .summary_metric("container", "syscall", "ns_per_call", "ns", false, &[110.0, 111.0, 109.0]);
//! let run = write_synthetic_run(dir.path(), &spec).unwrap();
//! assert_eq!(run.files.len(), 6);
//! let summary = isolab_analyzer::analyze(dir.path()).unwrap();
//! let m = &summary.experiments["micro"].metrics["syscall/ns_per_call"];
//! assert!((m.platforms["container"].ratio_to_baseline.unwrap() - 1.1).abs() < 1e-9);
//! ```

use std::path::{Path, PathBuf};

use isolab_model::manifest::{StopReason, TrialState};

use self::files::{RowRef, TrialCtx, batch, manifest, record, write_json, write_parquet};
pub use self::files::{trial_id, trial_path};
pub use self::generate::{LoadSpec, write_generated_run};

mod files;
mod generate;

/// Why a synthetic run could not be written.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// Filesystem error.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Parquet or Arrow refused the data.
    #[error("cannot encode {path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What parquet said.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// The batch did not match the schema.
    #[error("cannot build a results batch: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// The manifest could not be serialized.
    #[error("cannot serialize the manifest: {0}")]
    Json(#[from] serde_json::Error),
}

/// One measured value of a synthetic trial.
#[derive(Debug, Clone, PartialEq)]
pub struct RowSpec {
    /// Instance index.
    pub instance: u32,
    /// `peer`, `victim` or `adversary`.
    pub role: String,
    /// Fairness group.
    pub group: Option<String>,
    /// The instance's workload; `None`: the trial's.
    pub workload: Option<String>,
    /// Metric name.
    pub metric: String,
    /// The value.
    pub value: f64,
    /// Unit.
    pub unit: String,
    /// Whether larger is better.
    pub higher_is_better: bool,
    /// Time offset (time series), `None` for a summary value.
    pub t_offset_s: Option<f64>,
}

impl RowSpec {
    /// A summary value of a peer instance.
    pub fn summary(
        instance: u32,
        metric: &str,
        value: f64,
        unit: &str,
        higher_is_better: bool,
    ) -> Self {
        Self {
            instance,
            role: "peer".into(),
            group: None,
            workload: None,
            metric: metric.into(),
            value,
            unit: unit.into(),
            higher_is_better,
            t_offset_s: None,
        }
    }

    /// One of the agent's host rows (role `host`, written with instance −1, unit `fraction`):
    /// `metric` is [`crate::noise::STEAL_METRIC`] or [`crate::noise::BACKGROUND_METRIC`].
    pub fn host(metric: &str, value: f64) -> Self {
        Self {
            role: crate::noise::HOST_ROLE.into(),
            ..Self::summary(0, metric, value, "fraction", false)
        }
    }

    /// A time-series point of a peer instance.
    pub fn point(instance: u32, metric: &str, value: f64, unit: &str, t_offset_s: f64) -> Self {
        Self {
            t_offset_s: Some(t_offset_s),
            ..Self::summary(instance, metric, value, unit, true)
        }
    }

    /// Sets the role.
    pub fn role(mut self, role: &str) -> Self {
        self.role = role.into();
        self
    }

    /// Sets the group.
    pub fn group(mut self, group: &str) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Sets the instance's workload.
    pub fn workload(mut self, workload: &str) -> Self {
        self.workload = Some(workload.into());
        self
    }
}

/// How a synthetic trial ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Finished with these rows.
    Ok(Vec<RowSpec>),
    /// Did not finish; only the manifest records it.
    Failed {
        /// `Failed`, `TimedOut`, `Cancelled`…
        state: TrialState,
        /// Why.
        reason: String,
    },
}

/// One synthetic trial.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialSpec {
    /// Platform name (must be one of the experiment's).
    pub platform: String,
    /// Workload naming the trial.
    pub workload: String,
    /// Repetition index.
    pub repetition: u32,
    /// Instances in the trial.
    pub n_instances: u32,
    /// Adversary (isolation).
    pub adversary: Option<String>,
    /// Workload parameters, JSON object.
    pub params: String,
    /// Result.
    pub outcome: Outcome,
    /// What teardown found left behind (recorded in the manifest).
    pub leaks: Vec<String>,
}

impl TrialSpec {
    /// An `ok` trial with no rows yet, one instance, no parameters.
    pub fn new(platform: &str, workload: &str, repetition: u32) -> Self {
        Self {
            platform: platform.into(),
            workload: workload.into(),
            repetition,
            n_instances: 1,
            adversary: None,
            params: "{}".into(),
            outcome: Outcome::Ok(Vec::new()),
            leaks: Vec::new(),
        }
    }
}

/// One synthetic experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentSpec {
    /// Experiment name.
    pub name: String,
    /// Analysis kind.
    pub analysis: String,
    /// `(platform name, backend)` in pipeline order.
    pub platforms: Vec<(String, String)>,
    /// Trials.
    pub trials: Vec<TrialSpec>,
    /// The platform ratios are taken against, as the pipeline's `baseline:` names it (`None`:
    /// the manifest says nothing, as before baselines were named).
    pub baseline: Option<String>,
    /// Planted stop reasons of repetition groups: `(platform, workload, reason)`; the group
    /// holds every trial of that platform and workload (see
    /// [`isolab_model::manifest::RepetitionGroup`]).
    pub stop_reasons: Vec<(String, String, StopReason)>,
}

impl ExperimentSpec {
    /// Names the baseline platform (recorded in the manifest).
    pub fn baseline(&mut self, platform: &str) -> &mut Self {
        self.baseline = Some(platform.into());
        self
    }

    /// Adds a trial.
    pub fn trial(&mut self, trial: TrialSpec) -> &mut Self {
        self.trials.push(trial);
        self
    }

    /// One summary value per repetition (`values[i]` is repetition `i`) from a one-instance
    /// trial; rows join an existing `ok` trial of the same platform, workload and repetition.
    pub fn summary_metric(
        &mut self,
        platform: &str,
        workload: &str,
        metric: &str,
        unit: &str,
        higher_is_better: bool,
        values: &[f64],
    ) -> &mut Self {
        for (rep, &value) in (0u32..).zip(values) {
            let row = RowSpec::summary(0, metric, value, unit, higher_is_better);
            let existing = self.trials.iter_mut().find(|t| {
                t.platform == platform
                    && t.workload == workload
                    && t.repetition == rep
                    && t.n_instances == 1
                    && matches!(t.outcome, Outcome::Ok(_))
            });
            match existing {
                Some(TrialSpec {
                    outcome: Outcome::Ok(rows),
                    ..
                }) => rows.push(row),
                _ => {
                    let mut t = TrialSpec::new(platform, workload, rep);
                    t.outcome = Outcome::Ok(vec![row]);
                    self.trials.push(t);
                }
            }
        }
        self
    }

    /// The agent's host rows per repetition (`steal[i]` and `background[i]` for repetition
    /// `i`), joining the `ok` trials of `platform` and `workload`.
    pub fn host_noise(
        &mut self,
        platform: &str,
        workload: &str,
        steal: &[f64],
        background: &[f64],
    ) -> &mut Self {
        for (rep, (&s, &b)) in (0u32..).zip(steal.iter().zip(background)) {
            let rows = [
                RowSpec::host(crate::noise::STEAL_METRIC, s),
                RowSpec::host(crate::noise::BACKGROUND_METRIC, b),
            ];
            let existing = self.trials.iter_mut().find(|t| {
                t.platform == platform
                    && t.workload == workload
                    && t.repetition == rep
                    && matches!(t.outcome, Outcome::Ok(_))
            });
            match existing {
                Some(TrialSpec {
                    outcome: Outcome::Ok(existing),
                    ..
                }) => existing.extend(rows),
                _ => {
                    let mut t = TrialSpec::new(platform, workload, rep);
                    t.outcome = Outcome::Ok(rows.to_vec());
                    self.trials.push(t);
                }
            }
        }
        self
    }

    /// Records why the repetitions of `platform` × `workload` stopped (a repetition group in
    /// the manifest).
    pub fn stop_reason(&mut self, platform: &str, workload: &str, reason: StopReason) -> &mut Self {
        self.stop_reasons
            .push((platform.into(), workload.into(), reason));
        self
    }

    /// A failed trial.
    pub fn failed(
        &mut self,
        platform: &str,
        workload: &str,
        repetition: u32,
        reason: &str,
    ) -> &mut Self {
        let mut t = TrialSpec::new(platform, workload, repetition);
        t.outcome = Outcome::Failed {
            state: TrialState::Failed,
            reason: reason.into(),
        };
        self.trials.push(t);
        self
    }
}

/// A whole synthetic run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    /// Run id.
    pub run_id: String,
    /// Pipeline name.
    pub pipeline_name: String,
    /// Pipeline text stored in the manifest (`None`: a comment saying the run is synthetic).
    pub pipeline_text: Option<String>,
    /// Host that "ran" every trial.
    pub host: String,
    /// Experiments in order.
    pub experiments: Vec<ExperimentSpec>,
}

impl RunSpec {
    /// An empty run on host `synthetic-host`.
    pub fn new(run_id: &str, pipeline_name: &str) -> Self {
        Self {
            run_id: run_id.into(),
            pipeline_name: pipeline_name.into(),
            pipeline_text: None,
            host: "synthetic-host".into(),
            experiments: Vec::new(),
        }
    }

    /// Adds an experiment over `(platform, backend)` pairs and returns it for adding trials.
    pub fn experiment(
        &mut self,
        name: &str,
        analysis: &str,
        platforms: &[(&str, &str)],
    ) -> &mut ExperimentSpec {
        self.experiments.push(ExperimentSpec {
            name: name.into(),
            analysis: analysis.into(),
            platforms: platforms
                .iter()
                .map(|(p, b)| ((*p).into(), (*b).into()))
                .collect(),
            trials: Vec::new(),
            baseline: None,
            stop_reasons: Vec::new(),
        });
        let last = self.experiments.len() - 1;
        &mut self.experiments[last]
    }
}

/// What [`write_synthetic_run`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticRun {
    /// The run directory.
    pub dir: PathBuf,
    /// Parquet files written, relative to `dir`.
    pub files: Vec<PathBuf>,
    /// Rows written in all.
    pub rows: u64,
}

/// Writes a synthetic run into `run_dir` (created if needed): manifest, `env/<host>.json` and
/// one Parquet file per `ok` trial.
pub fn write_synthetic_run(run_dir: &Path, spec: &RunSpec) -> Result<SyntheticRun, TestkitError> {
    let mut records = Vec::new();
    let mut files = Vec::new();
    let mut total = 0u64;
    for e in &spec.experiments {
        for t in &e.trials {
            let id = trial_id(&e.name, t);
            let backend = e
                .platforms
                .iter()
                .find(|(p, _)| *p == t.platform)
                .map_or("native", |(_, b)| b);
            let mut rec = record(e, t, &id, backend, &spec.host)?;
            rec.leaks.clone_from(&t.leaks);
            match &t.outcome {
                Outcome::Failed { state, reason } => {
                    rec.status = *state;
                    rec.reason = Some(reason.clone());
                }
                Outcome::Ok(rows) => {
                    let ctx = TrialCtx {
                        run_id: &spec.run_id,
                        experiment: &e.name,
                        analysis: &e.analysis,
                        trial_id: &id,
                        repetition: i32::try_from(t.repetition).unwrap_or(i32::MAX),
                        platform: &t.platform,
                        backend,
                        host: &spec.host,
                        n_instances: i32::try_from(t.n_instances).unwrap_or(i32::MAX),
                        adversary: t.adversary.as_deref(),
                    };
                    let refs: Vec<RowRef<'_>> = rows
                        .iter()
                        .map(|r| RowRef {
                            // The agent's host rows belong to no instance.
                            instance: if r.role == crate::noise::HOST_ROLE {
                                -1
                            } else {
                                i32::try_from(r.instance).unwrap_or(i32::MAX)
                            },
                            role: &r.role,
                            group: r.group.as_deref(),
                            workload: r.workload.as_deref().unwrap_or(&t.workload),
                            params: &t.params,
                            metric: &r.metric,
                            value: r.value,
                            unit: &r.unit,
                            higher_is_better: r.higher_is_better,
                            t_offset_s: r.t_offset_s,
                        })
                        .collect();
                    let rel = trial_path(&e.name, &t.platform, &id);
                    write_parquet(&run_dir.join(&rel), &[batch(&ctx, &refs)?])?;
                    rec.rows = rows.len() as u64;
                    rec.file = Some(rel.to_string_lossy().into_owned());
                    total += rec.rows;
                    files.push(rel);
                }
            }
            records.push(rec);
        }
    }
    write_json(&run_dir.join("manifest.json"), &manifest(spec, records)?)?;
    let env = serde_json::json!({
        "hostname": spec.host,
        "agent_version": "0.1.0",
        "kernel": "6.1.0-synthetic",
        "os": "Synthetic Linux",
        "arch": "x86_64",
        "cpu_model": "Synthetic CPU @ 2.0GHz",
        "cores": 2,
        "memory_bytes": 8u64 << 30,
        "cgroup_version": "v2",
        "clock_source": "tsc",
        "backends": [
            { "name": "native", "available": true, "version": "0.1.0", "reason": "", "accel": "" },
            { "name": "container", "available": true, "version": "runc 1.1.5", "reason": "", "accel": "" },
            { "name": "vm", "available": true, "version": "QEMU 7.2.0", "reason": "", "accel": "tcg" },
            { "name": "xen", "available": false, "version": "",
              "reason": "requires another kernel: the host must boot under the Xen hypervisor", "accel": "" }
        ]
    });
    write_json(
        &run_dir.join("env").join(format!("{}.json", spec.host)),
        &env,
    )?;
    Ok(SyntheticRun {
        dir: run_dir.to_path_buf(),
        files,
        rows: total,
    })
}
