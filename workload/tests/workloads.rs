//! Runs the binary for every catalog workload with a short duration and checks its samples:
//! names, units, directions, plausible ranges and the arithmetic that ties them together.

mod support;

use std::collections::BTreeSet;

use isolab_model::catalog::{self, WORKLOADS, WorkloadKind};
use support::{Run, run};

/// A metric a workload must print: name, unit, higher_is_better, and a plausible range.
type Metric = (&'static str, &'static str, bool, f64, f64);

/// What each workload must print beyond `ops` and `elapsed_s`, and extra args keeping it quick.
fn expectations(name: &str) -> Option<(&'static [&'static str], &'static [Metric])> {
    Some(match name {
        "syscall" => (
            &[],
            &[
                ("ns_per_call", "ns", false, 1.0, 1e5),
                ("ops_per_s", "ops/s", true, 1.0, 1e10),
            ],
        ),
        "fork_exit" => (
            &[],
            &[
                ("us_per_process", "us", false, 1.0, 1e6),
                ("ops_per_s", "ops/s", true, 0.1, 1e7),
            ],
        ),
        "fork_exec" => (
            &[],
            &[
                ("us_per_process", "us", false, 1.0, 1e6),
                ("ops_per_s", "ops/s", true, 0.1, 1e7),
            ],
        ),
        "ctxsw" => (
            &[],
            &[
                ("us_per_switch", "us", false, 0.001, 1e5),
                ("ops_per_s", "ops/s", true, 1.0, 1e10),
            ],
        ),
        "page_fault" => (
            &["--param", "size=4MiB"],
            &[
                ("ns_per_fault", "ns", false, 1.0, 1e6),
                ("faults_per_s", "faults/s", true, 1.0, 1e10),
                ("faults", "faults", true, 1024.0, 1e12),
            ],
        ),
        "mmap" => (
            &[],
            &[
                ("us_per_op", "us", false, 0.001, 1e5),
                ("ops_per_s", "ops/s", true, 1.0, 1e10),
            ],
        ),
        "file_ops" => (
            &["--param", "size=512"],
            &[
                ("us_per_file", "us", false, 0.1, 1e6),
                ("ops_per_s", "ops/s", true, 1.0, 1e8),
            ],
        ),
        "mem_bw" => (
            &["--param", "size=4MiB"],
            &[
                ("read_gb_s", "GB/s", true, 0.01, 1e4),
                ("write_gb_s", "GB/s", true, 0.01, 1e4),
                ("copy_gb_s", "GB/s", true, 0.01, 1e4),
            ],
        ),
        "cpu_spin" => (
            &["--param", "interval=50ms"],
            &[
                ("units_per_s", "units/s", true, 1.0, 1e10),
                ("total_units", "units", true, 1.0, 1e12),
                ("process_cpu_ns", "ns", false, 1.0, 1e13),
            ],
        ),
        "idle" => (&[], &[("awake", "bool", true, 1.0, 1.0)]),
        "tcp_stream" => (
            &[],
            &[
                ("gbit_s", "Gbit/s", true, 1e-4, 1e4),
                ("receiver_cpu_pct", "%", false, 0.0, 1e4),
                ("system_cpu_pct", "%", false, 0.0, 100.0),
                ("bytes", "bytes", true, 1.0, 1e14),
            ],
        ),
        "tcp_rr" => (
            &["--param", "connections=2"],
            &[
                ("p50_us", "us", false, 0.1, 1e6),
                ("p99_us", "us", false, 0.1, 1e7),
                ("transactions_per_s", "transactions/s", true, 1.0, 1e8),
            ],
        ),
        "oltp" => (
            &[],
            &[
                ("tps", "transactions/s", true, 1.0, 1e7),
                ("p50_ms", "ms", false, 1e-4, 1e4),
                ("p99_ms", "ms", false, 1e-4, 1e4),
                ("setup_s", "s", false, 1e-6, 600.0),
            ],
        ),
        "fileserver" => (
            &["--param", "files=200", "--param", "subdirs=4"],
            &[
                ("ops_per_s", "ops/s", true, 1.0, 1e8),
                ("mb_per_s", "MB/s", true, 1e-4, 1e6),
            ],
        ),
        "build" => (
            &["--param", "size=64KiB", "--param", "jobs=2"],
            &[("jobs_per_s", "jobs/s", true, 0.1, 1e6)],
        ),
        "disk" => (
            &["--param", "size=8MiB"],
            &[
                ("seq_write_mb_s", "MB/s", true, 0.01, 1e6),
                ("seq_read_mb_s", "MB/s", true, 0.01, 1e6),
                ("rand_read_iops", "IOPS", true, 1.0, 1e9),
                ("fsync_p50_us", "us", false, 0.001, 1e7),
                ("fsync_p99_us", "us", false, 0.001, 1e8),
                ("direct_io", "bool", true, 0.0, 1.0),
            ],
        ),
        _ => return None,
    })
}

