//! Reading a run directory: the manifest, the host descriptions and every trial's Parquet file.
//!
//! Layout (see the design's "Results"): `manifest.json`, `env/<host>.json` and
//! `samples/experiment=<e>/platform=<p>/trial-<id>.parquet`. Every non-hidden `*.parquet` file
//! under `samples/` is read (hidden staging files such as `.trial-<id>.parquet.tmp` are skipped),
//! and each is checked against [`isolab_model::results::schema`] first: a foreign file is an error
//! naming both schemas, never silently mixed in.
//!
//! Files are decoded in parallel (one worker per core), string columns as Arrow dictionaries so
//! that interning costs one lookup per distinct value, and only the columns the analysis needs
//! ([`READ_COLUMNS`]) are decoded. Rows are appended in file order, so the table is the same
//! whatever the thread timing.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

use arrow_array::cast::AsArray;
use arrow_array::types::Int32Type;
use arrow_array::{Array, ArrayRef, DictionaryArray, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use isolab_model::manifest::{Manifest, TrialState};
use isolab_model::results;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::errors::ParquetError;

use crate::table::{SampleTable, SeriesKey, Sym, TrialKey};

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

/// Rows per decoded batch.
const BATCH_ROWS: usize = 64 * 1024;

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
    /// Files the manifest lists for `ok` trials that are not on disk, relative to `dir`.
    pub missing_files: Vec<String>,
}

/// Reads a whole run directory.
pub fn read_run(run_dir: &Path) -> Result<Run, ReadError> {
    let manifest = read_manifest(run_dir)?;
    let env = read_env(run_dir)?;
    let files = list_sample_files(run_dir)?;
    let table = read_samples(&files)?;
    let missing_files = manifest
        .trials
        .iter()
        .filter(|t| t.status == TrialState::Ok && !t.warmup)
        .filter_map(|t| t.file.as_ref())
        .filter(|f| !run_dir.join(f).is_file())
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

/// Every non-hidden `*.parquet` file under `samples/`, in sorted path order.
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

/// Reads the given Parquet files into one table, in the order given.
pub fn read_samples(files: &[PathBuf]) -> Result<SampleTable, ReadError> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len());
    let mut table = SampleTable::default();
    if workers <= 1 {
        for f in files {
            table.append(read_file(f)?);
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
            let (next, stop) = (&next, &stop);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = files.get(i) else { break };
                    if tx.send((i, read_file(path))).is_err() {
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

/// The file's schema with every `Utf8` column read as a dictionary.
fn dictionary_hint(found: &Schema) -> SchemaRef {
    let fields: Vec<Field> = found
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 => f.as_ref().clone().with_data_type(DataType::Dictionary(
                Box::new(DataType::Int32),
                Box::new(DataType::Utf8),
            )),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// Reads one file into a table of its own.
fn read_file(path: &Path) -> Result<SampleTable, ReadError> {
    let file = File::open(path).map_err(|source| ReadError::Io {
        path: path.into(),
        source,
    })?;
    let pq = |source| ReadError::Parquet {
        path: path.into(),
        source,
    };
    let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(pq)?;
    check_schema(path, meta.schema())?;
    let options = ArrowReaderOptions::new().with_schema(dictionary_hint(meta.schema()));
    let meta = ArrowReaderMetadata::try_new(Arc::clone(meta.metadata()), options).map_err(pq)?;
    let indices = READ_COLUMNS
        .iter()
        .filter_map(|c| results::COLUMNS.iter().position(|x| x == c));
    let mask = ProjectionMask::roots(meta.parquet_schema(), indices);
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta)
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(pq)?;
    let mut table = SampleTable::default();
    table.files.push(path.to_path_buf());
    for batch in reader {
        let batch = batch.map_err(|source| ReadError::Arrow {
            path: path.into(),
            source,
        })?;
        append_batch(&mut table, &batch, path)?;
    }
    Ok(table)
}

/// A dictionary-encoded string column, its values interned.
struct StrCol<'a> {
    lut: Vec<Option<Sym>>,
    keys: &'a [i32],
    array: &'a DictionaryArray<Int32Type>,
    empty: Sym,
}

impl StrCol<'_> {
    #[inline]
    fn at(&self, i: usize) -> Option<Sym> {
        if self.array.is_null(i) {
            return None;
        }
        // Arrow validates dictionary keys: they are non-negative and in range.
        #[allow(clippy::cast_sign_loss)]
        self.lut[self.keys[i] as usize]
    }

    /// The value of a non-null column (the schema check guarantees no nulls).
    #[inline]
    fn req(&self, i: usize) -> Sym {
        self.at(i).unwrap_or(self.empty)
    }

    fn is_constant(&self) -> bool {
        let nulls = self.array.null_count();
        (nulls == 0 || nulls == self.keys.len())
            && self
                .keys
                .first()
                .is_none_or(|k0| self.keys.iter().all(|k| k == k0))
    }
}

fn column<'a>(
    batch: &'a RecordBatch,
    path: &Path,
    name: &'static str,
) -> Result<&'a ArrayRef, ReadError> {
    batch.column_by_name(name).ok_or_else(|| ReadError::Column {
        path: path.into(),
        column: name,
        found: DataType::Null,
        expected: "a projected column",
    })
}

