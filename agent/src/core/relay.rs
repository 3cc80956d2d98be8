//! The relay between a trial's runner and its client: the runner never waits on the client.
//!
//! The runner sends every event into a channel that [`forward`] drains at once. Towards the
//! client, events other than statuses are offered without waiting (`try_send`): when the client
//! reads too slowly (a paused coordinator, a half-open connection) they are dropped and counted,
//! so the runner's deadline, cancel and stats ticks keep their time and adversaries never outlive
//! their timeout because of a reader. Statuses are delivered in order, waiting at most
//! [`STATUS_SEND_TIMEOUT`] each. When events that carry results (samples, the final statistics,
//! host noise) were dropped, the trial's final status says how many and turns `Ok` into
//! `Failed`: a trial with lost samples must not pass as a measurement.
//!
//! The relay also keeps the agent's [`Metrics`]: the trial is running until its final status,
//! which is counted by state with its duration (a trial whose client went away counts as
//! cancelled, one whose runner ended without a final status as `error`); every dropped event is
//! counted.

use std::time::Duration;

use isolab_telemetry::metrics::{Metrics, TrialGuard};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::{TrialEvent, TrialState};

/// Longest wait for the client to take one status event.
pub const STATUS_SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// What was dropped on the way to a slow client.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Dropped {
    /// Events that carry results: samples, final statistics, host noise.
    results: u64,
    /// Periodic statistics and log lines.
    other: u64,
}

/// The metrics label of a final state.
fn status_label(state: TrialState) -> &'static str {
    match state {
        TrialState::Ok => "ok",
        TrialState::Failed => "failed",
        TrialState::Cancelled => "cancelled",
        TrialState::TimedOut => "timeout",
        TrialState::Preparing | TrialState::Running => "error",
    }
}

/// Forwards `from` (the runner's events) to `to` (the client) until the runner is done; returns
/// when the final status was passed on, the client went away, or the runner ended.
///
/// When the client goes away, `from` is dropped at once, which the runner sees as its reader
/// gone and cancels the trial (as before the relay existed).
pub async fn forward(
    mut from: mpsc::Receiver<TrialEvent>,
    to: mpsc::Sender<TrialEvent>,
    metrics: Metrics,
    instances: u32,
    memory_limits_bytes: u64,
) {
    let mut trial = metrics.trial_started();
    let mut dropped = Dropped::default();
    loop {
        let event = tokio::select! {
            event = from.recv() => event,
            // The client went away: stop relaying at once, the runner cancels.
            () = to.closed() => return trial.finish("cancelled"),
        };
        // The runner ended without a final status (it panicked): the guard counts `error`.
        let Some(event) = event else { return };
        match event {
            TrialEvent::Status(mut status) => {
                let state = status.state;
                if state == TrialState::Running {
                    trial.instances_started(instances, memory_limits_bytes);
                }
                if state.is_final() {
                    amend_final(&mut status, dropped);
                }
                let final_state = status.state.is_final().then_some(status.state);
                let sent =
                    tokio::time::timeout(STATUS_SEND_TIMEOUT, to.send(TrialEvent::Status(status)))
                        .await;
                if let Some(state) = final_state {
                    finish(trial, state);
                    return;
                }
                match sent {
                    Ok(Ok(())) => {}
                    // The client went away: stop relaying, the runner cancels.
                    Ok(Err(_)) => return trial.finish("cancelled"),
                    // Too slow even for a status: counted, and the relay goes on.
                    Err(_) => metrics.event_dropped(),
                }
            }
            other => {
                let carries_results = matches!(
                    other,
                    TrialEvent::Sample { .. }
                        | TrialEvent::Noise(_)
                        | TrialEvent::Stats { final_: true, .. }
                );
                match to.try_send(other) {
                    Ok(()) => {}
                    Err(TrySendError::Closed(_)) => return trial.finish("cancelled"),
                    Err(TrySendError::Full(_)) => {
                        metrics.event_dropped();
                        if carries_results {
                            dropped.results += 1;
                        } else {
                            dropped.other += 1;
                        }
                    }
                }
            }
        }
    }
}

fn finish(trial: TrialGuard, state: TrialState) {
    trial.finish(status_label(state));
}

