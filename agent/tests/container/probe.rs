//! The runtime probe against real runtimes: runsc driven with what it supports, crun's real
//! reason, and a runtime that misplaces its container (a fake that runs the workload outside
//! the cgroup it was asked for). Root and runc needed; in CI a missing piece is a failure.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use isolab_model::pipeline::Limits;

use super::{assert_nothing_left, platform, setup};
use isolab_agent::conformance;
use isolab_agent::core::TrialState;
use isolab_backends::{Backend, BackendStatus};

fn status(statuses: &[BackendStatus], runtime: &str) -> BackendStatus {
    statuses
        .iter()
        .find(|s| s.name == format!("container/{runtime}"))
        .cloned()
        .unwrap_or_else(|| panic!("no status for {runtime}: {statuses:?}"))
}

/// Whether `runtime` is installed; outside CI a missing one skips the test.
fn installed(runtime: &str) -> bool {
    if isolab_host::which::find_binary(runtime).is_some() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{runtime} is not installed (./bootstrap installs it)"
    );
    eprintln!("skipping: {runtime} is not installed");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runsc_runs_without_keep_and_crun_says_why_it_cannot() {
    if !installed("runsc") || !installed("crun") {
        return;
    }
    let Some(s) = setup("probe-flavors", &["runc", "crun", "runsc"]) else {
        return;
    };
    let summary = s.backend.probe().await;
    assert!(summary.available, "{}", summary.reason);
    let statuses = s.backend.runtime_statuses();
    assert!(status(&statuses, "runc").available);
    let runsc = status(&statuses, "runsc");
    assert!(runsc.available, "runsc: {}", runsc.reason);
    assert!(runsc.version.starts_with("runsc"), "{}", runsc.version);
    let crun = status(&statuses, "crun");
    if crun.available {
        // A pure cgroup v2 host: crun works there, nothing more to check.
        return;
    }
    assert!(
        !crun.reason.contains("keep") && !crun.reason.contains("unrecognized option"),
        "crun must fail on its merits, not on a flag it lacks: {}",
        crun.reason
    );
    assert!(crun.reason.contains("probe container"), "{}", crun.reason);

    // A trial on runsc runs and leaves nothing behind.
    let mut p = platform(Limits::default());
    p.runtime = Some("runsc".into());
    let t = conformance::trial(
        &p,
        "syscall",
        1,
        &[],
        Duration::from_millis(200),
        Duration::from_secs(60),
    );
    let o = conformance::run(&s.backend, t, |_| false).await;
    assert_eq!(o.status.state, TrialState::Ok, "{}", o.status.message);
    assert!(
        o.samples(0).iter().any(|(m, _)| m == "ns_per_call"),
        "{:?}",
        o.samples(0)
    );
    assert_nothing_left(&s, &o);
}

/// A fake OCI runtime that runs the workload directly (in the caller's cgroup, not the one
/// `cgroupsPath` names), like a runtime that ignores or misreads it.
fn misplacing_runtime(dir: &std::path::Path) -> std::path::PathBuf {
    let bin = isolab_host::workload_bin::locate().expect("workload binary");
    let path = dir.join("misplacing-runtime");
    let mut f = std::fs::File::create(&path).expect("create");
    write!(
        f,
        r#"#!/bin/sh
if [ "$1" = --version ]; then echo "misplacing-runtime version 0.1"; exit 0; fi
if [ "$1" = run ] && [ "$2" = --help ]; then echo "  --keep  keep it"; exit 0; fi
root="$2"; shift 2
case "$1" in
  run) mkdir -p "$root"; echo $$ > "$root/pid"; exec {bin} idle --param duration=60s ;;
  kill) [ -f "$root/pid" ] && kill -9 "$(cat "$root/pid")" 2>/dev/null; exit 0 ;;
  list|delete) exit 0 ;;
  *) echo "container does not exist" >&2; exit 1 ;;
esac
"#,
        bin = bin.display()
    )
    .expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_that_misplaces_the_container_is_unavailable() {
    let tmp = tempfile::tempdir().expect("tmp");
    let fake = misplacing_runtime(tmp.path());
    let fake_name = "misplacing-runtime";
    let entry = format!("{fake_name}={}", fake.display());
    let Some(s) = setup("probe-misplaced", &["runc", &entry]) else {
        return;
    };
    let summary = s.backend.probe().await;
    assert!(summary.available, "{}", summary.reason);
    let statuses = s.backend.runtime_statuses();
    assert!(status(&statuses, "runc").available);
    let fake = status(&statuses, fake_name);
    assert!(!fake.available, "a misplacing runtime was taken as working");
    assert!(
        fake.reason
            .contains("not in the cgroup the agent asked for"),
        "{}",
        fake.reason
    );
    assert_eq!(fake.version, "misplacing-runtime 0.1");
    // Its workload was killed (the fake recorded its pid under its state root).
    let pid_file = s
        .state
        .path()
        .join(s.dir.name())
        .join("runtime")
        .join("misplacing-runtime")
        .join("pid");
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .expect("the fake runtime ran")
        .trim()
        .parse()
        .expect("pid");
    assert_eq!(
        isolab_backends::process_alive(pid, None),
        None,
        "the misplaced probe workload {pid} still runs"
    );
}
