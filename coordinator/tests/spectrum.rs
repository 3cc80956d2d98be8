//! Issue 9 end to end: `isolab run pipelines/spectrum.yaml --profile quick` runs the micro set and
//! `oltp` on every platform of today's spectrum (native, runc, Docker Engine, gVisor, LXC, QEMU),
//! and the report's overhead chart shows each of them relative to native.
//!
//! Needs root, runc, dockerd, runsc, lxc and QEMU (./bootstrap installs them; the agent starts a
//! private dockerd). Off CI, when one is missing, it is skipped with a printed reason.

mod common;

use common::BIN;

use std::path::{Path, PathBuf};
use std::process::Command;

const PLATFORMS: [&str; 5] = ["runc", "docker", "gvisor", "lxc", "qemu"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn can_run() -> bool {
    common::can_run_with_tools(&[
        "runc",
        "runsc",
        "dockerd",
        "lxc-start",
        "qemu-system-x86_64",
    ])
}

#[test]
fn every_platform_of_the_spectrum_reaches_the_overhead_chart() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let pipeline = workspace().join("pipelines/spectrum.yaml");
    let out = Command::new(BIN)
        .args(["run", pipeline.to_str().unwrap(), "--profile", "quick"])
        .args(["--results", results.to_str().unwrap()])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run failed:\n{stderr}");
    let run_dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().last().unwrap());

    // Every platform has a ratio to native for every micro workload and for oltp.
    let summary = common::report_summary(&run_dir);
    for exp in ["micro", "oltp"] {
        let metrics = summary["experiments"][exp]["metrics"].as_object().unwrap();
        assert!(!metrics.is_empty(), "{exp}: no metrics");
        for p in PLATFORMS {
            let with_ratio = metrics
                .values()
                .filter(|m| m["platforms"][p]["ratio_to_baseline"].as_f64().is_some())
                .count();
            assert!(with_ratio > 0, "{exp}: no ratio to native for {p}");
        }
    }

    // The overhead chart of each experiment draws a bar labelled with every platform.
    let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    let figures: Vec<&str> = html
        .split("<figure")
        .skip(1)
        .filter(|f| f.contains("data-chart=\"overhead"))
        .collect();
    assert!(figures.len() >= 2, "overhead charts: {}", figures.len());
    for p in PLATFORMS {
        assert!(
            figures
                .iter()
                .all(|f| { f.contains(&format!("· {p}<")) || f.contains(&format!("· {p}\n")) }),
            "an overhead chart lacks {p}"
        );
    }
}
