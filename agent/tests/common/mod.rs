//! Helpers shared by the agent's integration tests: root check, the workload binary, fixtures.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};

use isolab_agent::config::AgentConfig;
use isolab_backends::TrialContext;
use isolab_host::cgroup::CgroupManager;
use isolab_model::pipeline::{BackendKind, Limits, Platform};

/// True when cgroups can be made. Off CI without root, prints why the test is skipped.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: CI must run as root (cgroups)"
    );
    eprintln!("skipping {test}: needs root for cgroups (runs in CI)");
    false
}

/// The workload binary: located as the agent would, else built once with cargo.
pub fn workload_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = isolab_host::workload_bin::locate() {
            return p;
        }
        let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "isolab-workload"])
            .current_dir(&workspace)
            .status()
            .expect("run cargo build -p isolab-workload");
        assert!(status.success(), "cargo build -p isolab-workload failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| workspace.join("target"), PathBuf::from);
        let bin = target.join("debug/isolab-workload");
        assert!(bin.is_file(), "{} not built", bin.display());
        bin
    })
    .clone()
}

/// A state directory for this test binary's agents (mode 0700, in the build tree's scratch
/// space), so that tests never share the production `/var/lib/isolab`. Kept to the end of the
/// process; every agent removes what it made in it.
pub fn state_dir() -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("state-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("make a state directory")
    })
    .path()
    .to_owned()
}

/// An agent configuration for tests: the workload binary, a cgroup prefix of its own, the
/// test binary's state directory.
pub fn config(test: &str) -> AgentConfig {
    AgentConfig {
        workload_bin: Some(workload_bin()),
        cgroup_prefix: format!("isolab-test-{test}"),
        state_dir: state_dir(),
        ..AgentConfig::default()
    }
}

/// The native platform with no limits.
pub fn native() -> Platform {
    Platform {
        backend: BackendKind::Native,
        runtime: None,
        runtime_args: vec![],
        rootfs: None,
        network: None,
        limits: Limits::default(),
        vcpus: None,
        memory: None,
        accel: None,
        machine: None,
    }
}

/// Trial cgroups still present under agent directories with `prefix`.
pub fn trial_cgroups(prefix: &str) -> Vec<String> {
    let m = CgroupManager::detect().expect("cgroups");
    m.list("")
        .into_iter()
        .filter(|d| d.starts_with(&format!("{prefix}-")))
        .flat_map(|d| m.list(&d).into_iter().map(move |t| format!("{d}/{t}")))
        .collect()
}

/// Live processes of a trial attempt.
pub fn processes(trial: &isolab_model::plan::Trial, attempt: u32) -> Vec<u32> {
    let ctx = TrialContext {
        run_id: String::new(),
        trial: Arc::new(isolab_wire::TrialSpec::from(trial)),
        attempt,
    };
    isolab_agent::conformance::processes_of(&ctx)
}

/// Starts `trial` over gRPC (run id `run_id`) and reads its events until the first sample: its
/// instances run. The stream is handed back, so that the trial is not cancelled by a closed
/// stream. Panics, naming the trial, if it ends first.
pub async fn open_until_first_sample(
    client: &mut isolab_proto::v1::agent_client::AgentClient<tonic::transport::Channel>,
    run_id: &str,
    trial: &isolab_model::plan::Trial,
) -> tonic::Streaming<isolab_proto::v1::TrialEvent> {
    use futures::StreamExt as _;
    use isolab_agent::core::TrialEvent;
    let mut stream = client
        .run_trial(isolab_wire::convert::trial_to_proto(run_id, trial, 0))
        .await
        .expect("RunTrial admitted")
        .into_inner();
    loop {
        let item = stream
            .next()
            .await
            .unwrap_or_else(|| panic!("trial {} ended before its first sample", trial.id))
            .expect("event");
        match isolab_wire::convert::event_from_proto(item).expect("event") {
            TrialEvent::Sample { .. } => return stream,
            TrialEvent::Status(s) if s.state.is_final() => {
                panic!("trial {} ended: {:?} {}", trial.id, s.state, s.message)
            }
            _ => {}
        }
    }
}
