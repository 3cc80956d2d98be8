//! [`ContainerBackend`]: the [`Backend`] implementation. See the module documentation of
//! [`super`] for the life of a trial.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use isolab_model::pipeline::{BackendKind, NetworkMode};
use isolab_model::resolve::ResolvedPlatform;

use super::bundle::HostFeatures;
use super::lifecycle::{self, Instance, InstancePlan, Running, TrialNames};
use super::runtime::{Runtime, RuntimeError};
use super::{
    ContainerConfig, ContainerError, DEFAULT_RUNTIMES, RuntimeTable, leftovers, probe, stale,
};
use crate::TRIAL_ENV;
use crate::base::ContainerBase;
use crate::envelope::Ceilings;
use crate::{
    AgentDir, Backend, BackendStatus, Launch, LeakReport, TrialContext, process_start_time,
    then_note,
};
use isolab_host::cgroup::{
    AnyCgroup, Cgroup, CgroupEngine, CgroupPlan, InstanceLevel, TrialCgroups,
};
use isolab_host::netns::TrialNetwork;

/// What every trial of this backend shares; `Arc`ed into blocking tasks.
#[derive(Debug)]
pub(crate) struct Inner {
    /// The cgroup engine and the workload binary.
    pub(crate) base: ContainerBase,
    /// This agent's state directory: `<state_dir>/<agent dir name>`.
    pub(crate) state: PathBuf,
    /// What this host's cgroups support.
    pub(crate) features: HostFeatures,
    /// Size of every instance's `/tmp` tmpfs.
    pub(crate) tmp_bytes: u64,
    /// The runtimes trials may name.
    pub(crate) runtimes: RuntimeTable,
}

crate::base::deref_to_base!(Inner);

impl Inner {
    /// Names and places of a trial attempt (or a probe) called `slug`.
    pub(crate) fn names(&self, slug: &str) -> TrialNames {
        TrialNames {
            slug: slug.to_owned(),
            dir: self.state.join("trials").join(slug),
            net_prefix: format!("{}-{slug}", self.dir.name()),
        }
    }

    /// The runtime `name` of the agent's table with this agent's state root for it: the
    /// platform's `args` (allowlisted at admission), the operator's arguments, then what the
    /// runtime needs for `network` ([`super::flavor::runsc_args`]). A name not in the table is
    /// refused (listing the names known), never looked up on `PATH` nor taken as a path.
    pub(crate) fn runtime(
        &self,
        name: &str,
        args: &[String],
        network: NetworkMode,
    ) -> Result<Runtime, RuntimeError> {
        let entry = self.runtimes.get(name).map_err(|e| {
            if DEFAULT_RUNTIMES.contains(&name) && isolab_host::which::find_binary(name).is_none() {
                RuntimeError::NotFound {
                    name: name.to_owned(),
                    where_: "not installed: not on PATH nor in the sbin directories".into(),
                }
            } else {
                RuntimeError::NotConfigured(e)
            }
        })?;
        let mut all = args.to_vec();
        all.extend(entry.args.iter().cloned());
        let all = super::flavor::runsc_args(&entry.program, &all, network);
        Ok(Runtime::new(
            name,
            entry.program.clone(),
            &all,
            self.state.join("runtime").join(name),
        ))
    }
}

/// The container backend.
#[derive(Debug)]
pub struct ContainerBackend {
    inner: Result<Arc<Inner>, String>,
    config: ContainerConfig,
    /// Per-runtime results of the last probe, by runtime name.
    statuses: Mutex<BTreeMap<String, BackendStatus>>,
    probes: AtomicU64,
}

