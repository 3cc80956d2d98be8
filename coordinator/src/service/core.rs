//! The coordinator service's core: a FIFO queue of submitted runs, executed one at a time
//! through [`crate::run::run`], with their events on the service's bus. Knows nothing of gRPC.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use isolab_model::manifest::RunStatus;
use isolab_model::plan::{self, Filter};
use tokio::sync::{Notify, watch};

use crate::client::ClientTls;
use crate::events::{EventBus, EventKind, RunEvent, Subscription};
use crate::run::RunOptions;
use crate::rundir;
use crate::service::supervise::{self, Executor};

/// How the service runs pipelines.
#[derive(Debug, Clone, Default)]
pub struct ServiceConfig {
    /// Results directory (runs land in `<results>/<run_id>/`; submitted pipeline files in
    /// `<results>/.submitted/<run_id>/`).
    pub results: PathBuf,
    /// Agent addresses; empty (and no inventory) → an embedded agent per run.
    pub agents: Vec<String>,
    /// Inventory file.
    pub inventory: Option<PathBuf>,
    /// NATS server whose announced agents each run uses (`--discover`).
    pub discover: Option<String>,
    /// Heartbeats an announced agent may miss; 0 → the default.
    pub missed_heartbeats: u32,
    /// Mutual TLS towards the agents.
    pub tls: Option<ClientTls>,
    /// Where events go; must have an in-process bus for `watch`.
    pub bus: EventBus,
}

/// A pipeline submitted to the service.
#[derive(Debug, Clone, Default)]
pub struct SubmitRequest {
    /// The pipeline's YAML text.
    pub pipeline_yaml: String,
    /// A name for diagnostics.
    pub file_name: String,
    /// Profile to apply.
    pub profile: Option<String>,
    /// `KEY=VALUE` overrides.
    pub sets: Vec<String>,
    /// `--only` expression.
    pub only: Option<String>,
}

/// The answer to a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The new run's id.
    pub run_id: String,
    /// Trials planned.
    pub trials: u32,
    /// Runs queued or running before it.
    pub queued_ahead: u32,
}

/// Where a submitted run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunPhase {
    /// Waiting for the runs before it.
    Queued,
    /// Running.
    Running,
    /// Every trial ok.
    Ok,
    /// Some trial failed.
    Failed,
    /// Stopped (cancel or shutdown) with trials not run.
    Interrupted,
    /// Cancelled before it started.
    Cancelled,
    /// Could not run at all (see `error`).
    Error,
}

impl RunPhase {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
            Self::Cancelled => "cancelled",
            Self::Error => "error",
        }
    }
}

