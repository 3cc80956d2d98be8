//! The report's environment section, the paper's checklist and `isolab export`'s tables, on
//! synthetic runs with planted answers.

use std::fs;

use isolab_analyzer::export::{self, Format, Table};
use isolab_analyzer::findings::Status;
use isolab_analyzer::testkit::{Outcome, RowSpec, RunSpec, TrialSpec, write_synthetic_run};
use isolab_analyzer::{Summary, analyze, read_run, write_report};

mod paper {
    use super::*;

    pub(crate) const PIPELINE: &str = "apiVersion: isolab/v1
kind: Pipeline
name: soltesz2007
platforms:
  native: { backend: native }
  container: { backend: container }
  vm: { backend: vm }
experiments:
  - name: fair_equal
    analysis: fairness
    platforms: [container, vm]
    groups: [ { name: a, count: 4, weight: 1 } ]
    workload: cpu_spin
  - name: fair_reserved
    analysis: fairness
    platforms: [container, vm]
    groups: [ { name: a, count: 1, weight: 1 }, { name: rest, count: 3, weight: 1 } ]
    workload: cpu_spin
    reservation: { group: a, cpu: 25% }
  - name: isolation
    analysis: isolation
    platforms: [container]
    victim: cpu_spin
    adversaries: [none, fork_bomb, memory_bomb, cpu_hog]
";

    const NOISE: [f64; 5] = [0.0, -1.0, 1.0, 0.5, -0.5];

    /// `factor` × native's time per call and native's throughput ÷ `factor`, 5 repetitions.
    fn overhead_platform(
        e: &mut isolab_analyzer::testkit::ExperimentSpec,
        platform: &str,
        factor: f64,
        noise: [f64; 5],
    ) {
        e.summary_metric(
            platform,
            "syscall",
            "ns_per_call",
            "ns",
            false,
            &noise.map(|n| factor * (100.0 + n)),
        );
        e.summary_metric(
            platform,
            "cpu_spin",
            "units_per_s",
            "units/s",
            true,
            &noise.map(|n| (1000.0 + 5.0 * n) / factor),
        );
    }

    fn fairness(spec: &mut RunSpec, name: &str, shares: &[(&str, [f64; 4])], groups: [&str; 4]) {
        let exp = spec.experiment(
            name,
            "fairness",
            &[("container", "container"), ("vm", "vm")],
        );
        for (platform, share) in shares {
            for rep in 0..5u32 {
                let mut t = TrialSpec::new(platform, "cpu_spin", rep);
                t.n_instances = 4;
                let mut rows = Vec::new();
                for (i, s) in (0u32..).zip(*share) {
                    let g = groups[i as usize];
                    let s = s * (1.0 + 0.001 * f64::from(rep));
                    rows.push(RowSpec::summary(i, "cpu_usage_ns", s * 2e9, "ns", false).group(g));
                    rows.push(
                        RowSpec::summary(i, "units_per_s", s * 1e3, "units/s", true).group(g),
                    );
                    for k in 0..20u32 {
                        let at = 0.1 * f64::from(k) + 0.05;
                        rows.push(
                            RowSpec::point(i, "units_per_s", s * 1e3, "units/s", at).group(g),
                        );
                    }
                }
                t.outcome = Outcome::Ok(rows);
                exp.trial(t);
            }
        }
    }

