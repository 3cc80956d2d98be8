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

/// An agent configuration for tests: the workload binary, a cgroup prefix of its own.
pub fn config(test: &str) -> AgentConfig {
    AgentConfig {
        workload_bin: Some(workload_bin()),
        cgroup_prefix: format!("isolab-test-{test}"),
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
