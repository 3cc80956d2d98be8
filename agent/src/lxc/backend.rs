//! [`LxcBackend`]: the [`Backend`] implementation. See the module documentation of [`super`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use isolab_model::pipeline::{BackendKind, RootfsKind};
use isolab_model::resolve::ResolvedPlatform;

use super::trial::{self, Made, Plan};
use super::{LxcConfig, LxcError};
use crate::backend::args;
use crate::backend::envelope::{Ceilings, block_device_of, instance_limits};
use crate::backend::{
    AgentDir, Backend, BackendStatus, InstanceExit, InstanceHandle, Launch, Leak, LeakReport,
    LineStream, TrialContext, lines, process_start_time,
};
use crate::cgroup::CgroupStats;
use crate::container::hierarchy::Hierarchies;
use crate::container::rootfs::is_static_elf;
use crate::docker::cgroups::TrialCgroups;

/// What every trial of this backend shares.
#[derive(Debug)]
pub(crate) struct Inner {
    /// The agent's cgroup directory.
    pub(crate) dir: Arc<AgentDir>,
    /// The workload binary on the host.
    pub(crate) workload_bin: PathBuf,
    /// Whether it is statically linked (required by `rootfs: minimal`).
    pub(crate) workload_static: bool,
    /// Every cgroup hierarchy mounted here.
    pub(crate) hierarchies: Hierarchies,
    /// `<state_dir>/<agent dir>/lxc`.
    pub(crate) state: PathBuf,
    /// The LXC path (`-P`): `<state>/path`.
    pub(crate) lxcpath: PathBuf,
    /// The `lxc-execute` binary.
    pub(crate) program: PathBuf,
    /// Block device an `io_bps` cap applies to.
    pub(crate) io_device: Option<(u64, u64)>,
}

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
    ceilings: Ceilings,
    probes: AtomicU64,
}

