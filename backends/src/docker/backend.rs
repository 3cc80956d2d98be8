//! [`DockerBackend`]: the [`Backend`] implementation. See the module documentation of
//! [`super`] for the life of a trial.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use isolab_model::pipeline::BackendKind;
use isolab_model::resolve::ResolvedPlatform;
use tokio::sync::OnceCell;

use super::engine::{self, Engine, LABEL_AGENT};
use super::image::WorkloadImage;
use super::trial::{self, DockerInstance, Inner, Plan};
use super::{DockerConfig, DockerError, attach, probe};
use crate::args;
use crate::base::ContainerBase;
use crate::envelope::Ceilings;
use crate::{AgentDir, Backend, BackendStatus, Launch, LeakReport, TrialContext};
use isolab_host::cgroup::{CgroupEngine, CgroupPlan, TrialCgroups};
use isolab_host::netns::TrialNetwork;

/// The Docker backend.
#[derive(Debug)]
pub struct DockerBackend {
    inner: Result<Arc<Inner>, String>,
    config: Box<DockerConfig>,
    engine: tokio::sync::Mutex<Option<Result<Arc<Engine>, String>>>,
    /// The connected engine's socket, for the synchronous leak check and `Drop`.
    socket: Mutex<Option<PathBuf>>,
    image: Box<OnceCell<Result<WorkloadImage, String>>>,
    /// Serializes image imports.
    import: tokio::sync::Mutex<()>,
    probes: AtomicU64,
}

/// A prepared Docker trial: created (not started) containers, their cgroups and network.
#[derive(Debug)]
pub struct DockerPrepared {
    ctx: TrialContext,
    engine: Arc<Engine>,
    image: WorkloadImage,
    cgroups: TrialCgroups,
    instances: Vec<DockerInstance>,
    network: Option<TrialNetwork>,
    net_prefix: String,
}

impl DockerPrepared {
    /// The bridge network, when the platform asked for one.
    pub fn network(&self) -> Option<&TrialNetwork> {
        self.network.as_ref()
    }

    /// Container names, in index order.
    pub fn containers(&self) -> Vec<String> {
        self.instances.iter().map(|i| i.name.clone()).collect()
    }
}

impl DockerBackend {
    /// A Docker backend nesting its cgroups in `dir` and running `workload_bin`; either may be
    /// an error text, which then makes the backend unavailable with that reason. Connects (or
    /// starts a private daemon) at the first probe or trial, not here.
    pub fn new(
        dir: Result<Arc<AgentDir>, String>,
        workload_bin: Result<PathBuf, String>,
        ceilings: Ceilings,
        config: DockerConfig,
    ) -> Self {
        let inner = (|| {
            let base = ContainerBase::new(&dir, workload_bin, ceilings)?;
            Ok(Arc::new(Inner {
                // Short: the daemon's socket paths below it are limited (`daemon.rs`).
                private_dir: config.state_dir.join(base.dir.name()).join("dk"),
                tmp_bytes: config.tmp_bytes,
                base,
            }))
        })();
        Self {
            inner,
            config: Box::new(config),
            engine: tokio::sync::Mutex::new(None),
            socket: Mutex::new(None),
            image: Box::new(OnceCell::new()),
            import: tokio::sync::Mutex::new(()),
            probes: AtomicU64::new(0),
        }
    }

    /// Connects to the daemon now, starting a private one if the configuration says so (which
    /// otherwise happens at the first trial). Then probes check everything.
    pub async fn connect(&self) -> Result<(), DockerError> {
        self.engine(true).await.map(drop)
    }

    /// Whether an engine is connected (or a private daemon runs).
    pub(crate) async fn connected(&self) -> bool {
        matches!(&*self.engine.lock().await, Some(Ok(_)))
    }

    /// The private daemon's pid, when the backend started one.
    pub async fn private_daemon_pid(&self) -> Option<u32> {
        let guard = self.engine.lock().await;
        guard
            .as_ref()?
            .as_ref()
            .ok()?
            .daemon
            .as_ref()
            .map(super::PrivateDaemon::pid)
    }

    pub(crate) fn inner(&self) -> Result<&Arc<Inner>, DockerError> {
        self.inner
            .as_ref()
            .map_err(|r| DockerError::Unavailable { reason: r.clone() })
    }

    pub(crate) fn config(&self) -> &DockerConfig {
        &self.config
    }

    pub(crate) fn ceilings(&self) -> Ceilings {
        self.inner.as_ref().map_or(
            Ceilings {
                pids: 0,
                memory_bytes: 0,
            },
            |i| i.cgroups.ceilings(),
        )
    }

