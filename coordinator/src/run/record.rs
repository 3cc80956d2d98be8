//! Recording: the main loop's handling of a finished attempt (retry, Parquet rows, manifest,
//! `until_stable` decisions and events).

use std::sync::Mutex;

use isolab_model::manifest::TrialState;
use isolab_model::results::ResultRow;

use crate::client::{AgentEvent, FinalState};
use crate::events::{EventBus, RunEvent, TrialEventState};
use crate::progress::Progress;
use crate::rows::RowContext;
use crate::rundir::{self, RunDir};
use crate::sink;
use crate::stability::{Finished, Stability};

use super::dispatch::{Attempt, Queue, lock};
use super::{RunError, label};

#[allow(clippy::too_many_arguments)]
pub(super) fn handle_attempt(
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
        rec.started_at = Some(a.started_at.clone());
        rec.finished_at = Some(a.finished_at.clone());
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
        // The extra repetition continues its cell's rounds: one round per repetition.
        let round = dir.record_mut(t).round.map(|r| {
            r.saturating_add(extra.repetition)
                .saturating_sub(t.repetition)
        });
        dir.manifest
            .trials
            .push(rundir::trial_record(&extra, round));
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
pub(super) fn is_workload_metric(metric: &str) -> bool {
    !isolab_analyzer::metrics::is_host_metric(metric)
}

pub(super) fn build_rows(ctx: &RowContext<'_>, events: &[AgentEvent]) -> Vec<ResultRow> {
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
            AgentEvent::Noise { values } => rows.extend(ctx.noise_rows(values)),
            _ => {}
        }
    }
    rows
}