    /// A soltesz2007 run: `vm_factor` is the VM's cost factor against native (1 = A/A).
    pub(crate) fn spec(vm_factor: f64) -> RunSpec {
        let mut spec = RunSpec::new("soltesz2007-20250101T000000Z-0003", "soltesz2007");
        spec.pipeline_text = Some(PIPELINE.into());
        let micro = spec.experiment(
            "micro",
            "overhead",
            &[
                ("native", "native"),
                ("container", "container"),
                ("vm", "vm"),
                ("gvisor", "docker"),
            ],
        );
        overhead_platform(micro, "native", 1.0, NOISE);
        overhead_platform(micro, "container", 1.01, [0.5, 0.0, -1.0, 1.0, -0.5]);
        overhead_platform(micro, "vm", vm_factor, [-0.5, 1.0, 0.0, -1.0, 0.5]);
        overhead_platform(micro, "gvisor", 8.0, NOISE);
        // Scaling: 100 units/s per instance up to the 2 cores, flat after; 3 repetitions on the
        // container, a single one on the VM.
        let scale = spec.experiment(
            "scale",
            "scaling",
            &[("container", "container"), ("vm", "vm")],
        );
        for (platform, reps) in [("container", 3u32), ("vm", 1)] {
            for n in [1u32, 2, 4] {
                for rep in 0..reps {
                    let mut t = TrialSpec::new(platform, "oltp", rep);
                    t.n_instances = n;
                    let per = 200.0 / f64::from(n.max(2)) * (1.0 + 0.002 * f64::from(rep));
                    t.outcome = Outcome::Ok(
                        (0..n)
                            .map(|i| RowSpec::summary(i, "tps", per, "tx/s", true))
                            .collect(),
                    );
                    scale.trial(t);
                }
            }
        }
        let all_a = ["a", "a", "a", "a"];
        fairness(
            &mut spec,
            "fair_equal",
            &[("container", [0.25; 4]), ("vm", [0.7, 0.1, 0.1, 0.1])],
            all_a,
        );
        fairness(
            &mut spec,
            "fair_reserved",
            &[("container", [0.25; 4]), ("vm", [0.1, 0.3, 0.3, 0.3])],
            ["a", "rest", "rest", "rest"],
        );
        // Isolation on the container: fork_bomb leaves the victim alone, memory_bomb leaks,
        // cpu_hog takes 30% of the victim's throughput.
        let iso = spec.experiment("isolation", "isolation", &[("container", "container")]);
        for adversary in ["none", "fork_bomb", "memory_bomb", "cpu_hog"] {
            for rep in 0..5u32 {
                let mut t = TrialSpec::new("container", "cpu_spin", rep);
                t.adversary = Some(adversary.into());
                t.n_instances = 2;
                let base = if adversary == "cpu_hog" {
                    700.0
                } else {
                    1000.0
                };
                let v = base * (1.0 + 0.001 * NOISE[rep as usize]);
                t.outcome = Outcome::Ok(vec![
                    RowSpec::summary(0, "units_per_s", v, "units/s", true).role("victim"),
                ]);
                if adversary == "memory_bomb" && rep == 0 {
                    t.leaks = vec!["cgroup /isolab/x".into()];
                }
                iso.trial(t);
            }
        }
        spec
    }
}

fn summary_of(spec: &RunSpec) -> (tempfile::TempDir, Summary) {
    let dir = tempfile::tempdir().unwrap();
    write_synthetic_run(dir.path(), spec).unwrap();
    let s = analyze(dir.path()).unwrap();
    (dir, s)
}

/// The status of the one finding whose text contains every needle.
fn status(s: &Summary, needles: &[&str]) -> Status {
    let paper = s
        .paper
        .as_ref()
        .expect("a soltesz2007 run has the checklist");
    let hits: Vec<_> = paper
        .findings
        .iter()
        .filter(|f| needles.iter().all(|n| f.finding.contains(n)))
        .collect();
    assert_eq!(hits.len(), 1, "{needles:?} in {:#?}", paper.findings);
    hits[0].status
}

#[test]
fn the_paper_pipeline_of_the_test_is_valid() {
    isolab_model::load_str("soltesz2007.yaml", paper::PIPELINE).expect("valid pipeline");
}

