//! `isolab-bench` (`just bench`): performance targets checked as ratios measured side by side in
//! one run, never as timed assertions in tests.
//!
//! Benchmarks:
//! - `overhead`: `syscall` and `fork_exit` measured through `isolab run` (native backend, embedded
//!   agent, gRPC, Parquet) divided by the same workload run directly; rounds alternate the two so
//!   drift on a noisy machine hits both alike. Goal: ratio ≤ 1.01.
//! - `report`: the full `isolab report` over a generated run of `--rows` samples (default 10
//!   million) vs DuckDB computing the same per-group medians over the same files, with the
//!   report's peak memory (see [`isolab_coordinator::report_bench`]). Goal: ratio ≤ 1.5.
//!
//! - `dispatch`: trivial trials through the coordinator's dispatch path to 100 in-process fake
//!   agents over loopback gRPC. Goals: ≥ 2,000 trials/s, p99 dispatch latency ≤ 20 ms.
//! - `sink`: Parquet sink ingest of `--sink-rows` rows (default 3 million) against the bare arrow writer of the same
//!   batches. Goals: ≥ 2 M rows/s, ≤ 1.2× the bare writer's time.
//!
//! The measurement code lives in `isolab_coordinator::benchmarks`.
//!
//! Usage: `isolab-bench [--rounds N] [--duration 1s] [--trials N] [--rows N] [--sink-rows N] [NAME…]`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use arrow_array::{Array, Float64Array, StringArray};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn workload_bin() -> anyhow::Result<PathBuf> {
    isolab_agent::workload_bin::locate().map_err(|e| anyhow::anyhow!("{e}"))
}

/// Runs the workload directly and returns its headline metric.
fn direct(bin: &Path, workload: &str, metric: &str, duration: &str) -> anyhow::Result<f64> {
    let out = Command::new(bin)
        .args([workload, "--param", &format!("duration={duration}")])
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{workload} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let s = isolab_model::sample::Sample::parse_line(line)?;
        if s.metric == metric && s.t_offset_s.is_none() {
            return Ok(s.value);
        }
    }
    bail!("{workload} printed no `{metric}`")
}