fn str_col<'a>(
    batch: &'a RecordBatch,
    path: &Path,
    name: &'static str,
    table: &mut SampleTable,
) -> Result<StrCol<'a>, ReadError> {
    let col = column(batch, path, name)?;
    let wrong = || ReadError::Column {
        path: path.into(),
        column: name,
        found: col.data_type().clone(),
        expected: "Dictionary(Int32, Utf8)",
    };
    let array = col.as_dictionary_opt::<Int32Type>().ok_or_else(wrong)?;
    let values = array.values().as_string_opt::<i32>().ok_or_else(wrong)?;
    let lut = (0..values.len())
        .map(|j| (!values.is_null(j)).then(|| table.strings.intern(values.value(j))))
        .collect();
    let empty = table.strings.intern("");
    Ok(StrCol {
        lut,
        keys: array.keys().values(),
        array,
        empty,
    })
}

fn int_col<'a>(
    batch: &'a RecordBatch,
    path: &Path,
    name: &'static str,
) -> Result<&'a [i32], ReadError> {
    let col = column(batch, path, name)?;
    col.as_primitive_opt::<Int32Type>()
        .map(|a| &a.values()[..])
        .ok_or_else(|| ReadError::Column {
            path: path.into(),
            column: name,
            found: col.data_type().clone(),
            expected: "Int32",
        })
}

fn f64_col<'a>(
    batch: &'a RecordBatch,
    path: &Path,
    name: &'static str,
) -> Result<&'a arrow_array::Float64Array, ReadError> {
    let col = column(batch, path, name)?;
    col.as_primitive_opt::<arrow_array::types::Float64Type>()
        .ok_or_else(|| ReadError::Column {
            path: path.into(),
            column: name,
            found: col.data_type().clone(),
            expected: "Float64",
        })
}

/// Appends one decoded batch (of the projected columns) to a single-file table.
fn append_batch(t: &mut SampleTable, b: &RecordBatch, path: &Path) -> Result<(), ReadError> {
    let n = b.num_rows();
    let start = t.len();
    let experiment = str_col(b, path, "experiment", t)?;
    let analysis = str_col(b, path, "analysis", t)?;
    let trial_id = str_col(b, path, "trial_id", t)?;
    let platform = str_col(b, path, "platform", t)?;
    let backend = str_col(b, path, "backend", t)?;
    let host = str_col(b, path, "host", t)?;
    let adversary = str_col(b, path, "adversary", t)?;
    let status = str_col(b, path, "status", t)?;
    let repetition = int_col(b, path, "repetition")?;
    let n_instances = int_col(b, path, "n_instances")?;
    let trial_key = |i: usize| TrialKey {
        experiment: experiment.req(i),
        analysis: analysis.req(i),
        trial_id: trial_id.req(i),
        repetition: repetition[i],
        platform: platform.req(i),
        backend: backend.req(i),
        host: host.req(i),
        n_instances: n_instances[i],
        adversary: adversary.at(i),
        status: status.req(i),
    };
    let constant = [
        &experiment,
        &analysis,
        &trial_id,
        &platform,
        &backend,
        &host,
        &adversary,
        &status,
    ]
    .iter()
    .all(|c| c.is_constant())
        && repetition.iter().all(|&r| r == repetition[0])
        && n_instances.iter().all(|&r| r == n_instances[0]);

    let role = str_col(b, path, "role", t)?;
    let group = str_col(b, path, "group", t)?;
    let workload = str_col(b, path, "workload", t)?;
    let params = str_col(b, path, "params", t)?;
    let metric = str_col(b, path, "metric", t)?;
    let unit = str_col(b, path, "unit", t)?;
    let hib_col = column(b, path, "higher_is_better")?;
    let hib = hib_col.as_boolean_opt().ok_or_else(|| ReadError::Column {
        path: path.into(),
        column: "higher_is_better",
        found: hib_col.data_type().clone(),
        expected: "Boolean",
    })?;
    t.series_id.reserve(n);
    let mut last: Option<(SeriesKey, u32)> = None;
    for i in 0..n {
        let key = SeriesKey {
            role: role.req(i),
            group: group.at(i),
            workload: workload.req(i),
            params: params.req(i),
            metric: metric.req(i),
            unit: unit.req(i),
            higher_is_better: hib.value(i),
        };
        let id = match last {
            Some((k, id)) if k == key => id,
            _ => {
                let id = t.series_id_of(key);
                last = Some((key, id));
                id
            }
        };
        t.series_id.push(id);
    }
    t.instance.extend_from_slice(int_col(b, path, "instance")?);
    t.value
        .extend_from_slice(f64_col(b, path, "value")?.values());
    t.t_offset_s.extend(
        f64_col(b, path, "t_offset_s")?
            .iter()
            .map(|v| v.unwrap_or(f64::NAN)),
    );

    if n == 0 {
        return Ok(());
    }
    if constant {
        t.push_segment(trial_key(0), 0, start..start + n);
        return Ok(());
    }
    let mut seg_start = 0;
    let mut seg_key = trial_key(0);
    for i in 1..n {
        let k = trial_key(i);
        if k != seg_key {
            t.push_segment(seg_key, 0, start + seg_start..start + i);
            seg_start = i;
            seg_key = k;
        }
    }
    t.push_segment(seg_key, 0, start + seg_start..start + n);
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
