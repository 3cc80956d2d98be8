//! `isolab export`: a run's results as a plain table for DuckDB, polars, pandas or a
//! spreadsheet, in CSV, Parquet or JSON.
//!
//! Two tables:
//!
//! - `summary`: one row per experiment × metric × platform with the report's statistics (median
//!   and its 95% CI, ratio to the baseline with its CI and level, p-value, overhead, verdict);
//! - `trials`: one row per trial of the manifest (id, experiment, platform, status, attempts,
//!   start and end, host, reason, file…), warm-ups included and marked.
//!
//! Column names and types are fixed ([`summary_schema`], [`trials_schema`]); a missing value is
//! null (empty in CSV), never 0. The summary is computed by [`crate::analyze`], so it reads only
//! the files the manifest lists as `ok`. `group` is an SQL keyword: quote it (`"group"`).
//!
//! ```no_run
//! use isolab_analyzer::export::{Format, Table, export};
//! let run = std::path::Path::new("results/demo-20250101T000000Z-abcd");
//! export(run, Table::Summary, Format::Csv, std::io::stdout())?;
//! # Ok::<(), isolab_analyzer::export::ExportError>(())
//! ```

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use isolab_model::manifest::Manifest;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;

use crate::read::{ReadError, read_manifest};
use crate::report::AnalyzeError;
use crate::summary::{StopReason, Summary, Verdict};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values with a header line (RFC 4180 quoting).
    Csv,
    /// Parquet, zstd-compressed.
    Parquet,
    /// A JSON array of objects, one per row, nulls written as `null`.
    Json,
}

/// Which table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Per experiment × metric × platform statistics.
    Summary,
    /// Per trial of the manifest.
    Trials,
}

