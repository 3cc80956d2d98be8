//! Trials: a planned [`Trial`] → `RunTrialRequest` → [`TrialRequest`] (the agent's
//! [`TrialSpec`], its platform resolved).

use isolab_model::pipeline::{AnalysisKind, ParamValue, Params};
use isolab_model::plan::{InstanceSpec, Role, Trial};
use isolab_model::resolve::{
    ContainerPlatform, DockerPlatform, InstanceLimits, LxcPlatform, MIN_GUEST_MEMORY_MIB,
    NativePlatform, ResolvedPlatform, VmMachine, VmPlatform,
};
use isolab_model::units::{HumanDuration, Percent};
use isolab_proto::v1 as pb;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ConvertError;
use crate::types::{TrialRequest, TrialSpec};

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

fn limits_to_proto(l: &InstanceLimits) -> pb::Limits {
    pb::Limits {
        memory_bytes: l.memory_bytes,
        pids: l.pids_max,
        cpu_weight: l.cpu_weight,
        cpu_quota: l.cpu_quota_cpus,
        cpuset: l.cpuset_cpus.clone(),
        io_weight: l.io_weight,
        io_bps: l.io_bps,
    }
}

fn limits_from_proto(l: Option<pb::Limits>) -> InstanceLimits {
    let l = l.unwrap_or_default();
    InstanceLimits {
        memory_bytes: l.memory_bytes,
        pids_max: l.pids,
        cpu_weight: l.cpu_weight,
        cpu_quota_cpus: l.cpu_quota,
        cpuset_cpus: l.cpuset,
        io_weight: l.io_weight,
        io_bps: l.io_bps,
    }
}

fn platform_to_proto(name: &str, p: &ResolvedPlatform) -> pb::PlatformSpec {
    use pb::platform_spec::Backend;
    let backend = match p {
        ResolvedPlatform::Native(n) => Backend::Native(pb::NativePlatform {
            network: spelling(&n.network),
            limits: Some(limits_to_proto(&n.limits)),
        }),
        ResolvedPlatform::Container(c) => Backend::Container(pb::ContainerPlatform {
            runtime: c.runtime.clone(),
            runtime_args: c.runtime_args.clone(),
            rootfs: spelling(&c.rootfs),
            network: spelling(&c.network),
            limits: Some(limits_to_proto(&c.limits)),
        }),
        ResolvedPlatform::Docker(d) => Backend::Docker(pb::DockerPlatform {
            runtime: d.runtime.clone(),
            rootfs: spelling(&d.rootfs),
            network: spelling(&d.network),
            limits: Some(limits_to_proto(&d.limits)),
        }),
        ResolvedPlatform::Lxc(l) => Backend::Lxc(pb::LxcPlatform {
            rootfs: spelling(&l.rootfs),
            network: spelling(&l.network),
            limits: Some(limits_to_proto(&l.limits)),
        }),
        ResolvedPlatform::Vm(v) => Backend::Vm(pb::VmPlatform {
            vcpus: v.vcpus,
            guest_memory_mib: v.guest_memory_mib,
            accel: spelling(&v.accel),
            machine: v.machine.map(|m| m.as_str().to_owned()),
            network: spelling(&v.network),
            limits: Some(limits_to_proto(&v.limits)),
        }),
    };
    pb::PlatformSpec {
        name: name.to_owned(),
        backend: Some(backend),
    }
}

/// An enum field the resolved form always sets.
fn required<T: DeserializeOwned>(field: &'static str, text: &str) -> Result<T, ConvertError> {
    from_spelling(field, text)?.ok_or(ConvertError::MissingField { field })
}

fn platform_from_proto(p: pb::PlatformSpec) -> Result<(String, ResolvedPlatform), ConvertError> {
    use pb::platform_spec::Backend;
    let backend = p.backend.ok_or(ConvertError::MissingField {
        field: "trial.platform.backend",
    })?;
    let platform = match backend {
        Backend::Native(n) => ResolvedPlatform::Native(NativePlatform {
            network: required("trial.platform.native.network", &n.network)?,
            limits: limits_from_proto(n.limits),
        }),
        Backend::Container(c) => ResolvedPlatform::Container(ContainerPlatform {
            runtime: non_empty(c.runtime).ok_or(ConvertError::MissingField {
                field: "trial.platform.container.runtime",
            })?,
            runtime_args: c.runtime_args,
            rootfs: required("trial.platform.container.rootfs", &c.rootfs)?,
            network: required("trial.platform.container.network", &c.network)?,
            limits: limits_from_proto(c.limits),
        }),
        Backend::Docker(d) => ResolvedPlatform::Docker(DockerPlatform {
            runtime: d.runtime,
            rootfs: required("trial.platform.docker.rootfs", &d.rootfs)?,
            network: required("trial.platform.docker.network", &d.network)?,
            limits: limits_from_proto(d.limits),
        }),
        Backend::Lxc(l) => ResolvedPlatform::Lxc(LxcPlatform {
            rootfs: required("trial.platform.lxc.rootfs", &l.rootfs)?,
            network: required("trial.platform.lxc.network", &l.network)?,
            limits: limits_from_proto(l.limits),
        }),
        Backend::Vm(v) => {
            // The planner checked it; a hostile or older sender is refused here, not by a guest
            // that fails to boot.
            if v.guest_memory_mib < MIN_GUEST_MEMORY_MIB {
                return Err(ConvertError::OutOfRange {
                    field: "trial.platform.vm.guest_memory_mib",
                    value: v.guest_memory_mib.to_string(),
                    expected: format!("at least {MIN_GUEST_MEMORY_MIB}"),
                });
            }
            ResolvedPlatform::Vm(VmPlatform {
                vcpus: v.vcpus.max(1),
                guest_memory_mib: v.guest_memory_mib,
                accel: required("trial.platform.vm.accel", &v.accel)?,
                machine: match v.machine {
                    None => None,
                    Some(m) => Some(VmMachine::parse(&m).ok_or(ConvertError::UnknownEnum {
                        field: "trial.platform.vm.machine",
                        value: m,
                    })?),
                },
                network: required("trial.platform.vm.network", &v.network)?,
                limits: limits_from_proto(v.limits),
            })
        }
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
            platform: Some(platform_to_proto(&trial.platform, &trial.resolved)),
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
        trial: TrialSpec {
            id: t.id,
            experiment: t.experiment,
            analysis,
            platform,
            platform_spec,
            repetition: t.repetition,
            warmup: t.warmup,
            workload: t.workload,
            adversary: t.adversary,
            instances,
            duration: HumanDuration::from_millis(t.duration_ms),
            timeout: HumanDuration::from_millis(t.timeout_ms),
        },
    })
}
