//! Trials: `RunTrialRequest` ↔ [`TrialRequest`].

use isolab_model::pipeline::{AnalysisKind, BackendKind, Limits, ParamValue, Params, Platform};
use isolab_model::plan::{InstanceSpec, Role, Trial};
use isolab_model::units::{Bytes, HumanDuration, Percent};
use isolab_proto::v1 as pb;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ConvertError;
use crate::types::TrialRequest;

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

pub(super) fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// A parameter value from its text: integer, boolean or real when it prints back the same,
/// else text; so the `--param` spelling never changes in transit.
pub(super) fn param_from_text(text: String) -> ParamValue {
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
