//! End-to-end tests of the analyzer on synthetic run directories with planted answers.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use isolab_analyzer::testkit::{
    LoadSpec, RowSpec, RunSpec, TrialSpec, write_generated_run, write_synthetic_run,
};
use isolab_analyzer::{AnalyzeError, ReadError, analyze, read_run, write_report};
use isolab_model::manifest::{StopReason, TrialState};

/// native ≈ 100 ns, container ≈ 110 ns: 5 repetitions with ±1% noise.
fn planted_overhead() -> RunSpec {
    let mut spec = RunSpec::new("planted-20250101T000000Z-0001", "planted");
    let noise = [0.0, -1.0, 1.0, 0.5, -0.5];
    let native: Vec<f64> = noise.iter().map(|n| 100.0 + n).collect();
    let container: Vec<f64> = noise.iter().map(|n| 110.0 + 1.1 * n).collect();
    let native_fork: Vec<f64> = noise.iter().map(|n| 50.0 + n).collect();
    let container_fork: Vec<f64> = noise.iter().map(|n| 50.5 + n).collect();
    spec.experiment(
        "micro",
        "overhead",
        &[("native", "native"), ("container", "container")],
    )
    .summary_metric("native", "syscall", "ns_per_call", "ns", false, &native)
    .summary_metric(
        "container",
        "syscall",
        "ns_per_call",
        "ns",
        false,
        &container,
    )
    .summary_metric(
        "native",
        "fork_exit",
        "us_per_process",
        "us",
        false,
        &native_fork,
    )
    .summary_metric(
        "container",
        "fork_exit",
        "us_per_process",
        "us",
        false,
        &container_fork,
    )
    .failed("container", "fork_exit", 5, "agent lost: connection reset")
    .stop_reason("native", "syscall", StopReason::CiWithinTarget)
    .stop_reason("container", "syscall", StopReason::MaxRepetitions);
    spec
}

#[test]
fn planted_ten_percent_overhead_is_reported_as_1_10() {
    let dir = tempfile::tempdir().unwrap();
    write_synthetic_run(dir.path(), &planted_overhead()).unwrap();
    let summary = analyze(dir.path()).unwrap();
    let micro = &summary.experiments["micro"];
    assert_eq!(micro.baseline.as_deref(), Some("native"));
    let m = &micro.metrics["syscall/ns_per_call"];
    let c = &m.platforms["container"];
    assert_eq!(c.n, 5);
    let ratio = c.ratio_to_baseline.unwrap();
    assert!((ratio - 1.10).abs() < 0.005, "ratio {ratio}");
    let [lo, hi] = c.ratio_ci.unwrap();
    assert!(
        lo <= 1.10 && 1.10 <= hi,
        "CI [{lo}, {hi}] must contain 1.10"
    );
    assert!(lo > 1.0, "a 10% overhead with 1% noise is significant");
    assert!((c.median - 110.0).abs() < 1e-9);
    let n = &m.platforms["native"];
    assert_eq!(n.ratio_to_baseline, Some(1.0));
    assert_eq!(summary.trials.planned, 21);
    assert_eq!(summary.trials.ok, 20);
    assert_eq!(summary.trials.failed, 1);
    assert_eq!(
        summary.failed_trials[0].reason.as_deref(),
        Some("agent lost: connection reset")
    );
}

#[test]
fn stop_reasons_from_the_manifest_appear_in_every_report() {
    let dir = tempfile::tempdir().unwrap();
    write_synthetic_run(dir.path(), &planted_overhead()).unwrap();
    let summary = analyze(dir.path()).unwrap();
    let micro = &summary.experiments["micro"];
    let sys = &micro.metrics["syscall/ns_per_call"].platforms;
    assert_eq!(sys["native"].stop_reason, Some(StopReason::CiWithinTarget));
    assert_eq!(
        sys["container"].stop_reason,
        Some(StopReason::MaxRepetitions)
    );
    // fork_exit has no recorded group, and the synthetic pipeline text says nothing.
    let fork = &micro.metrics["fork_exit/us_per_process"].platforms;
    assert_eq!(fork["native"].stop_reason, None);
    let paths = write_report(dir.path(), dir.path()).unwrap();
    let json = fs::read_to_string(&paths.summary_json).unwrap();
    assert!(json.contains("\"stop_reason\": \"ci_within_target\""));
    assert!(json.contains("\"stop_reason\": \"max_repetitions\""));
    let md = fs::read_to_string(&paths.report_md).unwrap();
    assert!(md.contains("| native | 5 (CI met) |"), "{md}");
    assert!(md.contains("| container | 5 (max) |"), "{md}");
    let html = fs::read_to_string(&paths.report_html).unwrap();
    assert!(html.contains("5 (CI met)") && html.contains("5 (max)"));
}