/// The least `elapsed_s` of a 200 ms run: the loops run until the duration has passed
/// (mem_bw: three thirds of it); `tcp_stream` reports the receiver's interval, which starts a
/// little after the sender's and ends with its last byte.
fn min_elapsed_s(name: &str) -> f64 {
    match name {
        "tcp_stream" => 0.15,
        _ => 0.199,
    }
}

/// Runs `name` for 200 ms and checks every expectation; returns the run for further checks.
fn check(name: &str) -> Run {
    let (extra, metrics) =
        expectations(name).unwrap_or_else(|| panic!("no expectations for `{name}`"));
    let mut args = vec![name, "--param", "duration=200ms"];
    args.extend_from_slice(extra);
    let r = run(&args);
    assert_eq!(r.code, Some(0), "{name} failed: {}", r.stderr);
    for &(metric, unit, higher, lo, hi) in metrics {
        let s = r.sample(metric);
        assert_eq!(
            (s.unit.as_str(), s.higher_is_better),
            (unit, higher),
            "{name}: {metric}: {s:?}"
        );
        assert!(
            (lo..=hi).contains(&s.value),
            "{name}: {metric} = {} not in [{lo}, {hi}]",
            s.value
        );
    }
    let ops = r.summary("ops");
    assert!(ops >= 1.0 && ops.fract() == 0.0, "{name}: ops = {ops}");
    assert_eq!(r.sample("ops").unit, "ops");
    let elapsed = r.summary("elapsed_s");
    assert_eq!(r.sample("elapsed_s").unit, "s");
    assert!(
        elapsed >= min_elapsed_s(name),
        "{name}: elapsed_s = {elapsed}"
    );
    let allowed: BTreeSet<&str> = metrics
        .iter()
        .map(|m| m.0)
        .chain(["ops", "elapsed_s"])
        .collect();
    for s in &r.samples {
        assert!(
            allowed.contains(s.metric.as_str()),
            "{name}: unexpected metric {s:?}"
        );
    }
    r
}

/// For per-operation workloads: the mean times ops (times events per op) is the elapsed time,
/// and `ops_per_s` is `ops / elapsed_s`.
fn check_per_op_arithmetic(r: &Run, metric: &str, seconds_per_unit: f64, events_per_op: f64) {
    let (ops, elapsed) = (r.summary("ops"), r.summary("elapsed_s"));
    let total = r.summary(metric) * seconds_per_unit * events_per_op * ops;
    assert!(
        (total - elapsed).abs() <= 1e-6 * elapsed.max(1e-9),
        "{metric}: {total} vs {elapsed}"
    );
    let rate = r.summary("ops_per_s") * elapsed;
    assert!(
        (rate - ops).abs() <= 1e-6 * ops,
        "ops_per_s * elapsed_s = {rate}, ops = {ops}"
    );
}

#[test]
fn expectations_cover_the_catalog() {
    // Adversaries are covered by `adversaries.rs`, inside cgroups.
    for w in WORKLOADS
        .iter()
        .filter(|w| w.kind == WorkloadKind::Benchmark)
    {
        assert!(
            expectations(w.name).is_some(),
            "catalog workload `{}` has no test expectations",
            w.name
        );
    }
}

#[test]
fn syscall() {
    let r = check("syscall");
    check_per_op_arithmetic(&r, "ns_per_call", 1e-9, 1.0);
}

#[test]
fn fork_exit() {
    let r = check("fork_exit");
    check_per_op_arithmetic(&r, "us_per_process", 1e-6, 1.0);
}

#[test]
fn fork_exec() {
    let r = check("fork_exec");
    check_per_op_arithmetic(&r, "us_per_process", 1e-6, 1.0);
}

#[test]
fn ctxsw() {
    let r = check("ctxsw");
    // Two switches per round trip.
    check_per_op_arithmetic(&r, "us_per_switch", 1e-6, 2.0);
}

#[test]
fn page_fault() {
    let r = check("page_fault");
    // 4 MiB of 4 KiB pages per round (calibration rounds included in the fault count).
    let faults = r.summary("faults");
    assert_eq!(faults % 1024.0, 0.0, "faults = {faults}");
    assert!(faults >= 1024.0 * r.summary("ops"));
    let product = r.summary("ns_per_fault") * 1e-9 * r.summary("faults_per_s");
    assert!(
        (product - 1.0).abs() < 1e-9,
        "ns_per_fault and faults_per_s disagree: {product}"
    );
}