#[test]
fn the_checklist_marks_each_finding_from_the_runs_intervals() {
    let (_dir, s) = summary_of(&paper::spec(2.0));
    assert_eq!(
        status(&s, &["like native", "`container`"]),
        Status::Reproduced
    );
    // gVisor (docker backend, 8×) is no container in the paper's sense of cost.
    assert_eq!(
        status(&s, &["like native", "`gvisor`"]),
        Status::NotReproduced
    );
    assert_eq!(status(&s, &["VMs pay", "`vm`"]), Status::Reproduced);
    assert_eq!(status(&s, &["exceeds the container"]), Status::Reproduced);
    assert_eq!(
        status(&s, &["grows with N", "`container`"]),
        Status::Reproduced
    );
    // One repetition per point is never evidence.
    assert_eq!(status(&s, &["grows with N", "`vm`"]), Status::Inconclusive);
    assert_eq!(
        status(&s, &["fair share", "`container`"]),
        Status::Reproduced
    );
    assert_eq!(status(&s, &["fair share", "`vm`"]), Status::NotReproduced);
    assert_eq!(
        status(&s, &["reservation", "`container`"]),
        Status::Reproduced
    );
    assert_eq!(status(&s, &["reservation", "`vm`"]), Status::NotReproduced);
    assert_eq!(status(&s, &["`fork_bomb`"]), Status::Reproduced);
    assert_eq!(status(&s, &["`memory_bomb`"]), Status::NotReproduced);
    assert_eq!(status(&s, &["`cpu_hog`"]), Status::NotReproduced);
}

#[test]
fn an_a_a_run_never_reproduces_a_difference() {
    // The VM is native again: nothing may claim it costs more than native or the container.
    let (_dir, s) = summary_of(&paper::spec(1.0));
    assert_ne!(status(&s, &["VMs pay", "`vm`"]), Status::Reproduced);
    assert_ne!(status(&s, &["exceeds the container"]), Status::Reproduced);
}

#[test]
fn findings_without_data_are_not_measured_and_other_pipelines_get_no_checklist() {
    let mut spec = paper::spec(2.0);
    spec.experiments.retain(|e| e.name == "micro");
    let (_dir, s) = summary_of(&spec);
    assert_eq!(status(&s, &["grows with N"]), Status::NotMeasured);
    assert_eq!(status(&s, &["fair share"]), Status::NotMeasured);
    assert_eq!(status(&s, &["reservation"]), Status::NotMeasured);
    assert_eq!(status(&s, &["isolated"]), Status::NotMeasured);

    let mut other = paper::spec(2.0);
    other.pipeline_name = "study".into();
    other.pipeline_text = Some(paper::PIPELINE.replace("name: soltesz2007", "name: study"));
    let (dir, s) = summary_of(&other);
    assert!(s.paper.is_none());
    let paths = write_report(dir.path(), dir.path()).unwrap();
    let md = fs::read_to_string(paths.report_md).unwrap();
    assert!(!md.contains("The paper's findings"));
}

#[test]
fn the_checklist_appears_in_both_reports() {
    let dir = tempfile::tempdir().unwrap();
    write_synthetic_run(dir.path(), &paper::spec(2.0)).unwrap();
    let paths = write_report(dir.path(), dir.path()).unwrap();
    let md = fs::read_to_string(&paths.report_md).unwrap();
    assert!(md.contains("## The paper's findings"), "{md}");
    assert!(
        md.contains("✓ reproduced") && md.contains("✗ **not reproduced**"),
        "{md}"
    );
    let html = fs::read_to_string(&paths.report_html).unwrap();
    assert!(html.contains("<h2>The paper's findings</h2>"));
    assert!(html.contains("? inconclusive") && html.contains("✗ <strong>not reproduced</strong>"));
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&paths.summary_json).unwrap()).unwrap();
    assert!(json["paper"]["findings"].as_array().unwrap().len() >= 10);
}

