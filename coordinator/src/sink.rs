//! The Parquet sink: one file per finished trial, written atomically.
//!
//! Rows are built into one Arrow batch of exactly [`isolab_model::results::schema`]; the writer
//! stages the file next to its target (`.trial-<id>.parquet.tmp`), syncs it, renames it into place
//! and syncs the directory, so a crash never leaves a half file that a reader would take for data
//! (readers skip hidden `.tmp` files). Partitioning is hive style:
//! `samples/experiment=<e>/platform=<p>/trial-<id>.parquet`.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int32Array, RecordBatch, StringArray};
use isolab_model::results::{self, ResultRow};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{ArrowColumnWriter, compute_leaves};
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

/// Why a trial's rows could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Filesystem error on a path.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Arrow or Parquet refused the data.
    #[error("cannot encode {path}: {source}")]
    Parquet {
        /// The target file.
        path: PathBuf,
        /// What parquet said.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// The batch did not match the results schema.
    #[error("results batch does not match the schema: {0}")]
    Schema(#[from] arrow_schema::ArrowError),
}

/// Writer properties of every results file: zstd, statistics, `created_by` and schema version.
///
/// zstd level 1 (level 3 bought 0.1% smaller files for 3% more time here); dictionaries for the
/// repetitive string and integer columns but not for the two float columns, whose values rarely
/// repeat (a dictionary there is built, then abandoned); page statistics (the default), whose
/// page index lets the analyzer skip time-series pages when it reads summaries only.
pub fn default_writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_column_dictionary_enabled(ColumnPath::from("value"), false)
        .set_column_dictionary_enabled(ColumnPath::from("t_offset_s"), false)
        .set_created_by(format!("isolab {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(vec![KeyValue::new(
            "isolab.schema_version".to_owned(),
            results::SCHEMA_VERSION.to_owned(),
        )]))
        .build()
}

/// Hive partition value: keeps names readable, replaces path separators and `=`.
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

/// Relative path of a trial's Parquet file inside the run directory.
pub fn trial_file(experiment: &str, platform: &str, trial_id: &str) -> PathBuf {
    PathBuf::from("samples")
        .join(format!("experiment={}", partition_value(experiment)))
        .join(format!("platform={}", partition_value(platform)))
        .join(format!("trial-{trial_id}.parquet"))
}

/// Builds one column of the results schema from a slice of rows.
type BuildColumn = fn(&[ResultRow]) -> ArrayRef;

fn strings<F: Fn(&ResultRow) -> Option<&str>>(rows: &[ResultRow], get: F) -> ArrayRef {
    // Most string columns hold one value for a whole trial (run, experiment, platform, …): such
    // a column is one copy repeated, without a builder append per row.
    let first = rows.first().and_then(&get);
    if let Some(v) = first
        && rows.iter().all(|r| get(r) == Some(v))
    {
        return Arc::new(StringArray::new_repeated(v, rows.len()));
    }
    // Sized exactly so the buffers never regrow.
    let bytes = rows.iter().filter_map(&get).map(str::len).sum();
    let mut b = StringBuilder::with_capacity(rows.len(), bytes);
    for r in rows {
        b.append_option(get(r));
    }
    Arc::new(b.finish())
}

fn ints<F: Fn(&ResultRow) -> i32>(rows: &[ResultRow], get: F) -> ArrayRef {
    Arc::new(Int32Array::from_iter_values(rows.iter().map(get)))
}