#[test]
fn without_until_stable_and_groups_repetitions_are_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = planted_overhead();
    spec.experiments[0].stop_reasons.clear();
    spec.pipeline_text = Some(
        "apiVersion: isolab/v1\nkind: Pipeline\nname: planted\ndefaults: { repetitions: 5 }\n\
         platforms:\n  native: { backend: native }\n  container: { backend: container }\n\
         experiments:\n  - { name: micro, analysis: overhead, platforms: [native, container], workloads: [syscall, fork_exit] }\n"
            .into(),
    );
    write_synthetic_run(dir.path(), &spec).unwrap();
    let summary = analyze(dir.path()).unwrap();
    for m in summary.experiments["micro"].metrics.values() {
        for p in m.platforms.values() {
            assert_eq!(p.stop_reason, Some(StopReason::Fixed));
        }
    }
}

#[test]
fn snapshot_of_summary_and_markdown() {
    let dir = tempfile::tempdir().unwrap();
    write_synthetic_run(dir.path(), &planted_overhead()).unwrap();
    let out = dir.path().join("report");
    let paths = write_report(dir.path(), &out).unwrap();
    let json = fs::read_to_string(&paths.summary_json).unwrap();
    let md = fs::read_to_string(&paths.report_md).unwrap();
    insta::assert_snapshot!("summary_json", json);
    insta::assert_snapshot!("report_md", md);
    // Deterministic: a second report is byte-identical.
    let again = write_report(dir.path(), &out).unwrap();
    assert_eq!(fs::read_to_string(again.summary_json).unwrap(), json);
    // Atomic writes leave no staging files.
    let mut names: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["report.html", "report.md", "summary.json"]);
}

