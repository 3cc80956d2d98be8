//! The native backend on real cgroups: the conformance suite, the safety envelope written into
//! the instance cgroups, and the removal of a crashed agent's stale cgroups.

mod common;

use std::sync::Arc;
use std::time::Duration;

use isolab_agent::conformance;
use isolab_backends::envelope::Ceilings;
use isolab_backends::lifecycle::Lifecycle;
use isolab_backends::native::NativeBackend;
use isolab_backends::{AgentDir, Backend, TrialContext};
use isolab_host::cgroup::CgroupManager;

fn backend(prefix: &str, ceilings: Ceilings) -> (NativeBackend, Arc<AgentDir>) {
    let manager = Arc::new(CgroupManager::detect().expect("cgroups"));
    let (dir, _) = AgentDir::claim(manager, prefix).expect("claim agent dir");
    let dir = Arc::new(dir);
    let b = NativeBackend::new(Ok(Arc::clone(&dir)), Ok(common::workload_bin()), ceilings);
    (b, dir)
}

const CEILINGS: Ceilings = Ceilings {
    pids: 512,
    memory_bytes: 1 << 30,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_backend_passes_the_conformance_suite() {
    if !common::privileged("native conformance") {
        return;
    }
    let (b, _dir) = backend("isolab-test-conformance", CEILINGS);
    let status = b.probe().await;
    assert!(status.available, "native unavailable: {}", status.reason);
    conformance::check_all(&b, &common::native()).await;
}

/// Reads a control file of `rel` from whichever hierarchy has it.
fn control(manager: &CgroupManager, rel: &str, file: &str) -> Option<String> {
    manager
        .own_dirs()
        .iter()
        .map(|d| d.join(rel).join(file))
        .find(|p| p.exists())
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_gets_the_ceilings_and_the_pipeline_can_only_tighten_them() {
    if !common::privileged("envelope") {
        return;
    }
    let (b, dir) = backend("isolab-test-envelope", CEILINGS);
    let mut platform = common::native();
    platform.limits.pids = Some(32);
    platform.limits.memory = Some(isolab_model::units::Bytes(8 << 30));
    let trial = conformance::trial(
        &platform,
        "syscall",
        2,
        &[],
        Duration::from_millis(100),
        Duration::from_secs(10),
    );
    let ctx = TrialContext {
        run_id: "r".into(),
        trial: Arc::new(isolab_wire::TrialSpec::from(&trial)),
        attempt: 0,
    };
    let prepared = Lifecycle(&b).prepare(&ctx).await.expect("prepare");
    let m = dir.manager();
    for i in 0..2 {
        let rel = dir.rel(&format!("{}/i{i}", ctx.slug()));
        assert_eq!(
            control(m, &rel, "pids.max").as_deref(),
            Some("32"),
            "pipeline pids below the ceiling"
        );
        let memory =
            control(m, &rel, "memory.limit_in_bytes").or_else(|| control(m, &rel, "memory.max"));
        assert_eq!(
            memory,
            Some((1u64 << 30).to_string()),
            "memory ceiling below the pipeline's 8GiB"
        );
    }
    let leaks = Lifecycle(&b).teardown(prepared).await;
    assert!(leaks.is_clean(), "{:?}", leaks.lines());
    assert!(!m.exists(&dir.rel(&ctx.slug())));
}

#[test]
fn stale_cgroups_of_a_dead_agent_are_removed_and_others_kept() {
    if !common::privileged("stale cleanup") {
        return;
    }
    let manager = Arc::new(CgroupManager::detect().expect("cgroups"));
    // A pid that no longer exists: a child that has been reaped.
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let dead = child.id();
    child.wait().expect("wait");
    let prefix = "isolab-test-stale";
    let stale = format!("{prefix}-{dead}-0");
    let foreign = format!("{prefix}x-{dead}-0");
    manager
        .create(&format!("{stale}/trial-a0/i0"))
        .expect("make stale cgroup");
    manager.create(&foreign).expect("make foreign cgroup");
    let (dir, removed) = AgentDir::claim(Arc::clone(&manager), prefix).expect("claim");
    assert_eq!(removed, vec![stale.clone()]);
    assert!(!manager.exists(&stale));
    assert!(
        manager.exists(&foreign),
        "a cgroup of another naming was touched"
    );
    assert!(manager.exists(dir.name()));
    let name = dir.name().to_owned();
    drop(dir);
    assert!(!manager.exists(&name), "the agent's cgroup outlived it");
    let _ = manager
        .open(&foreign)
        .and_then(|cg| isolab_host::cgroup::Cgroup::remove(&cg));
}
