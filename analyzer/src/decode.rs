//! Decoding one results file into a table of its own.
//!
//! String columns are read as Arrow dictionaries (a schema hint to the Parquet reader), so the
//! reader passes the files' dictionary pages through and interning costs one lookup per distinct
//! value per batch instead of one per row. Trial-level columns are checked for being constant
//! per batch, so a file of one trial becomes one segment without comparing every row.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::BooleanBufferBuilder;
use arrow_array::cast::AsArray;
use arrow_array::types::Int32Type;
use arrow_array::{Array, ArrayRef, BooleanArray, DictionaryArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use isolab_model::results;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
    RowFilter, RowSelection,
};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::page_index::column_index::ColumnIndexMetaData;

use crate::read::{READ_COLUMNS, ReadError, check_schema};
use crate::table::{SampleTable, SeriesKey, Sym, TrialKey};

/// Rows per decoded batch.
const BATCH_ROWS: usize = 64 * 1024;

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
///
/// Without `time_series`, a row filter on `t_offset_s IS NULL` runs first and the other columns
/// are decoded only for the summary rows that pass it.
pub(crate) fn read_file(path: &Path, time_series: bool) -> Result<SampleTable, ReadError> {
    let file = File::open(path).map_err(|source| ReadError::Io {
        path: path.into(),
        source,
    })?;
    let pq = |source| ReadError::Parquet {
        path: path.into(),
        source,
    };
    // The page index lets a summary-only read skip pages that hold no summary row.
    let load = ArrowReaderOptions::new().with_page_index(!time_series);
    let meta = ArrowReaderMetadata::load(&file, load).map_err(pq)?;
    check_schema(path, meta.schema())?;
    let options = ArrowReaderOptions::new().with_schema(dictionary_hint(meta.schema()));
    let meta = ArrowReaderMetadata::try_new(Arc::clone(meta.metadata()), options).map_err(pq)?;
    let indices = READ_COLUMNS
        .iter()
        .filter_map(|c| results::COLUMNS.iter().position(|x| x == c));
    let mask = ProjectionMask::roots(meta.parquet_schema(), indices);
    let t_offset = results::COLUMNS
        .iter()
        .position(|c| *c == "t_offset_s")
        .unwrap_or(0);
    let filter_mask = ProjectionMask::roots(meta.parquet_schema(), [t_offset]);
    let meta_ref = meta.clone();
    let mut builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta)
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS);
    if !time_series {
        if let Some(selection) = summary_pages(meta_ref.metadata(), t_offset) {
            builder = builder.with_row_selection(selection);
        }
        let summary_rows = ArrowPredicateFn::new(filter_mask, |batch: RecordBatch| {
            let col = batch.column(0);
            Ok(match col.logical_nulls() {
                Some(nulls) => BooleanArray::new(!nulls.inner(), None),
                None => {
                    let mut none = BooleanBufferBuilder::new(col.len());
                    none.append_n(col.len(), false);
                    BooleanArray::new(none.finish(), None)
                }
            })
        });
        builder = builder.with_row_filter(RowFilter::new(vec![Box::new(summary_rows)]));
    }
    let reader = builder.build().map_err(pq)?;
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

/// Rows in pages of `t_offset_s` that hold a null (a summary row), from the page index: pages
/// without one need not be read at all. `None` when the file has no page index.
fn summary_pages(meta: &ParquetMetaData, t_offset: usize) -> Option<RowSelection> {
    let (columns, offsets) = (meta.column_index()?, meta.offset_index()?);
    let mut ranges = Vec::new();
    let mut base = 0usize;
    for (rg, group) in meta.row_groups().iter().enumerate() {
        let rows = usize::try_from(group.num_rows()).ok()?;
        let pages = offsets.get(rg)?.get(t_offset)?.page_locations();
        let index = columns.get(rg)?.get(t_offset)?;
        // A file written without page statistics has offsets but no column index (and
        // `null_count` panics on `NONE`): no pushdown then, every page is read.
        if matches!(index, ColumnIndexMetaData::NONE) {
            return None;
        }
        for (p, page) in pages.iter().enumerate() {
            let start = usize::try_from(page.first_row_index).ok()?;
            let end = match pages.get(p + 1) {
                Some(next) => usize::try_from(next.first_row_index).ok()?,
                None => rows,
            };
            // Unknown null count: keep the page.
            if index.null_count(p).is_none_or(|n| n > 0) {
                ranges.push(base + start..base + end);
            }
        }
        base += rows;
    }
    Some(RowSelection::from_consecutive_ranges(
        ranges.into_iter(),
        base,
    ))
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int32Array, RecordBatch, StringArray};
    use arrow_schema::DataType;
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::{EnabledStatistics, WriterProperties};

    use super::*;

    /// Rows of the results schema: every tenth a summary row (`t_offset_s` null).
    fn batch(n: usize) -> RecordBatch {
        let schema = results::schema();
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| -> ArrayRef {
                match (f.name().as_str(), f.data_type()) {
                    ("t_offset_s", _) => Arc::new(Float64Array::from_iter((0..n).map(|i| {
                        #[allow(clippy::cast_precision_loss)]
                        let t = i as f64 * 0.1;
                        (i % 10 != 0).then_some(t)
                    }))),
                    (_, DataType::Float64) => Arc::new(Float64Array::from_iter_values(
                        (0..n).map(|i| f64::from(u32::try_from(i).unwrap_or(0))),
                    )),
                    (_, DataType::Int32) => {
                        Arc::new(Int32Array::from_iter_values((0..n).map(|_| 0)))
                    }
                    (_, DataType::Boolean) => Arc::new(BooleanArray::from(vec![false; n])),
                    _ => Arc::new(StringArray::from_iter_values((0..n).map(|_| "x"))),
                }
            })
            .collect();
        RecordBatch::try_new(schema, columns).unwrap()
    }

    fn write(path: &Path, stats: EnabledStatistics) {
        let props = WriterProperties::builder()
            .set_statistics_enabled(stats)
            .set_data_page_row_count_limit(100)
            .set_write_batch_size(100)
            .build();
        let mut w =
            ArrowWriter::try_new(File::create(path).unwrap(), results::schema(), Some(props))
                .unwrap();
        w.write(&batch(2000)).unwrap();
        w.close().unwrap();
    }

    #[test]
    fn summary_reads_work_with_and_without_page_statistics() {
        let dir = tempfile::tempdir().unwrap();
        for stats in [
            EnabledStatistics::Page,
            EnabledStatistics::Chunk,
            EnabledStatistics::None,
        ] {
            let path = dir.path().join(format!("{stats:?}.parquet"));
            write(&path, stats);
            let summaries = read_file(&path, false).unwrap();
            assert_eq!(summaries.len(), 200, "{stats:?}");
            assert!(summaries.t_offset_s.iter().all(|t| t.is_nan()), "{stats:?}");
            assert_eq!(read_file(&path, true).unwrap().len(), 2000, "{stats:?}");
        }
    }
}
