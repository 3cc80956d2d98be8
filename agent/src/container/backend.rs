//! [`ContainerBackend`]: the [`Backend`] implementation. See the module documentation of
//! [`super`] for the life of a trial.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use isolab_model::pipeline::{BackendKind, NetworkMode, RootfsKind};
use isolab_model::resolve::ResolvedPlatform;

use super::bundle::HostFeatures;
use super::hierarchy::Hierarchies;
use super::lifecycle::{self, Instance, InstancePlan, Running, TrialNames};
use super::runtime::{Runtime, RuntimeError};
use super::{ContainerConfig, ContainerError, leftovers, probe, rootfs, stale};
use crate::backend::TRIAL_ENV;
use crate::backend::envelope::{Ceilings, block_device_of, instance_limits};
use crate::backend::{
    AgentDir, Backend, BackendStatus, InstanceExit, InstanceHandle, Launch, LeakReport, LineStream,
    TrialContext, lines, process_start_time,
};
use crate::cgroup::{AnyCgroup, Cgroup, CgroupStats};
use isolab_host::netns::TrialNetwork;

/// What every trial of this backend shares; `Arc`ed into blocking tasks.
#[derive(Debug)]
pub(crate) struct Inner {
    /// The agent's cgroup directory (and through it the cgroup manager).
    pub(crate) dir: Arc<AgentDir>,
    /// The workload binary on the host.
    pub(crate) workload_bin: PathBuf,
    /// Whether it is statically linked (required by the `minimal` rootfs).
    pub(crate) workload_static: bool,
    /// This agent's state directory: `<state_dir>/<agent dir name>`.
    pub(crate) state: PathBuf,
    /// Every cgroup hierarchy mounted here.
    pub(crate) hierarchies: Hierarchies,
    /// What this host's cgroups support.
    pub(crate) features: HostFeatures,
    /// Block device an `io_bps` cap applies to.
    pub(crate) io_device: Option<(u64, u64)>,
}

impl Inner {
    /// Names and places of a trial attempt (or a probe) called `slug`.
    pub(crate) fn names(&self, slug: &str) -> TrialNames {
        TrialNames {
            slug: slug.to_owned(),
            dir: self.state.join("trials").join(slug),
            cgroup_rel: self.dir.rel(slug),
            net_prefix: format!("{}-{slug}", self.dir.name()),
        }
    }

    /// The runtime `name` with this agent's state root for it; `args` (the platform's
    /// `runtime_args`) plus what the runtime needs for `network` ([`super::flavor::runsc_args`]).
    pub(crate) fn runtime(
        &self,
        name: &str,
        args: &[String],
        network: NetworkMode,
    ) -> Result<Runtime, RuntimeError> {
        let program = super::runtime::resolve(name)?;
        let key = program
            .file_name()
            .map_or_else(|| "runtime".into(), |n| n.to_string_lossy().into_owned());
        let args = super::flavor::runsc_args(&program, args, network);
        Runtime::new(name, &args, self.state.join("runtime").join(key))
    }
}

/// The container backend.
#[derive(Debug)]
pub struct ContainerBackend {
    inner: Result<Arc<Inner>, String>,
    config: ContainerConfig,
    ceilings: Ceilings,
    /// Per-runtime results of the last probe, by runtime name.
    statuses: Mutex<BTreeMap<String, BackendStatus>>,
    probes: AtomicU64,
}

/// A prepared container trial: bundles, network, and the runtime processes once started.
#[derive(Debug)]
pub struct ContainerPrepared {
    ctx: TrialContext,
    names: TrialNames,
    runtime: Runtime,
    network: Option<TrialNetwork>,
    instances: Vec<Instance>,
    running: Vec<Running>,
}

impl ContainerPrepared {
    /// The bridge network, when the platform asked for one (instance addresses for tests).
    pub fn network(&self) -> Option<&TrialNetwork> {
        self.network.as_ref()
    }

    /// The bundle directory of each instance, in index order.
    pub fn bundles(&self) -> Vec<PathBuf> {
        self.instances.iter().map(|i| i.bundle.clone()).collect()
    }