    /// The engine, connected (or its daemon started) on first use. A failure is kept until the
    /// next probe, so trials fail fast with the reason.
    pub(crate) async fn engine(&self, retry: bool) -> Result<Arc<Engine>, DockerError> {
        let inner = Arc::clone(self.inner()?);
        let mut guard = self.engine.lock().await;
        match &*guard {
            Some(Ok(e)) => return Ok(Arc::clone(e)),
            Some(Err(reason)) if !retry => {
                return Err(DockerError::Unavailable {
                    reason: reason.clone(),
                });
            }
            _ => {}
        }
        let opened = engine::open(&self.config, &inner.private_dir)
            .await
            .map(Arc::new);
        if let Ok(e) = &opened {
            *self
                .socket
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.socket.clone());
            engine::remove_orphans(&e.docker).await;
        }
        *guard = Some(opened.clone());
        opened.map_err(|reason| DockerError::Unavailable { reason })
    }

    /// Replaces the engine with a private daemon (when the existing one puts containers
    /// outside the agent's cgroup). The old engine's containers of this agent are removed.
    pub(crate) async fn use_private(&self) -> Result<Arc<Engine>, DockerError> {
        let inner = Arc::clone(self.inner()?);
        let mut guard = self.engine.lock().await;
        if let Some(Ok(old)) = guard.take() {
            let agent = inner.dir.name().to_owned();
            if let Ok(list) = engine::containers_with(&old.docker, &[(LABEL_AGENT, &agent)]).await {
                for (id, _) in list {
                    let _ = engine::remove(&old.docker, &id).await;
                }
            }
        }
        let config = DockerConfig {
            daemon: super::DaemonMode::Private,
            ..(*self.config).clone()
        };
        let opened = engine::open(&config, &inner.private_dir)
            .await
            .map(Arc::new);
        if let Ok(e) = &opened {
            *self
                .socket
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.socket.clone());
        }
        *guard = Some(opened.clone());
        opened.map_err(|reason| DockerError::Unavailable { reason })
    }

    /// The workload image (read and hashed once), present in the daemon.
    pub(crate) async fn image(&self, engine: &Engine) -> Result<WorkloadImage, DockerError> {
        let inner = Arc::clone(self.inner()?);
        let image = self
            .image
            .get_or_init(|| async move {
                let bin = inner.workload_bin.clone();
                tokio::task::spawn_blocking(move || WorkloadImage::build(&bin))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| {
                        r.map_err(|e| format!("cannot read {}: {e}", inner.workload_bin.display()))
                    })
            })
            .await
            .clone()
            .map_err(|reason| DockerError::Image {
                tag: super::image::REPOSITORY.into(),
                reason,
            })?;
        let _one_at_a_time = self.import.lock().await;
        if image.ensure(&engine.docker).await? {
            tracing::info!(image = %image.reference, "imported the workload image");
        }
        Ok(image)
    }

    fn socket(&self) -> Option<PathBuf> {
        self.socket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Backend for DockerBackend {
    type Error = DockerError;
    type Prepared = DockerPrepared;

    fn name(&self) -> &'static str {
        "docker"
    }

    fn kill_timeout(&self) -> std::time::Duration {
        self.config.stop_timeout
    }

    async fn probe(&self) -> BackendStatus {
        let n = self.probes.fetch_add(1, Ordering::Relaxed);
        match probe::run(self, n).await {
            Ok(version) => crate::probe_status(self.name(), version, Ok(())),
            Err((version, reason)) => crate::probe_status(self.name(), version, Err(reason)),
        }
    }

    fn cgroup_engine(&self) -> Result<&Arc<CgroupEngine>, DockerError> {
        Ok(&self.inner()?.cgroups)
    }

    async fn cgroup_plan(&self, ctx: &TrialContext) -> Result<CgroupPlan, DockerError> {
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
    ) -> Result<DockerPrepared, DockerError> {
        let inner = Arc::clone(self.inner()?);
        let platform = ctx.platform(BackendKind::Docker, ResolvedPlatform::as_docker)?;
        let kind = platform.rootfs;
        inner.check_static(kind)?;
        let mode = platform.network;
        let plans: Vec<Plan> = args::trial_args(ctx)?;
        let engine = self.engine(false).await?;
        if let Some(runtime) = platform.runtime.as_deref() {
            check_runtime(&engine, runtime).await?;
        }
        let image = self.image(&engine).await?;
        let slug = ctx.slug();
        let net_prefix = inner.net_prefix(&slug);
        let indexes = plans.iter().map(|(i, _)| *i).collect();
        let network = trial::make_network(&slug, &net_prefix, mode, indexes).await?;
        let names = trial::Names {
            slug: &slug,
            net_prefix: &net_prefix,
            image: &image.reference,
        };
        let instances = trial::create(
            &inner,
            &engine,
            cgroups,
            &names,
            &plans,
            kind,
            mode,
            platform.runtime.as_deref(),
        )
        .await?;
        Ok(DockerPrepared {
            ctx: ctx.clone(),
            engine,
            image,
            cgroups: cgroups.clone(),
            instances,
            network,
            net_prefix,
        })
    }

    async fn start(&self, prepared: &mut DockerPrepared) -> Result<Launch, DockerError> {
        let docker = &prepared.engine.docker;
        let attached = futures::future::join_all(
            prepared
                .instances
                .iter()
                .map(|i| attach::attach(docker, &i.name)),
        )
        .await;
        let attached = attached.into_iter().collect::<Result<Vec<_>, _>>()?;
        let starts = prepared.instances.iter().map(|i| async move {
            docker
                .start_container(&i.name, None)
                .await
                .map_err(DockerError::api("start", &i.name))
        });
        for started in futures::future::join_all(starts).await {
            started?;
        }
        let mut handles = Vec::with_capacity(attached.len());
        for (inst, out) in prepared.instances.iter().zip(attached) {
            let state = docker
                .inspect_container(&inst.name, None)
                .await
                .map_err(DockerError::api("inspect", &inst.name))?
                .state;
            let pid = state
                .and_then(|s| s.pid)
                .and_then(|p| u32::try_from(p).ok())
                .filter(|&p| p > 0);
            if let Some(pid) = pid
                && prepared.cgroups.holds(inst.index, pid) == Some(false)
            {
                return Err(DockerError::Misplaced {
                    instance: inst.index,
                    pid,
                    cgroup: prepared.cgroups.instance_rel(inst.index),
                    runtime: prepared
                        .ctx
                        .trial
                        .platform_spec
                        .as_docker()
                        .and_then(|p| p.runtime.clone())
                        .unwrap_or_default(),
                });
            }
            if let (Some(net), Some(pid)) = (prepared.network.as_ref(), pid)
                && let Some(inet) = net.instances.iter().find(|n| n.index == inst.index)
            {
                let (inet, index) = (inet.clone(), inst.index);
                tokio::task::spawn_blocking(move || {
                    isolab_host::netns::attach_to_process(&inet, pid)
                })
                .await
                .map_err(|source| DockerError::Task {
                    trial: prepared.ctx.slug(),
                    source,
                })?
                .map_err(|source| DockerError::Network {
                    instance: index,
                    source,
                })?;
            }
            let oom = attach::OomWatch {
                cgroups: prepared.cgroups.clone(),
                memory_bytes: prepared
                    .cgroups
                    .instance(inst.index)
                    .and_then(|c| c.limits.memory_bytes),
            };
            handles.push(attach::handle(
                docker,
                &inst.name,
                inst.index,
                pid,
                out,
                Some(oom),
            ));
        }
        Ok(handles.into())
    }

    async fn teardown(&self, prepared: DockerPrepared) -> Vec<String> {
        let names: Vec<String> = prepared.instances.iter().map(|i| i.name.clone()).collect();
        let mut problems = trial::destroy(&prepared.engine, &names, &prepared.net_prefix).await;
        // Shims of removed containers daemonized, so they are (zombie) children of ours now.
        isolab_host::reap::reap_orphans("containerd-shim");
        if self.config.remove_image
            && let Err(e) = prepared.image.remove(&prepared.engine.docker).await
        {
            problems.push(e.to_string());
        }
        problems
    }

    fn leftovers(&self, ctx: &TrialContext) -> LeakReport {
        let Ok(inner) = self.inner() else {
            return LeakReport::default();
        };
        trial::leftovers(inner, self.socket(), self.config.api_timeout, &ctx.slug())
    }
}