/// Reads `metric` summary values per workload from a run directory's Parquet files.
fn read_metric(run_dir: &Path, workload: &str, metric: &str) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    let mut stack = vec![run_dir.join("samples")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                let b = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&p)?)?;
                let cols = ["workload", "metric", "value", "t_offset_s"];
                let idx: Vec<usize> = cols
                    .iter()
                    .filter_map(|c| b.schema().fields().iter().position(|f| f.name() == c))
                    .collect();
                let mask = ProjectionMask::roots(b.parquet_schema(), idx);
                for batch in b.with_projection(mask).build()? {
                    let batch = batch?;
                    let col = |name: &str| batch.column_by_name(name).context("missing column");
                    let w = col("workload")?
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .context("type")?;
                    let m = col("metric")?
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .context("type")?;
                    let v = col("value")?
                        .as_any()
                        .downcast_ref::<Float64Array>()
                        .context("type")?;
                    let t = col("t_offset_s")?
                        .as_any()
                        .downcast_ref::<Float64Array>()
                        .context("type")?;
                    for i in 0..batch.num_rows() {
                        if w.value(i) == workload && m.value(i) == metric && t.is_null(i) {
                            out.push(v.value(i));
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

async fn overhead(rounds: u32, duration: &str) -> anyhow::Result<()> {
    let bin = workload_bin()?;
    let tmp = tempfile::tempdir()?;
    let pipeline = tmp.path().join("bench.yaml");
    std::fs::write(
        &pipeline,
        format!(
            "apiVersion: isolab/v1\nkind: Pipeline\nname: bench\ndefaults: {{ repetitions: 1, warmup: 0, duration: {duration} }}\n\
             platforms:\n  native: {{ backend: native }}\nexperiments:\n  - {{ name: micro, analysis: overhead, platforms: [native], workloads: [syscall, fork_exit] }}\n"
        ),
    )?;
    let cases = [("syscall", "ns_per_call"), ("fork_exit", "us_per_process")];
    let mut direct_v: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut isolab_v: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..rounds {
        for (i, (w, m)) in cases.iter().enumerate() {
            direct_v[i].push(direct(&bin, w, m, duration)?);
        }
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let opts = isolab_coordinator::run::RunOptions {
            pipeline: pipeline.clone(),
            results: tmp.path().join("results"),
            ..Default::default()
        };
        let outcome = isolab_coordinator::run::run(&opts, rx).await?;
        if outcome.failed > 0 {
            bail!("bench run failed; see {}", outcome.run_dir.display());
        }
        for (i, (w, m)) in cases.iter().enumerate() {
            isolab_v[i].extend(read_metric(&outcome.run_dir, w, m)?);
        }
        eprintln!("overhead: round {}/{rounds} done", round + 1);
    }
    println!(
        "{:<34} {:>12} {:>12} {:>8} {:>6}",
        "benchmark", "direct", "isolab", "ratio", "goal"
    );
    for (i, (w, m)) in cases.iter().enumerate() {
        let d = median(&mut direct_v[i]);
        let s = median(&mut isolab_v[i]);
        let ratio = s / d;
        let verdict = if ratio <= 1.01 { "ok" } else { "MISS" };
        println!(
            "{:<34} {d:>12.2} {s:>12.2} {ratio:>8.3} {:>6}",
            format!("overhead {w} ({m})"),
            format!("≤1.01 {verdict}")
        );
    }
    Ok(())
}

fn report(rows: u64, rounds: u32) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let isolab_bin = exe.with_file_name("isolab");
    if !isolab_bin.is_file() {
        bail!(
            "{} not found: build the `isolab` binary next to isolab-bench",
            isolab_bin.display()
        );
    }
    let tmp = tempfile::tempdir()?;
    eprintln!("report: generating {rows} rows in {}", tmp.path().display());
    let opts = isolab_coordinator::report_bench::ReportBenchOptions {
        rows,
        rounds,
        isolab_bin,
        python: "python3".into(),
        work_dir: tmp.path().to_path_buf(),
    };
    let bench = isolab_coordinator::report_bench::run(&opts)?;
    print!("{}", bench.render());
    Ok(())
}

async fn dispatch(trials: usize) -> anyhow::Result<()> {
    let r = isolab_coordinator::benchmarks::dispatch(100, trials).await?;
    let tput = r.trials_per_s();
    let p99_ms = r.p99.as_secs_f64() * 1e3;
    println!(
        "{:<34} {:>12} {:>12} {:>8} {:>6}",
        "benchmark", "measured", "goal", "", "verdict"
    );
    println!(
        "{:<34} {tput:>12.0} {:>12} {:>8} {:>6}",
        format!("dispatch {} trials/100 agents /s", r.trials),
        "≥2000",
        "",
        if tput >= 2000.0 { "ok" } else { "MISS" }
    );
    println!(
        "{:<34} {p99_ms:>12.2} {:>12} {:>8} {:>6}",
        format!("dispatch p99 ms (p50 {:.2})", r.p50.as_secs_f64() * 1e3),
        "≤20",
        "",
        if p99_ms <= 20.0 { "ok" } else { "MISS" }
    );
    Ok(())
}

fn sink(rows: usize) -> anyhow::Result<()> {
    const ROWS_PER_FILE: usize = 100_000;
    let tmp = tempfile::tempdir()?;
    let files = rows.div_ceil(ROWS_PER_FILE).max(1);
    let r = isolab_coordinator::benchmarks::sink(tmp.path(), files, rows.min(ROWS_PER_FILE))?;
    let (s, b, ratio) = (r.sink_rows_per_s(), r.bare_rows_per_s(), r.ratio());
    println!(
        "{:<34} {:>12} {:>12} {:>8} {:>6}",
        "benchmark", "sink", "bare arrow", "ratio", "goal"
    );
    println!(
        "{:<34} {s:>12.0} {b:>12.0} {ratio:>8.3} {:>6}",
        format!("sink {} rows, {} files (rows/s)", r.rows, r.files),
        format!(
            "≥2M {} ≤1.2× {}",
            if s >= 2e6 { "ok" } else { "MISS" },
            if ratio <= 1.2 { "ok" } else { "MISS" }
        )
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut trials = 20_000usize;
    let mut sink_rows = 3_000_000usize;
    let mut rounds = 5u32;
    let mut duration = "1s".to_owned();
    let mut rows = 10_000_000u64;
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .context("--rounds needs a number")?
                    .parse()
                    .context("--rounds: expected a whole number")?
            }
            "--trials" => {
                trials = args
                    .next()
                    .context("--trials needs a number")?
                    .parse()
                    .context("--trials: expected a whole number")?
            }
            "--rows" => {
                rows = args
                    .next()
                    .context("--rows needs a number")?
                    .parse()
                    .context("--rows: expected a whole number")?
            }
            "--sink-rows" => {
                sink_rows = args
                    .next()
                    .context("--sink-rows needs a number")?
                    .parse()
                    .context("--sink-rows: expected a whole number")?
            }
            "--duration" => {
                duration = args.next().context("--duration needs a value such as 1s")?
            }
            "-h" | "--help" => {
                println!(
                    "usage: isolab-bench [--rounds N] [--duration 1s] [--trials N] [--rows N] [--sink-rows N] [overhead|report|dispatch|sink]…"
                );
                return Ok(());
            }
            n if !n.starts_with('-') => names.push(n.to_owned()),
            other => {
                bail!(
                    "unknown flag `{other}` (expected --rounds, --duration, --trials, --rows, --sink-rows)"
                )
            }
        }
    }
    let all = names.is_empty();
    let rt = tokio::runtime::Runtime::new()?;
    if all || names.iter().any(|n| n == "overhead") {
        rt.block_on(overhead(rounds, &duration))?;
    }
    if all || names.iter().any(|n| n == "report") {
        report(rows, rounds)?;
    }
    if all || names.iter().any(|n| n == "dispatch") {
        rt.block_on(dispatch(trials))?;
    }
    if all || names.iter().any(|n| n == "sink") {
        sink(sink_rows)?;
    }
    Ok(())
}