/// How each column of [`results::schema`] is built, in schema order (a test checks by name).
const COLUMNS: [BuildColumn; 23] = [
    |r| strings(r, |x| Some(&x.run_id)),
    |r| strings(r, |x| Some(&x.experiment)),
    |r| strings(r, |x| Some(&x.analysis)),
    |r| strings(r, |x| Some(&x.trial_id)),
    |r| ints(r, |x| x.attempt),
    |r| ints(r, |x| x.repetition),
    |r| strings(r, |x| Some(&x.platform)),
    |r| strings(r, |x| Some(&x.backend)),
    |r| strings(r, |x| x.accel.as_deref()),
    |r| strings(r, |x| Some(&x.host)),
    |r| ints(r, |x| x.instance),
    |r| strings(r, |x| Some(&x.role)),
    |r| strings(r, |x| x.group.as_deref()),
    |r| ints(r, |x| x.n_instances),
    |r| strings(r, |x| Some(&x.workload)),
    |r| strings(r, |x| x.adversary.as_deref()),
    |r| strings(r, |x| Some(&x.params)),
    |r| strings(r, |x| Some(&x.metric)),
    |r| Arc::new(Float64Array::from_iter_values(r.iter().map(|x| x.value))),
    |r| strings(r, |x| Some(&x.unit)),
    |r| {
        Arc::new(BooleanArray::from_iter(
            r.iter().map(|x| Some(x.higher_is_better)),
        ))
    },
    |r| Arc::new(Float64Array::from_iter(r.iter().map(|x| x.t_offset_s))),
    |r| strings(r, |x| Some(&x.status)),
];

/// Builds one Arrow batch of the results schema from rows.
pub fn rows_to_batch(rows: &[ResultRow]) -> Result<RecordBatch, SinkError> {
    let columns = COLUMNS.iter().map(|build| build(rows)).collect();
    Ok(RecordBatch::try_new(results::schema(), columns)?)
}

/// Rows turned into Arrow and handed to the column writers at a time: a multiple of the
/// writer's mini-batch (1024) so pages split exactly where [`ArrowWriter`] splits them, and small
/// enough that the rows and the arrays built from them stay in the CPU cache.
const CHUNK_ROWS: usize = 4096;

/// Encodes `rows` as one row group into `file`, the columns spread over up to `threads` threads.
///
/// The file is byte for byte what [`ArrowWriter`] writes for [`rows_to_batch`]`(rows)`
/// (`ARROW:schema` included; a test compares them), produced differently: each thread owns some
/// columns and streams the rows through them [`CHUNK_ROWS`] at a time, through arrow-rs's
/// low-level column writers (the API it documents for encoding on several threads). A whole-file
/// batch first was slower than the encoding itself here: its 25 MB of fresh buffers for 100k rows
/// cost a page fault per 4 KiB, which this VM makes expensive.
fn encode_rows(
    file: File,
    rows: &[ResultRow],
    props: WriterProperties,
    threads: usize,
) -> Result<File, ParquetError> {
    let schema = results::schema();
    let writer = ArrowWriter::try_new(file, Arc::clone(&schema), Some(props))?;
    let (mut file_writer, factory) = writer.into_serialized_writer()?;
    if rows.is_empty() {
        // What ArrowWriter writes for no rows: a file without row groups.
        return file_writer.into_inner();
    }
    let writers = factory.create_column_writers(0)?;
    if writers.len() != COLUMNS.len() {
        return Err(ParquetError::General(format!(
            "results schema has {} leaf columns, the sink builds {}",
            writers.len(),
            COLUMNS.len()
        )));
    }
    let threads = threads.clamp(1, writers.len());
    let mut shares: Vec<Vec<(usize, ArrowColumnWriter)>> =
        (0..threads).map(|_| Vec::new()).collect();
    for (i, w) in writers.into_iter().enumerate() {
        shares[i % threads].push((i, w));
    }
    let fields = schema.fields();
    let encode = |share: Vec<(usize, ArrowColumnWriter)>| {
        let mut share = share;
        for chunk in rows.chunks(CHUNK_ROWS) {
            for (i, w) in &mut share {
                let array = COLUMNS[*i](chunk);
                for leaf in compute_leaves(&fields[*i], &array)? {
                    w.write(&leaf)?;
                }
            }
        }
        share
            .into_iter()
            .map(|(i, w)| w.close().map(|c| (i, c)))
            .collect::<Result<Vec<_>, ParquetError>>()
    };
    let mut shares = shares.into_iter();
    let own = shares.next().unwrap_or_default();
    let mut chunks = std::thread::scope(|s| {
        let others: Vec<_> = shares.map(|share| s.spawn(|| encode(share))).collect();
        let mut all = encode(own)?;
        for h in others {
            let done = h
                .join()
                .map_err(|_| ParquetError::General("a column encoder panicked".into()))?;
            all.extend(done?);
        }
        Ok::<_, ParquetError>(all)
    })?;
    chunks.sort_by_key(|(i, _)| *i);
    let mut row_group = file_writer.next_row_group()?;
    for (_, chunk) in chunks {
        chunk.append_to_row_group(&mut row_group)?;
    }
    row_group.close()?;
    file_writer.into_inner()
}

