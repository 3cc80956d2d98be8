//! Probing a runtime at agent start: its version, then a real tiny container (the `idle`
//! workload in a minimal root, under the safety envelope's ceilings) within a timeout, driven
//! with the flags the runtime supports ([`super::flavor`]). Once it printed its first sample,
//! the probe checks that it runs in the cgroup the agent asked for, in every hierarchy, and
//! kills it. A runtime that is missing, fails or misplaces the container is reported as
//! unavailable with the reason (e.g. `crun` refusing a hybrid cgroup layout), never as a failed
//! trial.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use isolab_model::pipeline::{NetworkMode, RootfsKind};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::backend::Inner;
use super::lifecycle::{self, Instance, InstancePlan, Running};
use super::runtime::Runtime;
use crate::last_lines;
use crate::{BackendStatus, process_start_time};
use isolab_host::cgroup::{Cgroup, CgroupLimits, CgroupPlan, InstanceLevel};

/// The probe container's workload: it reports at once, then sleeps (so that where it runs can
/// be checked while it is alive).
const PROBE_WORKLOAD: &str = "idle";
/// Its first sample's metric.
const PROBE_METRIC: &str = "awake";

/// Probes runtime `name`; the status is named `container/<name>`. `n` makes the probe's
/// names unique within the agent.
pub(crate) async fn probe_runtime(
    inner: &Arc<Inner>,
    name: &str,
    n: u64,
    timeout: Duration,
) -> BackendStatus {
    let label = format!("container/{name}");
    let runtime = match inner.runtime(name, &[], NetworkMode::None) {
        Ok(r) => r,
        Err(e) => return BackendStatus::unavailable(&label, e.to_string()),
    };
    let rt = runtime.clone();
    let version = match tokio::task::spawn_blocking(move || rt.version(timeout)).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return BackendStatus::unavailable(&label, e.to_string()),
        Err(e) => return BackendStatus::unavailable(&label, format!("probe task failed: {e}")),
    };
    match run_probe(inner, &runtime, n, timeout).await {
        Ok(()) => BackendStatus {
            name: label,
            available: true,
            version,
            ..BackendStatus::default()
        },
        Err(reason) => BackendStatus {
            version,
            ..BackendStatus::unavailable(&label, reason)
        },
    }
}

/// Runs the probe container and cleans up after it, whatever happened.
async fn run_probe(
    inner: &Arc<Inner>,
    runtime: &Runtime,
    n: u64,
    timeout: Duration,
) -> Result<(), String> {
    let key: String = runtime
        .name()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let names = inner.names(&format!("probe-{key}-{n}"));
    // A dynamically linked workload (a development build) still runs with the host's libraries.
    let kind = if inner.workload_static {
        RootfsKind::Minimal
    } else {
        RootfsKind::HostRo
    };
    let plan = InstancePlan {
        index: 0,
        args: vec![
            PROBE_WORKLOAD.into(),
            "--param".into(),
            format!("duration={}ms", timeout.as_millis().saturating_mul(2)),
        ],
    };
    let ceilings = inner.cgroups.ceilings();
    let limits = CgroupLimits {
        memory_bytes: Some(ceilings.memory_bytes),
        pids_max: Some(ceilings.pids),
        ..CgroupLimits::default()
    };
    let cgroup_plan = CgroupPlan {
        instance_level: InstanceLevel::Runtime,
        kill_timeout: timeout,
        ..CgroupPlan::default()
    };
    let (task_inner, task_names, task_rt) = (Arc::clone(inner), names.clone(), runtime.clone());
    let made = tokio::task::spawn_blocking(move || {
        let cgs = task_inner
            .cgroups
            .create(&task_names.slug, vec![(0, limits)], &cgroup_plan)
            .map_err(|e| e.to_string())?;
        lifecycle::make_trial(
            &task_inner,
            &task_names,
            &task_rt,
            &cgs,
            kind,
            NetworkMode::None,
            &[plan],
        )
        .map(|made| (cgs.clone(), made))
        .map_err(|e| {
            cgs.destroy();
            e.to_string()
        })
    })
    .await
    .map_err(|e| format!("probe task failed: {e}"))?;
    let (cgs, (_, instances)) =
        made.map_err(|e| format!("cannot prepare the probe container: {e}"))?;
    let Some(instance) = instances.into_iter().next() else {
        return Err("no probe instance was made".into());
    };
    let mut running = Vec::new();
    let outcome = run_container(runtime, &names.slug, &instance, timeout, &mut running).await;
    let task_rt = runtime.clone();
    let cgroups = vec![(instance.index, Arc::clone(&instance.cgroup))];
    let id = instance.id.clone();
    let cleanup = tokio::task::spawn_blocking(move || {
        let mut errors = Vec::new();
        // Through the runtime first: a misplaced container is not in the cgroup that
        // `stop_instances` empties. Fails harmlessly when the container has gone already.
        let _ = task_rt.kill(&id, "KILL");
        if let Err(e) = lifecycle::stop_instances(&names.slug, &cgroups, &running, timeout) {
            errors.push(e.to_string());
        }
        errors.extend(lifecycle::destroy_trial(&names, &task_rt));
        errors.extend(cgs.destroy());
        errors
    })
    .await;
    match cleanup {
        Ok(errors) if errors.is_empty() => {}
        Ok(errors) => {
            return Err(format!(
                "probe container left things behind: {}",
                errors.join("; ")
            ));
        }
        Err(e) => return Err(format!("probe cleanup failed: {e}")),
    }
    outcome
}