    /// The runtime its instances run with (for the bench driver).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// A container id of this trial's (removed with it at teardown) that no instance uses (for
    /// the bench driver).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn spare_id(&self, n: u32) -> String {
        format!("{}0x{n}", self.names.id_prefix())
    }
}

impl ContainerBackend {
    /// A container backend nesting its cgroups in `dir` and running `workload_bin`; either may
    /// be an error text, which then makes the backend unavailable with that reason. Removes what
    /// agents of the same cgroup prefix that no longer run left behind.
    pub fn new(
        dir: Result<Arc<AgentDir>, String>,
        workload_bin: Result<PathBuf, String>,
        ceilings: Ceilings,
        config: ContainerConfig,
    ) -> Self {
        let inner = (|| {
            let dir = dir?;
            let workload_bin = workload_bin?;
            let hierarchies = Hierarchies::detect().map_err(|e| e.to_string())?;
            let features = hierarchies.features();
            let inner = Arc::new(Inner {
                state: config.state_dir.join(dir.name()),
                workload_static: rootfs::is_static_elf(&workload_bin) == Some(true),
                io_device: block_device_of(&std::env::temp_dir()),
                dir,
                workload_bin,
                hierarchies,
                features,
            });
            stale::remove_stale(&inner, &config.state_dir);
            Ok(inner)
        })();
        Self {
            inner,
            config,
            ceilings,
            statuses: Mutex::new(BTreeMap::new()),
            probes: AtomicU64::new(0),
        }
    }

    /// The status of every configured runtime from the last [`Backend::probe`], named
    /// `container/<runtime>` (e.g. `container/crun`, unavailable: "…").
    pub fn runtime_statuses(&self) -> Vec<BackendStatus> {
        self.statuses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    fn inner(&self) -> Result<&Arc<Inner>, ContainerError> {
        self.inner
            .as_ref()
            .map_err(|r| ContainerError::Unavailable { reason: r.clone() })
    }

    /// The probe's verdict on runtime `name`, if it was probed.
    fn probed(&self, name: &str) -> Option<BackendStatus> {
        self.statuses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
    }
}

/// `stderr`, followed (once it ends, i.e. the container is gone) by a line saying that the OOM
/// killer struck, when the container's cgroup counted an OOM kill: a container killed by
/// SIGKILL is then known to have hit its memory limit, and the trial's failure says so.
fn with_oom_note(
    stderr: LineStream,
    cgroup: Arc<AnyCgroup>,
    memory_bytes: Option<u64>,
) -> LineStream {
    let note = futures::stream::once(async move {
        let kills = tokio::task::spawn_blocking(move || cgroup.stats().map(|s| s.oom_kills).unwrap_or(0))
            .await
            .unwrap_or(0);
        (kills > 0).then(|| {
            let limit = memory_bytes.map_or_else(|| "none".to_owned(), |b| format!("{b} bytes"));
            Ok(format!("isolab: out of memory: the OOM killer killed {kills} process(es) (memory limit {limit})"))
        })
    })
    .filter_map(futures::future::ready);
    Box::pin(stderr.chain(note))
}

/// A runtime's exit status as the workload's: runtimes exit with 128 + n when process 1 was
/// killed by signal n (the workload itself only exits with 0, 1 or 2).
fn exit_of(status: std::process::ExitStatus) -> InstanceExit {
    match InstanceExit::from_status(status) {
        InstanceExit::Exited(code) if (129..=128 + 64).contains(&code) => {
            InstanceExit::Signaled(code - 128)
        }
        other => other,
    }
}

impl Backend for ContainerBackend {
    type Error = ContainerError;
    type Prepared = ContainerPrepared;

    fn name(&self) -> &'static str {
        "container"
    }

