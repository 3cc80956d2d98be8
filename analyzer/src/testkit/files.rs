//! Writing the pieces of a synthetic run: Parquet files of the results schema, the manifest.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int32Array, RecordBatch, StringArray};
use isolab_model::manifest::{
    MANIFEST_VERSION, Manifest, RepetitionGroup, RunStatus, TrialRecord, TrialState,
};
use isolab_model::results;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde_json::json;

use super::{ExperimentSpec, RunSpec, TestkitError, TrialSpec};
use crate::fsutil::write_atomic;

/// FNV-1a: a stable 64-bit hash for content-derived synthetic trial ids.
pub(super) fn fnv1a(parts: &[&str]) -> u64 {
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
pub(super) struct TrialCtx<'a> {
    pub(super) run_id: &'a str,
    pub(super) experiment: &'a str,
    pub(super) analysis: &'a str,
    pub(super) trial_id: &'a str,
    pub(super) repetition: i32,
    pub(super) platform: &'a str,
    pub(super) backend: &'a str,
    pub(super) host: &'a str,
    pub(super) n_instances: i32,
    pub(super) adversary: Option<&'a str>,
}

/// One row's own values, borrowed.
pub(super) struct RowRef<'a> {
    pub(super) instance: i32,
    pub(super) role: &'a str,
    pub(super) group: Option<&'a str>,
    pub(super) workload: &'a str,
    pub(super) params: &'a str,
    pub(super) metric: &'a str,
    pub(super) value: f64,
    pub(super) unit: &'a str,
    pub(super) higher_is_better: bool,
    pub(super) t_offset_s: Option<f64>,
}

pub(super) fn batch<'a>(
    c: &TrialCtx<'a>,
    rows: &[RowRef<'a>],
) -> Result<RecordBatch, TestkitError> {
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
pub(super) fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_created_by("isolab-analyzer testkit".into())
        .build()
}

/// Writes batches to `path` atomically (hidden staging file, then rename).
pub(super) fn write_parquet(path: &Path, batches: &[RecordBatch]) -> Result<(), TestkitError> {
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

/// The run's manifest. Built through JSON so that fields the model adds later with a default
/// need no change here.
pub(super) fn manifest(spec: &RunSpec, trials: Vec<TrialRecord>) -> Result<Manifest, TestkitError> {
    let text = spec
        .pipeline_text
        .clone()
        .unwrap_or_else(|| format!("# synthetic run of pipeline {}\n", spec.pipeline_name));
    let failed = trials.iter().any(|t| t.status != TrialState::Ok);
    let experiments: Vec<serde_json::Value> = spec
        .experiments
        .iter()
        .map(|e| {
            let platforms: Vec<&str> = e.platforms.iter().map(|(p, _)| p.as_str()).collect();
            let mut record =
                json!({ "name": e.name, "analysis": e.analysis, "platforms": platforms });
            if let Some(b) = &e.baseline {
                record["baseline"] = json!(b);
            }
            record
        })
        .collect();
    let value = json!({
        "format_version": MANIFEST_VERSION,
        "run_id": spec.run_id,
        "pipeline_name": spec.pipeline_name,
        "pipeline_file": format!("{}.yaml", spec.pipeline_name),
        "pipeline_sha256": format!("{:016x}", fnv1a(&[&text])).repeat(4),
        "pipeline_text": text,
        "isolab_version": env!("CARGO_PKG_VERSION"),
        "started_at": "2025-01-01T00:00:00Z",
        "finished_at": "2025-01-01T00:10:00Z",
        "status": if failed { RunStatus::Failed } else { RunStatus::Ok },
        "experiments": experiments,
        "repetition_groups": repetition_groups(spec, &trials),
        "trials": trials,
    });
    Ok(serde_json::from_value(value)?)
}

/// The planted repetition groups of a run: one per experiment's `stop_reasons` entry.
fn repetition_groups(spec: &RunSpec, trials: &[TrialRecord]) -> Vec<RepetitionGroup> {
    let mut out = Vec::new();
    for e in &spec.experiments {
        for (platform, workload, reason) in &e.stop_reasons {
            let mut members: Vec<&TrialRecord> = trials
                .iter()
                .filter(|t| {
                    t.experiment == e.name
                        && t.platform == *platform
                        && t.workload == *workload
                        && !t.warmup
                })
                .collect();
            members.sort_by_key(|t| t.repetition);
            let Some(first) = members.first() else {
                continue;
            };
            out.push(RepetitionGroup {
                experiment: e.name.clone(),
                platform: platform.clone(),
                workload: workload.clone(),
                adversary: first.adversary.clone(),
                n_instances: first.n_instances,
                params: "{}".into(),
                trials: members.iter().map(|t| t.id.clone()).collect(),
                stop_reason: Some(*reason),
                target_rel_ci95: None,
                max_repetitions: None,
                metric: None,
                values: Vec::new(),
                rel_ci95: None,
            });
        }
    }
    out
}

pub(super) fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), TestkitError> {
    let text = serde_json::to_string_pretty(value)?;
    write_atomic(path, text.as_bytes()).map_err(|source| TestkitError::Io {
        path: path.into(),
        source,
    })
}

/// An `ok` trial's manifest record (built through JSON, like [`manifest`]).
pub(super) fn record(
    e: &ExperimentSpec,
    t: &TrialSpec,
    id: &str,
    backend: &str,
    host: &str,
) -> Result<TrialRecord, TestkitError> {
    let value = json!({
        "id": id,
        "experiment": e.name,
        "platform": t.platform,
        "backend": backend,
        "workload": t.workload,
        "adversary": t.adversary,
        "repetition": t.repetition,
        "warmup": false,
        "n_instances": t.n_instances,
        "status": TrialState::Ok,
        "attempts": 1,
        "host": host,
        "duration_ms": 1000,
    });
    Ok(serde_json::from_value(value)?)
}
