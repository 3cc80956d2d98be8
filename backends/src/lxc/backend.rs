//! [`LxcBackend`]: the [`Backend`] implementation. See the module documentation of [`super`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use isolab_model::pipeline::BackendKind;
use isolab_model::resolve::ResolvedPlatform;

use super::trial::{self, Made, Plan};
use super::{LxcConfig, LxcError};
use crate::args;
use crate::base::ContainerBase;
use crate::envelope::Ceilings;
use crate::error::SpawnError;
use crate::{
    AgentDir, Backend, BackendStatus, InstanceHandle, Launch, LeakReport, TrialContext,
    process_start_time, then_note,
};
use isolab_host::cgroup::{CgroupEngine, CgroupPlan, TrialCgroups};

/// What every trial of this backend shares.
#[derive(Debug)]
pub(crate) struct Inner {
    /// The cgroup engine and the workload binary.
    pub(crate) base: ContainerBase,
    /// `<state_dir>/<agent dir>/lxc`.
    pub(crate) state: PathBuf,
    /// The LXC path (`-P`): `<state>/path`.
    pub(crate) lxcpath: PathBuf,
    /// The `lxc-execute` binary.
    pub(crate) program: PathBuf,
    /// Size of every instance's `/tmp` tmpfs.
    pub(crate) tmp_bytes: u64,
    /// LXC's default capability drops and seccomp profile.
    pub(crate) hardening: super::hardening::LxcHardening,
}

crate::base::deref_to_base!(Inner);

impl Inner {
    /// Prefix of the trial's network namespaces.
    pub(crate) fn net_prefix(&self, slug: &str) -> String {
        format!("{}-lx-{slug}", self.dir.name())
    }
}

/// The LXC backend.
#[derive(Debug)]
pub struct LxcBackend {
    inner: Result<Arc<Inner>, String>,
    config: LxcConfig,
    probes: AtomicU64,
}

/// A prepared LXC trial: its root, configurations, cgroups, and the monitors once started.
#[derive(Debug)]
pub struct LxcPrepared {
    ctx: TrialContext,
    made: Made,
    monitors: Mutex<Vec<(u32, Option<u64>)>>,
}

impl LxcPrepared {
    /// The bridge network, when the platform asked for one.
    pub fn network(&self) -> Option<&isolab_host::netns::TrialNetwork> {
        self.made.network.as_ref()
    }

    /// Instance `index`'s generated configuration file.
    pub fn config_file(&self, index: u32) -> Option<PathBuf> {
        self.made
            .instances
            .iter()
            .find(|i| i.index == index)
            .map(|i| i.conf.clone())
    }
}

impl LxcBackend {
    /// An LXC backend nesting its cgroups in `dir` and running `workload_bin`; either may be an
    /// error text, which then makes the backend unavailable with that reason, as does a missing
    /// `lxc-execute`.
    pub fn new(
        dir: Result<Arc<AgentDir>, String>,
        workload_bin: Result<PathBuf, String>,
        ceilings: Ceilings,
        config: LxcConfig,
    ) -> Self {
        let inner = (|| {
            let base = ContainerBase::new(&dir, workload_bin, ceilings)?;
            let program =
                isolab_host::which::find_binary(&config.lxc_execute).ok_or_else(|| {
                    format!(
                        "{} not installed (./bootstrap installs lxc)",
                        config.lxc_execute
                    )
                })?;
            let hardening = super::hardening::LxcHardening::read(&config.common_conf)?;
            let state = config.state_dir.join(base.dir.name()).join("lxc");
            Ok(Arc::new(Inner {
                hardening,
                lxcpath: state.join("path"),
                state,
                program,
                tmp_bytes: config.tmp_bytes,
                base,
            }))
        })();
        Self {
            inner,
            config,
            probes: AtomicU64::new(0),
        }
    }

    fn inner(&self) -> Result<&Arc<Inner>, LxcError> {
        self.inner
            .as_ref()
            .map_err(|r| LxcError::Unavailable { reason: r.clone() })
    }

    /// `lxc-execute --version`.
    async fn version(&self, inner: &Inner) -> Result<String, String> {
        let out = tokio::process::Command::new(&inner.program)
            .arg("--version")
            .env_clear()
            .output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", inner.program.display()))?;
        let v = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() || v.is_empty() {
            return Err(format!(
                "{} --version failed ({})",
                inner.program.display(),
                out.status
            ));
        }
        Ok(format!("LXC {v}"))
    }
}

/// The line ending an instance's stderr (once it ends, i.e. the container is gone) when the
/// instance hit its memory limit: LXC reports an OOM-killed workload only as a SIGKILL, and the
/// kill itself is booked on LXC's level, which is gone by then; the instance cgroup's `failcnt`
/// (and any kill seen while it ran) still says what happened.
async fn oom_note(cgroups: TrialCgroups, index: u32) -> Option<String> {
    let memory_bytes = cgroups.instance(index).and_then(|c| c.limits.memory_bytes);
    let stats = tokio::task::spawn_blocking(move || cgroups.stats(index).ok())
        .await
        .ok()
        .flatten()?;
    if stats.memory_limit_hits == 0 && stats.oom_kills == 0 {
        return None;
    }
    Some(format!(
        "isolab: out of memory: the instance hit its memory limit {} time(s), {} OOM kill(s) \
         seen (memory limit {}); a SIGKILL is the OOM killer's",
        stats.memory_limit_hits,
        stats.oom_kills,
        crate::limit_text(memory_bytes)
    ))
}