fn write_foreign_parquet(path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let batch = RecordBatch::try_from_iter(vec![
        (
            "name",
            Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef,
        ),
        ("count", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
    ])
    .unwrap();
    let file = fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// The file the manifest lists for the `ok` container fork_exit trial of repetition 0.
fn listed_file(dir: &Path) -> std::path::PathBuf {
    let t = TrialSpec::new("container", "fork_exit", 0);
    let id = isolab_analyzer::testkit::trial_id("micro", &t);
    dir.join(isolab_analyzer::testkit::trial_path(
        "micro",
        "container",
        &id,
    ))
}

#[test]
fn a_foreign_parquet_file_the_manifest_lists_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    write_synthetic_run(dir.path(), &planted_overhead()).unwrap();
    let foreign = listed_file(dir.path());
    assert!(foreign.is_file(), "the test replaces a listed file");
    write_foreign_parquet(&foreign);
    let err = analyze(dir.path()).unwrap_err();
    let AnalyzeError::Read(ReadError::SchemaMismatch {
        path,
        expected,
        found,
        ..
    }) = &err
    else {
        panic!("expected a schema mismatch, got {err:?}");
    };
    assert_eq!(path, &foreign);
    assert!(expected.starts_with("run_id: Utf8"), "{expected}");
    assert!(found.contains("count: Int64"), "{found}");
    let msg = err.to_string();
    assert!(
        msg.contains(&foreign.file_name().unwrap().to_string_lossy().into_owned())
            && msg.contains("column 0 is `name: Utf8"),
        "{msg}"
    );
}

#[test]
fn a_failed_trials_stray_parquet_is_never_read_as_data() {
    let dir = tempfile::tempdir().unwrap();
    let spec = planted_overhead();
    write_synthetic_run(dir.path(), &spec).unwrap();
    let before = analyze(dir.path()).unwrap();
    // The same run in which the failed trial (container fork_exit, repetition 5) "finished" with
    // a value 1000 times the others: its file, at the failed trial's path, is planted in the
    // real run as a failed attempt might have left it.
    let mut ok_spec = spec.clone();
    let micro = &mut ok_spec.experiments[0];
    micro
        .trials
        .retain(|t| !(t.platform == "container" && t.workload == "fork_exit" && t.repetition == 5));
    micro.summary_metric(
        "container",
        "fork_exit",
        "us_per_process",
        "us",
        false,
        &[50_000.0],
    );
    let mut stray_trial = micro.trials.pop().unwrap();
    stray_trial.repetition = 5;
    micro.trial(stray_trial.clone());
    let other = tempfile::tempdir().unwrap();
    write_synthetic_run(other.path(), &ok_spec).unwrap();
    let id = isolab_analyzer::testkit::trial_id("micro", &stray_trial);
    let rel = isolab_analyzer::testkit::trial_path("micro", "container", &id);
    fs::create_dir_all(dir.path().join(&rel).parent().unwrap()).unwrap();
    fs::copy(other.path().join(&rel), dir.path().join(&rel)).unwrap();
    // Also a valid results file under a name nobody listed.
    fs::copy(
        other.path().join(&rel),
        dir.path()
            .join(rel.with_file_name("copied-by-hand.parquet")),
    )
    .unwrap();

    let run = read_run(dir.path()).unwrap();
    let read: Vec<_> = run
        .table
        .files
        .iter()
        .map(|f| f.to_string_lossy().into_owned())
        .collect();
    assert!(
        !read
            .iter()
            .any(|f| f.contains(&id) || f.contains("copied-by-hand")),
        "a file the manifest does not list as ok was read: {read:?}"
    );
    let after = analyze(dir.path()).unwrap();
    let fork = |s: &isolab_analyzer::Summary| {
        s.experiments["micro"].metrics["fork_exit/us_per_process"].platforms["container"].clone()
    };
    assert_eq!(fork(&after).n, 5, "the failed repetition adds no value");
    assert_eq!(fork(&after).values, fork(&before).values);
    assert!(fork(&after).values.iter().all(|v| *v < 1000.0));
    assert_eq!(after, before);
}

#[test]
fn a_manifest_path_outside_the_run_is_never_read_and_reported_missing() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    write_synthetic_run(&run_dir, &planted_overhead()).unwrap();
    let listed = listed_file(&run_dir);
    let rel = listed
        .strip_prefix(&run_dir)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    // The file moves out of the run directory and the manifest points at it with `..`.
    fs::rename(&listed, dir.path().join("outside.parquet")).unwrap();
    let manifest = run_dir.join("manifest.json");
    let text = fs::read_to_string(&manifest).unwrap();
    assert!(text.contains(&rel));
    fs::write(&manifest, text.replace(&rel, "../outside.parquet")).unwrap();
    let run = read_run(&run_dir).unwrap();
    assert!(
        run.table
            .files
            .iter()
            .all(|f| !f.ends_with("outside.parquet")),
        "{:?}",
        run.table.files
    );
    assert_eq!(run.missing_files, ["../outside.parquet"]);
}

#[test]
fn staging_and_hidden_files_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let run = write_synthetic_run(dir.path(), &planted_overhead()).unwrap();
    let part = dir.path().join("samples/experiment=micro/platform=native");
    write_foreign_parquet(&part.join(".trial-x.parquet.tmp"));
    write_foreign_parquet(&part.join("trial-y.parquet.tmp"));
    fs::write(part.join("README.txt"), "not data").unwrap();
    let read = read_run(dir.path()).unwrap();
    assert_eq!(read.table.files.len(), run.files.len());
    assert_eq!(read.table.len() as u64, run.rows);
    assert!(read.missing_files.is_empty());
}

