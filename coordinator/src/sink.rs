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

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int32Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use isolab_model::results::{self, ResultRow};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

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
pub fn default_writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
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

/// Builds one Arrow batch of the results schema from rows.
pub fn rows_to_batch(rows: &[ResultRow]) -> Result<RecordBatch, SinkError> {
    let n = rows.len();
    let str_col = |get: &dyn Fn(&ResultRow) -> Option<&str>| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(n, n * 8);
        for r in rows {
            b.append_option(get(r));
        }
        Arc::new(b.finish())
    };
    let int_col = |get: &dyn Fn(&ResultRow) -> i32| -> ArrayRef {
        let mut b = Int32Builder::with_capacity(n);
        for r in rows {
            b.append_value(get(r));
        }
        Arc::new(b.finish())
    };
    let mut value = Float64Builder::with_capacity(n);
    let mut t_offset = Float64Builder::with_capacity(n);
    let mut hib = BooleanBuilder::with_capacity(n);
    for r in rows {
        value.append_value(r.value);
        t_offset.append_option(r.t_offset_s);
        hib.append_value(r.higher_is_better);
    }
    let columns: Vec<ArrayRef> = vec![
        str_col(&|r| Some(&r.run_id)),
        str_col(&|r| Some(&r.experiment)),
        str_col(&|r| Some(&r.analysis)),
        str_col(&|r| Some(&r.trial_id)),
        int_col(&|r| r.attempt),
        int_col(&|r| r.repetition),
        str_col(&|r| Some(&r.platform)),
        str_col(&|r| Some(&r.backend)),
        str_col(&|r| r.accel.as_deref()),
        str_col(&|r| Some(&r.host)),
        int_col(&|r| r.instance),
        str_col(&|r| Some(&r.role)),
        str_col(&|r| r.group.as_deref()),
        int_col(&|r| r.n_instances),
        str_col(&|r| Some(&r.workload)),
        str_col(&|r| r.adversary.as_deref()),
        str_col(&|r| Some(&r.params)),
        str_col(&|r| Some(&r.metric)),
        Arc::new(value.finish()),
        str_col(&|r| Some(&r.unit)),
        Arc::new(hib.finish()),
        Arc::new(t_offset.finish()),
        str_col(&|r| Some(&r.status)),
    ];
    Ok(RecordBatch::try_new(results::schema(), columns)?)
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
    let batch = rows_to_batch(rows)?;
    let result = (|| {
        let file = File::create(&staging).map_err(io(&staging))?;
        let pq = |source| SinkError::Parquet {
            path: target.clone(),
            source,
        };
        let mut writer =
            ArrowWriter::try_new(file, results::schema(), Some(default_writer_properties()))
                .map_err(pq)?;
        writer.write(&batch).map_err(pq)?;
        let file = writer.into_inner().map_err(pq)?;
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
    fn partition_values_are_safe() {
        assert_eq!(
            trial_file("a/b", "x=y", "1"),
            PathBuf::from("samples/experiment=a_b/platform=x_y/trial-1.parquet")
        );
    }
}
