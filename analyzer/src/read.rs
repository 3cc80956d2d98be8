//! Reading a run directory: the manifest, the host descriptions and every trial's Parquet file.
//!
//! Layout (see the design's "Results"): `manifest.json`, `env/<host>.json` and
//! `samples/experiment=<e>/platform=<p>/trial-<id>.parquet`. Only the files the manifest lists
//! for trials that finished `ok` are read ([`manifest_sample_files`]): a file left by a trial
//! that failed, a hidden staging file or anything else copied under `samples/` is never read as
//! data. Each file is checked against [`isolab_model::results::schema`] first: a foreign file is an error
//! naming both schemas, never silently mixed in.
//!
//! Files are decoded in parallel (one worker per core), string columns as Arrow dictionaries so
//! that interning costs one lookup per distinct value, and only the columns the analysis needs
//! ([`READ_COLUMNS`]) are decoded. Rows are appended in file order, so the table is the same
//! whatever the thread timing.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use arrow_schema::{ArrowError, DataType, Field, Schema};
use isolab_model::manifest::{Manifest, TrialState};
use isolab_model::results;
use parquet::errors::ParquetError;

use crate::decode::read_file;
use crate::table::SampleTable;

/// File name of the run manifest inside a run directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Directory of the host descriptions inside a run directory.
pub const ENV_DIR: &str = "env";
/// Directory of the Parquet samples inside a run directory.
pub const SAMPLES_DIR: &str = "samples";

/// Columns decoded from each file; the others (`run_id`, `attempt`, `accel`) come from the
/// manifest when needed.
pub const READ_COLUMNS: &[&str] = &[
    "experiment",
    "analysis",
    "trial_id",
    "repetition",
    "platform",
    "backend",
    "host",
    "instance",
    "role",
    "group",
    "n_instances",
    "workload",
    "adversary",
    "params",
    "metric",
    "value",
    "unit",
    "higher_is_better",
    "t_offset_s",
    "status",
];

/// Why a run directory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The directory has no manifest.
    #[error("{dir} is not a run directory: it has no {MANIFEST_FILE}")]
    NoManifest {
        /// The directory given.
        dir: PathBuf,
    },
    /// A file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The manifest is not valid.
    #[error("{path} is not a valid run manifest: {source}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// A host description is not valid JSON.
    #[error("{path} is not valid JSON: {source}")]
    Env {
        /// The `env/<host>.json` file.
        path: PathBuf,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// A Parquet file could not be decoded.
    #[error("cannot decode Parquet file {path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What parquet said.
        #[source]
        source: ParquetError,
    },
    /// A batch of a Parquet file could not be decoded.
    #[error("cannot decode Parquet file {path}: {source}")]
    Arrow {
        /// The file.
        path: PathBuf,
        /// What arrow said.
        #[source]
        source: ArrowError,
    },
    /// A Parquet file does not have the results schema.
    #[error(
        "{path} is not an isolab results file: {detail}\n  expected: {expected}\n  found:    {found}"
    )]
    SchemaMismatch {
        /// The file.
        path: PathBuf,
        /// The first difference.
        detail: String,
        /// The results schema, one `name: type` per column.
        expected: String,
        /// The file's schema, in the same form.
        found: String,
    },
    /// A decoded column had an unexpected Arrow type.
    #[error("{path}: column `{column}` decoded as {found}, expected {expected}")]
    Column {
        /// The file.
        path: PathBuf,
        /// The column.
        column: &'static str,
        /// The type the reader produced.
        found: DataType,
        /// The type the analyzer needs.
        expected: &'static str,
    },
    /// A decoding worker thread panicked.
    #[error("a Parquet decoding thread panicked")]
    Worker,
}

/// A run directory, read.
#[derive(Debug)]
pub struct Run {
    /// The directory.
    pub dir: PathBuf,
    /// `manifest.json`.
    pub manifest: Manifest,
    /// `env/<host>.json` by host name (file stem), sorted.
    pub env: BTreeMap<String, serde_json::Value>,
    /// Every row of every trial file.
    pub table: SampleTable,
    /// Files the manifest lists for `ok` trials that are not on disk, or not inside `dir` (an
    /// absolute path or one with `..`: never read), as the manifest gives them.
    pub missing_files: Vec<String>,
}