#[test]
fn repetitions_average_instances_and_ignore_time_series() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = RunSpec::new("multi", "multi");
    let exp = spec.experiment("scale", "scaling", &[("container", "container")]);
    for rep in 0..3u32 {
        let mut t = TrialSpec::new("container", "cpu_spin", rep);
        t.n_instances = 2;
        let base = 100.0 + f64::from(rep);
        let mut rows = vec![
            RowSpec::summary(0, "units_per_s", base - 10.0, "units/s", true),
            RowSpec::summary(1, "units_per_s", base + 10.0, "units/s", true),
        ];
        // Time-series points far from the summaries must not move the medians.
        rows.extend(
            (0..50).map(|i| RowSpec::point(0, "units_per_s", 1e6, "units/s", f64::from(i) * 0.1)),
        );
        t.outcome = isolab_analyzer::testkit::Outcome::Ok(rows);
        exp.trial(t);
    }
    write_synthetic_run(dir.path(), &spec).unwrap();
    let summary = analyze(dir.path()).unwrap();
    let e = &summary.experiments["scale"];
    assert_eq!(e.baseline, None);
    let m = &e.metrics["cpu_spin/units_per_s"];
    let p = &m.platforms["container"];
    assert_eq!((p.n, p.median), (3, 101.0));
    assert_eq!(p.ratio_to_baseline, None);
    assert!(p.higher_is_better);
}

#[test]
fn labels_show_only_what_distinguishes_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = RunSpec::new("labels", "labels");
    let exp = spec.experiment("files", "overhead", &[("native", "native")]);
    for (size, value) in [(0, 10.0), (4096, 20.0)] {
        let mut t = TrialSpec::new("native", "file_ops", 0);
        t.params = format!(r#"{{"duration":"1s","size":{size}}}"#);
        t.outcome = isolab_analyzer::testkit::Outcome::Ok(vec![RowSpec::summary(
            0,
            "us_per_file",
            value,
            "us",
            false,
        )]);
        exp.trial(t);
    }
    write_synthetic_run(dir.path(), &spec).unwrap();
    let summary = analyze(dir.path()).unwrap();
    let labels: Vec<_> = summary.experiments["files"]
        .metrics
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        labels,
        [
            "file_ops/us_per_file [size=0]",
            "file_ops/us_per_file [size=4096]"
        ]
    );
    assert_eq!(
        summary.experiments["files"].metrics[1].platforms["native"].median,
        20.0
    );
}

#[test]
fn not_a_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let err = analyze(dir.path()).unwrap_err();
    assert!(
        matches!(err, AnalyzeError::Read(ReadError::NoManifest { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("manifest.json"));
}

#[test]
fn missing_files_of_ok_trials_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let run = write_synthetic_run(dir.path(), &planted_overhead()).unwrap();
    fs::remove_file(dir.path().join(&run.files[0])).unwrap();
    let summary = analyze(dir.path()).unwrap();
    assert_eq!(
        summary.missing_files,
        [run.files[0].to_string_lossy().into_owned()]
    );
}

#[test]
fn generated_runs_read_back_completely() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = LoadSpec::with_total_rows("gen", 40_000);
    spec.repetitions = 5;
    let run = write_generated_run(dir.path(), &spec).unwrap();
    assert_eq!(run.rows, spec.total_rows());
    let read = read_run(dir.path()).unwrap();
    assert_eq!(read.table.len() as u64, run.rows);
    assert_eq!(read.table.segments.len(), 10, "one segment per trial file");
    assert!(
        read.manifest
            .trials
            .iter()
            .all(|t| t.status == TrialState::Ok)
    );
    // Summary-only reads skip the time series (page index + row filter) but keep every summary.
    let summaries = isolab_analyzer::read_run_with(
        dir.path(),
        &isolab_analyzer::ReadOptions {
            time_series: isolab_analyzer::TimeSeries::None,
        },
    )
    .unwrap();
    let expected = u64::from(spec.repetitions * spec.instances * spec.summary_metrics) * 2;
    assert_eq!(summaries.table.len() as u64, expected);
    assert!(summaries.table.t_offset_s.iter().all(|t| t.is_nan()));
    let summary = analyze(dir.path()).unwrap();
    let m = &summary.experiments["load"].metrics["cpu_spin/m0"];
    let r = m.platforms["container"].ratio_to_baseline.unwrap();
    assert!((r - 1.1).abs() < 0.02, "planted 1.1, got {r}");
}

