//! Conversions between the agent's core types and the `isolab.v1` protobuf messages, both ways.
//! Public because the coordinator speaks the same messages: it builds requests with
//! [`trial_to_proto`] and reads events with [`event_from_proto`].
//!
//! What the wire does not carry: a trial's `params` (the matrix point; each instance carries its
//! own parameters) and `retries` arrive empty and 0; parameter values arrive as text and are read
//! back as integer, boolean, real or text, which gives the same `--param` spelling; statistics
//! carry user and system CPU time, so `cpu_usage_ns` arrives as their sum and
//! `memory_limit_hits` as 0. Enumerations in text fields use the pipeline file's spelling.

use std::collections::BTreeMap;

use isolab_model::pipeline::{AnalysisKind, BackendKind, Limits, ParamValue, Params, Platform};
use isolab_model::plan::{InstanceSpec, Role, Trial};
use isolab_model::sample::Sample;
use isolab_model::units::{Bytes, HumanDuration, Percent};
use isolab_proto::v1 as pb;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::BackendStatus;
use crate::cgroup::CgroupStats;
use crate::core::{
    Capabilities, HostInfo, LogStream, TrialEvent, TrialRequest, TrialState, TrialStatus,
};

/// Why a protobuf message could not be read into core types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A required message field is absent.
    #[error("missing field `{field}`")]
    MissingField {
        /// Dotted field path.
        field: &'static str,
    },
    /// An enumeration holds a value this version does not know (or `UNSPECIFIED`).
    #[error("field `{field}`: unknown value {value}")]
    UnknownEnum {
        /// Dotted field path.
        field: &'static str,
        /// The value received.
        value: String,
    },
}

// ---- helpers -------------------------------------------------------------------------------

