//! The LXC probe: `lxc-execute` runs `isolab-workload --list` in a container under the
//! safety envelope's ceilings, within a timeout, and the container's CPU time and memory show up
//! in the instance cgroup the agent made for it (so LXC nests its cgroups under ours).

use std::sync::Arc;

use isolab_model::catalog;
use isolab_model::pipeline::RootfsKind;

use super::LxcConfig;
use super::backend::Inner;
use super::trial::{self, Made, Plan};
use crate::envelope::Ceilings;
use isolab_host::cgroup::{Cgroup, CgroupLimits, CgroupPlan, CgroupVersion};

/// Runs `isolab-workload --list` in a container under the ceilings and checks that it
/// answers and that it ran inside the instance cgroup the agent made.
pub(crate) async fn run(
    inner: &Arc<Inner>,
    ceilings: Ceilings,
    config: &LxcConfig,
    n: u64,
) -> Result<(), String> {
    let kind = if inner.workload_static {
        RootfsKind::Minimal
    } else {
        RootfsKind::HostRo
    };
    let limits = CgroupLimits {
        memory_bytes: Some(ceilings.memory_bytes),
        pids_max: Some(ceilings.pids),
        ..CgroupLimits::default()
    };
    let plans: Vec<Plan> = vec![(0, vec!["--list".into()])];
    let (task_inner, slug, timeout) = (
        Arc::clone(inner),
        format!("probe-lxc-{n}"),
        config.stop_timeout,
    );
    let plan = CgroupPlan {
        kill_timeout: timeout,
        ..CgroupPlan::default()
    };
    let made = tokio::task::spawn_blocking(move || {
        let cgs = task_inner
            .cgroups
            .create(&slug, vec![(0, limits)], &plan)
            .map_err(|e| e.to_string())?;
        trial::make(&task_inner, cgs.clone(), kind, Default::default(), &plans).map_err(|e| {
            cgs.destroy();
            e.to_string()
        })
    })
    .await
    .map_err(|e| format!("probe task failed: {e}"))?
    .map_err(|e| format!("cannot prepare the probe container: {e}"))?;
    let outcome = tokio::time::timeout(config.probe_timeout, run_probe(inner, &made)).await;
    let (task_inner, task_made) = (Arc::clone(inner), made.clone());
    let problems = tokio::task::spawn_blocking(move || {
        let mut p: Vec<String> = task_made
            .cgroups
            .kill()
            .err()
            .map(|e| e.to_string())
            .into_iter()
            .collect();
        p.extend(
            trial::stop(&task_made, &[], timeout)
                .err()
                .map(|e| e.to_string()),
        );
        p.extend(trial::destroy(&task_inner, &task_made));
        p.extend(task_made.cgroups.destroy());
        p
    })
    .await
    .map_err(|e| format!("probe cleanup failed: {e}"))?;
    match outcome {
        Ok(r) => r?,
        Err(_) => {
            return Err(format!(
                "probe container did not finish within {} ms",
                config.probe_timeout.as_millis()
            ));
        }
    }
    crate::base::nothing_left(&problems)
}

/// Runs the probe container and checks its output and where it ran.
async fn run_probe(inner: &Inner, made: &Made) -> Result<(), String> {
    let inst = made.instances.first().ok_or("no probe instance")?;
    let child = trial::spawn(inner, made, inst).map_err(|e| e.to_string())?;
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("waiting for lxc-execute: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let expected = catalog::names().first().copied().unwrap_or("syscall");
    if !out.status.success() || !stdout.contains(expected) {
        let said = crate::last_lines(&String::from_utf8_lossy(&out.stderr), 3);
        return Err(format!(
            "probe container failed ({}){}",
            out.status,
            if said.is_empty() {
                String::new()
            } else {
                format!(": {said}")
            }
        ));
    }
    let cg = made.cgroups.instance(0).ok_or("no probe cgroup")?;
    let stats = cg
        .cgroup
        .stats()
        .map_err(|e| format!("cannot read the probe cgroup: {e}"))?;
    let memory_seen =
        stats.memory_peak_bytes > 0 || inner.dir.manager().version() == CgroupVersion::V2;
    if stats.cpu_usage_ns == 0 || !memory_seen {
        return Err(format!(
            "the probe container did not run inside the agent's cgroup {}",
            cg.rel
        ));
    }
    Ok(())
}
