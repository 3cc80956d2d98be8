//! `isolab-bench report`: the full `isolab report` over a generated run of many samples, side by
//! side with DuckDB computing the same per-group medians over the same files.
//!
//! The run is generated once ([`isolab_analyzer::testkit::write_generated_run`]: the results
//! contract, one zstd Parquet file per trial, hive-partitioned). Then every round runs, one after
//! the other so that both see the same page cache and machine noise:
//!
//! - `isolab report RUN --out DIR` as a child process, timed from spawn to exit, its peak
//!   resident memory read from the child's `rusage` (`wait4`);
//! - `python3` with `duckdb` running the SQL of [`DUCKDB_SQL`] over `RUN/samples/**/*.parquet`,
//!   timed inside Python around connect + query (interpreter start and `import duckdb` are not
//!   DuckDB's query time, so they are left out).
//!
//! The medians DuckDB returns are checked against the analyzer's `summary.json`: a benchmark of
//! two programs that disagree would measure nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use isolab_analyzer::Summary;
use isolab_analyzer::testkit::{LoadSpec, TestkitError, write_generated_run};

/// Goal: the analyzer's full report takes at most this multiple of DuckDB's time.
pub const GOAL_RATIO: f64 = 1.5;

/// Per-group medians of the summary rows, as the report computes them (repetition value = mean
/// over a trial's instances; median across repetitions). `{GLOB}` is replaced by the file glob.
pub const DUCKDB_SQL: &str = "WITH reps AS (\
 SELECT experiment, platform, trial_id, role, \"group\", workload, params, metric, unit, \
 n_instances, adversary, avg(value) AS v \
 FROM read_parquet('{GLOB}', hive_partitioning = false) WHERE t_offset_s IS NULL GROUP BY ALL) \
 SELECT platform, metric, median(v) AS median FROM reps \
 GROUP BY experiment, platform, role, \"group\", workload, params, metric, unit, n_instances, adversary \
 ORDER BY ALL";

/// The Python side: times connect + query, prints `{"seconds": s, "groups": [[p, m, median]…]}`.
const DUCKDB_SCRIPT: &str = r#"
import json, sys, time
import duckdb
sql = sys.argv[1]
t0 = time.perf_counter()
con = duckdb.connect()
rows = con.execute(sql).fetchall()
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "groups": [[r[0], r[1], r[2]] for r in rows]}))
"#;

/// What to measure.
#[derive(Debug, Clone)]
pub struct ReportBenchOptions {
    /// Rows of the generated run (about; see [`LoadSpec::with_total_rows`]).
    pub rows: u64,
    /// Rounds of (analyzer, DuckDB).
    pub rounds: u32,
    /// The `isolab` binary.
    pub isolab_bin: PathBuf,
    /// The Python interpreter that has `duckdb`.
    pub python: PathBuf,
    /// Directory to generate the run and write the reports in (must exist).
    pub work_dir: PathBuf,
}

/// Why the benchmark could not measure.
#[derive(Debug, thiserror::Error)]
pub enum ReportBenchError {
    /// The run could not be generated.
    #[error("cannot generate the run: {0}")]
    Generate(#[from] TestkitError),
    /// A program could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A program failed.
    #[error("{program} failed: {detail}")]
    Failed {
        /// The program.
        program: String,
        /// Exit status and what it printed.
        detail: String,
    },
    /// A result file or output could not be read.
    #[error("cannot read {what}: {detail}")]
    Output {
        /// What was read.
        what: String,
        /// Why it was not understood.
        detail: String,
    },
    /// DuckDB and the analyzer computed different medians.
    #[error("DuckDB and the analyzer disagree: {0}")]
    Disagree(String),
}

/// What the benchmark measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportBench {
    /// Rows in the generated run.
    pub rows: u64,
    /// Parquet files in it.
    pub files: usize,
    /// Their total size.
    pub bytes: u64,
    /// Seconds to generate the run.
    pub generate_s: f64,
    /// Seconds of each `isolab report`, in round order.
    pub analyzer_s: Vec<f64>,
    /// Seconds of each DuckDB query, in round order.
    pub duckdb_s: Vec<f64>,
    /// Largest peak resident set of the `isolab report` children, bytes.
    pub analyzer_peak_rss_bytes: u64,
    /// Groups whose medians DuckDB and the analyzer agreed on.
    pub groups_compared: usize,
}