/// Says in the final status what a slow client lost; lost results fail an `Ok` trial.
fn amend_final(status: &mut super::TrialStatus, dropped: Dropped) {
    if dropped == Dropped::default() {
        return;
    }
    let note = format!(
        "the client read too slowly: {} result event(s) (samples, final statistics, host noise) \
         and {} other event(s) (periodic statistics, log lines) were dropped",
        dropped.results, dropped.other
    );
    status.message = if status.message.is_empty() {
        note
    } else {
        format!("{}; {note}", status.message)
    };
    if dropped.results > 0 && status.state == TrialState::Ok {
        status.state = TrialState::Failed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::TrialStatus;

    fn status(state: TrialState) -> TrialEvent {
        TrialEvent::Status(TrialStatus {
            state,
            message: String::new(),
            host: "h".into(),
            accel: None,
            leaks: Vec::new(),
        })
    }

    fn log(i: usize) -> TrialEvent {
        TrialEvent::Log {
            instance: 0,
            stream: isolab_wire::LogStream::Stderr,
            text: format!("line {i}"),
        }
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_never_blocks_the_runner() {
        let (runner_tx, runner_rx) = mpsc::channel(4);
        let (client_tx, mut client_rx) = mpsc::channel(2);
        let metrics = Metrics::new("t");
        let relay = tokio::spawn(forward(runner_rx, client_tx, metrics.clone(), 1, 0));
        // Far more events than both buffers hold: every send completes although nobody reads.
        runner_tx.send(status(TrialState::Running)).await.unwrap();
        for i in 0..1000 {
            tokio::time::timeout(Duration::from_secs(5), runner_tx.send(log(i)))
                .await
                .expect("the runner waited on the client")
                .unwrap();
        }
        runner_tx.send(status(TrialState::Ok)).await.unwrap();
        drop(runner_tx);
        // Now the client reads: the statuses arrived, in order, and the final one says what
        // was lost (log lines only: the trial stays Ok).
        let mut got = Vec::new();
        while let Some(e) = client_rx.recv().await {
            got.push(e);
        }
        relay.await.unwrap();
        let states: Vec<_> = got
            .iter()
            .filter_map(TrialEvent::as_status)
            .map(|s| s.state)
            .collect();
        assert_eq!(states, [TrialState::Running, TrialState::Ok]);
        let last = got.last().and_then(TrialEvent::as_status).unwrap();
        assert!(last.message.contains("were dropped"), "{}", last.message);
        let text = metrics.encode();
        let dropped: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("t_events_dropped_total "))
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!(dropped >= 990, "{text}");
        assert!(
            text.contains("t_trials_finished_total{status=\"ok\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn lost_results_fail_an_ok_trial_but_lost_logs_do_not() {
        let mut s = TrialStatus {
            state: TrialState::Ok,
            message: String::new(),
            host: "h".into(),
            accel: None,
            leaks: Vec::new(),
        };
        amend_final(
            &mut s,
            Dropped {
                results: 0,
                other: 3,
            },
        );
        assert_eq!(s.state, TrialState::Ok);
        amend_final(
            &mut s,
            Dropped {
                results: 2,
                other: 0,
            },
        );
        assert_eq!(s.state, TrialState::Failed);
        assert!(s.message.contains("2 result event(s)"), "{}", s.message);
        let mut timed_out = TrialStatus {
            state: TrialState::TimedOut,
            ..s.clone()
        };
        amend_final(
            &mut timed_out,
            Dropped {
                results: 1,
                other: 0,
            },
        );
        assert_eq!(timed_out.state, TrialState::TimedOut);
    }

    #[tokio::test]
    async fn a_client_gone_stops_the_relay_so_the_runner_sees_its_reader_gone() {
        let (runner_tx, runner_rx) = mpsc::channel(4);
        let (client_tx, client_rx) = mpsc::channel(2);
        drop(client_rx);
        let relay = tokio::spawn(forward(runner_rx, client_tx, Metrics::new("t"), 1, 0));
        runner_tx.send(status(TrialState::Running)).await.unwrap();
        relay.await.unwrap();
        assert!(runner_tx.is_closed(), "the runner must see its reader gone");
    }
}