/// Starts the container (the `idle` workload), waits within `timeout` for its first sample,
/// then checks that it runs in the cgroup the agent asked for. The container is still alive
/// when this returns; the caller's cleanup kills it.
async fn run_container(
    runtime: &Runtime,
    slug: &str,
    instance: &Instance,
    timeout: Duration,
    running: &mut Vec<Running>,
) -> Result<(), String> {
    let mut cmd = runtime.run_command(&instance.bundle, &instance.id);
    cmd.env(crate::TRIAL_ENV, slug);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", runtime.program().display()))?;
    if let Some(pid) = child.id() {
        running.push(Running {
            index: instance.index,
            pid,
            start_time: process_start_time(pid),
        });
    }
    let (out, mut err) = (child.stdout.take(), child.stderr.take());
    let first_sample = async {
        let mut lines = out.map(|o| BufReader::new(o).lines());
        while let Some(l) = lines.as_mut() {
            match l.next_line().await {
                Ok(Some(line)) if is_awake(&line) => return true,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        false
    };
    let awake = tokio::time::timeout(timeout, first_sample)
        .await
        .map_err(|_| {
            format!(
                "probe container printed no sample within {} ms",
                timeout.as_millis()
            )
        })?;
    if awake {
        return check_placement(instance);
    }
    // The workload ended (or never started): say what the runtime said.
    let finished = async {
        let mut e = String::new();
        if let Some(s) = err.as_mut() {
            let _ = s.read_to_string(&mut e).await;
        }
        (child.wait().await, e)
    };
    let (status, stderr) = tokio::time::timeout(timeout, finished)
        .await
        .map_err(|_| "probe container printed nothing and did not end".to_owned())?;
    let status = status.map_err(|e| format!("waiting for the runtime failed: {e}"))?;
    let said = last_lines(&stderr, 3);
    Err(format!(
        "probe container failed ({status}){}",
        if said.is_empty() {
            String::new()
        } else {
            format!(": {said}")
        }
    ))
}

/// Whether `line` is the `idle` workload's first sample.
fn is_awake(line: &str) -> bool {
    isolab_model::sample::Sample::parse_line(line).is_ok_and(|s| s.metric == PROBE_METRIC)
}

/// The running probe container must be in its own cgroup in every hierarchy the agent reads
/// (a runtime that ignores or misreads `cgroupsPath`, e.g. youki without its v1 feature, puts
/// it elsewhere, and then neither limits nor statistics would be the container's).
fn check_placement(instance: &Instance) -> Result<(), String> {
    let files = instance.cgroup.procs_files();
    let empty: Vec<String> = files
        .iter()
        .filter(|f| {
            std::fs::read_to_string(f).map_or(true, |t| t.split_whitespace().next().is_none())
        })
        .map(|f| f.display().to_string())
        .collect();
    if files.is_empty() || !empty.is_empty() {
        return Err(format!(
            "the probe container runs, but not in the cgroup the agent asked for ({}): \
             nothing in {}",
            instance.cgroup.rel_path(),
            if files.is_empty() {
                "any hierarchy".to_owned()
            } else {
                empty.join(", ")
            }
        ));
    }
    Ok(())
}

/// The backend's own status from the runtimes' statuses: available when any runtime works;
/// the version lists the working runtimes, the reason every runtime's when none works.
pub(crate) fn summary(backend: &str, found: &BTreeMap<String, BackendStatus>) -> BackendStatus {
    let working: Vec<&BackendStatus> = found.values().filter(|s| s.available).collect();
    if working.is_empty() {
        let why: Vec<String> = found
            .iter()
            .map(|(n, s)| format!("{n}: {}", s.reason))
            .collect();
        let reason = if why.is_empty() {
            "no container runtime configured".to_owned()
        } else {
            why.join("; ")
        };
        return BackendStatus::unavailable(backend, reason);
    }
    BackendStatus {
        name: backend.to_owned(),
        available: true,
        version: working
            .iter()
            .map(|s| s.version.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        ..BackendStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(name: &str, ok: bool, text: &str) -> (String, BackendStatus) {
        let s = if ok {
            BackendStatus {
                name: format!("container/{name}"),
                available: true,
                version: text.into(),
                ..Default::default()
            }
        } else {
            BackendStatus::unavailable(&format!("container/{name}"), text)
        };
        (name.to_owned(), s)
    }

    #[test]
    fn summary_is_available_when_any_runtime_works() {
        let found: BTreeMap<_, _> = [
            st("runc", true, "runc 1.1.5"),
            st("crun", false, "cannot use hybrid cgroups"),
        ]
        .into_iter()
        .collect();
        let s = summary("container", &found);
        assert!(s.available);
        assert_eq!(s.version, "runc 1.1.5");
        let found: BTreeMap<_, _> = [
            st("crun", false, "hybrid"),
            st("youki", false, "not installed"),
        ]
        .into_iter()
        .collect();
        let s = summary("container", &found);
        assert!(!s.available);
        assert_eq!(s.reason, "crun: hybrid; youki: not installed");
        assert!(!summary("container", &BTreeMap::new()).available);
    }
}
