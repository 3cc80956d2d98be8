//! Orphans of killed workloads are reaped: after a `fork_exit` trial killed at its deadline (its
//! children are orphaned mid-fork), this process holds no zombie workload. Alone in its own test
//! binary so that no other test's instances are children of this process.

mod common;

use std::sync::Arc;
use std::time::Duration;

use isolab_agent::conformance;
use isolab_agent::core::TrialState;
use isolab_backends::AgentDir;
use isolab_backends::envelope::Ceilings;
use isolab_backends::native::NativeBackend;
use isolab_host::cgroup::CgroupManager;

/// Zombie children of this process.
fn zombie_children() -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let mut rest = stat[close + 1..].split_whitespace();
        let (state, ppid) = (rest.next(), rest.next().and_then(|p| p.parse::<u32>().ok()));
        if state == Some("Z") && ppid == Some(me) {
            found.push((pid, stat[stat.find('(').unwrap_or(0) + 1..close].to_owned()));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_of_a_killed_fork_exit_are_reaped() {
    if !common::privileged("reap") {
        return;
    }
    let manager = Arc::new(CgroupManager::detect().expect("cgroups"));
    let (dir, _) = AgentDir::claim(manager, "isolab-test-reap").expect("claim");
    let ceilings = Ceilings {
        pids: 256,
        memory_bytes: 1 << 30,
    };
    let b = NativeBackend::new(Ok(Arc::new(dir)), Ok(common::workload_bin()), ceilings);
    let t = conformance::trial(
        &common::native(),
        "fork_exit",
        2,
        &[],
        Duration::from_secs(10),
        Duration::from_secs(1),
    );
    let o = conformance::run(&b, t, |_| false).await;
    assert_eq!(o.status.state, TrialState::TimedOut, "{}", o.status.message);
    conformance::assert_clean(&b, &o);
    assert_eq!(zombie_children(), vec![], "zombies left in this process");
}
