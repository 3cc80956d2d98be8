//! The method on the record, end to end through `isolab run` and the embedded agent: trials run in
//! seeded, interleaved rounds whose seed and times are in the manifest, `--resume` keeps that
//! order, CPU time is exact (not in 10 ms ticks), and every trial carries the host's noise.
//!
//! Runs need root (cgroups); off CI without root they are skipped with a printed reason.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow_array::{Array, Float64Array, Int32Array, RecordBatch, StringArray};
use common::{BIN, column};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn isolab(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run isolab")
}

/// Two identical native platforms × two workloads, `reps` repetitions and one warm-up.
fn pipeline(dir: &Path, workloads: &str, reps: u32, duration: &str) -> PathBuf {
    let text = format!(
        "apiVersion: isolab/v1\nkind: Pipeline\nname: method\n\
         defaults: {{ repetitions: {reps}, warmup: 1, duration: {duration} }}\n\
         platforms:\n  native_a: {{ backend: native }}\n  native_b: {{ backend: native }}\n\
         experiments:\n  - name: micro\n    analysis: overhead\n    baseline: native_a\n    \
         platforms: [native_a, native_b]\n    workloads: [{workloads}]\n"
    );
    let path = dir.join("method.yaml");
    std::fs::write(&path, text).expect("write pipeline");
    path
}

