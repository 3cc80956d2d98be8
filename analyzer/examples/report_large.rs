//! Times the full report over a large generated run, for profiling the analyzer by itself.
//!
//! `cargo run --release -p isolab-analyzer --example report_large -- DIR [ROWS]` generates the
//! run into DIR first when DIR has no manifest (ROWS defaults to ten million), then prints the
//! report's wall time (reading only the rows the report needs, as `analyze` does) and the
//! process's peak resident memory.

use std::path::PathBuf;
use std::time::Instant;

use isolab_analyzer::testkit::{LoadSpec, write_generated_run};

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: report_large DIR [ROWS]")?);
    let rows: u64 = args
        .next()
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(10_000_000);
    if !dir.join("manifest.json").exists() {
        let start = Instant::now();
        let run = write_generated_run(&dir, &LoadSpec::with_total_rows("large", rows))?;
        println!(
            "generated {} rows in {} files: {:.2?}",
            run.rows,
            run.files.len(),
            start.elapsed()
        );
    }
    let start = Instant::now();
    let options = isolab_analyzer::ReadOptions {
        time_series: isolab_analyzer::TimeSeries::Needed,
    };
    let run = isolab_analyzer::read_run_with(&dir, &options)?;
    let read = start.elapsed();
    let summary = isolab_analyzer::summarize(&run);
    let analysed = start.elapsed();
    let out = dir.join("report");
    isolab_analyzer::report::write_summary(&summary, &out)?;
    println!(
        "rows {} | read {:.2?} | analyse {:.2?} | total {:.2?} | peak RSS {} MiB",
        run.table.len(),
        read,
        analysed - read,
        start.elapsed(),
        peak_rss_kib().unwrap_or(0) / 1024
    );
    if std::env::var_os("REPORT_ONLY").is_some() {
        return Ok(());
    }
    let full = Instant::now();
    let all_rows = isolab_analyzer::read_run(&dir)?.table.len();
    println!(
        "for comparison, reading every row ({all_rows}): {:.2?}, peak RSS {} MiB",
        full.elapsed(),
        peak_rss_kib().unwrap_or(0) / 1024
    );
    Ok(())
}
