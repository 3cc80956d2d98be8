//! Verdicts that do not overclaim, end to end on synthetic runs: identical platforms come out
//! the same, three repetitions claim nothing, `compare` of two runs of one distribution finds no
//! change while a real 10% shift is found, and a metric missing from some trials says so.

mod support;

use std::path::Path;

use isolab_analyzer::analyze;
use isolab_analyzer::compare::{Change, compare, compare_with};
use isolab_analyzer::summary::Verdict;
use isolab_analyzer::testkit::{RunSpec, write_synthetic_run};
use support::{Shape, Sim};

/// One overhead experiment over `platforms` (`(name, backend)`), `metrics` lower-is-better
/// metrics of workload `micro`, `n` repetitions each, drawn from the shapes in turn;
/// `effect(platform, metric index)` multiplies the draws.
fn synthetic(
    dir: &Path,
    run_id: &str,
    platforms: &[(&str, &str)],
    (metrics, n): (usize, usize),
    sim: &mut Sim,
    shapes: [Shape; 2],
    effect: impl Fn(&str, usize) -> f64,
) {
    let mut spec = RunSpec::new(run_id, "synthetic");
    let exp = spec.experiment("micro", "overhead", platforms);
    for i in 0..metrics {
        let shape = shapes[i % 2];
        for (p, _) in platforms {
            let values = sim.sample(shape, n, effect(p, i));
            exp.summary_metric(p, "micro", &format!("m{i:03}"), "ns", false, &values);
        }
    }
    write_synthetic_run(dir, &spec).unwrap();
}

/// Normal 5% and log-normal 20% noise in turn.
const MIXED: [Shape; 2] = [Shape::Normal, Shape::LogNormal];
/// Quiet micro-benchmarks: normal 2% noise.
const QUIET: [Shape; 2] = [Shape::Tight, Shape::Tight];

#[test]
fn identical_platforms_come_out_the_same_for_95_percent_of_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = Sim::new(13);
    let platforms = [("native_a", "native"), ("native_b", "native")];
    synthetic(
        dir.path(),
        "aa",
        &platforms,
        (400, 5),
        &mut sim,
        MIXED,
        |_, _| 1.0,
    );
    let s = analyze(dir.path()).unwrap();
    let e = &s.experiments["micro"];
    assert_eq!(e.baseline.as_deref(), Some("native_a"));
    let verdicts: Vec<Verdict> = e
        .metrics
        .values()
        .filter_map(|m| m.platforms["native_b"].verdict)
        .collect();
    assert_eq!(verdicts.len(), 400);
    let different = verdicts
        .iter()
        .filter(|v| matches!(v, Verdict::Worse | Verdict::Better))
        .count();
    println!("A/A: {different} of 400 metrics called different");
    assert!(different <= 20, "{different} of 400 called different");
}

#[test]
fn three_repetitions_claim_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = Sim::new(5);
    let platforms = [("native", "native"), ("runc", "container")];
    // A 30% effect: plain to see, yet 3 against 3 cannot make it a 95% claim.
    synthetic(
        dir.path(),
        "few",
        &platforms,
        (20, 3),
        &mut sim,
        MIXED,
        |p, _| {
            if p == "runc" { 1.3 } else { 1.0 }
        },
    );
    let s = analyze(dir.path()).unwrap();
    for m in s.experiments["micro"].metrics.values() {
        let p = &m.platforms["runc"];
        assert_eq!(p.verdict, Some(Verdict::TooFewRepetitions));
        assert_eq!(p.ratio_ci_level, Some(0.9));
        assert_eq!((p.n, p.n_baseline), (3, Some(3)));
    }
    let md = isolab_analyzer::markdown::render(&s);
    assert!(md.contains("too few repetitions (n=3)"), "{md}");
    assert!(md.contains("(90% CI)"), "{md}");
    assert!(md.contains("× native [95% CI]"), "{md}");
    let json = serde_json::to_value(&s).unwrap();
    let runc = &json["experiments"]["micro"]["metrics"]["micro/m000"]["platforms"]["runc"];
    assert_eq!(runc["verdict"], "too_few_repetitions");
    assert_eq!(runc["ratio_method"], "hodges_lehmann_log_moses");
    assert!(runc["p_value"].as_f64().unwrap() >= 0.1);
}

#[test]
fn compare_of_two_runs_of_one_distribution_finds_no_change() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut sim = Sim::new(2026);
    let platforms = [("native", "native"), ("runc", "container")];
    // 123 metrics × 2 platforms = 246 comparisons, as in the run that found 77 phantom changes.
    synthetic(
        a.path(),
        "a",
        &platforms,
        (123, 10),
        &mut sim,
        MIXED,
        |_, _| 1.0,
    );
    synthetic(
        b.path(),
        "b",
        &platforms,
        (123, 10),
        &mut sim,
        MIXED,
        |_, _| 1.0,
    );
    let c = compare(a.path(), b.path()).unwrap();
    assert_eq!(c.entries.len(), 246);
    let raw = c.entries.iter().filter(|e| e.p_value <= 0.05).count();
    println!("unadjusted p ≤ 0.05: {raw} of 246");
    assert!(
        raw > 0,
        "some p-values fall below 0.05 by chance; BH must absorb them"
    );
    let changed: Vec<_> = c
        .entries
        .iter()
        .filter(|e| e.change != Change::Unchanged)
        .map(|e| (&e.metric, &e.platform, e.delta_pct, e.q_value))
        .collect();
    assert!(changed.is_empty(), "{changed:?}");
    assert!(!c.has_regression());
    assert!(c.entries.iter().all(|e| e.q_value >= e.p_value));
}