    async fn probe(&self) -> BackendStatus {
        let inner = match self.inner() {
            Ok(i) => Arc::clone(i),
            Err(e) => return BackendStatus::unavailable(self.name(), e.to_string()),
        };
        // All runtimes at once: one that hangs until its timeout does not hold up the others.
        let probes = self.config.runtimes.iter().map(|name| {
            let n = self.probes.fetch_add(1, Ordering::Relaxed);
            let inner = Arc::clone(&inner);
            async move {
                let status =
                    probe::probe_runtime(&inner, name, n, self.ceilings, self.config.probe_timeout)
                        .await;
                if !status.available {
                    tracing::info!(runtime = %name, "container runtime unavailable: {}", status.reason);
                }
                (name.clone(), status)
            }
        });
        let found: BTreeMap<String, BackendStatus> = futures::future::join_all(probes)
            .await
            .into_iter()
            .collect();
        let summary = probe::summary(self.name(), &found);
        *self
            .statuses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = found;
        summary
    }

    async fn prepare(&self, ctx: &TrialContext) -> Result<ContainerPrepared, ContainerError> {
        let inner = Arc::clone(self.inner()?);
        let platform = ctx.platform(BackendKind::Container, ResolvedPlatform::as_container)?;
        let runtime_name = platform.runtime.as_str();
        if let Some(st) = self.probed(runtime_name).filter(|s| !s.available) {
            return Err(ContainerError::RuntimeUnavailable {
                runtime: runtime_name.to_owned(),
                reason: st.reason,
            });
        }
        let network = platform.network;
        let runtime = inner
            .runtime(runtime_name, &platform.runtime_args, network)
            .map_err(|e| ContainerError::RuntimeUnavailable {
                runtime: runtime_name.to_owned(),
                reason: e.to_string(),
            })?;
        let kind = platform.rootfs;
        if kind == RootfsKind::Minimal && !inner.workload_static {
            return Err(ContainerError::NotStatic {
                path: inner.workload_bin.clone(),
            });
        }
        let plans = ctx
            .trial
            .instances
            .iter()
            .map(|spec| {
                Ok(InstancePlan {
                    index: spec.index,
                    args: crate::backend::args::workload_args(ctx, spec)?,
                    limits: instance_limits(self.ceilings, &platform.limits, spec, inner.io_device),
                })
            })
            .collect::<Result<Vec<_>, ContainerError>>()?;
        let names = inner.names(&ctx.slug());
        let (task_names, task_runtime) = (names.clone(), runtime.clone());
        let made = tokio::task::spawn_blocking(move || {
            lifecycle::make_trial(&inner, &task_names, &task_runtime, kind, network, &plans)
        })
        .await
        .map_err(|source| ContainerError::Task {
            trial: ctx.slug(),
            source,
        })??;
        let (network, instances) = made;
        Ok(ContainerPrepared {
            ctx: ctx.clone(),
            names,
            runtime,
            network,
            instances,
            running: Vec::new(),
        })
    }

