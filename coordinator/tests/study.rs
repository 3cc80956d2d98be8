//! The study of issue 6 end to end: `isolab run pipelines/soltesz2007.yaml --profile quick` on
//! native, container (runc) and vm (QEMU) yields rows for every experiment × platform the plan has,
//! with nothing leaked.
//!
//! Needs root (cgroups), runc and QEMU with the guest kernel; off CI without them it is skipped with
//! a printed reason.

mod common;

use common::BIN;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn can_run() -> bool {
    common::can_run_with_tools(&["runc", "qemu-system-x86_64"])
}

#[test]
fn plan_quick_profile_is_small_and_valid() {
    let pipeline = workspace().join("pipelines/soltesz2007.yaml");
    let out = Command::new(BIN)
        .args(["validate", pipeline.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["plan", pipeline.to_str().unwrap(), "--json"];
        args.extend_from_slice(extra);
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let full = plan(&[]);
    let quick = plan(&["--profile", "quick"]);
    let count = |v: &serde_json::Value| v["trials"].as_array().unwrap().len();
    assert!(
        count(&quick) < count(&full),
        "quick {} full {}",
        count(&quick),
        count(&full)
    );
    let max_instances = |v: &serde_json::Value| {
        v["trials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["instances"].as_array().map_or(0, Vec::len))
            .max()
            .unwrap()
    };
    assert_eq!(max_instances(&full), 128);
    // fair_reserved: one reserved instance against four (a natural 20%, below its 25%).
    assert!(max_instances(&quick) <= 5, "{}", max_instances(&quick));

    let out = Command::new(BIN)
        .args(["plan", pipeline.to_str().unwrap(), "--profile", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("known profiles: quick"), "{err}");
}

#[test]
fn quick_profile_yields_rows_for_every_experiment_and_platform() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = workspace().join("pipelines/soltesz2007.yaml");
    let results = tmp.path().join("results");
    let out = Command::new(BIN)
        .args([
            "run",
            pipeline.to_str().unwrap(),
            "--profile",
            "quick",
            "--results",
            results.to_str().unwrap(),
        ])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let run_dir = PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default(),
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["profile"], "quick");

    let mut with_rows = BTreeSet::new();
    let mut failed = Vec::new();
    for t in manifest["trials"].as_array().unwrap() {
        let key = (
            t["experiment"].as_str().unwrap().to_owned(),
            t["platform"].as_str().unwrap().to_owned(),
        );
        if t["status"] == "ok" && t["rows"].as_u64().unwrap_or(0) > 0 {
            with_rows.insert(key);
        } else if t["status"] != "not_run" {
            failed.push(format!(
                "{}/{}: {} {}",
                key.0, key.1, t["status"], t["reason"]
            ));
        }
    }
    // Every experiment × platform pair the quick plan holds must have produced rows.
    let out = Command::new(BIN)
        .args([
            "plan",
            pipeline.to_str().unwrap(),
            "--profile",
            "quick",
            "--json",
        ])
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let planned: BTreeSet<(String, String)> = plan["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["experiment"].as_str().unwrap().to_owned(),
                t["platform"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        planned.len() >= 20,
        "the quick plan lost experiments: {planned:?}"
    );
    for p in ["native", "container", "vm"] {
        assert!(planned.iter().any(|(_, q)| q == p), "no {p} trial planned");
    }
    let missing: Vec<String> = planned
        .difference(&with_rows)
        .map(|(e, p)| format!("{e}/{p}"))
        .collect();
    let leaked: Vec<String> = manifest["trials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["leaks"].as_array().is_some_and(|l| !l.is_empty()))
        .map(|t| format!("{}: {}", t["id"], t["leaks"]))
        .collect();
    assert!(
        leaked.is_empty(),
        "teardown left things behind: {leaked:#?}"
    );
    assert!(
        missing.is_empty(),
        "no rows for {missing:?}; failed trials: {failed:#?}\nstderr: {stderr}"
    );
    assert!(
        out.status.success(),
        "failed trials: {failed:#?}\nstderr: {stderr}"
    );

    // Every adversary on every platform was contained: its trials ended ok, nothing leaked, and
    // the container's memory bomb ended at its limit (killed, or refused) as the report shows.
    let summary = common::report_summary(&run_dir);
    let outcomes = summary["experiments"]["isolation"]["isolation"]["outcomes"]
        .as_array()
        .unwrap();
    for p in ["native", "container", "vm"] {
        for a in [
            "fork_bomb",
            "memory_bomb",
            "disk_bomb",
            "cpu_hog",
            "net_flood",
        ] {
            let o = outcomes
                .iter()
                .find(|o| o["platform"] == p && o["adversary"] == a)
                .unwrap_or_else(|| panic!("no outcome for {a} on {p}: {outcomes:#?}"));
            assert_eq!(o["contained"], true, "{a} on {p}: {o}");
        }
    }
    let bomb = outcomes
        .iter()
        .find(|o| o["platform"] == "container" && o["adversary"] == "memory_bomb")
        .unwrap();
    let ended = bomb["killed"].as_u64().unwrap() + bomb["limit_hit"].as_u64().unwrap();
    assert!(
        ended >= 1,
        "the container's memory bomb was neither killed nor limited: {bomb}"
    );
}

/// A 50% reservation for one of four CPU-bound instances is planned as a higher CPU weight, reaches
/// the instance cgroups, and is met; with equal weights the same instance gets about a quarter.
#[test]
fn a_cpu_reservation_is_met_through_cgroup_weights() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = tmp.path().join("fair.yaml");
    std::fs::write(
        &pipeline,
        "apiVersion: isolab/v1\nkind: Pipeline\nname: fair\n\
         defaults: { repetitions: 1, warmup: 0, duration: 3s }\n\
         platforms:\n  native: { backend: native, limits: { cpuset: \"0\" } }\n\
         experiments:\n\
         \x20 - { name: equal, analysis: fairness, platforms: [native], workload: cpu_spin,\n\
         \x20     groups: [{ name: a, count: 1 }, { name: b, count: 3 }] }\n\
         \x20 - { name: reserved, analysis: fairness, platforms: [native], workload: cpu_spin,\n\
         \x20     groups: [{ name: a, count: 1 }, { name: b, count: 3 }],\n\
         \x20     reservation: { group: a, cpu: 50% } }\n",
    )
    .unwrap();

    // The plan carries the raised weight: a = 300 against 3 × 100.
    let out = Command::new(BIN)
        .args(["plan", pipeline.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let weights = |exp: &str| -> Vec<u64> {
        let t = plan["trials"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["experiment"] == exp)
            .unwrap();
        t["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["cpu_weight"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(weights("equal"), [100, 100, 100, 100]);
    assert_eq!(weights("reserved"), [300, 100, 100, 100]);

    let results = tmp.path().join("results");
    let out = Command::new(BIN)
        .args([
            "run",
            pipeline.to_str().unwrap(),
            "--results",
            results.to_str().unwrap(),
        ])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let run_dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().last().unwrap());
    let summary = common::report_summary(&run_dir);
    let native = |exp: &str| summary["experiments"][exp]["fairness"]["platforms"]["native"].clone();
    let received = |exp: &str| {
        native(exp)["groups"]["a"]["received"]["median"]
            .as_f64()
            .unwrap()
    };

    // Four spinning instances pinned to one CPU (so that weights decide on one run queue, whatever
    // else the host runs): with equal weights `a` gets about a quarter of what the four receive;
    // with the reservation at least about half. The margins are wide.
    let equal = received("equal");
    let reserved = received("reserved");
    assert!(
        equal < 0.4,
        "equal weights gave a {equal}: {}",
        native("equal")
    );
    assert!(
        reserved > 0.4,
        "a 50% reservation gave a {reserved}: {}",
        native("reserved")
    );
    assert!(
        reserved > equal + 0.1,
        "reservation {reserved} vs equal {equal}"
    );
    let r = &native("reserved")["reservation"];
    assert_eq!(r["group"], "a");
    assert!((r["cpu"].as_f64().unwrap() - 0.5).abs() < 1e-9, "{r}");
    assert!(r["met_fraction"].as_f64().unwrap() > 0.5, "{r}");
}