#[test]
fn mmap() {
    let r = check("mmap");
    check_per_op_arithmetic(&r, "us_per_op", 1e-6, 1.0);
}

#[test]
fn file_ops() {
    let r = check("file_ops");
    check_per_op_arithmetic(&r, "us_per_file", 1e-6, 1.0);
}

#[test]
fn mem_bw() {
    let r = check("mem_bw");
    assert!(r.summary("ops") >= 3.0, "one pass per phase at least");
}

#[test]
fn cpu_spin() {
    let r = check("cpu_spin");
    let series = r.series("units_per_s");
    assert!(!series.is_empty(), "no time series: {:#?}", r.samples);
    let offsets: Vec<f64> = series.iter().map(|s| s.t_offset_s.unwrap()).collect();
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "t_offset_s not increasing: {offsets:?}"
    );
    assert!(
        offsets
            .iter()
            .all(|t| *t > 0.0 && *t <= r.summary("elapsed_s")),
        "{offsets:?}"
    );
    assert!(
        series
            .iter()
            .all(|s| s.value >= 0.0 && s.unit == "units/s" && s.higher_is_better)
    );
    assert_eq!(r.summary("total_units"), r.summary("ops"));
    let rate = r.summary("units_per_s") * r.summary("elapsed_s");
    assert!((rate - r.summary("total_units")).abs() <= 1e-6 * rate.max(1.0));
}

#[test]
fn cpu_spin_with_threads() {
    let r = run(&[
        "cpu_spin",
        "--param",
        "duration=150ms",
        "--param",
        "threads=3",
    ]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.summary("total_units") >= 1.0);
}

#[test]
fn tcp_stream_loopback() {
    let r = check("tcp_stream");
    let (bytes, elapsed) = (r.summary("bytes"), r.summary("elapsed_s"));
    let gbit = bytes * 8.0 / 1e9 / elapsed;
    assert!(
        (r.summary("gbit_s") - gbit).abs() <= 1e-6 * gbit,
        "gbit_s vs bytes/elapsed"
    );
}

#[test]
fn tcp_stream_loopback_with_connections() {
    let r = run(&[
        "tcp_stream",
        "--param",
        "duration=200ms",
        "--param",
        "connections=3",
        "--param",
        "size=16KiB",
    ]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.summary("bytes") > 0.0);
    // Every connection delivered something: at least one read each.
    assert!(r.summary("ops") >= 3.0, "{}", r.summary("ops"));
}

#[test]
fn tcp_rr_loopback() {
    let r = check("tcp_rr");
    assert!(r.summary("p99_us") >= r.summary("p50_us"));
    let rate = r.summary("transactions_per_s") * r.summary("elapsed_s");
    assert!((rate - r.summary("ops")).abs() <= 1e-6 * rate);
    // Half the transactions took at most p50: it cannot exceed the whole run.
    assert!(r.summary("p50_us") <= r.summary("elapsed_s") * 1e6);
}

#[test]
fn oltp() {
    let r = check("oltp");
    assert!(r.summary("p99_ms") >= r.summary("p50_ms"));
    let rate = r.summary("tps") * r.summary("elapsed_s");
    assert!((rate - r.summary("ops")).abs() <= 1e-6 * rate);
}

#[test]
fn oltp_scale_and_dir() {
    let dir = support::TestDir::new("oltp");
    let r = run(&[
        "oltp",
        "--param",
        "duration=100ms",
        "--param",
        "scale=2",
        "--param",
        &dir.param(),
    ]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.summary("ops") >= 1.0);
    assert!(dir.entries().is_empty(), "left behind: {:?}", dir.entries());
}

#[test]
fn fileserver() {
    let r = check("fileserver");
    let rate = r.summary("ops_per_s") * r.summary("elapsed_s");
    assert!((rate - r.summary("ops")).abs() <= 1e-6 * rate);
}