/// A prepared container trial: bundles, network, and the runtime processes once started.
#[derive(Debug)]
pub struct ContainerPrepared {
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
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// A container id of this trial's (removed with it at teardown) that no instance uses (for
    /// the bench driver).
    #[cfg(any(test, feature = "testing"))]
    pub fn spare_id(&self, n: u32) -> String {
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
            let base = ContainerBase::new(&dir, workload_bin, ceilings)?;
            let inner = Arc::new(Inner {
                state: config.state_dir.join(base.dir.name()),
                features: base.cgroups.hierarchies().features(),
                tmp_bytes: config.tmp_bytes,
                runtimes: config.runtimes.clone(),
                base,
            });
            stale::remove_stale(&inner, &config.state_dir);
            Ok(inner)
        })();
        Self {
            inner,
            config,
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

    /// Runtime `name` of the table as a trial with `args` and `network` would run it.
    #[cfg(any(test, feature = "testing"))]
    pub fn runtime_named(
        &self,
        name: &str,
        args: &[String],
        network: NetworkMode,
    ) -> Result<Runtime, ContainerError> {
        self.inner()?
            .runtime(name, args, network)
            .map_err(|e| ContainerError::RuntimeUnavailable {
                runtime: name.to_owned(),
                reason: e.to_string(),
            })
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

/// The line ending a container's stderr (once it ends, i.e. the container is gone) when its
/// cgroup counted an OOM kill: a container killed by SIGKILL is then known to have hit its
/// memory limit, and the trial's failure says so.
async fn oom_note(cgroup: Arc<AnyCgroup>, memory_bytes: Option<u64>) -> Option<String> {
    let kills =
        tokio::task::spawn_blocking(move || cgroup.stats().map(|s| s.oom_kills).unwrap_or(0))
            .await
            .unwrap_or(0);
    (kills > 0).then(|| {
        let limit = crate::limit_text(memory_bytes);
        format!("isolab: out of memory: the OOM killer killed {kills} process(es) (memory limit {limit})")
    })
}

impl Backend for ContainerBackend {
    type Error = ContainerError;
    type Prepared = ContainerPrepared;

    fn name(&self) -> &'static str {
        "container"
    }

    fn kill_timeout(&self) -> std::time::Duration {
        self.config.stop_timeout
    }

    async fn probe(&self) -> BackendStatus {
        let inner = match self.inner() {
            Ok(i) => Arc::clone(i),
            Err(e) => return BackendStatus::unavailable(self.name(), e.to_string()),
        };
        // All runtimes at once: one that hangs until its timeout does not hold up the others.
        // Every configured runtime, and the usual ones not configured (reported unavailable
        // with the reason, e.g. not installed).
        let mut names: Vec<String> = self.config.runtimes.names().map(str::to_owned).collect();
        for d in DEFAULT_RUNTIMES {
            if !names.iter().any(|n| n == d) {
                names.push(d.to_owned());
            }
        }
        let probes = names.iter().map(|name| {
            let n = self.probes.fetch_add(1, Ordering::Relaxed);
            let inner = Arc::clone(&inner);
            async move {
                let status =
                    probe::probe_runtime(&inner, name, n, self.config.probe_timeout).await;
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

    fn cgroup_engine(&self) -> Result<&Arc<CgroupEngine>, ContainerError> {
        Ok(&self.inner()?.cgroups)
    }

    /// The runtime makes each instance cgroup from the bundle's `cgroupsPath` (the engine's
    /// instance cgroup) and writes the limits the engine computed into it.
    async fn cgroup_plan(&self, ctx: &TrialContext) -> Result<CgroupPlan, ContainerError> {
        Ok(CgroupPlan {
            instance_level: InstanceLevel::Runtime,
            ..crate::tmpfs::cgroup_plan(self.config.tmp_bytes, ctx, self.kill_timeout())
        })
    }

    async fn prepare(
        &self,
        ctx: &TrialContext,
        cgroups: &TrialCgroups,
    ) -> Result<ContainerPrepared, ContainerError> {
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
        inner.check_static(kind)?;
        let plans = ctx
            .trial
            .instances
            .iter()
            .map(|spec| {
                Ok(InstancePlan {
                    index: spec.index,
                    args: crate::args::workload_args(ctx, spec)?,
                })
            })
            .collect::<Result<Vec<_>, ContainerError>>()?;
        let names = inner.names(&ctx.slug());
        let (task_names, task_runtime, cgs) = (names.clone(), runtime.clone(), cgroups.clone());
        let made = tokio::task::spawn_blocking(move || {
            lifecycle::make_trial(
                &inner,
                &task_names,
                &task_runtime,
                &cgs,
                kind,
                network,
                &plans,
            )
        })
        .await
        .map_err(|source| ContainerError::Task {
            trial: ctx.slug(),
            source,
        })??;
        let (network, instances) = made;
        Ok(ContainerPrepared {
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
            let child = crate::spawner::spawn(cmd).await.map_err(spawn_err)?;
            if let Some(pid) = child.pid {
                prepared.running.push(Running {
                    index: inst.index,
                    pid,
                    start_time: process_start_time(pid),
                });
            }
            let oom = oom_note(Arc::clone(&inst.cgroup), inst.memory_bytes);
            let handle = child
                .into_runtime_handle(inst.index, "the runtime", |e| then_note(e, oom))
                .map_err(spawn_err)?;
            handles.push(handle);
        }
        Ok(handles.into())
    }

    /// Kills what is in the instance cgroups until every runtime process has ended (a runtime
    /// still creating its container may add the container's init at any moment).
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

    async fn teardown(&self, prepared: ContainerPrepared) -> Vec<String> {
        let ContainerPrepared { names, runtime, .. } = prepared;
        tokio::task::spawn_blocking(move || lifecycle::destroy_trial(&names, &runtime))
            .await
            .unwrap_or_else(|e| vec![format!("teardown task failed: {e}")])
    }

    fn leftovers(&self, ctx: &TrialContext) -> LeakReport {
        let Ok(inner) = self.inner() else {
            return LeakReport::default();
        };
        let runtime = ctx
            .platform(BackendKind::Container, ResolvedPlatform::as_container)
            .ok()
            .and_then(|p| inner.runtime(&p.runtime, &p.runtime_args, p.network).ok());
        leftovers::find(&inner.names(&ctx.slug()), runtime.as_ref())
    }
}

impl Drop for ContainerBackend {
    fn drop(&mut self) {
        if let Ok(inner) = &self.inner {
            stale::release_agent(inner);
        }
    }
}