    async fn start(&self, prepared: &mut ContainerPrepared) -> Result<Launch, ContainerError> {
        let mut handles = Vec::with_capacity(prepared.instances.len());
        for inst in &prepared.instances {
            let mut cmd = prepared.runtime.run_command(&inst.bundle, &inst.id);
            cmd.env(TRIAL_ENV, &prepared.names.slug);
            let spawn_err = |source| ContainerError::Spawn {
                instance: inst.index,
                program: prepared.runtime.program().to_owned(),
                source,
            };
            let mut child = cmd.spawn().map_err(spawn_err)?;
            let pid = child.id();
            if let Some(pid) = pid {
                prepared.running.push(Running {
                    index: inst.index,
                    pid,
                    start_time: process_start_time(pid),
                });
            }
            let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
                // Both are piped by `run_command`; without them there is nothing to measure.
                let _ = child.start_kill();
                return Err(spawn_err(std::io::Error::other(
                    "stdout or stderr not piped",
                )));
            };
            let exit = Box::pin(async move {
                match child.wait().await {
                    Ok(status) => exit_of(status),
                    Err(e) => InstanceExit::Lost(format!("waiting for the runtime failed: {e}")),
                }
            });
            let stderr = with_oom_note(lines(stderr), Arc::clone(&inst.cgroup), inst.memory_bytes);
            handles.push(InstanceHandle {
                index: inst.index,
                pid,
                stdout: lines(stdout),
                stderr,
                exit,
            });
        }
        Ok(Launch {
            instances: handles,
            accel: None,
        })
    }

    fn stats(
        &self,
        prepared: &ContainerPrepared,
        index: u32,
    ) -> Result<CgroupStats, ContainerError> {
        let inst = prepared
            .instances
            .iter()
            .find(|i| i.index == index)
            .ok_or_else(|| ContainerError::NoInstance {
                trial: prepared.names.slug.clone(),
                index,
            })?;
        inst.cgroup
            .stats()
            .map_err(|source| ContainerError::Cgroup {
                rel: inst.cgroup.rel_path().to_owned(),
                source,
            })
    }

    async fn stop(&self, prepared: &ContainerPrepared) -> Result<(), ContainerError> {
        let cgroups: Vec<_> = prepared
            .instances
            .iter()
            .map(|i| (i.index, Arc::clone(&i.cgroup)))
            .collect();
        let running = prepared.running.clone();
        let slug = prepared.names.slug.clone();
        let timeout = self.config.stop_timeout;
        tokio::task::spawn_blocking(move || {
            lifecycle::stop_instances(&slug, &cgroups, &running, timeout)
        })
        .await
        .map_err(|source| ContainerError::Task {
            trial: prepared.names.slug.clone(),
            source,
        })?
    }

    async fn teardown(&self, prepared: ContainerPrepared) -> LeakReport {
        let ContainerPrepared {
            ctx,
            names,
            runtime,
            instances,
            running,
            ..
        } = prepared;
        let Ok(inner) = self.inner().map(Arc::clone) else {
            return LeakReport::default();
        };
        let timeout = self.config.stop_timeout;
        let (task_inner, task_names, task_runtime) =
            (Arc::clone(&inner), names.clone(), runtime.clone());
        let done = tokio::task::spawn_blocking(move || {
            let cgroups: Vec<_> = instances
                .iter()
                .map(|i| (i.index, Arc::clone(&i.cgroup)))
                .collect();
            let mut errors = Vec::new();
            // With every runtime process gone (the runner's stop saw to that), `destroy_trial`'s
            // kill of the whole trial cgroup is all that is left to do.
            let runtime_alive = running
                .iter()
                .any(|r| crate::backend::process_alive(r.pid, r.start_time).is_some());
            if runtime_alive
                && let Err(e) =
                    lifecycle::stop_instances(&task_names.slug, &cgroups, &running, timeout)
            {
                errors.push(e.to_string());
            }
            errors.extend(lifecycle::destroy_trial(
                &task_inner,
                &task_names,
                &task_runtime,
                timeout,
            ));
            errors
        })
        .await;
        let mut report = leftovers::find(&inner, &names, Some(&runtime));
        let errors = match done {
            Ok(errors) => errors,
            Err(e) => vec![format!("teardown task failed: {e}")],
        };
        for e in errors {
            tracing::warn!(trial = %ctx.slug(), "teardown: {e}");
            if !report.is_clean() {
                report.push(crate::backend::Leak::Other {
                    what: format!("teardown error: {e}"),
                });
            }
        }
        report
    }

    fn leftovers(&self, ctx: &TrialContext) -> LeakReport {
        let Ok(inner) = self.inner() else {
            return LeakReport::default();
        };
        let runtime = ctx
            .platform(BackendKind::Container, ResolvedPlatform::as_container)
            .ok()
            .and_then(|p| inner.runtime(&p.runtime, &p.runtime_args, p.network).ok());
        leftovers::find(inner, &inner.names(&ctx.slug()), runtime.as_ref())
    }
}

impl Drop for ContainerBackend {
    fn drop(&mut self) {
        if let Ok(inner) = &self.inner {
            stale::release_agent(inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn runtime_exit_codes_for_signals_become_signals() {
        let st = |code: i32| std::process::ExitStatus::from_raw(code << 8);
        assert_eq!(exit_of(st(0)), InstanceExit::Exited(0));
        assert_eq!(exit_of(st(2)), InstanceExit::Exited(2));
        assert_eq!(exit_of(st(137)), InstanceExit::Signaled(9));
        assert_eq!(exit_of(st(128)), InstanceExit::Exited(128));
        assert_eq!(
            exit_of(std::process::ExitStatus::from_raw(9)),
            InstanceExit::Signaled(9)
        );
    }
}