/// What the service knows of a run.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// Its id.
    pub run_id: String,
    /// Its pipeline's name.
    pub pipeline: String,
    /// Where it is.
    pub phase: RunPhase,
    /// When it was submitted (RFC 3339).
    pub submitted_at: String,
    /// Its run directory, once it exists.
    pub run_dir: Option<PathBuf>,
    /// Trials planned.
    pub trials: u32,
    /// Trials ok.
    pub ok: u32,
    /// Trials failed.
    pub failed: u32,
    /// Trials not run.
    pub not_run: u32,
    /// Why it could not run.
    pub error: Option<String>,
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The pipeline is invalid (one diagnostic per line).
    #[error("invalid pipeline:\n{0}")]
    Invalid(String),
    /// `--only` is invalid or matches nothing.
    #[error("--only: {0}")]
    Filter(String),
    /// The service is shutting down.
    #[error("the service is shutting down")]
    ShuttingDown,
    /// The pipeline could not be staged.
    #[error("cannot stage the pipeline in {path}: {source}")]
    Stage {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Why a run could not be found.
#[derive(Debug, thiserror::Error)]
#[error("no run `{run_id}`")]
pub struct UnknownRunError {
    /// The id asked for.
    pub run_id: String,
}

#[derive(Debug)]
struct Entry {
    info: RunInfo,
    opts: RunOptions,
    cancel: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct State {
    runs: BTreeMap<String, Entry>,
    order: Vec<String>,
    queue: VecDeque<String>,
    shutting_down: bool,
}

/// The service core; clones share it.
#[derive(Debug, Clone)]
pub struct ServiceCore {
    config: Arc<ServiceConfig>,
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
    drain: watch::Sender<bool>,
    executor: Executor,
}

impl ServiceCore {
    /// A core with `config`; call [`ServiceCore::supervise_queue`] to start executing runs.
    pub fn new(config: ServiceConfig) -> Self {
        Self::with_executor(config, Executor::default())
    }

    /// A core whose runs are executed by `executor` (tests; production uses [`Self::new`]).
    pub(crate) fn with_executor(config: ServiceConfig, executor: Executor) -> Self {
        Self {
            config: Arc::new(config),
            state: Arc::new(Mutex::new(State::default())),
            wake: Arc::new(Notify::new()),
            drain: watch::channel(false).0,
            executor,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Validates and queues a pipeline.
    pub fn submit(&self, req: SubmitRequest) -> Result<Submitted, SubmitError> {
        if self.lock().shutting_down {
            return Err(SubmitError::ShuttingDown);
        }
        let file_name = std::path::Path::new(&req.file_name)
            .file_name()
            .map_or_else(
                || "submitted.yaml".to_owned(),
                |f| f.to_string_lossy().into_owned(),
            );
        let loaded = isolab_model::load::load_str_profile(
            &file_name,
            &req.pipeline_yaml,
            req.profile.as_deref(),
            &req.sets,
        )
        .map_err(|e| {
            SubmitError::Invalid(
                e.diagnostics()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        })?;
        let mut trials = plan::plan(&loaded.pipeline);
        if let Some(expr) = &req.only {
            let f = Filter::parse(expr).map_err(|e| SubmitError::Filter(e.to_string()))?;
            trials.retain(|t| f.matches(t));
            if trials.is_empty() {
                return Err(SubmitError::Filter(format!("`{expr}` matches no trial")));
            }
        }
        let run_id = rundir::new_run_id(&loaded.pipeline.name);
        let stage = self.config.results.join(".submitted").join(&run_id);
        let path = stage.join(&file_name);
        std::fs::create_dir_all(&stage)
            .and_then(|()| std::fs::write(&path, &req.pipeline_yaml))
            .map_err(|source| SubmitError::Stage {
                path: path.clone(),
                source,
            })?;
        let opts = RunOptions {
            pipeline: path,
            results: self.config.results.clone(),
            agents: self.config.agents.clone(),
            only: req.only,
            overrides: req.sets,
            profile: req.profile,
            tls: self.config.tls.clone(),
            inventory: self.config.inventory.clone(),
            discover: self.config.discover.clone(),
            missed_heartbeats: self.config.missed_heartbeats,
            events: Some(self.config.bus.clone()),
            run_id: Some(run_id.clone()),
            drain: Some(self.drain.subscribe()),
            ..RunOptions::default()
        };
        let trials = u32::try_from(trials.len()).unwrap_or(u32::MAX);
        let info = RunInfo {
            run_id: run_id.clone(),
            pipeline: loaded.pipeline.name.clone(),
            phase: RunPhase::Queued,
            submitted_at: rundir::now_rfc3339(),
            run_dir: None,
            trials,
            ok: 0,
            failed: 0,
            not_run: 0,
            error: None,
        };
        let mut st = self.lock();
        let queued_ahead = st
            .runs
            .values()
            .filter(|e| matches!(e.info.phase, RunPhase::Queued | RunPhase::Running))
            .count();
        st.runs.insert(
            run_id.clone(),
            Entry {
                info,
                opts,
                cancel: watch::channel(false).0,
            },
        );
        st.order.push(run_id.clone());
        st.queue.push_back(run_id.clone());
        drop(st);
        self.wake.notify_one();
        tracing::info!(%run_id, trials, "run queued");
        Ok(Submitted {
            run_id,
            trials,
            queued_ahead: u32::try_from(queued_ahead).unwrap_or(u32::MAX),
        })
    }

    /// Every run, in submission order.
    pub fn list(&self) -> Vec<RunInfo> {
        let st = self.lock();
        st.order
            .iter()
            .filter_map(|id| st.runs.get(id).map(|e| e.info.clone()))
            .collect()
    }

    /// Cancels a run: a queued one never starts; a running one has its trials cancelled.
    pub fn cancel(&self, run_id: &str) -> Result<RunPhase, UnknownRunError> {
        let mut st = self.lock();
        let entry = st.runs.get_mut(run_id).ok_or_else(|| UnknownRunError {
            run_id: run_id.to_owned(),
        })?;
        match entry.info.phase {
            RunPhase::Queued => {
                entry.info.phase = RunPhase::Cancelled;
                entry.info.not_run = entry.info.trials;
                let not_run = entry.info.trials;
                st.queue.retain(|id| id != run_id);
                drop(st);
                self.publish_finished(run_id, RunStatus::Interrupted, not_run);
                Ok(RunPhase::Cancelled)
            }
            RunPhase::Running => {
                let _ = entry.cancel.send(true);
                Ok(RunPhase::Running)
            }
            done => Ok(done),
        }
    }

    /// The events of a run (`None`: the newest), history then live.
    pub fn watch(&self, run_id: Option<&str>) -> Result<Subscription, UnknownRunError> {
        if let Some(id) = run_id
            && !self.lock().runs.contains_key(id)
        {
            return Err(UnknownRunError {
                run_id: id.to_owned(),
            });
        }
        let bus = self.config.bus.memory().cloned().unwrap_or_default();
        Ok(bus.subscribe(run_id))
    }

    fn publish_finished(&self, run_id: &str, status: RunStatus, not_run: u32) {
        self.config.bus.publish(RunEvent::now(
            run_id,
            EventKind::RunFinished {
                status,
                ok: 0,
                failed: 0,
                not_run,
            },
        ));
    }

    /// Executes queued runs like [`Self::run_queue`], and restarts the queue if its task dies
    /// (a bug in the queue itself: a panic inside a run is already caught per run), marking the
    /// run it was executing as an error, so later submissions are never queued forever.
    pub async fn supervise_queue(&self) {
        loop {
            let core = self.clone();
            match tokio::spawn(async move { core.run_queue().await }).await {
                Ok(()) => return,
                Err(e) => {
                    let why = if e.is_panic() {
                        supervise::panic_message(e.into_panic().as_ref())
                    } else {
                        "cancelled".to_owned()
                    };
                    tracing::error!("the run queue task died ({why}); restarting it");
                    let mut st = self.lock();
                    let running: Vec<String> = st
                        .runs
                        .iter_mut()
                        .filter(|(_, e)| e.info.phase == RunPhase::Running)
                        .map(|(id, e)| {
                            e.info.phase = RunPhase::Error;
                            e.info.error =
                                Some(format!("internal error: the run queue died ({why})"));
                            id.clone()
                        })
                        .collect();
                    drop(st);
                    for id in running {
                        self.publish_finished(&id, RunStatus::Failed, 0);
                    }
                }
            }
        }
    }

    /// Executes queued runs one at a time until [`ServiceCore::shutdown`] drained the service.
    /// Each run executes in its own task: one that panics ends as an error, the queue goes on.
    pub async fn run_queue(&self) {
        loop {
            let next = {
                let mut st = self.lock();
                if st.shutting_down {
                    return;
                }
                st.queue.pop_front().and_then(|id| {
                    let e = st.runs.get_mut(&id)?;
                    e.info.phase = RunPhase::Running;
                    Some((id, e.opts.clone(), e.cancel.subscribe()))
                })
            };
            let Some((run_id, opts, cancel)) = next else {
                let mut drain = self.drain.subscribe();
                tokio::select! {
                    () = self.wake.notified() => {}
                    _ = drain.wait_for(|d| *d) => return,
                }
                continue;
            };
            tracing::info!(%run_id, "run started");
            let result = self.executor.execute(opts, cancel).await;
            let mut st = self.lock();
            let Some(e) = st.runs.get_mut(&run_id) else {
                continue;
            };
            match result {
                Ok(outcome) => {
                    let status = read_status(&outcome.run_dir);
                    e.info.phase = match status {
                        Some(RunStatus::Ok) => RunPhase::Ok,
                        Some(RunStatus::Failed) => RunPhase::Failed,
                        _ => RunPhase::Interrupted,
                    };
                    e.info.run_dir = Some(outcome.run_dir);
                    e.info.ok = u32::try_from(outcome.ok).unwrap_or(u32::MAX);
                    e.info.failed = u32::try_from(outcome.failed).unwrap_or(u32::MAX);
                    e.info.not_run = u32::try_from(outcome.not_run).unwrap_or(u32::MAX);
                }
                Err(err) => {
                    tracing::warn!(%run_id, "run failed: {err}");
                    e.info.phase = RunPhase::Error;
                    e.info.error = Some(err.to_string());
                    let dir = self.config.results.join(&run_id);
                    e.info.run_dir = dir.is_dir().then_some(dir);
                    drop(st);
                    self.publish_finished(&run_id, RunStatus::Failed, 0);
                    continue;
                }
            }
            tracing::info!(%run_id, phase = e.info.phase.as_str(), "run ended");
        }
    }

    /// Stops accepting runs, lets running trials finish within `drain_timeout` (then cancels
    /// them), records what was not dispatched as not run, and cancels the queued runs. Returns
    /// once the running run (if any) has written its manifest, or `drain_timeout` plus a grace
    /// for the cancellation has passed.
    pub async fn shutdown(&self, drain_timeout: Duration) {
        let running: Vec<(String, watch::Sender<bool>)> = {
            let mut st = self.lock();
            st.shutting_down = true;
            let queued: Vec<String> = st.queue.drain(..).collect();
            for id in &queued {
                if let Some(e) = st.runs.get_mut(id) {
                    e.info.phase = RunPhase::Cancelled;
                    e.info.not_run = e.info.trials;
                }
            }
            let running = st
                .runs
                .iter()
                .filter(|(_, e)| e.info.phase == RunPhase::Running)
                .map(|(id, e)| (id.clone(), e.cancel.clone()))
                .collect();
            drop(st);
            for id in &queued {
                tracing::warn!(run_id = %id, "shutting down: queued run not started");
                let n = self.lock().runs.get(id).map_or(0, |e| e.info.trials);
                self.publish_finished(id, RunStatus::Interrupted, n);
            }
            running
        };
        let _ = self.drain.send(true);
        let ended = || {
            let st = self.lock();
            running.iter().all(|(id, _)| {
                st.runs
                    .get(id)
                    .is_none_or(|e| e.info.phase != RunPhase::Running)
            })
        };
        let wait = |limit: Duration| async move {
            let deadline = tokio::time::Instant::now() + limit;
            while !ended() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        wait(drain_timeout).await;
        if !ended() {
            tracing::warn!("drain timeout of {drain_timeout:?} over: cancelling running trials");
            for (_, c) in &running {
                let _ = c.send(true);
            }
            wait(CANCEL_GRACE).await;
        }
        if let Some(stats) = self.config.bus.flush(Duration::from_secs(5)).await
            && stats.dropped > 0
        {
            tracing::warn!(dropped = stats.dropped, "events lost on the way to NATS");
        }
    }
}

/// How long cancelled trials get to end after the drain timeout.
const CANCEL_GRACE: Duration = Duration::from_secs(20);

fn read_status(run_dir: &std::path::Path) -> Option<RunStatus> {
    let text = std::fs::read_to_string(run_dir.join("manifest.json")).ok()?;
    serde_json::from_str::<isolab_model::manifest::Manifest>(&text)
        .ok()
        .map(|m| m.status)
}
