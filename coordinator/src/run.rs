//! `isolab run`: plan a pipeline, dispatch its trials to agents, write results as they finish.
//!
//! One worker per agent pulls trials from a shared queue; the coordinator's main loop is the only
//! writer of the run directory (Parquet file per finished trial, then the manifest), so a crash at
//! any point leaves a consistent directory that `--resume` can complete. Failed attempts are
//! retried (on another agent when there is one) up to the pipeline's `retries`; `until_stable`
//! adds repetitions while the primary metric's 95% CI is wider than asked ([`crate::stability`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use isolab_model::LoadError;
use isolab_model::manifest::{RunStatus, TrialState};
use isolab_model::plan::{self, Filter, Trial};
use isolab_model::results::ResultRow;
use tokio::sync::{mpsc, watch};
use tracing::Instrument as _;

use crate::client::{Agent, AgentEvent, ClientError, FinalState};
use crate::events::{EventBus, EventKind, LiveSample, RunEvent, TrialEventState};
use crate::progress::Progress;
use crate::rows::RowContext;
use crate::rundir::{self, RunDir, RunDirError};
use crate::sink;
use crate::stability::{Finished, Stability};

/// Options of `isolab run`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Results directory (default `./results`).
    pub results: PathBuf,
    /// Agent addresses; empty → an embedded local agent on loopback.
    pub agents: Vec<String>,
    /// Run id to resume.
    pub resume: Option<String>,
    /// `--only` filter expression.
    pub only: Option<String>,
    /// `--set KEY=VALUE` overrides.
    pub overrides: Vec<String>,
    /// `--profile NAME`: the pipeline's profile applied before the overrides.
    pub profile: Option<String>,
    /// Mutual TLS towards the agents (`--tls-dir`); `None`: plain text.
    pub tls: Option<crate::client::ClientTls>,
    /// Inventory file (`--inventory`): more agents, with labels for placement.
    pub inventory: Option<PathBuf>,
    /// Where trial status and live samples are published; `None`: a private in-process bus.
    pub events: Option<EventBus>,
    /// The id of a new run (default: a fresh `<pipeline>-<time>-<tag>`); ignored on resume.
    pub run_id: Option<String>,
    /// Turning true stops dispatching new trials while running ones finish (a drain); what
    /// was not dispatched is recorded as not run.
    pub drain: Option<watch::Receiver<bool>>,
    /// NATS server to discover announced agents on (`--discover nats://HOST:PORT`).
    pub discover: Option<String>,
    /// Heartbeats an announced agent may miss (`--missed-heartbeats`); 0 → the default.
    pub missed_heartbeats: u32,
}