/// Threads that encode a results file's columns: the host's parallelism, at most 4.
fn encode_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// Writes `rows` to `run_dir/rel` atomically. Returns the number of rows written.
pub fn write_trial(run_dir: &Path, rel: &Path, rows: &[ResultRow]) -> Result<u64, SinkError> {
    let target = run_dir.join(rel);
    let dir = target.parent().unwrap_or(run_dir).to_path_buf();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SinkError::Io { path, source }
    };
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let file = File::create(&staging).map_err(io(&staging))?;
        let file = encode_rows(file, rows, default_writer_properties(), encode_threads()).map_err(
            |source| SinkError::Parquet {
                path: target.clone(),
                source,
            },
        )?;
        file.sync_all().map_err(io(&staging))?;
        fs::rename(&staging, &target).map_err(io(&target))?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&staging);
    }
    result?;
    Ok(rows.len() as u64)
}

/// Writes bytes to `path` atomically (stage, sync, rename, sync the directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SinkError> {
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| SinkError::Io { path: p, source }
    };
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut f = File::create(&staging).map_err(io(&staging))?;
        f.write_all(bytes).map_err(io(&staging))?;
        f.sync_all().map_err(io(&staging))?;
        fs::rename(&staging, path).map_err(io(path))?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&staging);
    }
    result
}