#[test]
fn fileserver_cleans_up_its_dir() {
    let dir = support::TestDir::new("fileserver");
    let r = run(&[
        "fileserver",
        "--param",
        "duration=100ms",
        "--param",
        "files=50",
        "--param",
        &dir.param(),
    ]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(dir.entries().is_empty(), "left behind: {:?}", dir.entries());
}

#[test]
fn build() {
    let r = check("build");
    let rate = r.summary("jobs_per_s") * r.summary("elapsed_s");
    assert!((rate - r.summary("ops")).abs() <= 1e-6 * rate);
    assert!(r.summary("ops") >= 2.0, "both job slots ran");
}

#[test]
fn compile_subcommand_writes_an_object() {
    let dir = support::TestDir::new("compile");
    let out = dir.path.join("x.o");
    let status = std::process::Command::new(support::BIN)
        .args(["__compile", out.to_str().unwrap(), "42", "100000"])
        .status()
        .unwrap();
    assert!(status.success());
    let len = std::fs::metadata(&out).unwrap().len();
    // Compressed (generated code repeats a lot) plus the 8-byte checksum.
    assert!(len > 8 && len < 100_000, "{len}");
    let bad = std::process::Command::new(support::BIN)
        .args(["__compile", "only-one-arg"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn disk() {
    let r = check("disk");
    assert!(r.summary("fsync_p99_us") >= r.summary("fsync_p50_us"));
    let direct = r.summary("direct_io");
    assert!(direct == 0.0 || direct == 1.0);
}

#[test]
fn disk_cleans_up_its_dir() {
    let dir = support::TestDir::new("disk");
    let r = run(&[
        "disk",
        "--param",
        "duration=100ms",
        "--param",
        "size=1MiB",
        "--param",
        &dir.param(),
    ]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(dir.entries().is_empty(), "left behind: {:?}", dir.entries());
}

#[test]
fn iterations_are_honoured() {
    for w in WORKLOADS
        .iter()
        .filter(|w| w.params.iter().any(|p| p.name == "iterations"))
    {
        let mut args = vec![w.name, "--param", "iterations=3"];
        if w.params.iter().any(|p| p.name == "size") {
            args.extend(["--param", "size=64KiB"]);
        }
        let r = run(&args);
        assert_eq!(r.code, Some(0), "{}: {}", w.name, r.stderr);
        assert_eq!(r.summary("ops"), 3.0, "{}", w.name);
    }
}

/// Runs args that must be rejected: exit 2, nothing on stdout, stderr mentions every `needle`.
fn assert_usage_error(args: &[&str], needles: &[&str]) {
    let r = run(args);
    assert_eq!(r.code, Some(2), "{args:?}: {}", r.stderr);
    assert!(r.samples.is_empty(), "{args:?} printed samples");
    for n in needles {
        assert!(
            r.stderr.contains(n),
            "{args:?}: stderr lacks {n:?}: {}",
            r.stderr
        );
    }
}

#[test]
fn usage_errors_exit_2_and_name_the_culprit() {
    assert_usage_error(&["no_such_workload"], &["no_such_workload", "syscall"]);
    assert_usage_error(
        &["syscall", "--param", "colour=red"],
        &["syscall", "colour", "duration, iterations"],
    );
    assert_usage_error(
        &["syscall", "--param", "iterations=many"],
        &["syscall", "iterations", "many", "whole number"],
    );
    assert_usage_error(
        &["mmap", "--param", "size=huge"],
        &["mmap", "size", "huge", "64KiB"],
    );
    assert_usage_error(
        &["syscall", "--param", "duration=0s"],
        &["duration", "positive duration"],
    );
    assert_usage_error(
        &["mem_bw", "--param", "iterations=3"],
        &["mem_bw", "iterations"],
    );
    assert_usage_error(
        &["page_fault", "--param", "size=100"],
        &["page_fault", "size", "page"],
    );
    assert_usage_error(
        &["mem_bw", "--param", "size=8"],
        &["mem_bw", "size", "16 bytes"],
    );
    assert_usage_error(
        &["tcp_stream", "--param", "role=both"],
        &["tcp_stream", "role", "loopback, server, client"],
    );
    assert_usage_error(
        &["tcp_rr", "--param", "host=localhost"],
        &["tcp_rr", "host", "IP address"],
    );
    assert_usage_error(&["tcp_rr", "--param", "port=0"], &["tcp_rr", "port"]);
    assert_usage_error(&["disk", "--param", "size=100"], &["disk", "size", "4KiB"]);
    assert_usage_error(
        &["memory_bomb", "--param", "step=0"],
        &["memory_bomb", "step"],
    );
    assert_usage_error(&["syscall", "--param"], &["--param"]);
    assert_usage_error(&["syscall", "--frobnicate"], &["--frobnicate"]);
    assert_usage_error(&[], &["no workload"]);
}

#[test]
fn list_and_help() {
    let out = std::process::Command::new(support::BIN)
        .arg("--list")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for w in WORKLOADS {
        assert!(text.contains(w.name), "--list lacks {}", w.name);
        for p in w.params {
            assert!(
                text.contains(&format!("--param {}=", p.name)),
                "--list lacks {}.{}",
                w.name,
                p.name
            );
        }
    }
    let out = std::process::Command::new(support::BIN)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout).unwrap().contains("--list"));
    assert!(catalog::find("syscall").is_some());
}

#[test]
fn noop_subcommand_exits_at_once_silently() {
    let out = std::process::Command::new(support::BIN)
        .arg("__noop")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
}
