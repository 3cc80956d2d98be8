//! Runs the binary for every catalog workload with a short duration and checks its samples:
//! names, units, directions, plausible ranges and the arithmetic that ties them together.

mod support;

use std::collections::BTreeSet;

use isolab_model::catalog::{self, WORKLOADS};
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
            ],
        ),
        _ => return None,
    })
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
    // The loops run until the duration has passed (mem_bw: three thirds of it).
    assert!(elapsed >= 0.199, "{name}: elapsed_s = {elapsed}");
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
    for w in WORKLOADS {
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