fn sync_dir(dir: &Path) -> Result<(), SinkError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| SinkError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn row(i: i32) -> ResultRow {
        ResultRow {
            run_id: "r".into(),
            experiment: "micro".into(),
            analysis: "overhead".into(),
            trial_id: "abc".into(),
            attempt: 1,
            repetition: i,
            platform: "native".into(),
            backend: "native".into(),
            accel: None,
            host: "h".into(),
            instance: 0,
            role: "peer".into(),
            group: None,
            n_instances: 1,
            workload: "syscall".into(),
            adversary: None,
            params: "{}".into(),
            metric: "ns_per_call".into(),
            value: f64::from(i) * 1.5,
            unit: "ns".into(),
            higher_is_better: false,
            t_offset_s: if i % 2 == 0 { Some(0.1) } else { None },
            status: "ok".into(),
        }
    }

    #[test]
    fn round_trip_and_no_staging_left() {
        let dir = tempfile::tempdir().unwrap();
        let rel = trial_file("micro", "native", "abc");
        let rows: Vec<_> = (0..10).map(row).collect();
        assert_eq!(write_trial(dir.path(), &rel, &rows).unwrap(), 10);
        let f = File::open(dir.path().join(&rel)).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
        assert_eq!(reader.schema().fields(), results::schema().fields());
        let created_by = reader
            .metadata()
            .file_metadata()
            .created_by()
            .unwrap_or_default()
            .to_owned();
        assert!(created_by.starts_with("isolab"), "{created_by}");
        let batches: Vec<_> = reader.build().unwrap().collect::<Result<_, _>>().unwrap();
        let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(total, 10);
        let staged: Vec<_> = fs::read_dir(dir.path().join(rel.parent().unwrap()))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(staged.is_empty());
    }

    #[test]
    fn parallel_encoding_writes_what_arrow_writer_writes() {
        // More than one chunk, a partial last chunk, and values that change within the file.
        let mut rows: Vec<_> = (0..(2 * CHUNK_ROWS + 777))
            .map(|i| row(i32::try_from(i).unwrap()))
            .collect();
        rows[7].accel = Some("tcg".into());
        rows[9].group = Some("a".into());
        rows[CHUNK_ROWS + 3].metric = "cpu_usage_ns".into();
        let batch = rows_to_batch(&rows).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain.parquet");
        let mut w = ArrowWriter::try_new(
            File::create(&plain).unwrap(),
            results::schema(),
            Some(default_writer_properties()),
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        for threads in [1, 2, 3, 64] {
            let par = dir.path().join(format!("par-{threads}.parquet"));
            let f = File::create(&par).unwrap();
            encode_rows(f, &rows, default_writer_properties(), threads).unwrap();
            assert_eq!(
                fs::read(&plain).unwrap(),
                fs::read(&par).unwrap(),
                "{threads} threads"
            );
        }
    }

    #[test]
    fn every_column_is_built_from_its_own_field() {
        use arrow_array::{Array, Int32Array, StringArray};
        let r = ResultRow {
            run_id: "run_id".into(),
            experiment: "experiment".into(),
            analysis: "analysis".into(),
            trial_id: "trial_id".into(),
            attempt: 4,
            repetition: 5,
            platform: "platform".into(),
            backend: "backend".into(),
            accel: Some("accel".into()),
            host: "host".into(),
            instance: 10,
            role: "role".into(),
            group: Some("group".into()),
            n_instances: 13,
            workload: "workload".into(),
            adversary: Some("adversary".into()),
            params: "params".into(),
            metric: "metric".into(),
            value: 18.0,
            unit: "unit".into(),
            higher_is_better: true,
            t_offset_s: Some(21.0),
            status: "status".into(),
        };
        let batch = rows_to_batch(&[r]).unwrap();
        for (i, field) in results::schema().fields().iter().enumerate() {
            let col = batch.column(i);
            if let Some(s) = col.as_any().downcast_ref::<StringArray>() {
                assert_eq!(s.value(0), field.name(), "column {i}");
            } else if let Some(n) = col.as_any().downcast_ref::<Int32Array>() {
                assert_eq!(n.value(0), i32::try_from(i).unwrap(), "{}", field.name());
            } else {
                assert!(col.is_valid(0), "{}", field.name());
            }
        }
    }

    #[test]
    fn no_rows_make_a_readable_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let rel = trial_file("micro", "native", "empty");
        assert_eq!(write_trial(dir.path(), &rel, &[]).unwrap(), 0);
        let f = File::open(dir.path().join(&rel)).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
        assert_eq!(reader.schema().fields(), results::schema().fields());
        let total: usize = reader.build().unwrap().map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(total, 0);
    }

    #[test]
    fn batch_columns_follow_the_rows() {
        use arrow_array::{Array, Float64Array, Int32Array, StringArray};
        let mut rows: Vec<_> = (0..6).map(row).collect();
        rows[3].adversary = Some("fork_bomb".into());
        rows[4].metric = "other".into();
        let batch = rows_to_batch(&rows).unwrap();
        let col = |name: &str| batch.column_by_name(name).unwrap().clone();
        let adversary = col("adversary");
        let adversary = adversary.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(adversary.null_count(), 5);
        assert_eq!(adversary.value(3), "fork_bomb");
        let metric = col("metric");
        let metric = metric.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(metric.value(4), "other");
        assert_eq!(metric.value(5), "ns_per_call");
        let rep = col("repetition");
        let rep = rep.as_any().downcast_ref::<Int32Array>().unwrap();
        assert_eq!(rep.values().to_vec(), vec![0, 1, 2, 3, 4, 5]);
        let t = col("t_offset_s");
        let t = t.as_any().downcast_ref::<Float64Array>().unwrap();
        assert!(t.is_valid(0) && t.is_null(1));
    }

    #[test]
    fn partition_values_are_safe() {
        assert_eq!(
            trial_file("a/b", "x=y", "1"),
            PathBuf::from("samples/experiment=a_b/platform=x_y/trial-1.parquet")
        );
    }
}
