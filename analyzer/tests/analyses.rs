//! Scaling, fairness, isolation, compare and the HTML report on synthetic runs with planted
//! answers.

use std::path::Path;
use std::process::Command;

use isolab_analyzer::compare::{Change, compare};
use isolab_analyzer::summary::Verdict;
use isolab_analyzer::testkit::{Outcome, RowSpec, RunSpec, TrialSpec, write_synthetic_run};
use isolab_analyzer::{analyze, write_report};

const FAIR_PIPELINE: &str = "apiVersion: isolab/v1
kind: Pipeline
name: study
platforms:
  native: { backend: native }
  container: { backend: container }
  vm: { backend: vm }
experiments:
  - name: fair
    analysis: fairness
    platforms: [container, vm, native]
    groups: [ { name: a, count: 1, weight: 1 }, { name: rest, count: 3, weight: 1 } ]
    workload: cpu_spin
    reservation: { group: a, cpu: 25% }
  - name: iso
    analysis: isolation
    platforms: [container]
    victim: cpu_spin
    adversaries: [none, fork_bomb, memory_bomb]
";

/// Scaling: per-instance 100 units/s up to 8 instances, then the aggregate stays at 800.
fn scaling_spec(spec: &mut RunSpec) {
    let exp = spec.experiment("scale", "scaling", &[("container", "container")]);
    for n in [1u32, 2, 4, 8, 16, 32] {
        for rep in 0..3u32 {
            let per_instance = if n <= 8 { 100.0 } else { 800.0 / f64::from(n) };
            let mut t = TrialSpec::new("container", "cpu_spin", rep);
            t.n_instances = n;
            let wiggle = 1.0 + 0.002 * f64::from(rep);
            t.outcome = Outcome::Ok(
                (0..n)
                    .map(|i| {
                        RowSpec::summary(i, "units_per_s", per_instance * wiggle, "units/s", true)
                    })
                    .collect(),
            );
            exp.trial(t);
        }
    }
}

/// Fairness: `container` shares equally, `vm` starves group a (10% instead of 25%), `native`
/// gives everything to instance 0.
fn fairness_spec(spec: &mut RunSpec) {
    let exp = spec.experiment(
        "fair",
        "fairness",
        &[
            ("container", "container"),
            ("vm", "vm"),
            ("native", "native"),
        ],
    );
    let shares: [(&str, [f64; 4]); 3] = [
        ("container", [0.25, 0.25, 0.25, 0.25]),
        ("vm", [0.10, 0.30, 0.30, 0.30]),
        ("native", [1.0, 0.0, 0.0, 0.0]),
    ];
    for (platform, share) in shares {
        for rep in 0..3u32 {
            let mut t = TrialSpec::new(platform, "cpu_spin", rep);
            t.n_instances = 4;
            let mut rows = Vec::new();
            for (i, s) in (0u32..).zip(share) {
                let group = if i == 0 { "a" } else { "rest" };
                let cpu = s * 2e9;
                rows.push(RowSpec::summary(i, "cpu_usage_ns", cpu, "ns", false).group(group));
                rows.push(
                    RowSpec::summary(i, "units_per_s", s * 1000.0, "units/s", true).group(group),
                );
                for k in 0..20u32 {
                    let at = 0.1 * f64::from(k) + 0.05;
                    rows.push(
                        RowSpec::point(i, "units_per_s", s * 1000.0, "units/s", at).group(group),
                    );
                }
            }
            t.outcome = Outcome::Ok(rows);
            exp.trial(t);
        }
    }
}

