//! Entry points: [`analyze`] a run directory into a [`Summary`], and [`write_report`] its
//! `summary.json`, `report.md` and `report.html` (schema: see [`crate::summary`]).
//!
//! ```no_run
//! let paths = isolab_analyzer::write_report(
//!     std::path::Path::new("results/demo-20250101T000000Z-abcd"),
//!     std::path::Path::new("results/demo-20250101T000000Z-abcd"),
//! )?;
//! println!("{}", paths.report_md.display());
//! # Ok::<(), isolab_analyzer::ReportError>(())
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use isolab_model::manifest::{RunStatus, TrialState};

use crate::fsutil::write_atomic;
use crate::read::{ReadError, ReadOptions, Run, TimeSeries, read_run_with};
use crate::summary::{FailedTrial, SUMMARY_FORMAT_VERSION, Summary, TrialCounts};
use crate::{aggregate, environment, findings};
use crate::{html, markdown};

/// File name of the JSON summary.
pub const SUMMARY_FILE: &str = "summary.json";
/// File name of the Markdown report.
pub const REPORT_MD_FILE: &str = "report.md";
/// File name of the HTML report.
pub const REPORT_HTML_FILE: &str = "report.html";

/// Why a run could not be analysed.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// The run directory could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// Why reports could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The run could not be analysed.
    #[error(transparent)]
    Analyze(#[from] AnalyzeError),
    /// The summary could not be serialized.
    #[error("cannot serialize the summary: {0}")]
    Serialize(#[from] serde_json::Error),
    /// A report file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Where the reports were written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportPaths {
    /// `summary.json`.
    pub summary_json: PathBuf,
    /// `report.md`.
    pub report_md: PathBuf,
    /// `report.html`.
    pub report_html: PathBuf,
    /// Charts in `report.html`.
    pub charts: usize,
}

/// Reads and analyses a run directory.
pub fn analyze(run_dir: &Path) -> Result<Summary, AnalyzeError> {
    let options = ReadOptions {
        time_series: TimeSeries::Needed,
    };
    let run = read_run_with(run_dir, &options)?;
    Ok(summarize(&run))
}

fn status_name(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Running => "running",
        RunStatus::Ok => "ok",
        RunStatus::Failed => "failed",
        RunStatus::Interrupted => "interrupted",
    }
}

/// Analyses a run that was already read.
pub fn summarize(run: &Run) -> Summary {
    let m = &run.manifest;
    let mut counts = TrialCounts::default();
    let mut failed_trials = Vec::new();
    for t in m.trials.iter().filter(|t| !t.warmup) {
        counts.planned += 1;
        match t.status {
            TrialState::Ok => counts.ok += 1,
            TrialState::Failed => counts.failed += 1,
            TrialState::TimedOut => counts.timed_out += 1,
            TrialState::Cancelled => counts.cancelled += 1,
            TrialState::NotRun => counts.not_run += 1,
            TrialState::Pending | TrialState::Running => counts.unfinished += 1,
        }
        if matches!(
            t.status,
            TrialState::Failed | TrialState::TimedOut | TrialState::Cancelled
        ) {
            failed_trials.push(FailedTrial {
                id: t.id.clone(),
                experiment: t.experiment.clone(),
                platform: t.platform.clone(),
                workload: t.workload.clone(),
                repetition: t.repetition,
                status: t.status.as_str().to_owned(),
                reason: t.reason.clone(),
            });
        }
    }
    let table = &run.table;
    let mut hosts: BTreeSet<String> = run.env.keys().cloned().collect();
    hosts.extend(m.trials.iter().filter_map(|t| t.host.clone()));
    hosts.extend(
        table
            .segments
            .iter()
            .map(|s| table.str(s.key.host).to_owned()),
    );
    let (experiments, noise) = aggregate::summaries(run);
    let environment = environment::environment(run);
    let backends: findings::Backends = m
        .trials
        .iter()
        .map(|t| (t.platform.clone(), t.backend.clone()))
        .collect();
    let cores = environment.iter().filter_map(|h| h.cores).min();
    let paper = findings::checklist(&m.pipeline_name, &experiments, &backends, cores);
    Summary {
        format_version: SUMMARY_FORMAT_VERSION,
        run_id: m.run_id.clone(),
        pipeline: m.pipeline_name.clone(),
        pipeline_sha256: m.pipeline_sha256.clone(),
        isolab_version: m.isolab_version.clone(),
        status: status_name(m.status).to_owned(),
        started_at: m.started_at.clone(),
        finished_at: m.finished_at.clone(),
        hosts: hosts.into_iter().collect(),
        trials: counts,
        failed_trials,
        missing_files: run.missing_files.clone(),
        noise,
        environment,
        paper,
        experiments,
    }
}

/// Writes `summary.json`, `report.md` and `report.html` for a summary into `out_dir`, atomically.
pub fn write_summary(summary: &Summary, out_dir: &Path) -> Result<ReportPaths, ReportError> {
    let write = |name: &str, bytes: &[u8]| {
        let path = out_dir.join(name);
        write_atomic(&path, bytes).map_err(|source| ReportError::Write {
            path: path.clone(),
            source,
        })?;
        Ok::<_, ReportError>(path)
    };
    let mut json = serde_json::to_string_pretty(summary)?;
    json.push('\n');
    let summary_json = write(SUMMARY_FILE, json.as_bytes())?;
    let report_md = write(REPORT_MD_FILE, markdown::render(summary).as_bytes())?;
    let (page, charts) = html::render(summary);
    let report_html = write(REPORT_HTML_FILE, page.as_bytes())?;
    Ok(ReportPaths {
        summary_json,
        report_md,
        report_html,
        charts,
    })
}

/// Analyses `run_dir` and writes its reports into `out_dir` (which may be `run_dir` itself).
pub fn write_report(run_dir: &Path, out_dir: &Path) -> Result<ReportPaths, ReportError> {
    let summary = analyze(run_dir)?;
    write_summary(&summary, out_dir)
}