fn run(pipeline: &Path, results: &Path, extra: &[&str]) -> PathBuf {
    let mut args = vec![
        "run",
        pipeline.to_str().unwrap(),
        "--results",
        results.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = isolab(&args);
    assert!(
        out.status.success(),
        "isolab run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("run directory"),
    )
}

fn read_all(run_dir: &Path) -> Vec<RecordBatch> {
    let m = common::manifest(run_dir);
    m.trials
        .iter()
        .filter_map(|t| t.file.as_ref())
        .flat_map(|f| {
            let file = std::fs::File::open(run_dir.join(f)).expect("trial file");
            ParquetRecordBatchReaderBuilder::try_new(file)
                .expect("parquet")
                .build()
                .expect("reader")
                .map(Result::unwrap)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// (trial, instance, role, metric, value) of every summary row.
fn summaries(batches: &[RecordBatch]) -> Vec<(String, i32, String, String, f64)> {
    let mut out = Vec::new();
    for b in batches {
        let trial = column::<StringArray>(b, "trial_id");
        let inst = column::<Int32Array>(b, "instance");
        let role = column::<StringArray>(b, "role");
        let metric = column::<StringArray>(b, "metric");
        let value = column::<Float64Array>(b, "value");
        let t = column::<Float64Array>(b, "t_offset_s");
        for i in 0..b.num_rows() {
            if t.is_null(i) {
                out.push((
                    trial.value(i).to_owned(),
                    inst.value(i),
                    role.value(i).to_owned(),
                    metric.value(i).to_owned(),
                    value.value(i),
                ));
            }
        }
    }
    out
}

#[test]
fn trials_run_in_seeded_rounds_with_times_on_record_and_resume_keeps_the_order() {
    if !common::can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "syscall, mmap", 3, "50ms");
    let results = dir.path().join("results");
    let run_dir = run(&p, &results, &[]);
    let m = common::manifest(&run_dir);
    let seed = m.seed.expect("the manifest records the seed");
    assert_eq!(m.experiments[0].baseline.as_deref(), Some("native_a"));
    assert_eq!(m.experiments[0].order.as_deref(), Some("random"));
    // 2 platforms × 2 workloads × (1 warm-up + 3 repetitions), in rounds of 4.
    assert_eq!(m.trials.len(), 16);
    let rounds: Vec<u32> = m.trials.iter().map(|t| t.round.expect("round")).collect();
    assert_eq!(rounds, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]);
    assert!(m.trials[..4].iter().all(|t| t.warmup));
    // The manifest's list is the execution order: start times follow it.
    let starts: Vec<&str> = m
        .trials
        .iter()
        .map(|t| t.started_at.as_deref().expect("started_at"))
        .collect();
    let mut sorted = starts.clone();
    sorted.sort();
    assert_eq!(starts, sorted, "trials started in manifest order");
    for t in &m.trials {
        assert!(t.finished_at.as_deref().unwrap() >= t.started_at.as_deref().unwrap());
    }
    // `isolab plan --seed` shows the same order.
    let out = isolab(&[
        "plan",
        p.to_str().unwrap(),
        "--json",
        "--seed",
        &seed.to_string(),
    ]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let planned: Vec<&str> = plan["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    let ran: Vec<&str> = m.trials.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(planned, ran);

    // Forget the last two rounds, as if the run had been killed there; resume runs them again in
    // the order they had.
    let mut text: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("manifest.json")).unwrap())
            .unwrap();
    for t in text["trials"].as_array_mut().unwrap()[8..].iter_mut() {
        t["status"] = "pending".into();
        if let Some(f) = t["file"].as_str() {
            std::fs::remove_file(run_dir.join(f)).unwrap();
        }
        t["file"] = serde_json::Value::Null;
    }
    std::fs::write(run_dir.join("manifest.json"), text.to_string()).unwrap();
    let run_id = run_dir.file_name().unwrap().to_str().unwrap();
    let again = run(&p, &results, &["--resume", run_id]);
    assert_eq!(again, run_dir);
    let m2 = common::manifest(&run_dir);
    assert_eq!(m2.seed, Some(seed));
    let ids2: Vec<&str> = m2.trials.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids2, ran, "the manifest keeps the order");
    let mut resumed: Vec<(&str, &str)> = m2.trials[8..]
        .iter()
        .map(|t| (t.started_at.as_deref().unwrap(), t.id.as_str()))
        .collect();
    assert!(
        resumed.iter().all(|(s, _)| *s > starts[7]),
        "re-run after the resume"
    );
    resumed.sort();
    let order: Vec<&str> = resumed.iter().map(|(_, id)| *id).collect();
    assert_eq!(order, ran[8..], "resume keeps the order");
}

#[test]
fn cpu_time_is_exact_and_every_trial_records_the_host_noise() {
    if !common::can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "cpu_spin", 2, "123ms");
    let run_dir = run(&p, &dir.path().join("results"), &[]);
    let rows = summaries(&read_all(&run_dir));
    let m = common::manifest(&run_dir);
    let measured: Vec<&str> = m
        .trials
        .iter()
        .filter(|t| !t.warmup)
        .map(|t| t.id.as_str())
        .collect();
    assert_eq!(measured.len(), 4);
    let value = |trial: &str, instance: i32, metric: &str| {
        rows.iter()
            .find(|r| r.0 == trial && r.1 == instance && r.3 == metric)
            .map(|r| r.4)
    };
    for trial in measured {
        // What the workload's process used by its own count (getrusage) against what its cgroup
        // accounted: the same 123 ms busy loop, within 2 ms (exec and exit are outside the
        // process's count). Tick-based accounting came in 10 ms steps.
        let process = value(trial, 0, "process_cpu_ns").expect("process_cpu_ns");
        let cgroup = value(trial, 0, "cpu_usage_ns").expect("cpu_usage_ns");
        assert!(process > 10e6, "the loop ran: {process} ns");
        assert!(
            (cgroup - process).abs() <= 2e6,
            "trial {trial}: cgroup {cgroup} ns vs process {process} ns"
        );
        // The host's noise: one row each, instance −1, role `host`, fractions in [0, 1].
        for metric in [
            "host_steal_fraction",
            "host_background_cpu_fraction",
            "agent_cpu_fraction",
        ] {
            let r: Vec<_> = rows
                .iter()
                .filter(|r| r.0 == trial && r.3 == metric)
                .collect();
            assert_eq!(r.len(), 1, "{trial} {metric}: {r:?}");
            assert_eq!((r[0].1, r[0].2.as_str()), (-1, "host"));
            assert!((0.0..=1.0).contains(&r[0].4), "{metric} = {}", r[0].4);
        }
    }
}
