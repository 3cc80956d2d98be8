//! The coordinator service's Prometheus metrics (`isolab serve --metrics-listen ADDR`), counted
//! from its own event bus: an attempt is running from its `running` event to its final or
//! `retrying` event (a retried attempt counts as `failed`); events the counter fell behind on
//! are counted as dropped. The metric types and the endpoint are `isolab_telemetry::metrics`,
//! shared with the agent.

use std::collections::HashMap;

use isolab_telemetry::metrics::{Metrics, TrialGuard};
use tokio::sync::broadcast;

use crate::events::{EventKind, RunEvent, TrialEventState};

/// The metrics label of an attempt's end, `None` while it goes on.
fn ended_as(state: TrialEventState) -> Option<&'static str> {
    match state {
        TrialEventState::Running => None,
        TrialEventState::Ok => Some("ok"),
        TrialEventState::Failed | TrialEventState::Retrying => Some("failed"),
        TrialEventState::TimedOut => Some("timeout"),
        TrialEventState::Cancelled | TrialEventState::NotRun => Some("cancelled"),
    }
}

/// Counts `events` into `metrics` until the bus closes.
pub async fn count(mut events: broadcast::Receiver<RunEvent>, metrics: Metrics) {
    let mut running: HashMap<(String, String), TrialGuard> = HashMap::new();
    loop {
        let ev = match events.recv().await {
            Ok(ev) => ev,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                for _ in 0..n {
                    metrics.event_dropped();
                }
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => break,
        };
        match ev.kind {
            EventKind::TrialStatus(t) => {
                let key = (ev.run_id, t.trial_id);
                match ended_as(t.state) {
                    None => {
                        running.insert(key, metrics.trial_started());
                    }
                    Some(label) => {
                        if let Some(guard) = running.remove(&key) {
                            guard.finish(label);
                        }
                    }
                }
            }
            // A run that finished leaves nothing running (an attempt whose final event was
            // lost would otherwise count as running forever).
            EventKind::RunFinished { .. } => {
                let run = ev.run_id;
                let left: Vec<_> = running.keys().filter(|k| k.0 == run).cloned().collect();
                for k in left {
                    if let Some(guard) = running.remove(&k) {
                        guard.finish("cancelled");
                    }
                }
            }
            _ => {}
        }
    }
    for (_, guard) in running.drain() {
        guard.finish("cancelled");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{MemoryBus, TrialStatus};

    fn status(run: &str, trial: &str, attempt: u32, state: TrialEventState) -> RunEvent {
        RunEvent::now(
            run,
            EventKind::TrialStatus(TrialStatus {
                trial_id: trial.into(),
                experiment: "e".into(),
                platform: "p".into(),
                workload: "w".into(),
                agent: None,
                host: None,
                attempt,
                state,
                reason: None,
                duration_ms: None,
            }),
        )
    }

    fn value(text: &str, name: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
    }

    #[tokio::test]
    async fn attempts_are_running_until_they_end_and_counted_by_how() {
        let bus = MemoryBus::new(16);
        let metrics = Metrics::new("c");
        let counter = tokio::spawn(count(bus.subscribe_live(), metrics.clone()));
        bus.publish(status("r", "t1", 1, TrialEventState::Running));
        bus.publish(status("r", "t2", 1, TrialEventState::Running));
        bus.publish(status("r", "t1", 1, TrialEventState::Retrying));
        bus.publish(status("r", "t1", 2, TrialEventState::Running));
        bus.publish(status("r", "t1", 2, TrialEventState::Ok));
        // Let the counter catch up, then look.
        let mut text = String::new();
        for _ in 0..100 {
            tokio::task::yield_now().await;
            text = metrics.encode();
            if value(&text, "c_trials_finished_total{status=\"ok\"}").is_some() {
                break;
            }
        }
        assert_eq!(
            value(&text, "c_trials_running ").as_deref(),
            Some("1"),
            "{text}"
        );
        assert_eq!(
            value(&text, "c_trials_finished_total{status=\"failed\"}").as_deref(),
            Some("1"),
            "{text}"
        );
        drop(bus);
        counter.await.unwrap();
        let text = metrics.encode();
        assert_eq!(
            value(&text, "c_trials_running ").as_deref(),
            Some("0"),
            "{text}"
        );
        assert_eq!(
            value(&text, "c_trials_finished_total{status=\"cancelled\"}").as_deref(),
            Some("1"),
            "{text}"
        );
    }
}