/// Why a run could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The pipeline is invalid.
    #[error("invalid pipeline")]
    Load(#[from] LoadError),
    /// The `--only` expression is invalid.
    #[error("--only: {0}")]
    Filter(String),
    /// Nothing matched `--only`.
    #[error("--only `{0}` matches no trial")]
    NothingToRun(String),
    /// The run directory failed.
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    /// The resumed run belongs to another pipeline.
    #[error("cannot resume {run_id}: {why}")]
    Resume {
        /// The run id.
        run_id: String,
        /// Why.
        why: String,
    },
    /// An agent could not be reached.
    #[error(transparent)]
    Agent(#[from] ClientError),
    /// The inventory file is invalid.
    #[error(transparent)]
    Inventory(#[from] crate::inventory::InventoryError),
    /// Discovering announced agents failed.
    #[error(transparent)]
    Discover(#[from] crate::discover::DiscoverError),
    /// The embedded agent did not start.
    #[error("cannot start the embedded agent: {0}")]
    LocalAgent(String),
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Trials that finished ok (this invocation and before, for resume).
    pub ok: usize,
    /// Trials that failed, timed out or were cancelled.
    pub failed: usize,
    /// Trials not run because the run was interrupted.
    pub not_run: usize,
}

/// One finished attempt, sent from a worker to the main loop.
#[derive(Debug)]
struct Attempt {
    trial: Trial,
    attempt: u32,
    agent: String,
    state: FinalState,
    message: String,
    host: String,
    accel: Option<String>,
    leaks: Vec<String>,
    events: Vec<AgentEvent>,
    elapsed: Duration,
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<(Trial, u32, Option<String>)>,
    in_flight: usize,
    /// Trial id → the agent placement chose for its first attempt.
    placed: BTreeMap<String, String>,
    /// Agents that stopped answering: their placed trials go to any agent.
    dead: std::collections::BTreeSet<String>,
}

fn label(t: &Trial) -> String {
    let mut s = format!("{}/{}/{}", t.experiment, t.platform, t.workload);
    if let Some(a) = &t.adversary {
        s.push_str(&format!("+{a}"));
    }
    if t.instances.len() > 1 {
        s.push_str(&format!(" x{}", t.instances.len()));
    }
    if t.warmup {
        s.push_str(" warm-up");
    } else {
        s.push_str(&format!(" rep {}", t.repetition));
    }
    s
}

/// Runs a pipeline. `interrupt` turning true cancels running trials and stops dispatch.
pub async fn run(
    opts: &RunOptions,
    mut interrupt: watch::Receiver<bool>,
) -> Result<RunOutcome, RunError> {
    let loaded = isolab_model::load::load_file_profile(
        &opts.pipeline,
        opts.profile.as_deref(),
        &opts.overrides,
    )?;
    let pipeline = &loaded.pipeline;
    let bus = opts.events.clone().unwrap_or_default();
    let mut trials = plan::plan(pipeline);
    if let Some(expr) = &opts.only {
        let filter = Filter::parse(expr).map_err(|e| RunError::Filter(e.to_string()))?;
        trials.retain(|t| filter.matches(t));
        if trials.is_empty() {
            return Err(RunError::NothingToRun(expr.clone()));
        }
    }

    // Reach the agents before creating anything on disk.
    let mut local = None;
    let mut agents = Vec::new();
    let mut targets = crate::inventory::targets(&opts.agents, opts.inventory.as_deref())?;
    if let Some(url) = &opts.discover {
        let missed = match opts.missed_heartbeats {
            0 => crate::discover::DEFAULT_MISSED_HEARTBEATS,
            n => n,
        };
        let announced = crate::discover::collect(url, missed).await?;
        for t in crate::discover::targets(&announced) {
            let addr = crate::client::normalize_addr(&t.address);
            if !targets
                .iter()
                .any(|x| crate::client::normalize_addr(&x.address) == addr)
            {
                targets.push(t);
            }
        }
    }
    if targets.is_empty() {
        let la = isolab_agent::serve::spawn_local(isolab_agent::config::AgentConfig::default())
            .await
            .map_err(|e| RunError::LocalAgent(e.to_string()))?;
        agents.push(Agent::connect(&format!("http://{}", la.addr)).await?);
        local = Some(la);
    } else {
        for t in &targets {
            let tls = opts
                .tls
                .clone()
                .map(|c| c.with_domain(t.tls_domain.clone()));
            agents.push(Agent::connect_with(&t.address, tls.as_ref()).await?);
        }
    }

    let mut dir = match &opts.resume {
        Some(run_id) => {
            let d = RunDir::open(&opts.results.join(run_id))?;
            if d.manifest.pipeline_sha256 != loaded.sha256 {
                return Err(RunError::Resume {
                    run_id: run_id.clone(),
                    why: format!(
                        "the pipeline (with --set values) differs from the one it ran (sha256 {} vs {})",
                        &loaded.sha256[..12.min(loaded.sha256.len())],
                        &d.manifest.pipeline_sha256[..12.min(d.manifest.pipeline_sha256.len())]
                    ),
                });
            }
            d
        }
        None => {
            let run_id = opts
                .run_id
                .clone()
                .unwrap_or_else(|| rundir::new_run_id(&pipeline.name));
            RunDir::create(
                &opts.results,
                &run_id,
                pipeline,
                &opts.pipeline,
                &loaded.text,
                &loaded.sha256,
                &opts.overrides,
                opts.only.as_deref(),
                &trials,
            )?
        }
    };
    let done: BTreeSet<String> = dir
        .manifest
        .trials
        .iter()
        .filter(|r| dir.is_done(&r.id))
        .map(|r| r.id.clone())
        .collect();
    let (mut stable, resumed) = Stability::new(
        pipeline,
        &trials,
        &mut dir.manifest.repetition_groups,
        &done,
    );
    trials.extend(resumed);
    dir.manifest.status = RunStatus::Running;
    dir.manifest.finished_at = None;
    dir.manifest.profile.clone_from(&opts.profile);

    let mut available: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut unavailable: BTreeMap<String, String> = BTreeMap::new();
    let mut slots = Vec::new();
    for (i, a) in agents.iter().enumerate() {
        let caps = a.capabilities().await?;
        slots.push(crate::inventory::slot(&a.addr, targets.get(i), &caps));
        dir.write_env(&a.addr, &caps)?;
        for b in &caps.backends {
            if b.available {
                available
                    .entry(b.name.clone())
                    .or_default()
                    .push(a.addr.clone());
            } else {
                unavailable
                    .entry(b.name.clone())
                    .or_insert_with(|| b.reason.clone());
            }
        }
    }

    let todo: Vec<Trial> = trials
        .iter()
        .filter(|t| !dir.is_done(&t.id))
        .cloned()
        .collect();
    let mut progress = Progress::new(todo.len() as u64);
    if todo.len() < trials.len() {
        progress.note(&format!(
            "resuming {}: {} of {} trials left",
            dir.manifest.run_id,
            todo.len(),
            trials.len()
        ));
    }
    let run_id = dir.manifest.run_id.clone();
    bus.publish(RunEvent::now(
        &run_id,
        EventKind::RunStarted {
            pipeline: pipeline.name.clone(),
            trials: count_u32(trials.len()),
            to_run: count_u32(todo.len()),
        },
    ));
    let placed = crate::inventory::place(pipeline, &trials, &slots);
    let queue = Arc::new(Mutex::new(Queue {
        placed: placed
            .into_iter()
            .map(|(id, i)| (id, slots[i].address.clone()))
            .collect(),
        ..Queue::default()
    }));
    for t in todo {
        let backend = t.platform_spec.backend.as_str();
        if !available.contains_key(backend) {
            let why = unavailable
                .get(backend)
                .cloned()
                .unwrap_or_else(|| "no agent offers it".into());
            let rec = dir.record_mut(&t);
            rec.status = TrialState::Failed;
            rec.reason = Some(format!("backend `{backend}` unavailable: {why}"));
            progress.finished(&label(&t), "failed", Duration::ZERO, rec.reason.as_deref());
            bus.publish(
                RunEvent::trial(&run_id, &t, 1, TrialEventState::Failed).with_details(
                    None,
                    None,
                    rec.reason.as_deref(),
                    None,
                ),
            );
            continue;
        }
        lock(&queue).items.push_back((t, 1, None));
    }
    dir.save()?;

    // Spans: run → experiment → trial (one per attempt); the agent's spans hang under the trial.
    let run_span =
        tracing::info_span!("run", run_id = %dir.manifest.run_id, pipeline = %pipeline.name);
    let experiment_spans: Arc<BTreeMap<String, tracing::Span>> = Arc::new(
        pipeline
            .experiments
            .iter()
            .map(|e| {
                let span = tracing::info_span!(parent: &run_span, "experiment", name = %e.name);
                (e.name.clone(), span)
            })
            .collect(),
    );

    let (tx, mut rx) = mpsc::channel::<Attempt>(16);
    let mut workers = Vec::new();
    for agent in &agents {
        let (agent, queue, tx, run_id) = (
            agent.clone(),
            queue.clone(),
            tx.clone(),
            dir.manifest.run_id.clone(),
        );
        let interrupt = interrupt.clone();
        let signals = Signals {
            interrupt,
            drain: opts.drain.clone(),
            bus: bus.clone(),
        };
        workers.push(tokio::spawn(worker(
            agent,
            queue,
            tx,
            run_id,
            signals,
            available.clone(),
            experiment_spans.clone(),
        )));
    }
    drop(tx);

    let retries = pipeline.defaults.retries;
    let mut interrupted = *interrupt.borrow();
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(a) = msg else { break };
                handle_attempt(&mut dir, &queue, &mut progress, &mut stable, retries, !interrupted, &a, &bus)?;
                if lock(&queue).items.is_empty() && lock(&queue).in_flight == 0 {
                    break;
                }
            }
            changed = interrupt.changed(), if !interrupted => {
                if changed.is_err() || *interrupt.borrow() {
                    interrupted = true;
                    progress.note("interrupted: cancelling running trials");
                }
            }
        }
    }
    for w in workers {
        let _ = w.await;
    }
    // Drain attempts that finished after the loop ended (cancelled trials).
    while let Ok(a) = rx.try_recv() {
        handle_attempt(
            &mut dir,
            &queue,
            &mut progress,
            &mut stable,
            0,
            false,
            &a,
            &bus,
        )?;
    }
    progress.finish();
    drop(experiment_spans);
    drop(run_span);

    let drained = opts.drain.as_ref().is_some_and(|d| *d.borrow());
    let mut not_run = 0;
    for rec in &mut dir.manifest.trials {
        if matches!(rec.status, TrialState::Pending | TrialState::Running) {
            rec.status = TrialState::NotRun;
            rec.reason = Some(
                if drained && !interrupted {
                    "not run: the coordinator drained on shutdown"
                } else {
                    "not run: the run was interrupted"
                }
                .to_owned(),
            );
            not_run += 1;
            bus.publish(RunEvent::not_run(&run_id, rec));
        }
    }
    let ok = dir
        .manifest
        .trials
        .iter()
        .filter(|r| r.status == TrialState::Ok)
        .count();
    let failed = dir
        .manifest
        .trials
        .iter()
        .filter(|r| {
            matches!(
                r.status,
                TrialState::Failed | TrialState::TimedOut | TrialState::Cancelled
            )
        })
        .count();
    dir.manifest.status = if interrupted || drained || not_run > 0 {
        RunStatus::Interrupted
    } else if failed > 0 {
        RunStatus::Failed
    } else {
        RunStatus::Ok
    };
    dir.manifest.finished_at = Some(rundir::now_rfc3339());
    dir.save()?;
    bus.publish(RunEvent::now(
        &run_id,
        EventKind::RunFinished {
            status: dir.manifest.status,
            ok: count_u32(ok),
            failed: count_u32(failed),
            not_run: count_u32(not_run),
        },
    ));
    if let Some(la) = local {
        la.shutdown().await;
    }
    Ok(RunOutcome {
        run_dir: dir.path.clone(),
        ok,
        failed,
        not_run,
    })
}

