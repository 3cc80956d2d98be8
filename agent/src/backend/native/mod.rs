//! The `native` backend: each instance is a plain `isolab-workload NAME --param k=v…` process
//! in its own cgroup `<agent dir>/<trial id>-a<attempt>/i<index>`, which it joins between fork and
//! exec. The cgroup accounts for it and holds the safety envelope ([`super::envelope`]).

use isolab_model::pipeline::BackendKind;
use isolab_model::resolve::ResolvedPlatform;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::envelope::{Ceilings, instance_limits};
use super::reap;
use super::scratch::Scratch;
use super::{
    AgentDir, Backend, BackendStatus, Launch, Leak, LeakReport, TrialContext, process_alive,
};
use crate::cgroup::{AnyCgroup, Cgroup, CgroupError, CgroupStats};

mod spawn;

/// How long killing one instance's processes may take before it counts as a failure.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `isolab-workload --list` may take in the probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Scratch tmpfs size of an instance without a memory limit (ceilings normally give one).
const DEFAULT_SCRATCH_BYTES: u64 = 1 << 30;

/// What went wrong in the native backend.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// The trial's platform is another backend's.
    #[error(transparent)]
    Platform(#[from] crate::backend::PlatformMismatch),
    /// The backend cannot run here.
    #[error("native backend unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// The instance's command line is not allowed.
    #[error(transparent)]
    Args(#[from] crate::backend::args::ArgsError),
    /// A cgroup operation failed.
    #[error("cgroup {rel}: {source}")]
    Cgroup {
        /// The cgroup, relative to the agent's own.
        rel: String,
        /// The cause.
        #[source]
        source: CgroupError,
    },
    /// The workload process could not be started.
    #[error("instance {instance}: cannot start {}: {source}", program.display())]
    Spawn {
        /// Instance index.
        instance: u32,
        /// The workload binary.
        program: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An instance's scratch tmpfs could not be made.
    #[error(transparent)]
    Scratch(#[from] super::scratch::ScratchError),
    /// Statistics asked for an instance the trial does not have.
    #[error("no instance {index} in trial {trial}")]
    NoInstance {
        /// The trial slug.
        trial: String,
        /// The index asked for.
        index: u32,
    },
    /// A blocking cgroup task panicked or was cancelled.
    #[error("cgroup task of trial {trial} failed: {source}")]
    Task {
        /// The trial slug.
        trial: String,
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// The native backend.
#[derive(Debug)]
pub struct NativeBackend {
    dir: Result<Arc<AgentDir>, String>,
    workload_bin: Result<PathBuf, String>,
    ceilings: Ceilings,
    io_device: Option<(u64, u64)>,
    comm: String,
    probes: AtomicU64,
    /// Every instance's tmpfs working directory (`None` without an agent directory).
    scratch: Option<Scratch>,
}

/// One instance, prepared.
#[derive(Debug)]
struct NativeInstance {
    index: u32,
    cgroup: Arc<AnyCgroup>,
    args: Vec<String>,
    /// Its scratch tmpfs: working directory and `$TMPDIR`.
    scratch: PathBuf,
}

/// A prepared native trial: its cgroups and the command lines of its instances.
#[derive(Debug)]
pub struct NativePrepared {
    ctx: TrialContext,
    trial_cgroup: Arc<AnyCgroup>,
    instances: Vec<NativeInstance>,
}

impl NativeBackend {
    /// A native backend nesting its cgroups in `dir` and running `workload_bin`; either may be
    /// an error text, which then makes the backend unavailable with that reason. Makes this
    /// process a child subreaper so that orphans of killed workloads can be reaped.
    pub fn new(
        dir: Result<Arc<AgentDir>, String>,
        workload_bin: Result<PathBuf, String>,
        ceilings: Ceilings,
    ) -> Self {
        if dir.is_ok()
            && let Err(e) = reap::become_subreaper()
        {
            tracing::warn!("cannot become a child subreaper; orphans of workloads go to init: {e}");
        }
        let comm = workload_bin
            .as_ref()
            .map(|p| reap::comm_of(p))
            .unwrap_or_default();
        let io_device = super::envelope::block_device_of(&std::env::temp_dir());
        let scratch = dir
            .as_ref()
            .ok()
            .map(|d| Scratch::new(&std::env::temp_dir(), d.name()));
        Self {
            dir,
            workload_bin,
            ceilings,
            io_device,
            comm,
            probes: AtomicU64::new(0),
            scratch,
        }
    }

    /// The workload binary, if found.
    pub fn workload_bin(&self) -> Option<&std::path::Path> {
        self.workload_bin.as_deref().ok()
    }

    fn parts(&self) -> Result<(&Arc<AgentDir>, &PathBuf), NativeError> {
        let dir = self
            .dir
            .as_ref()
            .map_err(|r| NativeError::Unavailable { reason: r.clone() })?;
        let bin = self
            .workload_bin
            .as_ref()
            .map_err(|r| NativeError::Unavailable { reason: r.clone() })?;
        Ok((dir, bin))
    }

    async fn probe_inner(&self) -> Result<(), String> {
        let (dir, bin) = self.parts().map_err(|e| e.to_string())?;
        spawn::run_list(bin, PROBE_TIMEOUT).await?;
        let rel = dir.rel(&format!(
            "probe-{}",
            self.probes.fetch_add(1, Ordering::Relaxed)
        ));
        let limits = crate::cgroup::CgroupLimits {
            memory_bytes: Some(self.ceilings.memory_bytes),
            pids_max: Some(self.ceilings.pids),
            ..Default::default()
        };
        let dir = Arc::clone(dir);
        tokio::task::spawn_blocking(move || -> Result<(), CgroupError> {
            let cg = dir.manager().create(&rel)?;
            let applied = cg.apply(&limits);
            cg.remove()?;
            applied
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot make cgroups: {e}"))
    }
}

impl Drop for NativeBackend {
    fn drop(&mut self) {
        if let Some(s) = &self.scratch {
            s.release();
        }
    }
}

/// Kills and removes a cgroup subtree.
fn destroy(cg: &AnyCgroup) -> Result<(), NativeError> {
    let rel = cg.rel_path().to_owned();
    cg.kill_all(KILL_TIMEOUT)
        .map_err(|source| NativeError::Cgroup {
            rel: rel.clone(),
            source,
        })?;
    cg.remove()
        .map_err(|source| NativeError::Cgroup { rel, source })
}

impl Backend for NativeBackend {
    type Error = NativeError;
    type Prepared = NativePrepared;

    fn name(&self) -> &'static str {
        "native"
    }

    async fn probe(&self) -> BackendStatus {
        match self.probe_inner().await {
            Ok(()) => BackendStatus {
                name: self.name().into(),
                available: true,
                version: env!("CARGO_PKG_VERSION").into(),
                ..BackendStatus::default()
            },
            Err(reason) => BackendStatus::unavailable(self.name(), reason),
        }
    }

    async fn prepare(&self, ctx: &TrialContext) -> Result<NativePrepared, NativeError> {
        let (dir, _) = self.parts()?;
        let platform = ctx.platform(BackendKind::Native, ResolvedPlatform::as_native)?;
        let mut specs = Vec::with_capacity(ctx.trial.instances.len());
        for spec in &ctx.trial.instances {
            let args = super::args::workload_args(ctx, spec)?;
            let limits = instance_limits(self.ceilings, &platform.limits, spec, self.io_device);
            specs.push((spec.index, args, limits));
        }
        let dir = Arc::clone(dir);
        let slug = ctx.slug();
        let scratch = self
            .scratch
            .clone()
            .ok_or_else(|| NativeError::Unavailable {
                reason: "no scratch space without an agent directory".into(),
            })?;
        let task = tokio::task::spawn_blocking(move || {
            let manager = dir.manager();
            let trial_rel = dir.rel(&slug);
            let cg_err = |rel: &str| {
                let rel = rel.to_owned();
                move |source| NativeError::Cgroup { rel, source }
            };
            if manager.exists(&trial_rel) {
                // Left by an earlier run of this attempt that did not finish its teardown.
                destroy(&manager.open(&trial_rel).map_err(cg_err(&trial_rel))?)?;
            }
            for e in scratch.destroy(&slug) {
                tracing::warn!(trial = %slug, "removing an earlier scratch space: {e}");
            }
            let trial_cg = manager.create(&trial_rel).map_err(cg_err(&trial_rel))?;
            let made = specs
                .into_iter()
                .map(|(index, args, limits)| {
                    let rel = format!("{trial_rel}/i{index}");
                    let cg = manager.create(&rel).map_err(cg_err(&rel))?;
                    cg.apply(&limits).map_err(cg_err(&rel))?;
                    // As large as the memory the instance may use (the tmpfs is charged to it).
                    let size = limits.memory_bytes.unwrap_or(DEFAULT_SCRATCH_BYTES);
                    let scratch = scratch.create(&slug, index, size)?;
                    Ok(NativeInstance {
                        index,
                        cgroup: Arc::new(cg),
                        args,
                        scratch,
                    })
                })
                .collect::<Result<Vec<_>, NativeError>>();
            match made {
                Ok(instances) => Ok((trial_cg, instances)),
                Err(e) => {
                    if let Err(cleanup) = destroy(&trial_cg) {
                        tracing::warn!("cleaning up after a failed prepare: {cleanup}");
                    }
                    for cleanup in scratch.destroy(&slug) {
                        tracing::warn!("cleaning up after a failed prepare: {cleanup}");
                    }
                    Err(e)
                }
            }
        });
        let (trial_cgroup, instances) = task.await.map_err(|source| NativeError::Task {
            trial: ctx.slug(),
            source,
        })??;
        Ok(NativePrepared {
            ctx: ctx.clone(),
            trial_cgroup: Arc::new(trial_cgroup),
            instances,
        })
    }

    async fn start(&self, prepared: &mut NativePrepared) -> Result<Launch, NativeError> {
        let (_, bin) = self.parts()?;
        let slug = prepared.ctx.slug();
        let mut handles = Vec::with_capacity(prepared.instances.len());
        for inst in &prepared.instances {
            let join = inst
                .cgroup
                .join_target()
                .map_err(|source| NativeError::Cgroup {
                    rel: inst.cgroup.rel_path().to_owned(),
                    source,
                })?;
            let handle =
                spawn::spawn_instance(bin, &inst.args, inst.index, &slug, &inst.scratch, join)
                    .await
                    .map_err(|source| NativeError::Spawn {
                        instance: inst.index,
                        program: bin.clone(),
                        source,
                    })?;
            handles.push(handle);
        }
        Ok(Launch {
            instances: handles,
            accel: None,
        })
    }

    fn stats(&self, prepared: &NativePrepared, index: u32) -> Result<CgroupStats, NativeError> {
        let inst = prepared
            .instances
            .iter()
            .find(|i| i.index == index)
            .ok_or_else(|| NativeError::NoInstance {
                trial: prepared.ctx.slug(),
                index,
            })?;
        inst.cgroup.stats().map_err(|source| NativeError::Cgroup {
            rel: inst.cgroup.rel_path().to_owned(),
            source,
        })
    }

    async fn stop(&self, prepared: &NativePrepared) -> Result<(), NativeError> {
        let cgroups: Vec<_> = prepared
            .instances
            .iter()
            .map(|i| Arc::clone(&i.cgroup))
            .collect();
        let comm = self.comm.clone();
        let trial = prepared.ctx.slug();
        tokio::task::spawn_blocking(move || {
            let mut first_err = None;
            for cg in cgroups {
                if let Err(source) = cg.kill_all(KILL_TIMEOUT) {
                    let rel = cg.rel_path().to_owned();
                    first_err.get_or_insert(NativeError::Cgroup { rel, source });
                }
            }
            reap::reap_orphans(&comm);
            first_err.map_or(Ok(()), Err)
        })
        .await
        .map_err(|source| NativeError::Task { trial, source })?
    }

    async fn teardown(&self, prepared: NativePrepared) -> LeakReport {
        let NativePrepared {
            ctx,
            trial_cgroup,
            instances,
        } = prepared;
        let comm = self.comm.clone();
        let (scratch, slug) = (self.scratch.clone(), ctx.slug());
        let done = tokio::task::spawn_blocking(move || {
            let mut errors = Vec::new();
            for inst in &instances {
                if let Err(e) = destroy(&inst.cgroup) {
                    errors.push(e.to_string());
                }
            }
            if let Err(e) = destroy(&trial_cgroup) {
                errors.push(e.to_string());
            }
            // After the processes: a tmpfs in use by a live process would only be detached.
            if let Some(s) = scratch {
                errors.extend(s.destroy(&slug));
            }
            reap::reap_orphans(&comm);
            errors
        })
        .await;
        let mut report = self.leftovers(&ctx);
        match done {
            Ok(errors) if errors.is_empty() => {}
            Ok(errors) => {
                for e in errors {
                    tracing::warn!(trial = %ctx.slug(), "teardown: {e}");
                    if !report.is_clean() {
                        report.push(Leak::Other {
                            what: format!("teardown error: {e}"),
                        });
                    }
                }
            }
            Err(e) => report.push(Leak::Other {
                what: format!("teardown task failed: {e}"),
            }),
        }
        report
    }

    fn leftovers(&self, ctx: &TrialContext) -> LeakReport {
        let mut report = LeakReport::default();
        if let Some(s) = &self.scratch {
            for leak in s.leaks(&ctx.slug()) {
                report.push(leak);
            }
        }
        let Ok(dir) = &self.dir else {
            return report;
        };
        let rel = dir.rel(&ctx.slug());
        if !dir.manager().exists(&rel) {
            return report;
        }
        if let Ok(pids) = dir.manager().open(&rel).and_then(|cg| cg.pids()) {
            for pid in pids {
                let comm = process_alive(pid, None).unwrap_or_default();
                report.push(Leak::Process { pid, comm });
            }
        }
        report.push(Leak::Cgroup { path: rel });
        report
    }
}