#[test]
fn compare_finds_a_real_ten_percent_shift_at_ten_repetitions() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut sim = Sim::new(99);
    let platforms = [("native", "native")];
    synthetic(
        a.path(),
        "a",
        &platforms,
        (50, 10),
        &mut sim,
        QUIET,
        |_, _| 1.0,
    );
    // Metrics 0..10 get 10% slower in B (2% noise).
    let shifted = |_: &str, i: usize| if i < 10 { 1.10 } else { 1.0 };
    synthetic(
        b.path(),
        "b",
        &platforms,
        (50, 10),
        &mut sim,
        QUIET,
        shifted,
    );
    let c = compare(a.path(), b.path()).unwrap();
    let mut false_discoveries = 0;
    for e in &c.entries {
        let i: usize = e.metric.trim_start_matches("micro/m").parse().unwrap();
        if i < 10 {
            assert_eq!(e.change, Change::Regression, "{e:?}");
            assert!(
                e.q_value <= 0.05 && (e.delta_pct - 10.0).abs() < 3.0,
                "{e:?}"
            );
        } else if e.change != Change::Unchanged {
            false_discoveries += 1;
        }
    }
    // Benjamini–Hochberg bounds the expected share of false discoveries among the discoveries
    // by 5%: with 10 real ones, one false one is within what it allows, more would not be.
    assert!(
        false_discoveries <= 1,
        "{false_discoveries} false discoveries"
    );
    assert!(c.has_regression());
    // The same shift below a 15% threshold does not count.
    let c = compare_with(a.path(), b.path(), 0.15).unwrap();
    assert!(!c.has_regression());
    let md = c.to_markdown();
    assert!(md.contains("at least 15%"), "{md}");
}

#[test]
fn a_metric_missing_from_some_trials_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = RunSpec::new("missing", "synthetic");
    spec.experiment("micro", "overhead", &[("native", "native")])
        .summary_metric(
            "native",
            "syscall",
            "ns_per_call",
            "ns",
            false,
            &[100.0, 101.0, 99.0, 100.5, 99.5],
        )
        .summary_metric(
            "native",
            "syscall",
            "cpu_usage_ns",
            "ns",
            false,
            &[5e8, 5e8],
        );
    write_synthetic_run(dir.path(), &spec).unwrap();
    let s = analyze(dir.path()).unwrap();
    let m = &s.experiments["micro"].metrics;
    let cpu = &m["syscall/cpu_usage_ns"].platforms["native"];
    assert_eq!((cpu.n, cpu.trials), (2, 5));
    let ns = &m["syscall/ns_per_call"].platforms["native"];
    assert_eq!((ns.n, ns.trials), (5, 5));
    let md = isolab_analyzer::markdown::render(&s);
    assert!(md.contains("missing in 3 of 5 trials"), "{md}");
}

#[test]
fn the_named_baseline_is_the_one_ratios_are_taken_against() {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = Sim::new(21);
    let mut spec = RunSpec::new("named", "synthetic");
    let exp = spec.experiment(
        "micro",
        "overhead",
        &[
            ("native", "native"),
            ("runc", "container"),
            ("runsc", "container"),
        ],
    );
    exp.baseline("runc");
    for (p, effect) in [("native", 0.8), ("runc", 1.0), ("runsc", 1.5)] {
        let values = sim.sample(Shape::Tight, 6, effect);
        exp.summary_metric(p, "syscall", "ns_per_call", "ns", false, &values);
    }
    write_synthetic_run(dir.path(), &spec).unwrap();
    let s = analyze(dir.path()).unwrap();
    let e = &s.experiments["micro"];
    assert_eq!(e.baseline.as_deref(), Some("runc"));
    let m = &e.metrics["syscall/ns_per_call"];
    assert_eq!(m.platforms["runc"].ratio_to_baseline, Some(1.0));
    assert_eq!(m.platforms["runc"].verdict, None);
    let runsc = &m.platforms["runsc"];
    assert!(
        (runsc.ratio_to_baseline.unwrap() - 1.5).abs() < 0.05,
        "{runsc:?}"
    );
    assert_eq!(runsc.verdict, Some(Verdict::Worse));
    assert_eq!(m.platforms["native"].verdict, Some(Verdict::Better));
    let md = isolab_analyzer::markdown::render(&s);
    assert!(md.contains("× runc [95% CI]"), "{md}");
    let (html, _) = isolab_analyzer::html::render(&s);
    assert!(
        html.contains("Cost relative to runc") && html.contains("worse than runc"),
        "the chart names the baseline"
    );
}