#[test]
fn the_environment_section_shows_the_host_and_its_backends() {
    let dir = tempfile::tempdir().unwrap();
    write_synthetic_run(dir.path(), &paper::spec(2.0)).unwrap();
    let paths = write_report(dir.path(), dir.path()).unwrap();
    let s: Summary =
        serde_json::from_str(&fs::read_to_string(&paths.summary_json).unwrap()).unwrap();
    let host = &s.environment[0];
    assert_eq!(host.cores, Some(2));
    assert_eq!(host.kernel.as_deref(), Some("6.1.0-synthetic"));
    let vm = host.backends.iter().find(|b| b.name == "vm").unwrap();
    assert_eq!(
        (vm.accel.as_str(), vm.used_by.clone()),
        ("tcg", vec!["vm".to_owned()])
    );
    let md = fs::read_to_string(&paths.report_md).unwrap();
    for needle in [
        "## Environment",
        "| kernel | 6.1.0-synthetic (Synthetic Linux) |",
        "| CPU | Synthetic CPU @ 2.0GHz, 2 cores |",
        "| memory | 8.0 GiB |",
        "| cgroup | v2 |",
        "| `vm` | vm | QEMU 7.2.0 | tcg |",
        "| `container` | container | runc 1.1.5 | – |",
        "Not available on `synthetic-host`:",
        "- `xen`: requires another kernel",
    ] {
        assert!(md.contains(needle), "{needle} missing:\n{md}");
    }
}

#[test]
fn an_old_host_file_still_renders() {
    let dir = tempfile::tempdir().unwrap();
    write_synthetic_run(dir.path(), &paper::spec(2.0)).unwrap();
    fs::write(
        dir.path().join("env/synthetic-host.json"),
        r#"{ "host": "synthetic-host", "kernel": "5.10", "cores": 4, "cgroup_version": 1 }"#,
    )
    .unwrap();
    let paths = write_report(dir.path(), dir.path()).unwrap();
    let md = fs::read_to_string(&paths.report_md).unwrap();
    assert!(md.contains("| kernel | 5.10 |"), "{md}");
    assert!(md.contains("| cgroup | 1 |"), "{md}");
    assert!(md.contains("| memory | not recorded |"), "{md}");
}

fn csv_rows(bytes: &[u8]) -> Vec<Vec<String>> {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    // The test's values hold no quotes or commas except in `params`, which is `{}` here.
    text.lines()
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

#[test]
fn export_summary_matches_the_report_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    write_synthetic_run(dir.path(), &paper::spec(2.0)).unwrap();
    let s = analyze(dir.path()).unwrap();
    let cells: usize = s
        .experiments
        .values()
        .flat_map(|e| e.metrics.values())
        .map(|m| m.platforms.len())
        .sum();
    let vm = &s.experiments["micro"].metrics["syscall/ns_per_call"].platforms["vm"];

    let mut csv = Vec::new();
    export::export(dir.path(), Table::Summary, Format::Csv, &mut csv).unwrap();
    let rows = csv_rows(&csv);
    assert_eq!(rows.len(), cells + 1, "a header and one row per cell");
    let col = |name: &str| rows[0].iter().position(|c| c == name).unwrap();
    assert_eq!(rows[0][col("group")], "group");
    let row = rows
        .iter()
        .find(|r| r[col("label")] == "syscall/ns_per_call" && r[col("platform")] == "vm")
        .unwrap();
    assert_eq!(row[col("median")].parse::<f64>().unwrap(), vm.median);
    assert_eq!(row[col("verdict")], "worse");
    let native = rows
        .iter()
        .find(|r| r[col("label")] == "syscall/ns_per_call" && r[col("platform")] == "native")
        .unwrap();
    assert_eq!(
        native[col("ratio_ci_low")],
        "",
        "a missing value is empty, not 0"
    );

    let mut json = Vec::new();
    export::export(dir.path(), Table::Summary, Format::Json, &mut json).unwrap();
    let json: Vec<serde_json::Value> = serde_json::from_slice(&json).unwrap();
    assert_eq!(json.len(), cells);
    let native = json
        .iter()
        .find(|r| r["label"] == "syscall/ns_per_call" && r["platform"] == "native")
        .unwrap();
    assert!(native["ratio_ci_low"].is_null());
    assert_eq!(native["baseline"], "native");

    let mut pq = Vec::new();
    export::export(dir.path(), Table::Summary, Format::Parquet, &mut pq).unwrap();
    let file = dir.path().join("summary.parquet");
    fs::write(&file, &pq).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        fs::File::open(&file).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), cells);
    assert_eq!(batches[0].schema(), export::summary_schema());
}

