//! The Docker probe: a daemon answers (or a private one starts), its version, the workload
//! image is there, and a real tiny container (`isolab-workload --list`, under the safety
//! envelope's ceilings) runs and lands inside the agent's cgroup. The last check catches a
//! daemon started elsewhere (a system `dockerd` in its own service cgroup), whose cgroupfs
//! driver would nest `cgroup_parent` under *its* cgroup: the probe container's CPU time must
//! show up in the instance cgroup the agent made for it.

use std::sync::Arc;

use futures::StreamExt;
use isolab_model::catalog;
use isolab_model::pipeline::RootfsKind;

use super::backend::DockerBackend;
use super::engine::{self, Engine};
use super::spec::{self, InstanceSpec};
use super::{DaemonMode, DockerError, attach};
use crate::InstanceExit;
use isolab_host::cgroup::{Cgroup, CgroupLimits, CgroupPlan, CgroupVersion, TrialCgroups};
use isolab_host::which::find_binary;

/// Runs the probe; `Ok(version)` or `Err((version if known, reason))`.
pub(crate) async fn run(backend: &DockerBackend, n: u64) -> Result<String, (String, String)> {
    if let Some(version) = deferred(backend).await {
        return Ok(version);
    }
    let engine = backend
        .engine(true)
        .await
        .map_err(|e| (String::new(), reason(&e)))?;
    let outcome = probe_with(backend, &engine, n).await;
    let fallback = backend.config().daemon == DaemonMode::Auto
        && engine.daemon.is_none()
        && find_binary(&backend.config().dockerd).is_some();
    match outcome {
        Err((_, why)) if why.starts_with(MISPLACED) && fallback => {
            tracing::warn!(
                "the Docker daemon at {}: {why}; starting a private one",
                engine.socket.display()
            );
            drop(engine);
            let private = backend
                .use_private()
                .await
                .map_err(|e| (String::new(), reason(&e)))?;
            probe_with(backend, &private, n).await
        }
        other => other,
    }
}

/// Start of the reason when the daemon puts containers outside the agent's cgroup.
const MISPLACED: &str = "containers do not land in the agent's cgroup";

/// The probe container on `engine`, within the probe timeout.
async fn probe_with(
    backend: &DockerBackend,
    engine: &Engine,
    n: u64,
) -> Result<String, (String, String)> {
    let version = engine.version.clone();
    let outcome = tokio::time::timeout(
        backend.config().probe_timeout,
        probe_container(backend, engine, n),
    )
    .await;
    match outcome {
        Ok(Ok(())) => Ok(version),
        Ok(Err(why)) => Err((version, why)),
        Err(_) => Err((
            version,
            format!(
                "probe container did not finish within {} ms",
                backend.config().probe_timeout.as_millis()
            ),
        )),
    }
}

/// Without a daemon yet, when the configuration lets the agent start its own and `dockerd` is
/// installed, the probe does not start one (capabilities stay cheap for agents that never run a
/// docker trial): it reports `dockerd`'s version, and the first trial starts the daemon. Once
/// a daemon runs, probes check everything.
async fn deferred(backend: &DockerBackend) -> Option<String> {
    let config = backend.config();
    if backend.inner().is_err()
        || config.daemon == DaemonMode::Existing
        || backend.connected().await
    {
        return None;
    }
    if config.daemon == DaemonMode::Auto && engine::ping(&config.socket).await.is_ok() {
        return None;
    }
    let program = find_binary(&config.dockerd)?;
    let out = tokio::process::Command::new(&program)
        .arg("--version")
        .env_clear()
        .output()
        .await
        .ok()?;
    // `Docker version 20.10.24+dfsg1, build 297e128`
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .trim()
        .strip_prefix("Docker version ")?
        .split(',')
        .next()?
        .to_owned();
    Some(format!(
        "Docker Engine {version} (private daemon, started by the first docker trial)"
    ))
}

/// The reason text of an error (without the `docker backend unavailable:` prefix).
fn reason(e: &DockerError) -> String {
    match e {
        DockerError::Unavailable { reason } => reason.clone(),
        other => other.to_string(),
    }
}

