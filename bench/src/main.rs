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
//! - `sink`: Parquet sink ingest of `--sink-rows` rows (default 3 million; rows → file, synced)
//!   against the bare arrow writer given the finished batches. Goals: ≥ 2 M rows/s, ≤ 1.2× the
//!   bare writer's time.
//!
//! - `yaml`: the pipeline loader's position index over a mapping of 8,000 and of 80,000 keys;
//!   time per key of the large one over the small one. Linear is ≈ 1; the former hand-written
//!   index was quadratic (80k keys took 9 s). Goal: ratio ≤ 2.
//!
//! The measurement code lives in `isolab_coordinator::benchmarks`.
//!
//! - `container`: container start → first sample → gone through the agent's runner and the
//!   container backend (runc) divided by a bare `runc run` of the identical bundle, alternately,
//!   median of the rounds. Goal: ratio ≤ 1.10.
//! - `container-max`: the most idle containers alive at once, each with its own cgroups and
//!   limits, in steps 128, 256, … up to `--container-max` (default 1024). Goal: ≥ 1,000.
//! - `vm`: boot → first sample through the agent divided by a bare QEMU boot of the identical
//!   kernel and initramfs (goal ≤ 1.05); the bare boot itself (goal ≤ 2 s under TCG, ≤ 150 ms on
//!   KVM); the most VMs that boot together, up to `--vm-max` (default 32; goal ≥ 32).
//! - `spectrum`: start-to-first-sample, `syscall` and `fork_exit` of every platform available
//!   here (native, container/runc, container/runsc, docker, lxc, vm) relative to native.
//!
//! Usage: `isolab-bench [--rounds N] [--duration 1s] [--trials N] [--rows N] [--sink-rows N]
//! [--container-max N] [--vm-max N] [NAME…]`; no NAME runs them all.
//! The benchmarks after `overhead` need root (they run the agent's backends in-process).

/// mimalloc: glibc's per-thread arenas hand each new encoder thread memory it has just trimmed,
/// which costs a page fault per 4 KiB on this VM (the sink's second thread took up to twice as
/// long as the first); `isolab` uses the same allocator, so the bench measures what runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use arrow_array::{Array, Float64Array, StringArray};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use isolab_agent::bench::median;

mod agent_benches;

fn workload_bin() -> anyhow::Result<PathBuf> {
    isolab_host::workload_bin::locate().map_err(|e| anyhow::anyhow!("{e}"))
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
        let d = median(&direct_v[i]);
        let s = median(&isolab_v[i]);
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

/// Seconds to index a mapping of `keys` keys (best of `rounds`).
fn index_seconds(keys: usize, rounds: u32) -> f64 {
    use std::fmt::Write as _;
    let mut text = String::from("profiles:\n  big:\n");
    for i in 0..keys {
        let _ = writeln!(text, "    experiments.e{i}.repetitions: {i}");
    }
    (0..rounds.max(1))
        .map(|_| {
            let start = std::time::Instant::now();
            let index = isolab_model::location::LocationIndex::build(&text);
            assert_eq!(index.len(), keys + 3, "every key indexed");
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn yaml(rounds: u32) {
    let (small, large) = (8_000, 80_000);
    let (ts, tl) = (index_seconds(small, rounds), index_seconds(large, rounds));
    #[allow(clippy::cast_precision_loss)] // key counts far below 2^52
    let ratio = (tl / large as f64) / (ts / small as f64);
    println!(
        "{:<34} {:>12} {:>12} {:>8} {:>6}",
        "benchmark", "8k keys", "80k keys", "ratio", "goal"
    );
    println!(
        "{:<34} {:>11.3}s {:>11.3}s {ratio:>8.2} {:>6}",
        "yaml position index (per key)",
        ts,
        tl,
        format!("≤2 {}", if ratio <= 2.0 { "ok" } else { "MISS" })
    );
}

/// The whole number after `flag`.
fn number<T>(flag: &str, v: Option<String>) -> anyhow::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    v.with_context(|| format!("{flag} needs a number"))?
        .parse()
        .with_context(|| format!("{flag}: expected a whole number"))
}

fn main() -> anyhow::Result<()> {
    // With RUST_LOG set (e.g. `isolab_agent=info`), every closed span is printed with its busy
    // and idle time: where a measured trial spent its time, phase by phase.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .with_writer(std::io::stderr)
            .init();
    }
    let mut trials = 20_000usize;
    let mut sink_rows = 3_000_000usize;
    let mut rounds = 5u32;
    let mut duration = "1s".to_owned();
    let mut rows = 10_000_000u64;
    let mut container_max = 1024u32;
    let mut vm_max = 32u32;
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = number("--rounds", args.next())?,
            "--trials" => trials = number("--trials", args.next())?,
            "--rows" => rows = number("--rows", args.next())?,
            "--sink-rows" => sink_rows = number("--sink-rows", args.next())?,
            "--container-max" => container_max = number("--container-max", args.next())?,
            "--vm-max" => vm_max = number("--vm-max", args.next())?,
            "--duration" => {
                duration = args.next().context("--duration needs a value such as 1s")?
            }
            "-h" | "--help" => {
                println!(
                    "usage: isolab-bench [--rounds N] [--duration 1s] [--trials N] [--rows N] \
                     [--sink-rows N] [--container-max N] [--vm-max N] [NAME…]\n\
                     names: overhead, report, dispatch, sink, yaml, {}",
                    agent_benches::NAMES.join(", ")
                );
                return Ok(());
            }
            n if !n.starts_with('-') => names.push(n.to_owned()),
            other => bail!(
                "unknown flag `{other}` (expected --rounds, --duration, --trials, --rows, \
                 --sink-rows, --container-max, --vm-max)"
            ),
        }
    }
    const OWN: [&str; 5] = ["overhead", "report", "dispatch", "sink", "yaml"];
    for n in &names {
        if !agent_benches::NAMES.contains(&n.as_str()) && !OWN.contains(&n.as_str()) {
            bail!(
                "unknown benchmark `{n}` (expected {}, {})",
                OWN.join(", "),
                agent_benches::NAMES.join(", ")
            );
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
    if all || names.iter().any(|n| n == "yaml") {
        yaml(rounds);
    }
    let chosen: Vec<&str> = agent_benches::NAMES
        .iter()
        .copied()
        .filter(|b| all || names.iter().any(|n| n == b))
        .collect();
    if !chosen.is_empty() {
        let duration = duration
            .parse::<isolab_model::units::HumanDuration>()
            .map_err(|e| anyhow::anyhow!("--duration: {e}"))?
            .0;
        let opts = agent_benches::Options {
            rounds,
            duration,
            container_max,
            vm_max,
        };
        rt.block_on(agent_benches::run(&chosen, &opts))?;
    }
    Ok(())
}
