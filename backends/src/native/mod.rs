//! The `native` backend: each instance is a plain `isolab-workload NAME --param k=v…` process
//! that joins its instance cgroup (made and limited by the runner's cgroup engine) between fork
//! and exec ([`spawn`]), working in a tmpfs scratch directory of its own ([`super::scratch`]).

use isolab_model::pipeline::BackendKind;
use isolab_model::resolve::ResolvedPlatform;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::envelope::Ceilings;
use super::reap;
use super::scratch::Scratch;
use super::{AgentDir, Backend, BackendStatus, Launch, LeakReport, SpawnError, TrialContext};
use isolab_host::cgroup::{
    Cgroup, CgroupEngine, CgroupError, InstanceCgroup, TrialCgroupError, TrialCgroups,
};

mod spawn;

/// How long `isolab-workload --list` may take in the probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Scratch tmpfs size of an instance without a memory limit (ceilings normally give one).
const DEFAULT_SCRATCH_BYTES: u64 = 1 << 30;

/// What went wrong in the native backend.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// What every backend can refuse or fail at.
    #[error(transparent)]
    Common(#[from] crate::error::CommonError),
    /// The backend cannot run here.
    #[error("native backend unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// An instance's scratch tmpfs could not be made.
    #[error(transparent)]
    Scratch(#[from] super::scratch::ScratchError),
    /// A blocking task panicked or was cancelled.
    #[error("task of trial {trial} failed: {source}")]
    Task {
        /// The trial slug.
        trial: String,
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },
}

crate::error::from_common!(NativeError);

/// The native backend.
#[derive(Debug)]
pub struct NativeBackend {
    engine: Result<Arc<CgroupEngine>, String>,
    workload_bin: Result<PathBuf, String>,
    comm: String,
    probes: AtomicU64,
    /// Every instance's tmpfs working directory (`None` without an agent directory).
    scratch: Option<Scratch>,
}

/// One instance, prepared.
#[derive(Debug)]
struct NativeInstance {
    cgroup: InstanceCgroup,
    args: Vec<String>,
    /// Its scratch tmpfs: working directory and `$TMPDIR`.
    scratch: PathBuf,
}

/// A prepared native trial: the command lines of its instances and their scratch directories.
#[derive(Debug)]
pub struct NativePrepared {
    slug: String,
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
        let scratch = dir
            .as_ref()
            .ok()
            .map(|d| Scratch::new(&std::env::temp_dir(), d.name()));
        Self {
            engine: CgroupEngine::for_backend(&dir, ceilings),
            workload_bin,
            comm,
            probes: AtomicU64::new(0),
            scratch,
        }
    }

    /// The workload binary, if found.
    pub fn workload_bin(&self) -> Option<&std::path::Path> {
        self.workload_bin.as_deref().ok()
    }

    fn parts(&self) -> Result<(&Arc<CgroupEngine>, &PathBuf), NativeError> {
        let engine = self.cgroup_engine()?;
        let bin = self
            .workload_bin
            .as_ref()
            .map_err(|r| NativeError::Unavailable { reason: r.clone() })?;
        Ok((engine, bin))
    }

    async fn probe_inner(&self) -> Result<(), String> {
        let (engine, bin) = self.parts().map_err(|e| e.to_string())?;
        spawn::run_list(bin, PROBE_TIMEOUT).await?;
        let dir = Arc::clone(engine.dir());
        let rel = dir.rel(&format!(
            "probe-{}",
            self.probes.fetch_add(1, Ordering::Relaxed)
        ));
        let ceilings = engine.ceilings();
        let limits = isolab_host::cgroup::CgroupLimits {
            memory_bytes: Some(ceilings.memory_bytes),
            pids_max: Some(ceilings.pids),
            ..Default::default()
        };
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

    fn cgroup_engine(&self) -> Result<&Arc<CgroupEngine>, NativeError> {
        self.engine
            .as_ref()
            .map_err(|r| NativeError::Unavailable { reason: r.clone() })
    }

    async fn prepare(
        &self,
        ctx: &TrialContext,
        cgroups: &TrialCgroups,
    ) -> Result<NativePrepared, NativeError> {
        self.parts()?;
        ctx.platform(BackendKind::Native, ResolvedPlatform::as_native)?;
        let mut planned = Vec::with_capacity(ctx.trial.instances.len());
        for spec in &ctx.trial.instances {
            let args = super::args::workload_args(ctx, spec)?;
            let cgroup = cgroups.instance(spec.index).cloned().ok_or_else(|| {
                TrialCgroupError::NoInstance {
                    trial: ctx.slug(),
                    index: spec.index,
                }
            })?;
            planned.push((cgroup, args));
        }
        let slug = ctx.slug();
        let scratch = self
            .scratch
            .clone()
            .ok_or_else(|| NativeError::Unavailable {
                reason: "no scratch space without an agent directory".into(),
            })?;
        let task_slug = slug.clone();
        let task = tokio::task::spawn_blocking(move || {
            for e in scratch.destroy(&task_slug) {
                tracing::warn!(trial = %task_slug, "removing an earlier scratch space: {e}");
            }
            let made = planned
                .into_iter()
                .map(|(cgroup, args)| {
                    // As large as the memory the instance may use (the tmpfs is charged to it).
                    let size = cgroup.limits.memory_bytes.unwrap_or(DEFAULT_SCRATCH_BYTES);
                    let scratch = scratch.create(&task_slug, cgroup.index, size)?;
                    Ok(NativeInstance {
                        cgroup,
                        args,
                        scratch,
                    })
                })
                .collect::<Result<Vec<_>, NativeError>>();
            if made.is_err() {
                for cleanup in scratch.destroy(&task_slug) {
                    tracing::warn!("cleaning up after a failed prepare: {cleanup}");
                }
            }
            made
        });
        let instances = task.await.map_err(|source| NativeError::Task {
            trial: slug.clone(),
            source,
        })??;
        Ok(NativePrepared { slug, instances })
    }

    async fn start(&self, prepared: &mut NativePrepared) -> Result<Launch, NativeError> {
        let (_, bin) = self.parts()?;
        let mut handles = Vec::with_capacity(prepared.instances.len());
        for inst in &prepared.instances {
            let index = inst.cgroup.index;
            let join = inst.cgroup.join_target()?;
            let handle =
                spawn::spawn_instance(bin, &inst.args, index, &prepared.slug, &inst.scratch, join)
                    .await
                    .map_err(|source| SpawnError {
                        instance: index,
                        program: bin.clone(),
                        source,
                    })?;
            handles.push(handle);
        }
        Ok(handles.into())
    }

    /// Reaps the orphans of the killed workloads (they were reparented to us, a subreaper).
    async fn stop(&self, prepared: &NativePrepared) -> Result<(), NativeError> {
        let comm = self.comm.clone();
        tokio::task::spawn_blocking(move || drop(reap::reap_orphans(&comm)))
            .await
            .map_err(|source| NativeError::Task {
                trial: prepared.slug.clone(),
                source,
            })
    }

    async fn teardown(&self, prepared: NativePrepared) -> Vec<String> {
        let comm = self.comm.clone();
        let (scratch, slug) = (self.scratch.clone(), prepared.slug);
        // After the processes (the runner killed them): a tmpfs in use by a live process would
        // only be detached.
        tokio::task::spawn_blocking(move || {
            let errors = scratch.map(|s| s.destroy(&slug)).unwrap_or_default();
            reap::reap_orphans(&comm);
            errors
        })
        .await
        .unwrap_or_else(|e| vec![format!("teardown task failed: {e}")])
    }

    fn leftovers(&self, ctx: &TrialContext) -> LeakReport {
        let mut report = LeakReport::default();
        if let Some(s) = &self.scratch {
            for leak in s.leaks(&ctx.slug()) {
                report.push(leak);
            }
        }
        report
    }
}