/// Isolation: victim 1000 units/s alone, 900 under fork_bomb (10% worse), 1000 under
/// memory_bomb, which the OOM killer kills; one memory_bomb trial leaked a cgroup.
fn isolation_spec(spec: &mut RunSpec) {
    let exp = spec.experiment("iso", "isolation", &[("container", "container")]);
    for (adversary, victim) in [
        ("none", 1000.0),
        ("fork_bomb", 900.0),
        ("memory_bomb", 1000.0),
    ] {
        for rep in 0..4u32 {
            let mut t = TrialSpec::new("container", "cpu_spin", rep);
            t.adversary = Some(adversary.into());
            t.n_instances = 2;
            let v = victim * (1.0 + 0.001 * f64::from(rep));
            let mut rows =
                vec![RowSpec::summary(0, "units_per_s", v, "units/s", true).role("victim")];
            if adversary == "memory_bomb" {
                rows.push(
                    RowSpec::summary(1, "oom_kills", 1.0, "count", false)
                        .role("adversary")
                        .workload(adversary),
                );
                if rep == 0 {
                    t.leaks = vec!["cgroup /isolab/x".into()];
                }
            }
            if adversary == "fork_bomb" {
                rows.push(
                    RowSpec::summary(1, "refused", 12.0, "refusals", true)
                        .role("adversary")
                        .workload(adversary),
                );
            }
            t.outcome = Outcome::Ok(rows);
            exp.trial(t);
        }
    }
}

fn full_spec() -> RunSpec {
    let mut spec = RunSpec::new("study-20250101T000000Z-0002", "study");
    spec.pipeline_text = Some(FAIR_PIPELINE.into());
    let noise = [0.0, -1.0, 1.0, 0.5, -0.5];
    spec.experiment(
        "micro",
        "overhead",
        &[
            ("native", "native"),
            ("container", "container"),
            ("vm", "vm"),
        ],
    )
    .summary_metric(
        "native",
        "syscall",
        "ns_per_call",
        "ns",
        false,
        &noise.map(|n| 100.0 + n * 0.2),
    )
    .summary_metric(
        "container",
        "syscall",
        "ns_per_call",
        "ns",
        false,
        &noise.map(|n| 100.2 + n * 0.1),
    )
    .summary_metric(
        "vm",
        "syscall",
        "ns_per_call",
        "ns",
        false,
        &noise.map(|n| 500.0 + n),
    );
    scaling_spec(&mut spec);
    fairness_spec(&mut spec);
    isolation_spec(&mut spec);
    spec
}

#[test]
fn the_test_pipeline_is_valid() {
    let p = isolab_model::load_str("study.yaml", FAIR_PIPELINE).expect("valid pipeline");
    assert_eq!(p.experiments.len(), 2);
}

#[test]
fn overhead_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    write_synthetic_run(dir.path(), &full_spec()).unwrap();
    let s = analyze(dir.path()).unwrap();
    let m = &s.experiments["micro"].metrics["syscall/ns_per_call"];
    assert_eq!(m.platforms["container"].verdict, Some(Verdict::Within));
    assert_eq!(m.platforms["vm"].verdict, Some(Verdict::Worse));
    assert!((m.platforms["vm"].overhead_pct.unwrap() - 400.0).abs() < 1.0);
    assert_eq!(m.platforms["native"].verdict, None);
    assert_eq!(m.platforms["vm"].values.len(), 5);
}

#[test]
fn planted_scaling_knee() {
    let dir = tempfile::tempdir().unwrap();
    write_synthetic_run(dir.path(), &full_spec()).unwrap();
    let s = analyze(dir.path()).unwrap();
    let sc = s.experiments["scale"]
        .scaling
        .as_ref()
        .expect("scaling section");
    assert_eq!(sc.series.len(), 1);
    let series = &sc.series[0];
    assert_eq!(series.label, "cpu_spin/units_per_s");
    assert_eq!(series.knee, Some(16));
    let at = |n: i32| series.points.iter().find(|p| p.n_instances == n).unwrap();
    assert!((at(8).efficiency.unwrap() - 1.0).abs() < 0.01);
    assert!((at(16).efficiency.unwrap() - 0.5).abs() < 0.01);
    assert!((at(32).aggregate.median - 800.0 * 1.002).abs() < 1.0);
    assert!((at(32).per_instance.median - 25.0 * 1.002).abs() < 0.1);
}

