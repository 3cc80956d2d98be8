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
//! assert!((m.platforms["container"].ratio_to_native.unwrap() - 1.1).abs() < 1e-9);
//! ```

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int32Array, RecordBatch, StringArray};
use isolab_model::manifest::{
    ExperimentRecord, MANIFEST_VERSION, Manifest, RunStatus, TrialRecord, TrialState,
};
use isolab_model::results;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::fsutil::write_atomic;
use crate::stats::SplitMix64;

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
}

impl ExperimentSpec {
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

/// FNV-1a: a stable 64-bit hash for content-derived synthetic trial ids.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Content-derived id of a synthetic trial (16 hex digits, like the planner's).
pub fn trial_id(experiment: &str, t: &TrialSpec) -> String {
    let rep = t.repetition.to_string();
    let n = t.n_instances.to_string();
    let adv = t.adversary.as_deref().unwrap_or("");
    format!(
        "{:016x}",
        fnv1a(&[
            experiment,
            &t.platform,
            &t.workload,
            &rep,
            &n,
            adv,
            &t.params
        ])
    )
}

/// Relative path of a trial's file (hive partitioning).
pub fn trial_path(experiment: &str, platform: &str, id: &str) -> PathBuf {
    PathBuf::from("samples")
        .join(format!("experiment={experiment}"))
        .join(format!("platform={platform}"))
        .join(format!("trial-{id}.parquet"))
}

/// The trial-level values of the rows of one file.
struct TrialCtx<'a> {
    run_id: &'a str,
    experiment: &'a str,
    analysis: &'a str,
    trial_id: &'a str,
    repetition: i32,
    platform: &'a str,
    backend: &'a str,
    host: &'a str,
    n_instances: i32,
    adversary: Option<&'a str>,
}

/// One row's own values, borrowed.
struct RowRef<'a> {
    instance: i32,
    role: &'a str,
    group: Option<&'a str>,
    workload: &'a str,
    params: &'a str,
    metric: &'a str,
    value: f64,
    unit: &'a str,
    higher_is_better: bool,
    t_offset_s: Option<f64>,
}

fn batch<'a>(c: &TrialCtx<'a>, rows: &[RowRef<'a>]) -> Result<RecordBatch, TestkitError> {
    let n = rows.len();
    let constant = |v: &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(v, n)))
    };
    let strings = |f: &dyn Fn(&RowRef<'a>) -> Option<&'a str>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let ints = |v: i32| -> ArrayRef { Arc::new(Int32Array::from(vec![v; n])) };
    let columns: Vec<ArrayRef> = vec![
        constant(c.run_id),
        constant(c.experiment),
        constant(c.analysis),
        constant(c.trial_id),
        ints(1),
        ints(c.repetition),
        constant(c.platform),
        constant(c.backend),
        strings(&|_| None),
        constant(c.host),
        Arc::new(rows.iter().map(|r| r.instance).collect::<Int32Array>()),
        strings(&|r| Some(r.role)),
        strings(&|r| r.group),
        ints(c.n_instances),
        strings(&|r| Some(r.workload)),
        strings(&|_| c.adversary),
        strings(&|r| Some(r.params)),
        strings(&|r| Some(r.metric)),
        Arc::new(rows.iter().map(|r| r.value).collect::<Float64Array>()),
        strings(&|r| Some(r.unit)),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.higher_is_better))
                .collect::<BooleanArray>(),
        ),
        Arc::new(rows.iter().map(|r| r.t_offset_s).collect::<Float64Array>()),
        constant("ok"),
    ];
    Ok(RecordBatch::try_new(results::schema(), columns)?)
}

/// zstd, statistics, `created_by` like the coordinator's sink.
fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_created_by("isolab-analyzer testkit".into())
        .build()
}

