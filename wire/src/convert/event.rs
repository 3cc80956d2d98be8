//! Trial events: [`TrialEvent`] ↔ `isolab.v1.TrialEvent`.

use isolab_model::sample::Sample;
use isolab_proto::v1 as pb;

use super::ConvertError;
use super::trial::non_empty;
use crate::types::{HostNoise, InstanceStats, LogStream, TrialEvent, TrialState, TrialStatus};

fn state_to_proto(s: TrialState) -> pb::TrialState {
    match s {
        TrialState::Preparing => pb::TrialState::Preparing,
        TrialState::Running => pb::TrialState::Running,
        TrialState::Ok => pb::TrialState::Ok,
        TrialState::Failed => pb::TrialState::Failed,
        TrialState::Cancelled => pb::TrialState::Cancelled,
        TrialState::TimedOut => pb::TrialState::TimedOut,
    }
}

fn state_from_proto(value: i32) -> Result<TrialState, ConvertError> {
    let unknown = || ConvertError::UnknownEnum {
        field: "status.state",
        value: value.to_string(),
    };
    Ok(
        match pb::TrialState::try_from(value).map_err(|_| unknown())? {
            pb::TrialState::Preparing => TrialState::Preparing,
            pb::TrialState::Running => TrialState::Running,
            pb::TrialState::Ok => TrialState::Ok,
            pb::TrialState::Failed => TrialState::Failed,
            pb::TrialState::Cancelled => TrialState::Cancelled,
            pb::TrialState::TimedOut => TrialState::TimedOut,
            pb::TrialState::Unspecified => return Err(unknown()),
        },
    )
}

/// One core event as a protobuf event.
pub fn event_to_proto(event: TrialEvent) -> pb::TrialEvent {
    use pb::trial_event::Event;
    let event = match event {
        TrialEvent::Status(s) => Event::Status(pb::TrialStatus {
            state: state_to_proto(s.state).into(),
            message: s.message,
            host: s.host,
            accel: s.accel.unwrap_or_default(),
            leaks: s.leaks,
        }),
        TrialEvent::Sample { instance, sample } => Event::Sample(pb::Sample {
            instance,
            metric: sample.metric,
            value: sample.value,
            unit: sample.unit,
            higher_is_better: sample.higher_is_better,
            t_offset_s: sample.t_offset_s,
        }),
        TrialEvent::Stats {
            instance,
            t_offset_s,
            stats,
            final_,
        } => Event::Stats(pb::InstanceStats {
            instance,
            t_offset_s,
            cpu_user_ns: stats.cpu_user_ns,
            cpu_system_ns: stats.cpu_system_ns,
            memory_current_bytes: stats.memory_current_bytes,
            memory_peak_bytes: stats.memory_peak_bytes,
            oom_events: stats.oom_events,
            oom_kills: stats.oom_kills,
            pids_current: stats.pids_current,
            pids_limit_hits: stats.pids_limit_hits,
            io_read_bytes: stats.io_read_bytes,
            io_write_bytes: stats.io_write_bytes,
            r#final: final_,
            cpu_usage_ns: Some(stats.cpu_usage_ns),
        }),
        TrialEvent::Noise(n) => Event::Noise(pb::HostNoise {
            span_s: n.span_s,
            steal_fraction: n.steal_fraction,
            background_cpu_fraction: n.background_cpu_fraction,
            agent_cpu_fraction: n.agent_cpu_fraction,
        }),
        TrialEvent::Log {
            instance,
            stream,
            text,
        } => Event::Log(pb::LogLine {
            instance,
            stream: stream.as_str().to_owned(),
            text,
        }),
    };
    pb::TrialEvent { event: Some(event) }
}

/// One protobuf event as a core event.
pub fn event_from_proto(event: pb::TrialEvent) -> Result<TrialEvent, ConvertError> {
    use pb::trial_event::Event;
    Ok(
        match event
            .event
            .ok_or(ConvertError::MissingField { field: "event" })?
        {
            Event::Status(s) => TrialEvent::Status(TrialStatus {
                state: state_from_proto(s.state)?,
                message: s.message,
                host: s.host,
                accel: non_empty(s.accel),
                leaks: s.leaks,
            }),
            Event::Sample(s) => TrialEvent::Sample {
                instance: s.instance,
                sample: Sample {
                    metric: s.metric,
                    value: s.value,
                    unit: s.unit,
                    higher_is_better: s.higher_is_better,
                    t_offset_s: s.t_offset_s,
                },
            },
            Event::Stats(s) => TrialEvent::Stats {
                instance: s.instance,
                t_offset_s: s.t_offset_s,
                final_: s.r#final,
                stats: InstanceStats {
                    cpu_user_ns: s.cpu_user_ns,
                    cpu_system_ns: s.cpu_system_ns,
                    // An agent that could not read it sends none: the tick-based sum is
                    // the closest figure (10 ms steps), never a zero.
                    cpu_usage_ns: s
                        .cpu_usage_ns
                        .unwrap_or_else(|| s.cpu_user_ns.saturating_add(s.cpu_system_ns)),
                    memory_current_bytes: s.memory_current_bytes,
                    memory_peak_bytes: s.memory_peak_bytes,
                    memory_limit_hits: 0,
                    oom_events: s.oom_events,
                    oom_kills: s.oom_kills,
                    pids_current: s.pids_current,
                    pids_limit_hits: s.pids_limit_hits,
                    io_read_bytes: s.io_read_bytes,
                    io_write_bytes: s.io_write_bytes,
                },
            },
            Event::Noise(n) => TrialEvent::Noise(HostNoise {
                span_s: n.span_s,
                steal_fraction: n.steal_fraction,
                background_cpu_fraction: n.background_cpu_fraction,
                agent_cpu_fraction: n.agent_cpu_fraction,
            }),
            Event::Log(l) => TrialEvent::Log {
                instance: l.instance,
                stream: LogStream::from_name(&l.stream).ok_or(ConvertError::UnknownEnum {
                    field: "log.stream",
                    value: l.stream.clone(),
                })?,
                text: l.text,
            },
        },
    )
}