/// A prepared LXC trial: its root, configurations, cgroups, and the monitors once started.
#[derive(Debug)]
pub struct LxcPrepared {
    ctx: TrialContext,
    made: Made,
    monitors: Mutex<Vec<(u32, Option<u64>)>>,
    memory_limits: BTreeMap<u32, Option<u64>>,
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
            let dir = dir?;
            let workload_bin = workload_bin?;
            let program = crate::docker::find_binary(&config.lxc_execute).ok_or_else(|| {
                format!(
                    "{} not installed (./bootstrap installs lxc)",
                    config.lxc_execute
                )
            })?;
            let hierarchies = Hierarchies::detect().map_err(|e| e.to_string())?;
            let state = config.state_dir.join(dir.name()).join("lxc");
            Ok(Arc::new(Inner {
                lxcpath: state.join("path"),
                state,
                program,
                workload_static: is_static_elf(&workload_bin) == Some(true),
                io_device: block_device_of(&std::env::temp_dir()),
                dir,
                workload_bin,
                hierarchies,
            }))
        })();
        Self {
            inner,
            config,
            ceilings,
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

/// `stderr`, followed (once it ends, i.e. the container is gone) by a line naming the memory
/// limit when the instance hit it: LXC reports an OOM-killed workload only as a SIGKILL, and
/// the kill itself is booked on LXC's level, which is gone by then; the instance cgroup's
/// `failcnt` (and any kill seen while it ran) still says what happened.
fn with_oom_note(
    stderr: LineStream,
    cgroups: TrialCgroups,
    index: u32,
    memory_bytes: Option<u64>,
) -> LineStream {
    let note = futures::stream::once(async move {
        let stats = tokio::task::spawn_blocking(move || cgroups.stats(index).ok())
            .await
            .ok()
            .flatten()?;
        if stats.memory_limit_hits == 0 && stats.oom_kills == 0 {
            return None;
        }
        let limit = memory_bytes.map_or_else(|| "none".to_owned(), |b| format!("{b} bytes"));
        Some(Ok(format!(
            "isolab: out of memory: the instance hit its memory limit {} time(s), {} OOM \
             kill(s) seen (memory limit {limit}); a SIGKILL is the OOM killer's",
            stats.memory_limit_hits, stats.oom_kills
        )))
    })
    .filter_map(futures::future::ready);
    Box::pin(stderr.chain(note))
}

impl Backend for LxcBackend {
    type Error = LxcError;
    type Prepared = LxcPrepared;

    fn name(&self) -> &'static str {
        "lxc"
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
        match super::probe::run(&inner, self.ceilings, &self.config, n).await {
            Ok(()) => BackendStatus {
                name: self.name().into(),
                available: true,
                version,
                ..BackendStatus::default()
            },
            Err(reason) => BackendStatus {
                version,
                ..BackendStatus::unavailable(self.name(), reason)
            },
        }
    }

    async fn prepare(&self, ctx: &TrialContext) -> Result<LxcPrepared, LxcError> {
        let inner = Arc::clone(self.inner()?);
        let platform = ctx.platform(BackendKind::Lxc, ResolvedPlatform::as_lxc)?;
        let kind = platform.rootfs;
        if kind == RootfsKind::Minimal && !inner.workload_static {
            return Err(LxcError::NotStatic {
                path: inner.workload_bin.clone(),
            });
        }
        let network = platform.network;
        let mut plans: Vec<Plan> = Vec::with_capacity(ctx.trial.instances.len());
        for spec in &ctx.trial.instances {
            let limits = instance_limits(self.ceilings, &platform.limits, spec, inner.io_device);
            plans.push((spec.index, args::workload_args(ctx, spec)?, limits));
        }
        let memory_limits = plans.iter().map(|(i, _, l)| (*i, l.memory_bytes)).collect();
        let (slug, timeout) = (ctx.slug(), self.config.stop_timeout);
        let task_slug = slug.clone();
        let made = tokio::task::spawn_blocking(move || {
            trial::make(&inner, &task_slug, kind, network, &plans, timeout)
        })
        .await
        .map_err(|source| LxcError::Task {
            trial: slug,
            source,
        })??;
        Ok(LxcPrepared {
            ctx: ctx.clone(),
            made,
            monitors: Mutex::new(Vec::new()),
            memory_limits,
        })
    }

    async fn start(&self, prepared: &mut LxcPrepared) -> Result<Launch, LxcError> {
        let inner = self.inner()?;
        let mut handles = Vec::with_capacity(prepared.made.instances.len());
        for inst in &prepared.made.instances {
            let mut child = trial::spawn(inner, &prepared.made, inst)?;
            let pid = child.id();
            if let Some(pid) = pid {
                prepared
                    .monitors
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((pid, process_start_time(pid)));
            }
            let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
                let _ = child.start_kill();
                let source = std::io::Error::other("stdout or stderr not piped");
                return Err(LxcError::Spawn {
                    instance: inst.index,
                    program: inner.program.clone(),
                    source,
                });
            };
            let exit = Box::pin(async move {
                match child.wait().await {
                    // lxc-execute exits with the workload's code, 128 + n when signal n killed it.
                    Ok(status) => match InstanceExit::from_status(status) {
                        InstanceExit::Exited(code) => crate::docker::exit_code(i64::from(code)),
                        other => other,
                    },
                    Err(e) => InstanceExit::Lost(format!("waiting for lxc-execute failed: {e}")),
                }
            });
            let stderr = with_oom_note(
                lines(stderr),
                prepared.made.cgroups.clone(),
                inst.index,
                prepared.memory_limits.get(&inst.index).copied().flatten(),
            );
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

    fn stats(&self, prepared: &LxcPrepared, index: u32) -> Result<CgroupStats, LxcError> {
        if prepared.made.cgroups.instance(index).is_none() {
            return Err(LxcError::NoInstance {
                trial: prepared.ctx.slug(),
                index,
            });
        }
        prepared
            .made
            .cgroups
            .stats(index)
            .map_err(|(rel, source)| LxcError::Cgroup { rel, source })
    }

    async fn stop(&self, prepared: &LxcPrepared) -> Result<(), LxcError> {
        let inner = Arc::clone(self.inner()?);
        let made = prepared.made.clone();
        let monitors = prepared
            .monitors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let timeout = self.config.stop_timeout;
        tokio::task::spawn_blocking(move || trial::stop(&inner, &made, &monitors, timeout))
            .await
            .map_err(|source| LxcError::Task {
                trial: prepared.ctx.slug(),
                source,
            })?
    }

    async fn teardown(&self, prepared: LxcPrepared) -> LeakReport {
        let Ok(inner) = self.inner().map(Arc::clone) else {
            return LeakReport::default();
        };
        let LxcPrepared {
            ctx,
            made,
            monitors,
            ..
        } = prepared;
        let monitors = monitors
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let timeout = self.config.stop_timeout;
        let names: Vec<String> = made.instances.iter().map(|i| i.name.clone()).collect();
        let task_inner = Arc::clone(&inner);
        let done = tokio::task::spawn_blocking(move || {
            let mut p: Vec<String> = trial::stop(&task_inner, &made, &monitors, timeout)
                .err()
                .map(|e| e.to_string())
                .into_iter()
                .collect();
            p.extend(trial::destroy(&task_inner, &made, timeout));
            p
        })
        .await;
        let mut report = trial::leftovers(&inner, &ctx.slug(), &names);
        let problems = done.unwrap_or_else(|e| vec![format!("teardown task failed: {e}")]);
        for p in problems {
            tracing::warn!(trial = %ctx.slug(), "teardown: {p}");
            if !report.is_clean() {
                report.push(Leak::Other {
                    what: format!("teardown error: {p}"),
                });
            }
        }
        report.merge(LeakReport::default());
        report
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
        let mut report = trial::leftovers(inner, &slug, &names);
        report.merge(LeakReport::default());
        report
    }
}

impl Drop for LxcBackend {
    fn drop(&mut self) {
        if let Ok(inner) = &self.inner {
            if let Err(e) = trial::remove_dir(&inner.state) {
                tracing::warn!("removing the lxc state directory: {e}");
            }
            trial::remove_lock_dirs(&inner.lxcpath);
            crate::docker::cgroups::release_agent(&inner.dir, &inner.hierarchies);
            // The agent's state directory, if nothing else of the agent is left in it.
            if let Some(parent) = inner.state.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}