#[test]
fn planted_fairness() {
    let dir = tempfile::tempdir().unwrap();
    write_synthetic_run(dir.path(), &full_spec()).unwrap();
    let s = analyze(dir.path()).unwrap();
    let f = s.experiments["fair"]
        .fairness
        .as_ref()
        .expect("fairness section");
    assert_eq!(f.source, "cpu_usage_ns");
    assert_eq!(f.timeline_source.as_deref(), Some("units_per_s"));
    let fair = &f.platforms["container"];
    assert!(
        (fair.jain.median - 1.0).abs() < 1e-9,
        "equal shares: Jain 1"
    );
    assert!(fair.max_share_error.median.abs() < 1e-9);
    assert!((fair.groups["a"].entitled - 0.25).abs() < 1e-12);
    assert!((fair.groups["rest"].received.median - 0.75).abs() < 1e-9);
    assert!(fair.reservation.as_ref().unwrap().met);
    assert_eq!(fair.timeline.len(), 4, "2 s of points in 0.5 s intervals");
    let starved = &f.platforms["vm"];
    let jain = 16.0 / (4.0 * (0.4f64.powi(2) + 3.0 * 1.2f64.powi(2)));
    assert!((starved.jain.median - jain).abs() < 1e-9);
    assert!((starved.max_share_error.median - 0.15).abs() < 1e-9);
    let r = starved.reservation.as_ref().unwrap();
    assert!(!r.met && r.met_fraction == 0.0);
    let all = &f.platforms["native"];
    assert!(
        (all.jain.median - 0.25).abs() < 1e-9,
        "one takes all: Jain 1/n"
    );
    assert_eq!(
        f.platforms.keys().collect::<Vec<_>>(),
        ["container", "vm", "native"]
    );
}

#[test]
fn planted_isolation() {
    let dir = tempfile::tempdir().unwrap();
    write_synthetic_run(dir.path(), &full_spec()).unwrap();
    let s = analyze(dir.path()).unwrap();
    let iso = s.experiments["iso"]
        .isolation
        .as_ref()
        .expect("isolation section");
    assert_eq!(iso.adversaries, ["fork_bomb", "memory_bomb"]);
    assert_eq!(iso.metrics.len(), 1);
    let cell = |a: &str| {
        iso.metrics[0]
            .cells
            .iter()
            .find(|c| c.adversary == a)
            .unwrap()
    };
    assert!((cell("fork_bomb").degradation_pct - 10.0).abs() < 0.01);
    let [lo, hi] = cell("fork_bomb").degradation_ci_pct.unwrap();
    assert!(lo <= 10.0 && 10.0 <= hi);
    assert!(cell("memory_bomb").degradation_pct.abs() < 0.01);
    let out = |a: &str| iso.outcomes.iter().find(|o| o.adversary == a).unwrap();
    assert_eq!(
        (out("memory_bomb").killed, out("memory_bomb").limit_hit),
        (4, 0)
    );
    assert_eq!(out("memory_bomb").leaks, ["cgroup /isolab/x"]);
    assert!(!out("memory_bomb").contained);
    assert_eq!(
        (out("fork_bomb").killed, out("fork_bomb").limit_hit),
        (0, 4)
    );
    assert!(out("fork_bomb").contained);
}

fn overhead_run(dir: &Path, run_id: &str, container_ns: f64, native_gbs: f64) {
    let mut spec = RunSpec::new(run_id, "micro");
    let noise = [0.0, -0.5, 0.5, 0.25, -0.25];
    spec.experiment(
        "micro",
        "overhead",
        &[("native", "native"), ("container", "container")],
    )
    .summary_metric(
        "native",
        "syscall",
        "ns_per_call",
        "ns",
        false,
        &noise.map(|n| 100.0 + n),
    )
    .summary_metric(
        "container",
        "syscall",
        "ns_per_call",
        "ns",
        false,
        &noise.map(|n| container_ns + n),
    )
    .summary_metric(
        "native",
        "mem_bw",
        "copy_gb_per_s",
        "GB/s",
        true,
        &noise.map(|n| native_gbs + n / 10.0),
    );
    write_synthetic_run(dir, &spec).unwrap();
}