impl Backend for LxcBackend {
    type Error = LxcError;
    type Prepared = LxcPrepared;

    fn name(&self) -> &'static str {
        "lxc"
    }

    fn kill_timeout(&self) -> std::time::Duration {
        self.config.stop_timeout
    }

    async fn probe(&self) -> BackendStatus {
        let inner = match self.inner() {
            Ok(i) => Arc::clone(i),
            Err(LxcError::Unavailable { reason }) => {
                return BackendStatus::unavailable(self.name(), reason);
            }
            Err(e) => return BackendStatus::unavailable(self.name(), e.to_string()),
        };
        let version = match self.version(&inner).await {
            Ok(v) => v,
            Err(reason) => return BackendStatus::unavailable(self.name(), reason),
        };
        let n = self.probes.fetch_add(1, Ordering::Relaxed);
        let outcome = super::probe::run(&inner, inner.cgroups.ceilings(), &self.config, n).await;
        crate::probe_status(self.name(), version, outcome)
    }

    fn cgroup_engine(&self) -> Result<&Arc<CgroupEngine>, LxcError> {
        Ok(&self.inner()?.cgroups)
    }

    async fn cgroup_plan(&self, ctx: &TrialContext) -> Result<CgroupPlan, LxcError> {
        Ok(crate::tmpfs::cgroup_plan(
            self.config.tmp_bytes,
            ctx,
            self.kill_timeout(),
        ))
    }

    async fn prepare(
        &self,
        ctx: &TrialContext,
        cgroups: &TrialCgroups,
    ) -> Result<LxcPrepared, LxcError> {
        let inner = Arc::clone(self.inner()?);
        let platform = ctx.platform(BackendKind::Lxc, ResolvedPlatform::as_lxc)?;
        let kind = platform.rootfs;
        inner.check_static(kind)?;
        let network = platform.network;
        let plans: Vec<Plan> = args::trial_args(ctx)?;
        let (slug, cgs) = (ctx.slug(), cgroups.clone());
        let made =
            tokio::task::spawn_blocking(move || trial::make(&inner, cgs, kind, network, &plans))
                .await
                .map_err(|source| LxcError::Task {
                    trial: slug,
                    source,
                })??;
        Ok(LxcPrepared {
            ctx: ctx.clone(),
            made,
            monitors: Mutex::new(Vec::new()),
        })
    }

    async fn start(&self, prepared: &mut LxcPrepared) -> Result<Launch, LxcError> {
        let inner = self.inner()?;
        let mut handles = Vec::with_capacity(prepared.made.instances.len());
        for inst in &prepared.made.instances {
            let child = trial::spawn(inner, &prepared.made, inst)?;
            if let Some(pid) = child.id() {
                prepared
                    .monitors
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((pid, process_start_time(pid)));
            }
            // lxc-execute exits with the workload's code, 128 + n when signal n killed it.
            let oom = oom_note(prepared.made.cgroups.clone(), inst.index);
            let handle = InstanceHandle::of_runtime_child(inst.index, child, "lxc-execute", |e| {
                then_note(e, oom)
            })
            .map_err(|source| SpawnError {
                instance: inst.index,
                program: inner.program.clone(),
                source,
            })?;
            handles.push(handle);
        }
        Ok(handles.into())
    }

    /// Gives the monitors a moment to report, then kills what is left in the trial cgroup
    /// (LXC's monitor and pivot levels beside the instance cgroups).
    async fn stop(&self, prepared: &LxcPrepared) -> Result<(), LxcError> {
        let made = prepared.made.clone();
        let monitors = prepared
            .monitors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let timeout = self.config.stop_timeout;
        tokio::task::spawn_blocking(move || trial::stop(&made, &monitors, timeout))
            .await
            .map_err(|source| LxcError::Task {
                trial: prepared.ctx.slug(),
                source,
            })?
    }

    async fn teardown(&self, prepared: LxcPrepared) -> Vec<String> {
        let Ok(inner) = self.inner().map(Arc::clone) else {
            return Vec::new();
        };
        let made = prepared.made;
        tokio::task::spawn_blocking(move || trial::destroy(&inner, &made))
            .await
            .unwrap_or_else(|e| vec![format!("teardown task failed: {e}")])
    }

    fn leftovers(&self, ctx: &TrialContext) -> LeakReport {
        let Ok(inner) = self.inner() else {
            return LeakReport::default();
        };
        let slug = ctx.slug();
        let names: Vec<String> = ctx
            .trial
            .instances
            .iter()
            .map(|i| format!("{slug}-i{}", i.index))
            .collect();
        trial::leftovers(inner, &slug, &names)
    }
}

impl Drop for LxcBackend {
    fn drop(&mut self) {
        if let Ok(inner) = &self.inner {
            if let Err(e) = trial::remove_dir(&inner.state) {
                tracing::warn!("removing the lxc state directory: {e}");
            }
            trial::remove_lock_dirs(&inner.lxcpath);
            inner.cgroups.release_unmanaged();
            // The agent's state directory, if nothing else of the agent is left in it.
            if let Some(parent) = inner.state.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}
