//! Translation between the coordinator service's core types and `isolab.v1` protobuf, in one
//! place: the core stays free of gRPC.

use isolab_model::manifest::RunStatus;
use isolab_proto::v1 as pb;
use pb::run_event::Kind;

use super::core::{RunInfo, SubmitError, SubmitRequest, Submitted, UnknownRunError};
use crate::events::{EventKind, LiveSample, RunEvent, TrialEventState, TrialStatus};

/// Why a protobuf event could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The event has no kind.
    #[error("event of run {run_id} has no kind")]
    NoKind {
        /// The run.
        run_id: String,
    },
    /// A state name is unknown.
    #[error("unknown {what} `{value}`")]
    UnknownState {
        /// Which field.
        what: &'static str,
        /// The value.
        value: String,
    },
}

fn snake<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn parse_snake<T: serde::de::DeserializeOwned>(
    what: &'static str,
    s: &str,
) -> Result<T, ConvertError> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
        ConvertError::UnknownState {
            what,
            value: s.to_owned(),
        }
    })
}

/// Core event → protobuf.
pub fn event_to_pb(ev: &RunEvent) -> pb::RunEvent {
    let kind = match &ev.kind {
        EventKind::RunStarted {
            pipeline,
            trials,
            to_run,
        } => Kind::RunStarted(pb::RunStarted {
            pipeline: pipeline.clone(),
            trials: *trials,
            to_run: *to_run,
        }),
        EventKind::TrialStatus(s) => Kind::TrialStatus(pb::RunTrialStatus {
            trial_id: s.trial_id.clone(),
            experiment: s.experiment.clone(),
            platform: s.platform.clone(),
            workload: s.workload.clone(),
            agent: s.agent.clone(),
            host: s.host.clone(),
            attempt: s.attempt,
            state: s.state.as_str().to_owned(),
            reason: s.reason.clone(),
            duration_ms: s.duration_ms,
        }),
        EventKind::Sample(s) => Kind::Sample(pb::LiveSample {
            trial_id: s.trial_id.clone(),
            instance: s.instance,
            metric: s.metric.clone(),
            value: s.value,
            unit: s.unit.clone(),
            t_offset_s: s.t_offset_s,
        }),
        EventKind::RunFinished {
            status,
            ok,
            failed,
            not_run,
        } => Kind::RunFinished(pb::RunFinished {
            status: snake(status),
            ok: *ok,
            failed: *failed,
            not_run: *not_run,
        }),
    };
    pb::RunEvent {
        run_id: ev.run_id.clone(),
        at: ev.at.clone(),
        kind: Some(kind),
    }
}

/// Protobuf event → core.
pub fn event_from_pb(ev: pb::RunEvent) -> Result<RunEvent, ConvertError> {
    let kind = match ev.kind {
        None => return Err(ConvertError::NoKind { run_id: ev.run_id }),
        Some(Kind::RunStarted(s)) => EventKind::RunStarted {
            pipeline: s.pipeline,
            trials: s.trials,
            to_run: s.to_run,
        },
        Some(Kind::TrialStatus(s)) => EventKind::TrialStatus(TrialStatus {
            state: parse_snake::<TrialEventState>("trial state", &s.state)?,
            trial_id: s.trial_id,
            experiment: s.experiment,
            platform: s.platform,
            workload: s.workload,
            agent: s.agent,
            host: s.host,
            attempt: s.attempt,
            reason: s.reason,
            duration_ms: s.duration_ms,
        }),
        Some(Kind::Sample(s)) => EventKind::Sample(LiveSample {
            trial_id: s.trial_id,
            instance: s.instance,
            metric: s.metric,
            value: s.value,
            unit: s.unit,
            t_offset_s: s.t_offset_s,
        }),
        Some(Kind::RunFinished(f)) => EventKind::RunFinished {
            status: parse_snake::<RunStatus>("run status", &f.status)?,
            ok: f.ok,
            failed: f.failed,
            not_run: f.not_run,
        },
    };
    Ok(RunEvent {
        run_id: ev.run_id,
        at: ev.at,
        kind,
    })
}

/// Protobuf submission → core.
pub fn submit_from_pb(r: pb::SubmitRunRequest) -> SubmitRequest {
    SubmitRequest {
        pipeline_yaml: r.pipeline_yaml,
        file_name: r.file_name,
        profile: r.profile,
        sets: r.sets,
        only: r.only,
    }
}

/// Core submission → protobuf.
pub fn submit_to_pb(r: &SubmitRequest) -> pb::SubmitRunRequest {
    pb::SubmitRunRequest {
        pipeline_yaml: r.pipeline_yaml.clone(),
        file_name: r.file_name.clone(),
        profile: r.profile.clone(),
        sets: r.sets.clone(),
        only: r.only.clone(),
    }
}

/// Core answer → protobuf.
pub fn submitted_to_pb(s: Submitted) -> pb::SubmitRunResponse {
    pb::SubmitRunResponse {
        run_id: s.run_id,
        trials: s.trials,
        queued_ahead: s.queued_ahead,
    }
}

/// Core run → protobuf.
pub fn run_info_to_pb(r: RunInfo) -> pb::RunSummary {
    pb::RunSummary {
        run_id: r.run_id,
        pipeline: r.pipeline,
        state: r.phase.as_str().to_owned(),
        submitted_at: r.submitted_at,
        run_dir: r
            .run_dir
            .map(|d| d.display().to_string())
            .unwrap_or_default(),
        trials: r.trials,
        ok: r.ok,
        failed: r.failed,
        not_run: r.not_run,
        error: r.error.unwrap_or_default(),
    }
}

impl From<SubmitError> for tonic::Status {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Invalid(_) | SubmitError::Filter(_) => {
                Self::invalid_argument(e.to_string())
            }
            SubmitError::ShuttingDown => Self::unavailable(e.to_string()),
            SubmitError::Stage { .. } => Self::internal(e.to_string()),
        }
    }
}

impl From<UnknownRunError> for tonic::Status {
    fn from(e: UnknownRunError) -> Self {
        Self::not_found(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_protobuf() {
        let events = [
            RunEvent::now(
                "r",
                EventKind::RunStarted {
                    pipeline: "p".into(),
                    trials: 3,
                    to_run: 2,
                },
            ),
            RunEvent::now(
                "r",
                EventKind::TrialStatus(TrialStatus {
                    trial_id: "t".into(),
                    experiment: "e".into(),
                    platform: "native".into(),
                    workload: "syscall".into(),
                    agent: None,
                    host: Some("h".into()),
                    attempt: 2,
                    state: TrialEventState::TimedOut,
                    reason: Some("deadline".into()),
                    duration_ms: Some(5),
                }),
            ),
            RunEvent::now(
                "r",
                EventKind::Sample(LiveSample {
                    trial_id: "t".into(),
                    instance: 1,
                    metric: "m".into(),
                    value: 2.5,
                    unit: "ns".into(),
                    t_offset_s: Some(0.5),
                }),
            ),
            RunEvent::now(
                "r",
                EventKind::RunFinished {
                    status: RunStatus::Interrupted,
                    ok: 1,
                    failed: 1,
                    not_run: 1,
                },
            ),
        ];
        for e in events {
            let back = event_from_pb(event_to_pb(&e)).unwrap();
            assert_eq!(back, e);
        }
        let bad = pb::RunEvent {
            run_id: "r".into(),
            at: String::new(),
            kind: Some(Kind::RunFinished(pb::RunFinished {
                status: "exploded".into(),
                ..pb::RunFinished::default()
            })),
        };
        assert!(event_from_pb(bad).is_err());
    }
}
