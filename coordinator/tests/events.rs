//! Events on NATS JetStream end to end: `isolab run --events nats://…` publishes trial status and
//! samples; `isolab watch` started after the run replays its history, and one started before it
//! follows it live; a dead NATS does not fail the run.
//!
//! Starts its own `nats-server -js` on a free loopback port (killed by pid on drop). Needs root
//! and `nats-server` (installed by ./bootstrap); off CI, skipped with a printed reason.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use isolab_model::manifest::{RunStatus, TrialState};

const HANG_GUARD: Duration = Duration::from_secs(300);

/// Runs `pipeline` with `--events url`; returns the run directory.
fn run_with_events(pipeline: &Path, results: &Path, url: &str) -> PathBuf {
    let out = Command::new(BIN)
        .args(["run", pipeline.to_str().unwrap(), "--results"])
        .arg(results)
        .args(["--events", url])
        .current_dir(results)
        .output()
        .expect("run isolab");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(stdout.lines().last().expect("run dir printed"))
}

/// Per trial: the states seen and the number of samples.
fn per_trial(events: &[serde_json::Value]) -> BTreeMap<String, (BTreeSet<String>, usize)> {
    let mut out: BTreeMap<String, (BTreeSet<String>, usize)> = BTreeMap::new();
    for e in events {
        let Some(t) = e["trial_id"].as_str() else {
            continue;
        };
        let entry = out.entry(t.to_owned()).or_default();
        match e["kind"].as_str() {
            Some("trial_status") => {
                entry.0.insert(e["state"].as_str().unwrap().to_owned());
            }
            Some("sample") => entry.1 += 1,
            k => panic!("unexpected kind {k:?} in {e}"),
        }
    }
    out
}

/// Every trial of the manifest went running → ok, with samples; the run started and finished ok.
fn assert_complete(events: &[serde_json::Value], run_dir: &Path) {
    let m = manifest(run_dir);
    assert_eq!(m.status, RunStatus::Ok);
    assert!(
        events.iter().all(|e| e["run_id"] == m.run_id.as_str()),
        "{events:?}"
    );
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"run_started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"run_finished"), "{kinds:?}");
    let fin = events.last().unwrap();
    assert_eq!(
        (fin["status"].as_str(), fin["ok"].as_u64()),
        (Some("ok"), Some(m.trials.len() as u64))
    );
    let seen = per_trial(events);
    assert_eq!(seen.len(), m.trials.len(), "{seen:?}");
    for t in &m.trials {
        assert_eq!(t.status, TrialState::Ok);
        let (states, samples) = seen
            .get(&t.id)
            .unwrap_or_else(|| panic!("no events of {}", t.id));
        assert!(
            states.contains("running") && states.contains("ok"),
            "{}: {states:?}",
            t.id
        );
        assert!(*samples > 0, "{}: no samples", t.id);
    }
}

#[test]
fn late_watch_replays_the_history_of_a_finished_run() {
    if !can_run() {
        return;
    }
    let Some(nats) = start_nats() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(tmp.path(), "evlate", "syscall, cpu_spin", 1, "300ms");
    let run_dir = run_with_events(&pipeline, tmp.path(), &nats.url);
    let run_id = run_dir.file_name().unwrap().to_str().unwrap().to_owned();
    let events = manifest(&run_dir)
        .events
        .expect("events recorded in the manifest");
    assert_eq!(
        (events.url.as_str(), events.dropped),
        (nats.url.as_str(), 0),
        "{events:?}"
    );
    // Run started and finished, and per trial at least running and ok.
    assert!(events.published >= 2 + 2 * 2, "{events:?}");

    // By id, JSON with samples: the whole history, then it exits on run_finished.
    let mut w = spawn_isolab(
        &[
            "watch",
            "--events",
            &nats.url,
            &run_id,
            "--json",
            "--samples",
        ],
        tmp.path(),
    );
    let lines = stdout_lines(&mut w);
    let status = w
        .wait_exit(HANG_GUARD)
        .expect("watch exits after run_finished");
    assert!(status.success(), "{}", stderr_text(&mut w));
    assert_complete(&json_events(&lines), &run_dir);

    // Without an id: the newest run; text lines, one per status change, no samples.
    let mut w = spawn_isolab(&["watch", "--events", &nats.url], tmp.path());
    let lines = stdout_lines(&mut w);
    assert!(w.wait_exit(HANG_GUARD).expect("exits").success());
    let m = manifest(&run_dir);
    assert!(
        lines[0].contains(&format!("run {run_id} started")),
        "{lines:?}"
    );
    assert!(lines.last().unwrap().contains("finished: ok"), "{lines:?}");
    assert_eq!(
        lines.len(),
        2 + 2 * m.trials.len(),
        "running + ok per trial: {lines:?}"
    );
    assert!(lines.iter().all(|l| !l.contains("sample")), "{lines:?}");
}

#[test]
fn watch_started_first_follows_the_run_live() {
    if !can_run() {
        return;
    }
    let Some(nats) = start_nats() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // The stream is empty: watch waits for the next run to start.
    let mut w = spawn_isolab(
        &["watch", "--events", &nats.url, "--json", "--samples"],
        tmp.path(),
    );
    let pipeline = write_pipeline(tmp.path(), "evlive", "syscall, mmap", 2, "300ms");
    // Give the watcher its consumer before the run begins (it would replay the history anyway).
    std::thread::sleep(Duration::from_millis(500));
    let run_dir = run_with_events(&pipeline, tmp.path(), &nats.url);
    let lines = stdout_lines(&mut w);
    let status = w
        .wait_exit(HANG_GUARD)
        .expect("watch exits after run_finished");
    assert!(status.success(), "{}", stderr_text(&mut w));
    assert_complete(&json_events(&lines), &run_dir);
}

#[test]
fn a_dead_nats_does_not_fail_the_run() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(tmp.path(), "evdead", "syscall", 2, "200ms");
    let url = format!("nats://127.0.0.1:{}", free_port());
    let out = Command::new(BIN)
        .args(["run", pipeline.to_str().unwrap(), "--results"])
        .arg(tmp.path())
        .args(["--events", &url])
        .env("ISOLAB_LOG", "warn")
        .output()
        .expect("run isolab");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(
        stderr.contains("cannot connect to NATS"),
        "logged: {stderr}"
    );
    assert!(
        stderr.contains("dropped"),
        "dropped events counted: {stderr}"
    );
    let run_dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().last().unwrap());
    let m = manifest(&run_dir);
    assert_eq!(m.status, RunStatus::Ok);
    let events = m.events.as_ref().expect("events recorded in the manifest");
    assert_eq!(events.url, url);
    assert_eq!(events.published, 0, "{events:?}");
    assert!(
        events.dropped >= 2 * 2,
        "status changes of 2 trials: {events:?}"
    );
    assert!(
        m.trials.iter().all(|t| t.status == TrialState::Ok),
        "{:?}",
        m.trials
    );
}