/// Which time-series rows (`t_offset_s` not null) to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TimeSeries {
    /// Every row: the table is the whole run.
    #[default]
    All,
    /// Time series only in experiments whose analysis reads them (`fairness`), and in files
    /// outside the `experiment=<e>` layout; elsewhere only summary rows are decoded. What
    /// [`crate::analyze`] uses: most rows of a large run are time series nobody reads.
    Needed,
    /// Summary rows only.
    None,
}

/// How to read a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Which time-series rows to keep.
    pub time_series: TimeSeries,
}

/// Analysis kinds that read time series.
const TIME_SERIES_ANALYSES: &[&str] = &["fairness"];

/// Hive partition value of a name, as the coordinator writes it.
fn partition_value(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '/' || c == '=' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// Whether to keep the time series of a file under `options`.
fn keeps_time_series(manifest: &Manifest, options: &ReadOptions, path: &Path) -> bool {
    match options.time_series {
        TimeSeries::All => true,
        TimeSeries::None => false,
        TimeSeries::Needed => {
            let experiment = path.components().find_map(|c| {
                c.as_os_str()
                    .to_str()
                    .and_then(|s| s.strip_prefix("experiment="))
            });
            let record = experiment.and_then(|e| {
                manifest
                    .experiments
                    .iter()
                    .find(|x| partition_value(&x.name) == e)
            });
            record.is_none_or(|r| TIME_SERIES_ANALYSES.contains(&r.analysis.as_str()))
        }
    }
}

/// Reads a whole run directory, every row.
pub fn read_run(run_dir: &Path) -> Result<Run, ReadError> {
    read_run_with(run_dir, &ReadOptions::default())
}

/// Reads a run directory with options.
pub fn read_run_with(run_dir: &Path, options: &ReadOptions) -> Result<Run, ReadError> {
    let manifest = read_manifest(run_dir)?;
    let env = read_env(run_dir)?;
    let files = manifest_sample_files(&manifest, run_dir);
    let keep: Vec<bool> = files
        .iter()
        .map(|f| keeps_time_series(&manifest, options, f))
        .collect();
    let table = read_samples_filtered(&files, &keep)?;
    let missing_files = manifest
        .trials
        .iter()
        .filter(|t| t.status == TrialState::Ok && !t.warmup)
        .filter_map(|t| t.file.as_ref())
        .filter(|f| !is_inside_run(f) || !run_dir.join(f).is_file())
        .cloned()
        .collect();
    Ok(Run {
        dir: run_dir.to_path_buf(),
        manifest,
        env,
        table,
        missing_files,
    })
}

/// Reads `manifest.json` of a run directory.
pub fn read_manifest(run_dir: &Path) -> Result<Manifest, ReadError> {
    let path = run_dir.join(MANIFEST_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ReadError::NoManifest {
                dir: run_dir.to_path_buf(),
            });
        }
        Err(source) => return Err(ReadError::Io { path, source }),
    };
    serde_json::from_str(&text).map_err(|source| ReadError::Manifest { path, source })
}

/// Reads every `env/<host>.json` (absent directory: none).
pub fn read_env(run_dir: &Path) -> Result<BTreeMap<String, serde_json::Value>, ReadError> {
    let dir = run_dir.join(ENV_DIR);
    let mut out = BTreeMap::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    for path in sorted_entries(&dir)? {
        let name = file_name(&path);
        let Some(host) = name.strip_suffix(".json") else {
            continue;
        };
        if name.starts_with('.') || !path.is_file() {
            continue;
        }
        let text = fs::read_to_string(&path).map_err(|source| ReadError::Io {
            path: path.clone(),
            source,
        })?;
        let value =
            serde_json::from_str(&text).map_err(|source| ReadError::Env { path, source })?;
        out.insert(host.to_owned(), value);
    }
    Ok(out)
}

