//! `isolab run`: plan a pipeline, dispatch its trials to agents, write results as they finish.
//!
//! One worker per agent pulls trials from a shared queue; the coordinator's main loop is the only
//! writer of the run directory (Parquet file per finished trial, then the manifest), so a crash at
//! any point leaves a consistent directory that `--resume` can complete. Failed attempts are
//! retried (on another agent when there is one) up to the pipeline's `retries`; `until_stable`
//! adds repetitions while the primary metric's 95% CI is wider than asked ([`crate::stability`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use isolab_model::LoadError;
use isolab_model::manifest::{EventsRecord, RunStatus, TrialState};
use isolab_model::plan::{self, Filter, Trial};
use tokio::sync::{mpsc, watch};

use crate::client::{Agent, ClientError};
use crate::events::{EventBus, EventKind, RunEvent, TrialEventState};
use crate::progress::Progress;
use crate::rundir::{self, RunDir, RunDirError};
use crate::stability::Stability;

mod dispatch;
mod record;

use dispatch::{Attempt, Queue, Signals, lock, worker};
use record::handle_attempt;

/// How long the end of a run waits for NATS to acknowledge its events before counting the rest
/// as dropped in the manifest.
const EVENTS_FLUSH: Duration = Duration::from_secs(10);

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
    /// The pipeline's text, when it does not come from the file `pipeline` (which then only
    /// names it): `isolab rerun` runs the text its manifest recorded.
    pub pipeline_text: Option<String>,
    /// Seed of the random trial order (`isolab rerun`: the recorded one); `None`: the
    /// pipeline's `defaults.seed`, else a fresh one.
    pub seed: Option<u64>,
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
    let loaded = match &opts.pipeline_text {
        Some(text) => isolab_model::load::load_str_profile(
            &opts.pipeline.display().to_string(),
            text,
            opts.profile.as_deref(),
            &opts.overrides,
        )?,
        None => isolab_model::load::load_file_profile(
            &opts.pipeline,
            opts.profile.as_deref(),
            &opts.overrides,
        )?,
    };
    let pipeline = &loaded.pipeline;
    let bus = opts.events.clone().unwrap_or_default();
    let events_before = bus.nats_stats();
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
            let tls = opts.tls.clone().map(|c| {
                c.with_domain(t.tls_domain.clone())
                    .or_domain(t.announced_name.clone())
            });
            agents.push(Agent::connect_with(&t.address, tls.as_ref()).await?);
        }
    }

    // The seed of the random order: the pipeline's (`defaults.seed`), else a fresh one; a
    // resumed run reads its own from the manifest below.
    let seed = opts
        .seed
        .or(pipeline.defaults.seed)
        .unwrap_or_else(rand::random);
    let arranged = match &opts.resume {
        Some(_) => Vec::new(),
        None => plan::arrange(pipeline, trials.clone(), seed),
    };
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
            let create = |run_id: &str| {
                RunDir::create(
                    &opts.results,
                    run_id,
                    pipeline,
                    &opts.pipeline,
                    &loaded.text,
                    &loaded.sha256,
                    &opts.overrides,
                    opts.only.as_deref(),
                    Some(seed),
                    &arranged,
                )
            };
            // A given id (the service's) must be new; a drawn one is drawn again on collision.
            let mut d = match &opts.run_id {
                Some(run_id) => create(run_id)?,
                None => rundir::with_fresh_id(|| rundir::new_run_id(&pipeline.name), create)?,
            };
            d.manifest.build = Some(crate::provenance::build_record(pipeline));
            d
        }
    };
    // A resumed run keeps the order it started with; one from before orders existed ran, and
    // goes on, in file order.
    let mut trials = match dir.manifest.seed {
        Some(seed) => plan::arrange(pipeline, trials, seed),
        None => trials,
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
    let estimate = isolab_model::plan::summarize(&todo).estimated_duration();
    let mut progress = Progress::new(todo.len() as u64, estimate);
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
    if let Some((url, before)) = events_before {
        // Counted from this run's start: the service's bus serves run after run.
        let after = bus.flush(EVENTS_FLUSH).await.unwrap_or(before);
        dir.manifest.events = Some(EventsRecord {
            url,
            published: after.published.saturating_sub(before.published),
            dropped: after.dropped.saturating_sub(before.dropped),
        });
        dir.save()?;
    }
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

/// Where `isolab run` puts results unless told otherwise.
pub fn default_results_dir() -> PathBuf {
    Path::new("results").to_path_buf()
}