/// Why a run could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The run could not be read or analysed.
    #[error(transparent)]
    Analyze(#[from] AnalyzeError),
    /// The manifest could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Building or writing the Arrow table failed (CSV, JSON).
    #[error("cannot write the table: {0}")]
    Arrow(#[from] ArrowError),
    /// Writing Parquet failed.
    #[error("cannot write Parquet: {0}")]
    Parquet(#[from] ParquetError),
    /// The output could not be written.
    #[error("cannot write the output: {0}")]
    Io(#[from] std::io::Error),
}

fn field(name: &str, ty: DataType, nullable: bool) -> Field {
    Field::new(name, ty, nullable)
}

/// Columns of the `summary` table.
pub fn summary_schema() -> SchemaRef {
    use DataType::{Boolean, Float64, Int64, Utf8};
    Arc::new(Schema::new(vec![
        field("experiment", Utf8, false),
        field("analysis", Utf8, false),
        field("label", Utf8, false),
        field("workload", Utf8, false),
        field("metric", Utf8, false),
        field("unit", Utf8, false),
        field("higher_is_better", Boolean, false),
        field("params", Utf8, false),
        field("role", Utf8, false),
        field("group", Utf8, true),
        field("n_instances", Int64, false),
        field("adversary", Utf8, true),
        field("platform", Utf8, false),
        field("baseline", Utf8, true),
        field("n", Int64, false),
        field("trials", Int64, false),
        field("stop_reason", Utf8, true),
        field("median", Float64, false),
        field("ci_low", Float64, false),
        field("ci_high", Float64, false),
        field("outliers", Int64, false),
        field("ratio_to_baseline", Float64, true),
        field("ratio_ci_low", Float64, true),
        field("ratio_ci_high", Float64, true),
        field("ratio_ci_level", Float64, true),
        field("p_value", Float64, true),
        field("overhead_pct", Float64, true),
        field("overhead_ci_low_pct", Float64, true),
        field("overhead_ci_high_pct", Float64, true),
        field("verdict", Utf8, true),
    ]))
}

/// Columns of the `trials` table.
pub fn trials_schema() -> SchemaRef {
    use DataType::{Boolean, Int64, Utf8};
    Arc::new(Schema::new(vec![
        field("trial_id", Utf8, false),
        field("experiment", Utf8, false),
        field("platform", Utf8, false),
        field("backend", Utf8, false),
        field("workload", Utf8, false),
        field("adversary", Utf8, true),
        field("repetition", Int64, false),
        field("warmup", Boolean, false),
        field("n_instances", Int64, false),
        field("status", Utf8, false),
        field("attempts", Int64, false),
        field("host", Utf8, true),
        field("accel", Utf8, true),
        field("started_at", Utf8, true),
        field("finished_at", Utf8, true),
        field("duration_ms", Int64, false),
        field("rows", Int64, false),
        field("file", Utf8, true),
        field("reason", Utf8, true),
    ]))
}

fn stop_name(r: StopReason) -> &'static str {
    match r {
        StopReason::Fixed => "fixed",
        StopReason::CiWithinTarget => "ci_within_target",
        StopReason::MaxRepetitions => "max_repetitions",
        StopReason::NoValues => "no_values",
    }
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Within => "within",
        Verdict::Worse => "worse",
        Verdict::Better => "better",
        Verdict::Inconclusive => "inconclusive",
        Verdict::TooFewRepetitions => "too_few_repetitions",
    }
}

fn int(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// One value of a row, in schema order.
enum Cell {
    Text(Option<String>),
    Float(Option<f64>),
    Int(i64),
    Flag(bool),
}

fn text(s: &str) -> Cell {
    Cell::Text(Some(s.to_owned()))
}

fn opt_text(s: Option<&str>) -> Cell {
    Cell::Text(s.map(str::to_owned))
}

/// Builds a batch from rows of cells in schema order.
fn batch(schema: &SchemaRef, rows: &[Vec<Cell>]) -> Result<RecordBatch, ArrowError> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (i, f) in schema.fields().iter().enumerate() {
        let array: ArrayRef = match f.data_type() {
            DataType::Utf8 => Arc::new(StringArray::from_iter(rows.iter().map(|r| match &r[i] {
                Cell::Text(t) => t.clone(),
                _ => None,
            }))),
            DataType::Float64 => {
                Arc::new(Float64Array::from_iter(rows.iter().map(|r| match &r[i] {
                    Cell::Float(x) => x.filter(|v| v.is_finite()),
                    _ => None,
                })))
            }
            DataType::Int64 => Arc::new(Int64Array::from_iter_values(rows.iter().map(
                |r| match &r[i] {
                    Cell::Int(x) => *x,
                    _ => 0,
                },
            ))),
            _ => Arc::new(BooleanArray::from_iter(rows.iter().map(|r| match &r[i] {
                Cell::Flag(b) => Some(*b),
                _ => None,
            }))),
        };
        columns.push(array);
    }
    RecordBatch::try_new(schema.clone(), columns)
}

/// The `summary` table of an analysed run.
pub fn summary_table(summary: &Summary) -> Result<RecordBatch, ArrowError> {
    let mut rows = Vec::new();
    for (name, e) in &summary.experiments {
        for (label, m) in &e.metrics {
            for (platform, p) in &m.platforms {
                let ratio_ci = p.ratio_ci;
                let overhead_ci = p.overhead_ci_pct;
                rows.push(vec![
                    text(name),
                    text(&e.analysis),
                    text(label),
                    text(&m.workload),
                    text(&m.metric),
                    text(&m.unit),
                    Cell::Flag(m.higher_is_better),
                    text(&m.params),
                    text(&m.role),
                    opt_text(m.group.as_deref()),
                    Cell::Int(i64::from(m.n_instances)),
                    opt_text(m.adversary.as_deref()),
                    text(platform),
                    opt_text(e.baseline.as_deref()),
                    Cell::Int(int(p.n)),
                    Cell::Int(int(p.trials)),
                    opt_text(p.stop_reason.map(stop_name)),
                    Cell::Float(Some(p.median)),
                    Cell::Float(Some(p.ci_low)),
                    Cell::Float(Some(p.ci_high)),
                    Cell::Int(int(p.outliers)),
                    Cell::Float(p.ratio_to_baseline),
                    Cell::Float(ratio_ci.map(|c| c[0])),
                    Cell::Float(ratio_ci.map(|c| c[1])),
                    Cell::Float(p.ratio_ci_level),
                    Cell::Float(p.p_value),
                    Cell::Float(p.overhead_pct),
                    Cell::Float(overhead_ci.map(|c| c[0])),
                    Cell::Float(overhead_ci.map(|c| c[1])),
                    opt_text(p.verdict.map(verdict_name)),
                ]);
            }
        }
    }
    batch(&summary_schema(), &rows)
}

/// The `trials` table of a manifest, in the manifest's (execution) order.
pub fn trials_table(manifest: &Manifest) -> Result<RecordBatch, ArrowError> {
    let rows: Vec<Vec<Cell>> = manifest
        .trials
        .iter()
        .map(|t| {
            vec![
                text(&t.id),
                text(&t.experiment),
                text(&t.platform),
                text(&t.backend),
                text(&t.workload),
                opt_text(t.adversary.as_deref()),
                Cell::Int(i64::from(t.repetition)),
                Cell::Flag(t.warmup),
                Cell::Int(i64::from(t.n_instances)),
                text(t.status.as_str()),
                Cell::Int(i64::from(t.attempts)),
                opt_text(t.host.as_deref()),
                opt_text(t.accel.as_deref()),
                opt_text(t.started_at.as_deref()),
                opt_text(t.finished_at.as_deref()),
                Cell::Int(i64::try_from(t.duration_ms).unwrap_or(i64::MAX)),
                Cell::Int(i64::try_from(t.rows).unwrap_or(i64::MAX)),
                opt_text(t.file.as_deref()),
                opt_text(t.reason.as_deref()),
            ]
        })
        .collect();
    batch(&trials_schema(), &rows)
}

/// Writes a batch in a format.
pub fn write_batch<W: Write + Send>(
    batch: &RecordBatch,
    format: Format,
    mut out: W,
) -> Result<(), ExportError> {
    match format {
        Format::Csv => {
            let mut w = arrow_csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            w.write(batch)?;
        }
        Format::Json => {
            let mut w = arrow_json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow_json::writer::JsonArray>(&mut out);
            w.write(batch)?;
            w.finish()?;
            drop(w);
            out.write_all(b"\n")?;
        }
        Format::Parquet => {
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .build();
            let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props))?;
            w.write(batch)?;
            w.close()?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Exports one table of the run in `run_dir` to `out`.
pub fn export<W: Write + Send>(
    run_dir: &Path,
    table: Table,
    format: Format,
    out: W,
) -> Result<(), ExportError> {
    let batch = match table {
        Table::Summary => summary_table(&crate::analyze(run_dir)?)?,
        Table::Trials => trials_table(&read_manifest(run_dir)?)?,
    };
    write_batch(&batch, format, out)
}