/// The serde spelling of a unit-like enum (`host-ro`, `bridge`, `kvm`).
fn spelling<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// An enum from its serde spelling; `None` for the empty string (unset).
fn from_spelling<T: DeserializeOwned>(
    field: &'static str,
    text: &str,
) -> Result<Option<T>, ConvertError> {
    if text.is_empty() {
        return Ok(None);
    }
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map(Some)
        .map_err(|_| ConvertError::UnknownEnum {
            field,
            value: text.to_owned(),
        })
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// A parameter value from its text: integer, boolean or real when it prints back the same,
/// else text; so the `--param` spelling never changes in transit.
fn param_from_text(text: String) -> ParamValue {
    if let Ok(i) = text.parse::<i64>()
        && i.to_string() == text
    {
        return ParamValue::Int(i);
    }
    match text.as_str() {
        "true" => return ParamValue::Bool(true),
        "false" => return ParamValue::Bool(false),
        _ => {}
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() && f.to_string() == text => ParamValue::Float(f),
        _ => ParamValue::Str(text),
    }
}

fn params_to_proto(params: &Params) -> std::collections::HashMap<String, String> {
    params
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect()
}

fn params_from_proto(params: std::collections::HashMap<String, String>) -> Params {
    params
        .into_iter()
        .map(|(k, v)| (k, param_from_text(v)))
        .collect()
}

// ---- trials --------------------------------------------------------------------------------

fn backend_to_proto(kind: BackendKind) -> pb::Backend {
    match kind {
        BackendKind::Native => pb::Backend::Native,
        BackendKind::Container => pb::Backend::Container,
        BackendKind::Vm => pb::Backend::Vm,
        BackendKind::Docker => pb::Backend::Docker,
        BackendKind::Lxc => pb::Backend::Lxc,
    }
}

fn backend_from_proto(value: i32) -> Result<BackendKind, ConvertError> {
    let unknown = || ConvertError::UnknownEnum {
        field: "trial.platform.backend",
        value: value.to_string(),
    };
    Ok(match pb::Backend::try_from(value).map_err(|_| unknown())? {
        pb::Backend::Native => BackendKind::Native,
        pb::Backend::Container => BackendKind::Container,
        pb::Backend::Vm => BackendKind::Vm,
        pb::Backend::Docker => BackendKind::Docker,
        pb::Backend::Lxc => BackendKind::Lxc,
        pb::Backend::Unspecified => return Err(unknown()),
    })
}

fn role_to_proto(role: Role) -> pb::Role {
    match role {
        Role::Victim => pb::Role::Victim,
        Role::Adversary => pb::Role::Adversary,
        Role::Peer => pb::Role::Peer,
    }
}

fn role_from_proto(value: i32) -> Result<Role, ConvertError> {
    let unknown = || ConvertError::UnknownEnum {
        field: "trial.instances.role",
        value: value.to_string(),
    };
    Ok(match pb::Role::try_from(value).map_err(|_| unknown())? {
        pb::Role::Victim => Role::Victim,
        pb::Role::Adversary => Role::Adversary,
        pb::Role::Peer => Role::Peer,
        pb::Role::Unspecified => return Err(unknown()),
    })
}

fn limits_to_proto(l: &Limits) -> pb::Limits {
    pb::Limits {
        memory_bytes: l.memory.map(Bytes::get),
        pids: l.pids,
        cpu_weight: l.cpu_weight,
        cpu_quota: l.cpu_quota.map(Percent::fraction),
        cpuset: l.cpuset.clone(),
        io_weight: l.io_weight,
        io_bps: l.io_bps.map(Bytes::get),
    }
}

fn limits_from_proto(l: pb::Limits) -> Limits {
    Limits {
        memory: l.memory_bytes.map(Bytes),
        pids: l.pids,
        cpu_weight: l.cpu_weight,
        cpu_quota: l.cpu_quota.map(Percent),
        cpuset: l.cpuset,
        io_weight: l.io_weight,
        io_bps: l.io_bps.map(Bytes),
    }
}

fn platform_to_proto(name: &str, p: &Platform) -> pb::PlatformSpec {
    pb::PlatformSpec {
        name: name.to_owned(),
        backend: backend_to_proto(p.backend).into(),
        runtime: p.runtime.clone().unwrap_or_default(),
        runtime_args: p.runtime_args.clone(),
        rootfs: p.rootfs.as_ref().map(spelling).unwrap_or_default(),
        network: p.network.as_ref().map(spelling).unwrap_or_default(),
        limits: Some(limits_to_proto(&p.limits)),
        vcpus: p.vcpus.unwrap_or(0),
        memory_bytes: p.memory.map_or(0, Bytes::get),
        accel: p.accel.as_ref().map(spelling).unwrap_or_default(),
        machine: p.machine.clone().unwrap_or_default(),
    }
}

fn platform_from_proto(p: pb::PlatformSpec) -> Result<(String, Platform), ConvertError> {
    let platform = Platform {
        backend: backend_from_proto(p.backend)?,
        runtime: non_empty(p.runtime),
        runtime_args: p.runtime_args,
        rootfs: from_spelling("trial.platform.rootfs", &p.rootfs)?,
        network: from_spelling("trial.platform.network", &p.network)?,
        limits: p.limits.map(limits_from_proto).unwrap_or_default(),
        vcpus: (p.vcpus != 0).then_some(p.vcpus),
        memory: (p.memory_bytes != 0).then_some(Bytes(p.memory_bytes)),
        accel: from_spelling("trial.platform.accel", &p.accel)?,
        machine: non_empty(p.machine),
    };
    Ok((p.name, platform))
}

fn instance_to_proto(i: &InstanceSpec) -> pb::InstanceSpec {
    pb::InstanceSpec {
        index: i.index,
        role: role_to_proto(i.role).into(),
        group: i.group.clone(),
        workload: i.workload.clone(),
        params: params_to_proto(&i.params),
        cpu_weight: i.cpu_weight,
        cpu_reservation: i.cpu_reservation.map(Percent::fraction),
    }
}

fn instance_from_proto(i: pb::InstanceSpec) -> Result<InstanceSpec, ConvertError> {
    Ok(InstanceSpec {
        index: i.index,
        role: role_from_proto(i.role)?,
        group: i.group,
        workload: i.workload,
        params: params_from_proto(i.params),
        cpu_weight: i.cpu_weight,
        cpu_reservation: i.cpu_reservation.map(Percent),
    })
}

/// The `RunTrial` request for one attempt of a trial.
pub fn trial_to_proto(run_id: &str, trial: &Trial, attempt: u32) -> pb::RunTrialRequest {
    pb::RunTrialRequest {
        run_id: run_id.to_owned(),
        attempt,
        trial: Some(pb::TrialSpec {
            id: trial.id.clone(),
            experiment: trial.experiment.clone(),
            analysis: trial.analysis.as_str().to_owned(),
            platform: Some(platform_to_proto(&trial.platform, &trial.platform_spec)),
            repetition: trial.repetition,
            warmup: trial.warmup,
            duration_ms: trial.duration.as_millis_u64(),
            timeout_ms: trial.timeout.as_millis_u64(),
            instances: trial.instances.iter().map(instance_to_proto).collect(),
            workload: trial.workload.clone(),
            adversary: trial.adversary.clone(),
        }),
    }
}

/// Reads a `RunTrial` request (see the module documentation for what is not carried).
pub fn trial_from_proto(req: pb::RunTrialRequest) -> Result<TrialRequest, ConvertError> {
    let t = req
        .trial
        .ok_or(ConvertError::MissingField { field: "trial" })?;
    let (platform, platform_spec) =
        platform_from_proto(t.platform.ok_or(ConvertError::MissingField {
            field: "trial.platform",
        })?)?;
    let analysis: AnalysisKind =
        from_spelling("trial.analysis", &t.analysis)?.ok_or(ConvertError::MissingField {
            field: "trial.analysis",
        })?;
    let instances = t
        .instances
        .into_iter()
        .map(instance_from_proto)
        .collect::<Result<_, _>>()?;
    Ok(TrialRequest {
        run_id: req.run_id,
        attempt: req.attempt,
        trial: Trial {
            id: t.id,
            experiment: t.experiment,
            analysis,
            platform,
            platform_spec,
            repetition: t.repetition,
            warmup: t.warmup,
            workload: t.workload,
            adversary: t.adversary,
            params: Params::new(),
            instances,
            duration: HumanDuration::from_millis(t.duration_ms),
            timeout: HumanDuration::from_millis(t.timeout_ms),
            retries: 0,
        },
    })
}

// ---- events --------------------------------------------------------------------------------

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
                stats: CgroupStats {
                    cpu_user_ns: s.cpu_user_ns,
                    cpu_system_ns: s.cpu_system_ns,
                    cpu_usage_ns: s.cpu_user_ns.saturating_add(s.cpu_system_ns),
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

// ---- capabilities --------------------------------------------------------------------------

/// Capabilities as the protobuf response.
pub fn capabilities_to_proto(c: &Capabilities) -> pb::CapabilitiesResponse {
    let h = &c.host;
    pb::CapabilitiesResponse {
        agent_version: c.agent_version.clone(),
        host: Some(pb::HostInfo {
            hostname: h.hostname.clone(),
            kernel: h.kernel.clone(),
            os: h.os.clone(),
            cpu_model: h.cpu_model.clone(),
            cpu_flags: h.cpu_flags.clone(),
            cores: h.cores,
            memory_bytes: h.memory_bytes,
            cgroup_version: h.cgroup_version.clone(),
            clock_source: h.clock_source.clone(),
            arch: h.arch.clone(),
        }),
        backends: c
            .backends
            .iter()
            .map(|b| pb::BackendStatus {
                name: b.name.clone(),
                available: b.available,
                version: b.version.clone(),
                reason: b.reason.clone(),
                accel: b.accel.clone(),
            })
            .collect(),
        labels: c
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        workloads: c.workloads.clone(),
    }
}

/// The protobuf capabilities response as core capabilities.
pub fn capabilities_from_proto(c: pb::CapabilitiesResponse) -> Result<Capabilities, ConvertError> {
    let h = c.host.ok_or(ConvertError::MissingField { field: "host" })?;
    Ok(Capabilities {
        agent_version: c.agent_version,
        host: HostInfo {
            hostname: h.hostname,
            kernel: h.kernel,
            os: h.os,
            cpu_model: h.cpu_model,
            cpu_flags: h.cpu_flags,
            cores: h.cores,
            memory_bytes: h.memory_bytes,
            cgroup_version: h.cgroup_version,
            clock_source: h.clock_source,
            arch: h.arch,
        },
        backends: c
            .backends
            .into_iter()
            .map(|b| BackendStatus {
                name: b.name,
                available: b.available,
                version: b.version,
                reason: b.reason,
                accel: b.accel,
            })
            .collect(),
        labels: c.labels.into_iter().collect::<BTreeMap<_, _>>(),
        workloads: c.workloads,
    })
}

#[cfg(test)]
mod tests;