fn median(v: &[f64]) -> f64 {
    isolab_analyzer::stats::median(v).unwrap_or(f64::NAN)
}

impl ReportBench {
    /// Median seconds of the analyzer.
    pub fn analyzer_median_s(&self) -> f64 {
        median(&self.analyzer_s)
    }

    /// Median seconds of DuckDB.
    pub fn duckdb_median_s(&self) -> f64 {
        median(&self.duckdb_s)
    }

    /// Analyzer time / DuckDB time (medians over rounds).
    pub fn ratio(&self) -> f64 {
        self.analyzer_median_s() / self.duckdb_median_s()
    }

    /// The table `isolab-bench` prints.
    pub fn render(&self) -> String {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let ratio = self.ratio();
        let verdict = if ratio <= GOAL_RATIO { "ok" } else { "MISS" };
        let list = |v: &[f64]| {
            v.iter()
                .map(|s| format!("{s:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        format!(
            "report: {} rows in {} files ({:.1} MiB), generated in {:.1}s; {} groups agree\n\
             {:<34} {:>12} {:>12} {:>8} {:>6}\n\
             {:<34} {:>11.3}s {:>11.3}s {ratio:>8.3} {:>6}\n\
             {:<34} {}\n{:<34} {}\n{:<34} {:.1} MiB\n",
            self.rows,
            self.files,
            mib(self.bytes),
            self.generate_s,
            self.groups_compared,
            "benchmark",
            "isolab",
            "duckdb",
            "ratio",
            "goal",
            format!(
                "report {}M rows (median of {})",
                self.rows / 1_000_000,
                self.analyzer_s.len()
            ),
            self.analyzer_median_s(),
            self.duckdb_median_s(),
            format!("≤{GOAL_RATIO} {verdict}"),
            "  isolab report rounds (s)",
            list(&self.analyzer_s),
            "  duckdb query rounds (s)",
            list(&self.duckdb_s),
            "  isolab report peak memory",
            mib(self.analyzer_peak_rss_bytes),
        )
    }
}

/// Generates the run, then measures `rounds` alternating rounds.
pub fn run(opts: &ReportBenchOptions) -> Result<ReportBench, ReportBenchError> {
    let run_dir = opts.work_dir.join("run");
    let started = Instant::now();
    let spec = LoadSpec::with_total_rows("bench-report", opts.rows);
    let generated = write_generated_run(&run_dir, &spec)?;
    let generate_s = started.elapsed().as_secs_f64();
    let bytes = generated
        .files
        .iter()
        .filter_map(|f| std::fs::metadata(run_dir.join(f)).ok())
        .map(|m| m.len())
        .sum();
    let out_dir = opts.work_dir.join("report");
    std::fs::create_dir_all(&out_dir).map_err(|e| ReportBenchError::Output {
        what: out_dir.display().to_string(),
        detail: e.to_string(),
    })?;
    let glob = format!("{}/samples/**/*.parquet", run_dir.display()).replace('\'', "''");
    let sql = DUCKDB_SQL.replace("{GLOB}", &glob);
    let mut bench = ReportBench {
        rows: generated.rows,
        files: generated.files.len(),
        bytes,
        generate_s,
        analyzer_s: Vec::new(),
        duckdb_s: Vec::new(),
        analyzer_peak_rss_bytes: 0,
        groups_compared: 0,
    };
    for round in 0..opts.rounds.max(1) {
        let (seconds, rss) = isolab_report(&opts.isolab_bin, &run_dir, &out_dir)?;
        bench.analyzer_s.push(seconds);
        bench.analyzer_peak_rss_bytes = bench.analyzer_peak_rss_bytes.max(rss);
        let (seconds, groups) = duckdb(&opts.python, &sql)?;
        bench.duckdb_s.push(seconds);
        if round == 0 {
            bench.groups_compared = agree(&out_dir, &groups)?;
        }
    }
    Ok(bench)
}

/// Runs `isolab report` in a child; returns its wall time and peak resident set (bytes).
fn isolab_report(
    bin: &Path,
    run_dir: &Path,
    out_dir: &Path,
) -> Result<(f64, u64), ReportBenchError> {
    let program = bin.display().to_string();
    let started = Instant::now();
    let child = Command::new(bin)
        .arg("report")
        .arg(run_dir)
        .arg("--out")
        .arg(out_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| ReportBenchError::Spawn {
            program: program.clone(),
            source,
        })?;
    let (status, maxrss_kib) =
        wait_rusage(child.id()).map_err(|source| ReportBenchError::Spawn {
            program: program.clone(),
            source,
        })?;
    let seconds = started.elapsed().as_secs_f64();
    if status != 0 {
        return Err(ReportBenchError::Failed {
            program,
            detail: format!("wait status {status}"),
        });
    }
    Ok((seconds, maxrss_kib.saturating_mul(1024)))
}

/// Waits for our child `pid`; returns its raw wait status (0: exited with 0) and `ru_maxrss`
/// (KiB on Linux).
fn wait_rusage(pid: u32) -> std::io::Result<(i32, u64)> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is a plain C struct of integers, for which all-zero bytes are valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is a child this process spawned and has not waited for; `status` and
        // `usage` are valid, exclusively borrowed out-parameters.
        let r = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    Ok((status, u64::try_from(usage.ru_maxrss).unwrap_or(0)))
}

/// One DuckDB group: platform, metric, median.
type Group = (String, String, f64);

fn duckdb(python: &Path, sql: &str) -> Result<(f64, Vec<Group>), ReportBenchError> {
    let program = python.display().to_string();
    let out = Command::new(python)
        .args(["-c", DUCKDB_SCRIPT, sql])
        .output()
        .map_err(|source| ReportBenchError::Spawn {
            program: program.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(ReportBenchError::Failed {
            program,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        seconds: f64,
        groups: Vec<Group>,
    }
    let answer: Answer =
        serde_json::from_slice(&out.stdout).map_err(|e| ReportBenchError::Output {
            what: "DuckDB's answer".into(),
            detail: format!("{e}: {}", String::from_utf8_lossy(&out.stdout)),
        })?;
    Ok((answer.seconds, answer.groups))
}

/// Checks every DuckDB median against `summary.json`; returns the number of groups compared.
fn agree(out_dir: &Path, groups: &[Group]) -> Result<usize, ReportBenchError> {
    let path = out_dir.join(isolab_analyzer::report::SUMMARY_FILE);
    let read_err = |detail: String| ReportBenchError::Output {
        what: path.display().to_string(),
        detail,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| read_err(e.to_string()))?;
    let summary: Summary = serde_json::from_str(&text).map_err(|e| read_err(e.to_string()))?;
    let mut ours: Vec<Group> = Vec::new();
    for e in summary.experiments.values() {
        for m in e.metrics.values() {
            for (p, s) in &m.platforms {
                ours.push((p.clone(), m.metric.clone(), s.median));
            }
        }
    }
    if ours.len() != groups.len() {
        return Err(ReportBenchError::Disagree(format!(
            "{} groups in summary.json, {} from DuckDB",
            ours.len(),
            groups.len()
        )));
    }
    for (platform, metric, theirs) in groups {
        let Some((_, _, mine)) = ours.iter().find(|(p, m, _)| p == platform && m == metric) else {
            return Err(ReportBenchError::Disagree(format!(
                "{platform}/{metric} missing from summary.json"
            )));
        };
        if (mine - theirs).abs() > 1e-9 * theirs.abs().max(1.0) {
            return Err(ReportBenchError::Disagree(format!(
                "{platform}/{metric}: analyzer {mine}, DuckDB {theirs}"
            )));
        }
    }
    Ok(groups.len())
}