fn count_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// What a worker listens to and publishes on besides its queue.
#[derive(Debug, Clone)]
struct Signals {
    /// Cancel running trials and stop.
    interrupt: watch::Receiver<bool>,
    /// Stop taking trials.
    drain: Option<watch::Receiver<bool>>,
    /// Events.
    bus: EventBus,
}

fn lock(q: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    q.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn worker(
    agent: Agent,
    queue: Arc<Mutex<Queue>>,
    tx: mpsc::Sender<Attempt>,
    run_id: String,
    signals: Signals,
    available: BTreeMap<String, Vec<String>>,
    experiment_spans: Arc<BTreeMap<String, tracing::Span>>,
) {
    let Signals {
        interrupt,
        drain,
        bus,
    } = signals;
    loop {
        if *interrupt.borrow() || drain.as_ref().is_some_and(|d| *d.borrow()) {
            return;
        }
        let next = {
            let mut q = lock(&queue);
            let backend_ok = |t: &Trial| {
                available
                    .get(t.platform_spec.backend.as_str())
                    .is_some_and(|v| v.contains(&agent.addr))
            };
            // A first attempt goes where placement put it (unless that agent is dead).
            let placed_ok = |t: &Trial, attempt: u32| {
                attempt > 1
                    || q.placed
                        .get(&t.id)
                        .is_none_or(|a| *a == agent.addr || q.dead.contains(a))
            };
            // Prefer a trial that did not just fail here; take any that this agent can run.
            let pos = q
                .items
                .iter()
                .position(|(t, n, avoid)| {
                    backend_ok(t)
                        && placed_ok(t, *n)
                        && avoid.as_deref() != Some(agent.addr.as_str())
                })
                .or_else(|| {
                    q.items
                        .iter()
                        .position(|(t, n, _)| backend_ok(t) && placed_ok(t, *n))
                });
            let item = pos.and_then(|p| q.items.remove(p));
            if item.is_some() {
                q.in_flight += 1;
            }
            (item, q.in_flight)
        };
        let (Some((trial, attempt, _)), _) = next else {
            // Nothing for us now; stop when nothing is in flight either (no retries can come)
            // and nothing queued is ours to run later (placed elsewhere, its agent may die).
            let done = {
                let q = lock(&queue);
                let ours_later = q.items.iter().any(|(t, _, _)| {
                    available
                        .get(t.platform_spec.backend.as_str())
                        .is_some_and(|v| v.contains(&agent.addr))
                });
                q.in_flight == 0 && !ours_later
            };
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        bus.publish(
            RunEvent::trial(&run_id, &trial, attempt, TrialEventState::Running).with_details(
                Some(&agent.addr),
                None,
                None,
                None,
            ),
        );
        let started = Instant::now();
        let trial_span = tracing::info_span!(
            parent: experiment_spans.get(&trial.experiment).and_then(tracing::Span::id),
            "trial",
            otel.kind = "client",
            trial = %trial.id,
            attempt,
            agent = %agent.addr,
            workload = %trial.workload,
            platform = %trial.platform,
            state = tracing::field::Empty,
        );
        let mut events = Vec::new();
        let mut fin = None;
        let mut host = String::new();
        let run = agent
            .run_trial(&run_id, &trial, attempt, |e| {
                match &e {
                    AgentEvent::Finished {
                        state,
                        message,
                        host: h,
                        accel,
                        leaks,
                    } => {
                        fin = Some((
                            *state,
                            message.clone(),
                            h.clone(),
                            accel.clone(),
                            leaks.clone(),
                        ));
                    }
                    AgentEvent::Progress { host: h, .. } => host.clone_from(h),
                    AgentEvent::Sample { instance, sample } => bus.publish(RunEvent::now(
                        &run_id,
                        EventKind::Sample(LiveSample {
                            trial_id: trial.id.clone(),
                            instance: *instance,
                            metric: sample.metric.clone(),
                            value: sample.value,
                            unit: sample.unit.clone(),
                            t_offset_s: sample.t_offset_s,
                        }),
                    )),
                    _ => {}
                }
                events.push(e);
            })
            .instrument(trial_span.clone());
        let mut interrupt_rx = interrupt.clone();
        let result = tokio::select! {
            r = run => r,
            _ = async { while interrupt_rx.changed().await.is_ok() { if *interrupt_rx.borrow() { break; } } } => {
                let _ = agent.cancel(&trial.id).await;
                Err(ClientError::Malformed { addr: agent.addr.clone(), what: "interrupted".into() })
            }
        };
        let (state, message, h, accel, leaks) = match (result, fin) {
            (Ok(()), Some(f)) => f,
            (Ok(()), None) => (
                FinalState::Failed,
                "agent ended the stream without a final status".into(),
                host.clone(),
                None,
                vec![],
            ),
            (Err(e), _) if *interrupt.borrow() => (
                FinalState::Cancelled,
                format!("interrupted ({e})"),
                host.clone(),
                None,
                vec![],
            ),
            (Err(e), _) => (
                FinalState::Failed,
                format!("lost contact with agent: {e}"),
                host.clone(),
                None,
                vec![],
            ),
        };
        trial_span.record("state", format!("{state:?}").to_lowercase());
        drop(trial_span);
        // Lost contact and it does not answer now either: leave its trials to the others.
        let gone = message.starts_with("lost contact") && agent.capabilities().await.is_err();
        let a = Attempt {
            trial,
            attempt,
            agent: agent.addr.clone(),
            state,
            message,
            host: if h.is_empty() { host } else { h },
            accel,
            leaks,
            events,
            elapsed: started.elapsed(),
        };
        if gone {
            tracing::warn!(agent = %agent.addr, "agent lost; its trials go to the other agents");
            lock(&queue).dead.insert(agent.addr.clone());
        }
        if tx.send(a).await.is_err() || gone {
            return;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn handle_attempt(
    dir: &mut RunDir,
    queue: &Mutex<Queue>,
    progress: &mut Progress,
    stable: &mut Stability,
    retries: u32,
    extend: bool,
    a: &Attempt,
    bus: &EventBus,
) -> Result<(), RunError> {
    let run_id = dir.manifest.run_id.clone();
    let t = &a.trial;
    let mut state = a.state;
    let mut reason = (!a.message.is_empty()).then(|| a.message.clone());
    let mut written = None;
    let mut rows = Vec::new();
    if state == FinalState::Ok {
        let ctx = RowContext {
            run_id: &run_id,
            trial: t,
            attempt: a.attempt,
            host: &a.host,
            accel: a.accel.as_deref(),
        };
        rows = build_rows(&ctx, &a.events);
        if rows
            .iter()
            .all(|r| r.t_offset_s.is_some() || !is_workload_metric(&r.metric))
        {
            state = FinalState::Failed;
            reason = Some("the workload reported no summary sample".into());
        } else if !t.warmup {
            let rel = sink::trial_file(&t.experiment, &t.platform, &t.id);
            match sink::write_trial(&dir.path, &rel, &rows) {
                Ok(n) => written = Some((rel, n)),
                Err(e) => {
                    state = FinalState::Failed;
                    reason = Some(format!("cannot write results: {e}"));
                }
            }
        }
    }
    let retry = matches!(state, FinalState::Failed | FinalState::TimedOut) && a.attempt <= retries;
    {
        let rec = dir.record_mut(t);
        rec.attempts = a.attempt;
        rec.host = (!a.host.is_empty()).then(|| a.host.clone());
        rec.accel.clone_from(&a.accel);
        rec.leaks.clone_from(&a.leaks);
        rec.duration_ms = u64::try_from(a.elapsed.as_millis()).unwrap_or(u64::MAX);
        rec.status = match state {
            FinalState::Ok => TrialState::Ok,
            FinalState::Failed => TrialState::Failed,
            FinalState::TimedOut => TrialState::TimedOut,
            FinalState::Cancelled => TrialState::Cancelled,
        };
        rec.reason = if state == FinalState::Ok {
            None
        } else {
            reason.clone()
        };
        if let Some((rel, n)) = &written {
            rec.file = Some(rel.display().to_string());
            rec.rows = *n;
        }
        if retry {
            rec.status = TrialState::Pending;
        }
    }
    let status = match state {
        FinalState::Ok => "ok",
        FinalState::Failed => "failed",
        FinalState::TimedOut => "timed out",
        FinalState::Cancelled => "cancelled",
    };
    let extra = if retry || t.warmup {
        None
    } else {
        let how = match state {
            FinalState::Ok if written.is_some() => Finished::Ok(&rows),
            FinalState::Cancelled => Finished::Cancelled,
            _ => Finished::Failed,
        };
        stable.finished(t, how, &mut dir.manifest.repetition_groups, extend)
    };
    let mut q = lock(queue);
    q.in_flight = q.in_flight.saturating_sub(1);
    if retry {
        progress.add(1);
        progress.note(&format!(
            "{}: attempt {} {status} on {}; retrying",
            label(t),
            a.attempt,
            a.agent
        ));
        q.items
            .push_front((t.clone(), a.attempt + 1, Some(a.agent.clone())));
    } else if let Some(extra) = extra {
        progress.add(1);
        dir.manifest.trials.push(rundir::trial_record(&extra));
        q.items.push_back((extra, 1, None));
    }
    drop(q);
    let ev_state = if retry {
        TrialEventState::Retrying
    } else {
        match state {
            FinalState::Ok => TrialEventState::Ok,
            FinalState::Failed => TrialEventState::Failed,
            FinalState::TimedOut => TrialEventState::TimedOut,
            FinalState::Cancelled => TrialEventState::Cancelled,
        }
    };
    bus.publish(
        RunEvent::trial(&run_id, t, a.attempt, ev_state).with_details(
            Some(&a.agent),
            Some(&a.host),
            if state == FinalState::Ok {
                None
            } else {
                reason.as_deref()
            },
            Some(u64::try_from(a.elapsed.as_millis()).unwrap_or(u64::MAX)),
        ),
    );
    progress.finished(
        &label(t),
        status,
        a.elapsed,
        if state == FinalState::Ok {
            None
        } else {
            reason.as_deref()
        },
    );
    dir.save()?;
    Ok(())
}

/// Whether a metric is the workload's own (not the agent's cgroup accounting).
fn is_workload_metric(metric: &str) -> bool {
    !isolab_analyzer::metrics::is_host_metric(metric)
}

fn build_rows(ctx: &RowContext<'_>, events: &[AgentEvent]) -> Vec<ResultRow> {
    let mut rows = Vec::new();
    for e in events {
        match e {
            AgentEvent::Sample { instance, sample } => rows.push(ctx.sample_row(*instance, sample)),
            AgentEvent::Stats {
                instance,
                t_offset_s,
                values,
                final_,
            } => {
                rows.extend(ctx.stats_rows(*instance, *t_offset_s, values, *final_));
            }
            _ => {}
        }
    }
    rows
}

/// Where `isolab run` puts results unless told otherwise.
pub fn default_results_dir() -> PathBuf {
    Path::new("results").to_path_buf()
}
