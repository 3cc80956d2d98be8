//! The coordinator killed with SIGKILL mid-run, then `isolab run --resume RUN_ID`: every planned
//! trial ends up in the Parquet exactly once (none missing, none duplicated), nothing the killed
//! process started is left running, and its cgroups are gone after the resume.
//!
//! Needs root (cgroups) and the `isolab-workload` binary; off CI without them it is skipped with a
//! printed reason.

mod common;

use common::{BIN, agent_cgroup_dirs, can_run, column, processes_in_agent_cgroups};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arrow_array::{Array, Float64Array, Int32Array, StringArray};
use isolab_model::manifest::{Manifest, RunStatus, TrialState};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn parquet_files(run_dir: &Path) -> Vec<PathBuf> {
    files_under(&run_dir.join("samples"))
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("trial-") && name.ends_with(".parquet")
        })
        .collect()
}

#[test]
fn sigkill_mid_run_then_resume_has_every_trial_exactly_once() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let pipeline = tmp.path().join("pipeline.yaml");
    std::fs::write(
        &pipeline,
        "apiVersion: isolab/v1\nkind: Pipeline\nname: resume\n\
         defaults: { repetitions: 4, warmup: 0, duration: 300ms }\n\
         platforms:\n  native: { backend: native }\n\
         experiments:\n  - name: micro\n    analysis: overhead\n    platforms: [native]\n\
         \x20   workloads: [syscall, cpu_spin, mmap]\n",
    )
    .expect("write pipeline");
    let results = tmp.path().join("results");
    let run_args = |extra: &[&str]| {
        let mut args = vec![
            "run".to_owned(),
            pipeline.display().to_string(),
            "--results".to_owned(),
            results.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };

    // First run: SIGKILL once a few trials have landed in Parquet.
    let mut child = Command::new(BIN)
        .args(run_args(&[]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn isolab");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(120);
    let run_dir = loop {
        let dirs: Vec<PathBuf> = std::fs::read_dir(&results)
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if let [d] = dirs.as_slice()
            && parquet_files(d).len() >= 3
        {
            break d.clone();
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("isolab ended ({status}) before it could be killed mid-run");
        }
        assert!(Instant::now() < deadline, "no trial landed in Parquet");
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().expect("SIGKILL isolab"); // SIGKILL, by pid
    child.wait().expect("reap isolab");
    let landed = parquet_files(&run_dir).len();
    let run_id = run_dir.file_name().unwrap().to_string_lossy().into_owned();
    let killed: Manifest =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("manifest.json")).unwrap())
            .expect("the manifest is whole after SIGKILL");
    assert_eq!(killed.status, RunStatus::Running, "killed mid-run");
    let planned: BTreeSet<String> = killed.trials.iter().map(|t| t.id.clone()).collect();
    assert_eq!(planned.len(), 12);
    assert!(
        landed < planned.len(),
        "killed after the end ({landed} files)"
    );

    // Nothing the killed coordinator's embedded agent started may outlive it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let orphans = processes_in_agent_cgroups(pid);
        if orphans.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            for p in &orphans {
                // SAFETY: kill has no memory preconditions; these pids are in our agent's cgroup.
                unsafe { libc::kill(i32::try_from(*p).unwrap(), libc::SIGKILL) };
            }
            panic!("orphans of the killed agent still running: {orphans:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // Resume: runs only what is missing.
    let out = Command::new(BIN)
        .args(run_args(&["--resume", &run_id]))
        .output()
        .expect("run isolab --resume");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "resume failed: {stderr}");
    assert!(
        stderr.contains(&format!("resuming {run_id}")),
        "resume said: {stderr}"
    );
    let manifest: Manifest =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest.status, RunStatus::Ok);
    assert_eq!(manifest.trials.len(), planned.len(), "no trial added twice");
    for t in &manifest.trials {
        assert_eq!(t.status, TrialState::Ok, "{}: {:?}", t.id, t.reason);
    }

    // No staging file left; every file is a trial file of the results schema.
    let stray: Vec<_> = files_under(&run_dir.join("samples"))
        .into_iter()
        .filter(|p| p.extension().is_none_or(|e| e != "parquet"))
        .collect();
    assert!(stray.is_empty(), "stray files: {stray:?}");

    // Every planned trial exactly once in the Parquet.
    let mut files_per_trial: BTreeMap<String, usize> = BTreeMap::new();
    let mut summaries: BTreeMap<(String, String, i32), usize> = BTreeMap::new();
    for f in parquet_files(&run_dir) {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let mut ids = BTreeSet::new();
        for batch in reader {
            let b = batch.unwrap();
            let (trial, metric) = (
                column::<StringArray>(&b, "trial_id"),
                column::<StringArray>(&b, "metric"),
            );
            let instance = column::<Int32Array>(&b, "instance");
            let t_offset = column::<Float64Array>(&b, "t_offset_s");
            for i in 0..b.num_rows() {
                ids.insert(trial.value(i).to_owned());
                if t_offset.is_null(i) {
                    *summaries
                        .entry((
                            trial.value(i).to_owned(),
                            metric.value(i).to_owned(),
                            instance.value(i),
                        ))
                        .or_default() += 1;
                }
            }
        }
        assert_eq!(ids.len(), 1, "{} holds trials {ids:?}", f.display());
        *files_per_trial
            .entry(ids.into_iter().next().unwrap())
            .or_default() += 1;
    }
    let in_parquet: BTreeSet<String> = files_per_trial.keys().cloned().collect();
    assert_eq!(in_parquet, planned, "trials missing or foreign");
    assert!(
        files_per_trial.values().all(|n| *n == 1),
        "{files_per_trial:?}"
    );
    let dup: Vec<_> = summaries.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "summary values recorded twice: {dup:?}");

    // The resumed run's agent removed the killed one's cgroups.
    let left = agent_cgroup_dirs(pid);
    assert!(left.is_empty(), "cgroups of the killed agent: {left:?}");
}