/// The files of the manifest's `ok` trials that are on disk, as paths under `run_dir`, in sorted
/// path order (the same order a sorted directory walk gives). Listed files that are missing are
/// reported separately ([`Run::missing_files`]); files under `samples/` that the manifest does
/// not list as `ok` are not data.
pub fn manifest_sample_files(manifest: &Manifest, run_dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = manifest
        .trials
        .iter()
        .filter(|t| t.status == TrialState::Ok)
        .filter_map(|t| t.file.as_deref())
        .filter(|f| is_inside_run(f))
        .map(|f| run_dir.join(f))
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether a manifest path is relative and stays inside the run directory.
fn is_inside_run(file: &str) -> bool {
    let path = Path::new(file);
    path.components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Every non-hidden `*.parquet` file under `samples/`, in sorted path order, listed or not (for
/// tools that check a directory; the analysis reads [`manifest_sample_files`]).
pub fn list_sample_files(run_dir: &Path) -> Result<Vec<PathBuf>, ReadError> {
    let mut out = Vec::new();
    let root = run_dir.join(SAMPLES_DIR);
    if root.is_dir() {
        walk(&root, &mut out)?;
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ReadError> {
    for path in sorted_entries(dir)? {
        let name = file_name(&path);
        if name.starts_with('.') || name.ends_with(".tmp") {
            continue;
        }
        let meta = fs::metadata(&path).map_err(|source| ReadError::Io {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            walk(&path, out)?;
        } else if meta.is_file() && name.ends_with(".parquet") {
            out.push(path);
        }
    }
    Ok(())
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, ReadError> {
    let io = |source| ReadError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        paths.push(entry.map_err(io)?.path());
    }
    paths.sort();
    Ok(paths)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Reads the given Parquet files into one table, in the order given, every row.
pub fn read_samples(files: &[PathBuf]) -> Result<SampleTable, ReadError> {
    read_samples_filtered(files, &vec![true; files.len()])
}

/// Reads the given Parquet files into one table, in the order given; `time_series[i]` says
/// whether file `i`'s time-series rows are kept (missing entries: kept).
pub fn read_samples_filtered(
    files: &[PathBuf],
    time_series: &[bool],
) -> Result<SampleTable, ReadError> {
    let keep = |i: usize| time_series.get(i).copied().unwrap_or(true);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len());
    let mut table = SampleTable::default();
    if workers <= 1 {
        for (i, f) in files.iter().enumerate() {
            table.append(read_file(f, keep(i))?);
        }
        return Ok(table);
    }
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(usize, Result<SampleTable, ReadError>)>();
    let mut first_error: Option<(usize, ReadError)> = None;
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (next, stop, keep) = (&next, &stop, &keep);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = files.get(i) else { break };
                    if tx.send((i, read_file(path, keep(i)))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        // Merge in file order; keep early finishers until their turn.
        let mut pending = BTreeMap::new();
        let mut want = 0;
        for (i, result) in rx {
            match result {
                Ok(part) => {
                    pending.insert(i, part);
                }
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    if first_error.as_ref().is_none_or(|(j, _)| i < *j) {
                        first_error = Some((i, e));
                    }
                }
            }
            while let Some(part) = pending.remove(&want) {
                if first_error.is_none() {
                    table.append(part);
                }
                want += 1;
            }
        }
        if first_error.is_none() && want < files.len() {
            first_error = Some((want, ReadError::Worker));
        }
    });
    match first_error {
        Some((_, e)) => Err(e),
        None => Ok(table),
    }
}

/// One line per column: `name: Type` (`?` marks a nullable column).
fn describe_field(f: &Field) -> String {
    format!(
        "{}: {}{}",
        f.name(),
        f.data_type(),
        if f.is_nullable() { "?" } else { "" }
    )
}

fn describe_schema(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| describe_field(f))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks a file's Arrow schema against the results schema.
///
/// The file's columns must start with exactly the results columns (name, type, nullability), in
/// order; columns after them are allowed, since the contract only ever adds columns at the end.
pub fn check_schema(path: &Path, found: &Schema) -> Result<(), ReadError> {
    let expected = results::schema();
    let mismatch = |detail: String| ReadError::SchemaMismatch {
        path: path.to_path_buf(),
        detail,
        expected: describe_schema(&expected),
        found: describe_schema(found),
    };
    for (i, want) in expected.fields().iter().enumerate() {
        let Some(have) = found.fields().get(i) else {
            return Err(mismatch(format!(
                "it has {} columns, the results schema has {}; `{}` is missing",
                found.fields().len(),
                expected.fields().len(),
                want.name()
            )));
        };
        if have.name() != want.name()
            || have.data_type() != want.data_type()
            || have.is_nullable() != want.is_nullable()
        {
            return Err(mismatch(format!(
                "column {i} is `{}`, expected `{}`",
                describe_field(have),
                describe_field(want)
            )));
        }
    }
    Ok(())
}

/// Counts rows per trial id (for checks against the manifest).
pub fn rows_per_trial(table: &SampleTable) -> HashMap<&str, usize> {
    let mut out: HashMap<&str, usize> = HashMap::new();
    for seg in &table.segments {
        *out.entry(table.str(seg.key.trial_id)).or_default() += seg.rows.len();
    }
    out
}
