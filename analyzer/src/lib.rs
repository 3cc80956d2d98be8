//! The analyzer behind `isolab report` and `isolab compare`: reads a run directory's Parquet
//! results, computes robust statistics and writes `summary.json`, `report.md` and a
//! self-contained `report.html`.
//!
//! Data flows one way: [`read::read_run`] loads the manifest and every trial file into a
//! columnar [`table::SampleTable`]; [`aggregate`] turns rows into per-repetition values and
//! per-metric [`stats`] with [`overhead`] verdicts, and the analysis of each experiment's kind
//! adds its section ([`scaling`], [`fairness`], [`isolation`]); [`report`] assembles the
//! [`summary::Summary`] and writes it as JSON, Markdown ([`markdown`]) and HTML ([`html`],
//! [`charts`]). [`compare`] sets two runs side by side. [`testkit`] writes synthetic run
//! directories with planted values for tests and benchmarks.
//!
//! ```no_run
//! use std::path::Path;
//! let summary = isolab_analyzer::analyze(Path::new("results/demo-20250101T000000Z-abcd"))?;
//! for (name, experiment) in &summary.experiments {
//!     println!("{name}: {} metrics", experiment.metrics.len());
//! }
//! # Ok::<(), isolab_analyzer::AnalyzeError>(())
//! ```

pub mod aggregate;
pub mod charts;
pub mod compare;
mod decode;
pub mod envdiff;
pub mod environment;
pub mod export;
pub mod fairness;
pub mod findings;
pub mod fsutil;
pub mod html;
pub mod isolation;
pub mod markdown;
pub mod metrics;
pub mod noise;
pub mod overhead;
pub mod ratio;
pub mod read;
mod repetitions;
pub mod report;
pub mod scaling;
pub mod stats;
pub mod summary;
pub mod table;
pub mod testkit;

pub use read::{ReadError, ReadOptions, Run, TimeSeries, read_run, read_run_with};
pub use report::{AnalyzeError, ReportError, ReportPaths, analyze, summarize, write_report};
pub use summary::Summary;