#[test]
fn export_trials_lists_every_trial_of_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = paper::spec(2.0);
    spec.experiments[0].failed("vm", "syscall", 5, "agent lost: connection reset");
    write_synthetic_run(dir.path(), &spec).unwrap();
    let manifest = read_run(dir.path()).unwrap().manifest;
    let mut csv = Vec::new();
    export::export(dir.path(), Table::Trials, Format::Csv, &mut csv).unwrap();
    let text = String::from_utf8(csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "trial_id,experiment,platform,backend,workload,adversary,repetition,warmup,n_instances,\
         status,attempts,host,accel,started_at,finished_at,duration_ms,rows,file,reason"
    );
    assert_eq!(lines.count(), manifest.trials.len());
    assert!(
        text.lines()
            .any(|l| l.contains(",failed,") && l.ends_with("agent lost: connection reset")),
        "{text}"
    );
}

/// A browser to take screenshots with: Debian's `chromium` (or Chrome).
fn chromium() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|b| std::env::split_paths(&path).map(move |d| d.join(b)))
        .find(|p| p.is_file())
}

/// Runs headless Chromium on `page` with extra arguments; returns its stdout.
fn run_chromium(
    browser: &std::path::Path,
    profile: &std::path::Path,
    page: &std::path::Path,
    height: u32,
    extra: &[String],
) -> String {
    let out = std::process::Command::new(browser)
        .args([
            "--headless",
            // Root has no user namespace sandbox here; the page is our own file.
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--force-device-scale-factor=1",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size=1200,{height}"))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium starts");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Position of each chart on the rendered page: `(id, x, y, width, height)`.
type Boxes = Vec<(String, u32, u32, u32, u32)>;

/// Lays `report.html` out in Chromium and reads every chart's box and the page height, with a
/// script added to a copy of the page.
fn chart_boxes(
    browser: &std::path::Path,
    profile: &std::path::Path,
    html: &str,
    dir: &std::path::Path,
) -> (u32, Boxes) {
    const PROBE: &str = "<script>const boxes=[...document.querySelectorAll('figure.chart')].map(f=>{\
        const r=f.querySelector('svg').getBoundingClientRect();\
        return [f.dataset.chart,Math.round(r.left+scrollX),Math.round(r.top+scrollY),\
        Math.round(r.width),Math.round(r.height)]});\
        const p=document.createElement('pre');p.id='chart-boxes';\
        p.textContent=JSON.stringify({height:document.documentElement.scrollHeight,boxes});\
        document.body.appendChild(p);</script></body>";
    let probe = dir.join("probe.html");
    fs::write(&probe, html.replace("</body>", PROBE)).unwrap();
    let dom = run_chromium(browser, profile, &probe, 900, &["--dump-dom".to_owned()]);
    let start = dom.find("<pre id=\"chart-boxes\">").expect("the probe ran") + 22;
    let end = start + dom[start..].find("</pre>").unwrap();
    let v: serde_json::Value = serde_json::from_str(&dom[start..end]).unwrap();
    let n = |x: &serde_json::Value| u32::try_from(x.as_u64().unwrap()).unwrap();
    let boxes = v["boxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b[0].as_str().unwrap().to_owned(),
                n(&b[1]),
                n(&b[2]),
                n(&b[3]),
                n(&b[4]),
            )
        })
        .collect();
    (n(&v["height"]), boxes)
}