#[test]
fn compare_flags_regressions_and_improvements() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    overhead_run(a.path(), "a", 110.0, 10.0);
    overhead_run(b.path(), "b", 110.0, 10.0);
    overhead_run(c.path(), "c", 121.0, 12.0);
    let same = compare(a.path(), b.path()).unwrap();
    assert!(!same.has_regression());
    assert!(same.entries.iter().all(|e| e.change == Change::Unchanged));
    assert_eq!(same.entries.len(), 3);
    let changed = compare(a.path(), c.path()).unwrap();
    let entry = |metric: &str, platform: &str| {
        changed
            .entries
            .iter()
            .find(|e| e.metric == metric && e.platform == platform)
            .unwrap()
    };
    // Slower syscalls (lower is better, rose 10%): regression; more bandwidth: improvement.
    assert_eq!(
        entry("syscall/ns_per_call", "container").change,
        Change::Regression
    );
    assert!((entry("syscall/ns_per_call", "container").delta_pct - 10.0).abs() < 0.01);
    assert_eq!(
        entry("mem_bw/copy_gb_per_s", "native").change,
        Change::Improvement
    );
    assert_eq!(
        entry("syscall/ns_per_call", "native").change,
        Change::Unchanged
    );
    assert!(changed.has_regression());
    let md = changed.to_markdown();
    assert!(
        md.contains("1 regressions, 1 improvements, 1 unchanged"),
        "{md}"
    );
    // The reverse direction: the bandwidth drop is the regression now.
    let back = compare(c.path(), a.path()).unwrap();
    let bw = back
        .entries
        .iter()
        .find(|e| e.metric == "mem_bw/copy_gb_per_s")
        .unwrap();
    assert_eq!(bw.change, Change::Regression);
}

#[test]
fn html_report_has_every_chart_inline() {
    let dir = tempfile::tempdir().unwrap();
    write_synthetic_run(dir.path(), &full_spec()).unwrap();
    let paths = write_report(dir.path(), dir.path()).unwrap();
    let html = std::fs::read_to_string(&paths.report_html).unwrap();
    // overhead (micro), scaling aggregate + efficiency, 3 fairness timelines, 1 heat map.
    assert_eq!(paths.charts, 7);
    assert_eq!(html.matches("<figure class=\"chart\"").count(), 7);
    assert_eq!(html.matches("<svg").count(), 7);
    assert!(!html.contains("class=\"error\""), "a chart failed to draw");
    assert!(
        !html.contains("http://")
            || html.matches("http://").count()
                == html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
    );
    assert!(!html.contains("<script"));
    assert!(html.contains("knee at N=16"));
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// Renders report.html in headless Chromium and checks in the browser that every chart's SVG
/// is laid out with a non-empty bounding box.
#[test]
fn html_report_renders_in_headless_chromium() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("CI").is_err(),
            "chromium is required in CI (install the `chromium` package)"
        );
        eprintln!("skipped: no chromium on PATH");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write_synthetic_run(dir.path(), &full_spec()).unwrap();
    let paths = write_report(dir.path(), dir.path()).unwrap();
    let html = std::fs::read_to_string(&paths.report_html).unwrap();
    let probe = "<script>const s=[...document.querySelectorAll('figure.chart svg')];\
        const ok=s.filter(x=>{const b=x.getBBox();return x.childElementCount>0&&b.width>0&&b.height>0;});\
        document.title='charts:'+s.length+':'+ok.length;</script></body>";
    let test_page = dir.path().join("probe.html");
    std::fs::write(&test_page, html.replace("</body>", probe)).unwrap();
    // `timeout` bounds a browser that hangs (no timed assertion: it only fails a stuck run).
    let out = Command::new("timeout")
        .args(["300", browser])
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--dump-dom",
        ])
        .arg(format!("file://{}", test_page.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let want = format!("<title>charts:{0}:{0}</title>", paths.charts);
    assert!(
        dom.contains(&want),
        "expected {want}; chromium said: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A screenshot for people to look at (kept in cargo's per-target temp dir).
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("study-report.png");
    let _ = Command::new("timeout")
        .args(["300", browser])
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1100,4200",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", paths.report_html.display()))
        .output();
    eprintln!("screenshot: {}", shot.display());
}

#[test]
fn snapshot_of_the_study_report() {
    let dir = tempfile::tempdir().unwrap();
    write_synthetic_run(dir.path(), &full_spec()).unwrap();
    let paths = write_report(dir.path(), dir.path()).unwrap();
    insta::assert_snapshot!(
        "study_report_md",
        std::fs::read_to_string(paths.report_md).unwrap()
    );
    // summary.json reads back into the same Summary (tools and `compare` can start from it).
    let json = std::fs::read_to_string(paths.summary_json).unwrap();
    let back: isolab_analyzer::Summary = serde_json::from_str(&json).unwrap();
    assert_eq!(back, analyze(dir.path()).unwrap());
}