#[test]
fn summary_only_reads_prune_pages_without_losing_rows() {
    // 120k rows per file: several data pages, the summaries all in the last ones.
    let dir = tempfile::tempdir().unwrap();
    let spec = LoadSpec {
        run_id: "pages".into(),
        platforms: vec![
            ("native".into(), "native".into()),
            ("vm".into(), "vm".into()),
        ],
        repetitions: 1,
        instances: 4,
        points_per_instance: 30_000,
        summary_metrics: 3,
        seed: 1,
    };
    write_generated_run(dir.path(), &spec).unwrap();
    let opts = |time_series| isolab_analyzer::ReadOptions { time_series };
    let none = isolab_analyzer::read_run_with(dir.path(), &opts(isolab_analyzer::TimeSeries::None))
        .unwrap();
    let all = read_run(dir.path()).unwrap();
    assert_eq!(none.table.len(), 2 * 4 * 3);
    assert_eq!(all.table.len() as u64, spec.total_rows());
    // The same summary values either way.
    let summaries = |t: &isolab_analyzer::table::SampleTable| {
        let mut v: Vec<(i32, u64)> = (0..t.len())
            .filter(|&i| t.t_offset_s[i].is_nan())
            .map(|i| (t.instance[i], t.value[i].to_bits()))
            .collect();
        v.sort_unstable();
        v
    };
    assert_eq!(summaries(&none.table), summaries(&all.table));
}

#[test]
fn host_noise_is_reported_apart_from_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = RunSpec::new("noisy", "noisy");
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
        &[100.0, 101.0, 99.0],
    )
    .summary_metric(
        "container",
        "syscall",
        "ns_per_call",
        "ns",
        false,
        &[110.0, 111.0, 109.0],
    )
    // Repetition 1 of native ran beside a busy neighbour; repetition 2 of container on a
    // hypervisor that stole 8% of the host.
    .host_noise("native", "syscall", &[0.0, 0.0, 0.0], &[0.02, 0.31, 0.03])
    .host_noise(
        "container",
        "syscall",
        &[0.01, 0.0, 0.08],
        &[0.02, 0.01, 0.02],
    );
    write_synthetic_run(dir.path(), &spec).unwrap();
    let s = analyze(dir.path()).unwrap();
    // Host rows are not workload metrics.
    let metrics: Vec<&String> = s.experiments["micro"].metrics.keys().collect();
    assert_eq!(metrics, ["syscall/ns_per_call"]);
    let n = &s.noise;
    assert!(n.recorded);
    assert_eq!(n.platforms.len(), 2);
    assert_eq!(n.platforms[0].platform, "native");
    assert_eq!(n.platforms[0].trials, 3);
    assert_eq!(n.platforms[0].background_median, Some(0.03));
    assert_eq!(n.platforms[1].steal_median, Some(0.01));
    let flagged: Vec<(&str, i32)> = n
        .flagged
        .iter()
        .map(|t| (t.platform.as_str(), t.repetition))
        .collect();
    assert_eq!(flagged, [("native", 1), ("container", 2)]);
    let md = isolab_analyzer::markdown::render(&s);
    assert!(md.contains("## Noise"), "{md}");
    assert!(md.contains("| micro | native | 3 | 0.0% | 3.0% |"), "{md}");
    assert!(md.contains("31.0%") && md.contains("8.0%"), "{md}");

    // A run whose agent recorded no host rows says so.
    let quiet = tempfile::tempdir().unwrap();
    write_synthetic_run(quiet.path(), &planted_overhead()).unwrap();
    let s = analyze(quiet.path()).unwrap();
    assert!(!s.noise.recorded);
    let md = isolab_analyzer::markdown::render(&s);
    assert!(md.contains("not recorded"), "{md}");
}