impl Drop for DockerBackend {
    fn drop(&mut self) {
        let Ok(inner) = self.inner.as_ref().map(Arc::clone) else {
            return;
        };
        if let Some(socket) = self.socket() {
            trial::remove_agent_containers(&inner, socket, self.config.api_timeout);
        }
        // Stops a private daemon (and removes its directory), then the agent's state directory
        // if nothing else of the agent is left in it.
        drop(self.engine.get_mut().take());
        if let Some(parent) = inner.private_dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
        inner.cgroups.release_unmanaged();
        isolab_host::reap::reap_orphans("containerd-shim");
    }
}

/// A docker platform's runtime must be a name (never a path, nor a containerd shim the daemon
/// would look up) among the runtimes the daemon lists in `docker info`.
async fn check_runtime(engine: &Engine, runtime: &str) -> Result<(), DockerError> {
    let bad = |reason: String| DockerError::Runtime {
        runtime: runtime.to_owned(),
        reason,
    };
    isolab_model::validate::check_runtime_name(runtime).map_err(bad)?;
    let info = engine
        .docker
        .info()
        .await
        .map_err(DockerError::api("info", "daemon"))?;
    let mut known: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
    known.sort();
    if known.iter().any(|k| k == runtime) {
        return Ok(());
    }
    Err(bad(format!(
        "not a runtime of the daemon (known: {})",
        if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        }
    )))
}