/// Writes batches to `path` atomically (hidden staging file, then rename).
fn write_parquet(path: &Path, batches: &[RecordBatch]) -> Result<(), TestkitError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| TestkitError::Io { path: p, source }
    };
    fs::create_dir_all(dir).map_err(io(dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = dir.join(format!(".{name}.tmp"));
    let pq = |source| TestkitError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let file = File::create(&staging).map_err(io(&staging))?;
    let mut w =
        ArrowWriter::try_new(file, results::schema(), Some(writer_properties())).map_err(pq)?;
    for b in batches {
        w.write(b).map_err(pq)?;
    }
    w.close().map_err(pq)?;
    fs::rename(&staging, path).map_err(io(path))
}

fn manifest(spec: &RunSpec, trials: Vec<TrialRecord>) -> Manifest {
    let text = spec
        .pipeline_text
        .clone()
        .unwrap_or_else(|| format!("# synthetic run of pipeline {}\n", spec.pipeline_name));
    let failed = trials.iter().any(|t| t.status != TrialState::Ok);
    Manifest {
        format_version: MANIFEST_VERSION,
        run_id: spec.run_id.clone(),
        pipeline_name: spec.pipeline_name.clone(),
        pipeline_file: format!("{}.yaml", spec.pipeline_name),
        pipeline_sha256: format!("{:016x}", fnv1a(&[&text])).repeat(4),
        pipeline_text: text,
        overrides: Vec::new(),
        only: None,
        isolab_version: env!("CARGO_PKG_VERSION").into(),
        started_at: "2025-01-01T00:00:00Z".into(),
        finished_at: Some("2025-01-01T00:10:00Z".into()),
        status: if failed {
            RunStatus::Failed
        } else {
            RunStatus::Ok
        },
        experiments: spec
            .experiments
            .iter()
            .map(|e| ExperimentRecord {
                name: e.name.clone(),
                analysis: e.analysis.clone(),
                platforms: e.platforms.iter().map(|(p, _)| p.clone()).collect(),
            })
            .collect(),
        trials,
    }
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), TestkitError> {
    let text = serde_json::to_string_pretty(value)?;
    write_atomic(path, text.as_bytes()).map_err(|source| TestkitError::Io {
        path: path.into(),
        source,
    })
}

fn record(e: &ExperimentSpec, t: &TrialSpec, id: &str, backend: &str, host: &str) -> TrialRecord {
    TrialRecord {
        id: id.into(),
        experiment: e.name.clone(),
        platform: t.platform.clone(),
        backend: backend.into(),
        workload: t.workload.clone(),
        adversary: t.adversary.clone(),
        repetition: t.repetition,
        warmup: false,
        n_instances: t.n_instances,
        status: TrialState::Ok,
        attempts: 1,
        host: Some(host.into()),
        accel: None,
        reason: None,
        file: None,
        rows: 0,
        duration_ms: 1000,
        leaks: Vec::new(),
    }
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
            let mut rec = record(e, t, &id, backend, &spec.host);
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
                            instance: i32::try_from(r.instance).unwrap_or(i32::MAX),
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
    write_json(&run_dir.join("manifest.json"), &manifest(spec, records))?;
    let env = serde_json::json!({ "host": spec.host, "kernel": "synthetic", "cores": 2, "cgroup_version": 1 });
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

/// Shape of a large generated run (for benchmarks): every platform runs `repetitions` trials of
/// `instances` instances; each instance reports `points_per_instance` time-series points of
/// `units_per_s` and `summary_metrics` summary values. Values are pseudo-random but fixed by
/// `seed`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSpec {
    /// Run id.
    pub run_id: String,
    /// `(platform, backend)` pairs.
    pub platforms: Vec<(String, String)>,
    /// Trials per platform.
    pub repetitions: u32,
    /// Instances per trial.
    pub instances: u32,
    /// Time-series rows per instance.
    pub points_per_instance: u32,
    /// Summary rows per instance (metrics `m0`, `m1`, …).
    pub summary_metrics: u32,
    /// Seed of the values.
    pub seed: u64,
}

impl LoadSpec {
    /// About `total_rows` rows over native and container, 25 repetitions of 16 instances,
    /// 4 summary metrics per instance, the rest time series.
    pub fn with_total_rows(run_id: &str, total_rows: u64) -> Self {
        let per_instance = (total_rows / (2 * 25 * 16)).max(5);
        Self {
            run_id: run_id.into(),
            platforms: vec![
                ("native".into(), "native".into()),
                ("container".into(), "container".into()),
            ],
            repetitions: 25,
            instances: 16,
            points_per_instance: u32::try_from(per_instance - 4).unwrap_or(u32::MAX),
            summary_metrics: 4,
            seed: 7,
        }
    }

    /// Rows the spec produces.
    pub fn total_rows(&self) -> u64 {
        self.platforms.len() as u64
            * u64::from(self.repetitions)
            * u64::from(self.instances)
            * (u64::from(self.points_per_instance) + u64::from(self.summary_metrics))
    }
}

/// Writes a large generated run (see [`LoadSpec`]) into `run_dir`: one experiment `load`
/// (analysis `overhead`, workload `cpu_spin`), rows built straight into Arrow arrays.
pub fn write_generated_run(run_dir: &Path, spec: &LoadSpec) -> Result<SyntheticRun, TestkitError> {
    let mut run = RunSpec::new(&spec.run_id, "generated");
    let exp = "load";
    let platforms: Vec<(&str, &str)> = spec
        .platforms
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_str()))
        .collect();
    run.experiment(exp, "overhead", &platforms);
    let metric_names: Vec<String> = (0..spec.summary_metrics).map(|m| format!("m{m}")).collect();
    let mut rng = SplitMix64::new(spec.seed);
    let mut records = Vec::new();
    let mut files = Vec::new();
    let mut total = 0u64;
    for (pi, (platform, backend)) in spec.platforms.iter().enumerate() {
        let base = 100.0 * (1.0 + 0.1 * pi as f64);
        for rep in 0..spec.repetitions {
            let mut t = TrialSpec::new(platform, "cpu_spin", rep);
            t.n_instances = spec.instances;
            let id = trial_id(exp, &t);
            let ctx = TrialCtx {
                run_id: &spec.run_id,
                experiment: exp,
                analysis: "overhead",
                trial_id: &id,
                repetition: i32::try_from(rep).unwrap_or(i32::MAX),
                platform,
                backend,
                host: &run.host,
                n_instances: i32::try_from(spec.instances).unwrap_or(i32::MAX),
                adversary: None,
            };
            let mut rows = Vec::new();
            for inst in 0..spec.instances {
                let instance = i32::try_from(inst).unwrap_or(i32::MAX);
                let row = |metric, value, t_offset_s| RowRef {
                    instance,
                    role: "peer",
                    group: None,
                    workload: "cpu_spin",
                    params: "{}",
                    metric,
                    value,
                    unit: "units/s",
                    higher_is_better: true,
                    t_offset_s,
                };
                for p in 0..spec.points_per_instance {
                    let noise = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                    rows.push(row(
                        "units_per_s",
                        base * (0.95 + 0.1 * noise),
                        Some(f64::from(p) * 0.1),
                    ));
                }
                for m in &metric_names {
                    let noise = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                    rows.push(row(m, base * (0.99 + 0.02 * noise), None));
                }
            }
            let rel = trial_path(exp, platform, &id);
            let batches: Vec<RecordBatch> = rows
                .chunks(64 * 1024)
                .map(|c| batch(&ctx, c))
                .collect::<Result<_, _>>()?;
            write_parquet(&run_dir.join(&rel), &batches)?;
            let mut rec = record(&run.experiments[0], &t, &id, backend, &run.host);
            rec.rows = rows.len() as u64;
            rec.file = Some(rel.to_string_lossy().into_owned());
            total += rec.rows;
            files.push(rel);
            records.push(rec);
        }
    }
    write_json(&run_dir.join("manifest.json"), &manifest(&run, records))?;
    Ok(SyntheticRun {
        dir: run_dir.to_path_buf(),
        files,
        rows: total,
    })
}
