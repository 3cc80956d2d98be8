//! `isolab run`: plan a pipeline, dispatch its trials to agents, write results as they finish.
//!
//! One worker per agent pulls trials from a shared queue; the coordinator's main loop is the only
//! writer of the run directory (Parquet file per finished trial, then the manifest), so a crash at
//! any point leaves a consistent directory that `--resume` can complete. Failed attempts are
//! retried (on another agent when there is one) up to the pipeline's `retries`; `until_stable`
//! adds repetitions while the primary metric's 95% CI is wider than asked.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use isolab_model::manifest::{RunStatus, TrialState};
use isolab_model::plan::{self, Filter, Trial};
use isolab_model::results::ResultRow;
use isolab_model::{LoadError, Pipeline};
use tokio::sync::{mpsc, watch};
use tracing::Instrument as _;

use crate::client::{Agent, AgentEvent, ClientError, FinalState};
use crate::progress::Progress;
use crate::rows::RowContext;
use crate::rundir::{self, RunDir, RunDirError};
use crate::sink;

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
            let run_id = rundir::new_run_id(&pipeline.name);
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
        workers.push(tokio::spawn(worker(
            agent,
            queue,
            tx,
            run_id,
            interrupt,
            available.clone(),
            experiment_spans.clone(),
        )));
    }
    drop(tx);

    let retries = pipeline.defaults.retries;
    let mut stable = Stability::new(pipeline);
    let mut interrupted = *interrupt.borrow();
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(a) = msg else { break };
                handle_attempt(&mut dir, &queue, &mut progress, &mut stable, retries, &a)?;
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
        handle_attempt(&mut dir, &queue, &mut progress, &mut stable, 0, &a)?;
    }
    progress.finish();
    drop(experiment_spans);
    drop(run_span);

    let mut not_run = 0;
    for rec in &mut dir.manifest.trials {
        if matches!(rec.status, TrialState::Pending | TrialState::Running) {
            rec.status = TrialState::NotRun;
            not_run += 1;
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
    dir.manifest.status = if interrupted || not_run > 0 {
        RunStatus::Interrupted
    } else if failed > 0 {
        RunStatus::Failed
    } else {
        RunStatus::Ok
    };
    dir.manifest.finished_at = Some(rundir::now_rfc3339());
    dir.save()?;
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

fn lock(q: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    q.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn worker(
    agent: Agent,
    queue: Arc<Mutex<Queue>>,
    tx: mpsc::Sender<Attempt>,
    run_id: String,
    interrupt: watch::Receiver<bool>,
    available: BTreeMap<String, Vec<String>>,
    experiment_spans: Arc<BTreeMap<String, tracing::Span>>,
) {
    loop {
        if *interrupt.borrow() {
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

fn handle_attempt(
    dir: &mut RunDir,
    queue: &Mutex<Queue>,
    progress: &mut Progress,
    stable: &mut Stability,
    retries: u32,
    a: &Attempt,
) -> Result<(), RunError> {
    let run_id = dir.manifest.run_id.clone();
    let t = &a.trial;
    let mut state = a.state;
    let mut reason = (!a.message.is_empty()).then(|| a.message.clone());
    let mut written = None;
    if state == FinalState::Ok {
        let ctx = RowContext {
            run_id: &run_id,
            trial: t,
            attempt: a.attempt,
            host: &a.host,
            accel: a.accel.as_deref(),
        };
        let rows = build_rows(&ctx, &a.events);
        if rows
            .iter()
            .all(|r| r.t_offset_s.is_some() || !is_workload_metric(&r.metric))
        {
            state = FinalState::Failed;
            reason = Some("the workload reported no summary sample".into());
        } else if !t.warmup {
            let rel = sink::trial_file(&t.experiment, &t.platform, &t.id);
            match sink::write_trial(&dir.path, &rel, &rows) {
                Ok(n) => {
                    stable.record(t, &rows);
                    written = Some((rel, n));
                }
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
    } else if state == FinalState::Ok
        && !t.warmup
        && let Some(extra) = stable.next_repetition(t)
    {
        progress.add(1);
        dir.manifest.trials.push(rundir::trial_record(&extra));
        q.items.push_back((extra, 1, None));
    }
    drop(q);
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

/// Metrics every workload prints for bookkeeping; not the headline figure.
fn is_workload_metric(metric: &str) -> bool {
    !matches!(
        metric,
        "cpu_usage_ns"
            | "cpu_user_ns"
            | "cpu_system_ns"
            | "memory_current_bytes"
            | "memory_peak_bytes"
            | "oom_events"
            | "oom_kills"
            | "pids_current"
            | "pids_limit_hits"
            | "io_read_bytes"
            | "io_write_bytes"
    )
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

/// Adaptive repetitions (`until_stable`): tracks the primary metric of every trial group.
#[derive(Debug)]
struct Stability {
    /// Per experiment: (target relative CI half-width, max repetitions).
    rules: BTreeMap<String, (f64, u32)>,
    /// Group key → (values of the primary metric, highest repetition planned).
    groups: BTreeMap<String, (Vec<f64>, u32)>,
}

impl Stability {
    fn new(p: &Pipeline) -> Self {
        let rules = p
            .experiments
            .iter()
            .filter_map(|e| {
                p.defaults
                    .until_stable
                    .as_ref()
                    .map(|u| (e.name.clone(), (u.rel_ci95, u.max_repetitions)))
            })
            .collect();
        Self {
            rules,
            groups: BTreeMap::new(),
        }
    }

    fn key(t: &Trial) -> String {
        format!(
            "{}\u{1}{}\u{1}{}\u{1}{:?}\u{1}{:?}\u{1}{}",
            t.experiment,
            t.platform,
            t.workload,
            t.adversary,
            t.params,
            t.instances.len()
        )
    }

    fn record(&mut self, t: &Trial, rows: &[ResultRow]) {
        if !self.rules.contains_key(&t.experiment) {
            return;
        }
        let primary = rows.iter().find(|r| {
            r.t_offset_s.is_none()
                && is_workload_metric(&r.metric)
                && !matches!(r.metric.as_str(), "ops" | "elapsed_s" | "total_units")
        });
        let entry = self
            .groups
            .entry(Self::key(t))
            .or_insert_with(|| (Vec::new(), 0));
        entry.1 = entry.1.max(t.repetition);
        if let Some(r) = primary {
            entry.0.push(r.value);
        }
    }

    /// The next repetition of `t`'s group if its CI is still too wide, else `None`.
    fn next_repetition(&mut self, t: &Trial) -> Option<Trial> {
        let (target, max) = *self.rules.get(&t.experiment)?;
        let entry = self.groups.get_mut(&Self::key(t))?;
        // Only the trial with the highest repetition so far may extend its group.
        if t.repetition != entry.1 || entry.0.len() < 3 || entry.1 + 1 >= max {
            return None;
        }
        if relative_ci95(&entry.0) <= target {
            return None;
        }
        entry.1 += 1;
        Some(plan::extra_repetition(t, entry.1))
    }
}

/// Relative half-width of the 95% CI of the median (normal approximation: 1.2533·σ/√n).
fn relative_ci95(values: &[f64]) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let n = values.len() as f64;
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let median = v[v.len() / 2];
    let mean = v.iter().sum::<f64>() / n;
    let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    if median == 0.0 {
        return f64::INFINITY;
    }
    1.96 * 1.2533 * sd / n.sqrt() / median.abs()
}

/// Where `isolab run` puts results unless told otherwise.
pub fn default_results_dir() -> PathBuf {
    Path::new("results").to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_shrinks_with_agreement() {
        assert!(relative_ci95(&[100.0, 100.1, 99.9, 100.0]) < 0.01);
        assert!(relative_ci95(&[100.0, 150.0, 60.0, 120.0]) > 0.1);
    }
}