async fn probe_container(backend: &DockerBackend, engine: &Engine, n: u64) -> Result<(), String> {
    let inner = Arc::clone(backend.inner().map_err(|e| reason(&e))?);
    let kind = if inner.workload_static {
        RootfsKind::Minimal
    } else {
        RootfsKind::HostRo
    };
    let image = backend.image(engine).await.map_err(|e| e.to_string())?;
    let slug = format!("probe-docker-{n}");
    let ceilings = backend.ceilings();
    let limits = CgroupLimits {
        memory_bytes: Some(ceilings.memory_bytes),
        pids_max: Some(ceilings.pids),
        ..CgroupLimits::default()
    };
    let plan = CgroupPlan {
        kill_timeout: backend.config().stop_timeout,
        ..CgroupPlan::default()
    };
    let (task_cgroups, task_slug) = (Arc::clone(&inner.cgroups), slug.clone());
    let cgs = tokio::task::spawn_blocking(move || {
        task_cgroups.create(&task_slug, vec![(0, limits)], &plan)
    })
    .await
    .map_err(|e| format!("probe task failed: {e}"))?
    .map_err(|e| format!("cannot make the probe's cgroups: {e}"))?;
    let name = inner.container_name(&slug, 0);
    let argv = vec!["--list".to_owned()];
    let rel = cgs.instance_rel(0);
    let body = spec::container_body(&InstanceSpec {
        image: &image.reference,
        args: &argv,
        agent: inner.dir.name(),
        slug: &slug,
        index: 0,
        cgroup_rel: &rel,
        rootfs: kind,
        runtime: None,
    });
    let outcome = run_container(engine, &name, body).await;
    let placed = match &outcome {
        Ok(()) => check_placement(&cgs, inner.dir.manager().version()),
        Err(_) => Ok(()),
    };
    let mut problems = Vec::new();
    if let Err(e) = engine::remove(&engine.docker, &name).await {
        problems.push(format!("remove container {name}: {e}"));
    }
    let task_cgs = cgs.clone();
    match tokio::task::spawn_blocking(move || task_cgs.destroy()).await {
        Ok(p) => problems.extend(p),
        Err(e) => problems.push(e.to_string()),
    }
    outcome?;
    placed?;
    crate::base::nothing_left(&problems)
}

/// Creates, attaches, starts and waits for the probe container; checks its exit and output.
async fn run_container(
    engine: &Engine,
    name: &str,
    body: bollard::models::ContainerCreateBody,
) -> Result<(), String> {
    let docker = &engine.docker;
    let opts = bollard::query_parameters::CreateContainerOptionsBuilder::default()
        .name(name)
        .build();
    docker
        .create_container(Some(opts), body)
        .await
        .map_err(|e| format!("cannot create the probe container: {e}"))?;
    let attached = attach::attach(docker, name)
        .await
        .map_err(|e| e.to_string())?;
    docker
        .start_container(name, None)
        .await
        .map_err(|e| format!("cannot start the probe container: {e}"))?;
    let handle = attach::handle(docker, name, 0, None, attached, None);
    let out: Vec<String> = handle
        .stdout
        .filter_map(|l| async move { l.ok() })
        .collect()
        .await;
    let err: Vec<String> = handle
        .stderr
        .filter_map(|l| async move { l.ok() })
        .collect()
        .await;
    let exit = handle.exit.await;
    let expected = catalog::names().first().copied().unwrap_or("syscall");
    if exit == InstanceExit::Exited(0) && out.iter().any(|l| l.contains(expected)) {
        return Ok(());
    }
    let said = err
        .iter()
        .rev()
        .take(3)
        .rev()
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    Err(format!(
        "probe container {exit}{}",
        if said.is_empty() {
            String::new()
        } else {
            format!(": {said}")
        }
    ))
}

/// The probe container's CPU time (and on v1 its memory) must show in our instance cgroup.
fn check_placement(cgs: &TrialCgroups, version: CgroupVersion) -> Result<(), String> {
    let Some(cg) = cgs.instance(0) else {
        return Err("no probe cgroup".into());
    };
    let stats = cg
        .cgroup
        .stats()
        .map_err(|e| format!("cannot read the probe cgroup: {e}"))?;
    let memory_seen = stats.memory_peak_bytes > 0 || version == CgroupVersion::V2;
    if stats.cpu_usage_ns > 0 && memory_seen {
        return Ok(());
    }
    Err(format!(
        "{MISPLACED} {} (the daemon's cgroupfs driver nests \
         cgroup_parent under the daemon's own cgroup): run dockerd from the agent's cgroup, or let \
         the agent start a private daemon",
        cg.rel
    ))
}