/// Takes a screenshot of `page` (1200 px wide, `height` tall) and decodes it as RGB rows.
fn screenshot(
    browser: &std::path::Path,
    profile: &std::path::Path,
    page: &std::path::Path,
    height: u32,
) -> (u32, Vec<u8>, usize) {
    let png_path = page.with_extension("png");
    run_chromium(
        browser,
        profile,
        page,
        height,
        &[format!("--screenshot={}", png_path.display())],
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(fs::File::open(&png_path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    buf.truncate(info.buffer_size());
    (info.width, buf, channels)
}

/// Pixels inside a box that are coloured (bars, lines, dots, heat-map cells: not white, grey
/// or black), and pixels that are dark (axes, ticks, labels, whiskers).
fn marks(image: &(u32, Vec<u8>, usize), b: &(String, u32, u32, u32, u32)) -> (usize, usize) {
    let (width, pixels, channels) = image;
    let (mut coloured, mut dark) = (0, 0);
    for y in b.2..b.2 + b.4 {
        for x in b.1..(b.1 + b.3).min(*width) {
            let i = (y as usize * *width as usize + x as usize) * channels;
            let Some(px) = pixels.get(i..i + 3) else {
                continue;
            };
            let (lo, hi) = (px.iter().min().unwrap(), px.iter().max().unwrap());
            if hi - lo > 60 {
                coloured += 1;
            } else if *hi < 120 {
                dark += 1;
            }
        }
    }
    (coloured, dark)
}

#[test]
fn every_chart_of_report_html_renders_with_visible_marks_in_chromium() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs chromium for the screenshot test (Debian: apt-get install chromium)"
        );
        eprintln!("skipped: no chromium in PATH (this test runs on CI)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    write_synthetic_run(&run, &paper::spec(2.0)).unwrap();
    let paths = write_report(&run, &run).unwrap();
    let html = fs::read_to_string(&paths.report_html).unwrap();
    let profile = dir.path().join("profile");

    let (height, boxes) = chart_boxes(&browser, &profile, &html, dir.path());
    let ids: Vec<&str> = boxes.iter().map(|b| b.0.as_str()).collect();
    assert_eq!(
        boxes.len(),
        paths.charts,
        "every chart is laid out: {ids:?}"
    );
    for kind in [
        "overhead",
        "scaling-aggregate",
        "scaling-efficiency",
        "fairness-",
        "isolation-",
    ] {
        assert!(
            ids.iter().any(|i| i.starts_with(kind)),
            "no {kind} chart in {ids:?}"
        );
    }
    let image = screenshot(&browser, &profile, &paths.report_html, height);
    for b in &boxes {
        assert!(
            b.3 >= 200 && b.4 >= 100,
            "chart {} is laid out too small: {b:?}",
            b.0
        );
        let (coloured, dark) = marks(&image, b);
        assert!(
            coloured >= 150,
            "chart {} shows no visible marks ({coloured} coloured pixels)",
            b.0
        );
        assert!(
            dark >= 150,
            "chart {} has no axes or labels ({dark} dark pixels)",
            b.0
        );
    }

    // The same page with every chart emptied (same size, nothing drawn): the count must see it.
    let mut blank = String::new();
    let mut rest = html.as_str();
    while let Some(start) = rest.find("<svg") {
        let open_end = start + rest[start..].find('>').unwrap() + 1;
        let close = open_end + rest[open_end..].find("</svg>").unwrap();
        blank.push_str(&rest[..open_end]);
        rest = &rest[close..];
    }
    blank.push_str(rest);
    let blank_page = dir.path().join("blank.html");
    fs::write(&blank_page, blank).unwrap();
    let image = screenshot(&browser, &profile, &blank_page, height);
    for b in &boxes {
        let (coloured, dark) = marks(&image, b);
        assert!(
            coloured + dark < 50,
            "an empty chart {} counted {coloured} + {dark} marks",
            b.0
        );
    }
}
