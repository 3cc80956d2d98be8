//! Dispatch: one worker per agent takes trials from the shared queue (honouring placement and
//! dead agents), runs each attempt over gRPC inside its trial span, publishes live events, and
//! sends the finished attempt to the main loop.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use isolab_model::plan::Trial;
use tokio::sync::{mpsc, watch};
use tracing::Instrument as _;

use crate::client::{Agent, AgentEvent, ClientError, FinalState};
use crate::events::{EventBus, EventKind, LiveSample, RunEvent, TrialEventState};

/// One finished attempt, sent from a worker to the main loop.
#[derive(Debug)]
pub(super) struct Attempt {
    pub(super) trial: Trial,
    pub(super) attempt: u32,
    pub(super) agent: String,
    pub(super) state: FinalState,
    pub(super) message: String,
    pub(super) host: String,
    pub(super) accel: Option<String>,
    pub(super) leaks: Vec<String>,
    pub(super) events: Vec<AgentEvent>,
    pub(super) elapsed: Duration,
    /// RFC 3339 time the attempt was dispatched.
    pub(super) started_at: String,
    /// RFC 3339 time the attempt ended.
    pub(super) finished_at: String,
}

#[derive(Debug, Default)]
pub(super) struct Queue {
    pub(super) items: VecDeque<(Trial, u32, Option<String>)>,
    pub(super) in_flight: usize,
    /// Trial id → the agent placement chose for its first attempt.
    pub(super) placed: BTreeMap<String, String>,
    /// Agents that stopped answering: their placed trials go to any agent.
    pub(super) dead: std::collections::BTreeSet<String>,
}

/// What a worker listens to and publishes on besides its queue.
#[derive(Debug, Clone)]
pub(super) struct Signals {
    /// Cancel running trials and stop.
    pub(super) interrupt: watch::Receiver<bool>,
    /// Stop taking trials.
    pub(super) drain: Option<watch::Receiver<bool>>,
    /// Events.
    pub(super) bus: EventBus,
}

pub(super) fn lock(q: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    q.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(super) async fn worker(
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
        if attempt > 1 {
            // Back off before a retry, so that a transient cause (a busy host, an agent
            // restarting) has time to pass; an interrupt cuts the wait short.
            let delay = retry_delay(attempt, rand::random::<f64>());
            let mut interrupt_rx = interrupt.clone();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = interrupt_rx.wait_for(|stop| *stop) => {}
            }
        }
        bus.publish(
            RunEvent::trial(&run_id, &trial, attempt, TrialEventState::Running).with_details(
                Some(&agent.addr),
                None,
                None,
                None,
            ),
        );
        let started = Instant::now();
        let started_at = crate::rundir::now_rfc3339();
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
            // Refused at admission (the agent's host budget, a check): its reason is the
            // trial's; retried only as the pipeline's `retries` say, like any failure.
            (Err(e @ ClientError::Refused { .. }), _) => (
                FinalState::Failed,
                e.to_string(),
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
            started_at,
            finished_at: crate::rundir::now_rfc3339(),
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

/// First retry's base delay; each later retry doubles it, up to [`RETRY_MAX_DELAY`].
pub(super) const RETRY_BASE_DELAY: Duration = Duration::from_millis(250);
/// Longest wait before a retry.
pub(super) const RETRY_MAX_DELAY: Duration = Duration::from_secs(10);

/// The wait before attempt `attempt` (2 = the first retry): exponential backoff with "equal
/// jitter" (half the step fixed, half drawn from `unit` ∈ [0, 1)), so retries of trials that
/// failed together do not hit an agent together again.
///
/// Written here rather than taken from a crate: `backoff` is unmaintained, and `backon` wraps
/// the retried future in its own loop, while a retry here goes back through the shared queue
/// (another agent may take it) and only the delay is needed.
pub(super) fn retry_delay(attempt: u32, unit: f64) -> Duration {
    let step = RETRY_BASE_DELAY
        .saturating_mul(1 << attempt.saturating_sub(2).min(16))
        .min(RETRY_MAX_DELAY);
    step / 2 + step.mul_f64(unit.clamp(0.0, 1.0) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_with_jitter() {
        let ms = Duration::from_millis;
        assert_eq!(retry_delay(2, 0.0), ms(125));
        assert_eq!(retry_delay(2, 1.0), ms(250));
        assert_eq!(retry_delay(3, 0.0), ms(250));
        assert_eq!(retry_delay(4, 0.5), ms(750));
        assert_eq!(retry_delay(40, 1.0), RETRY_MAX_DELAY);
        assert!(retry_delay(40, 0.0) >= RETRY_MAX_DELAY / 2);
    }
}
