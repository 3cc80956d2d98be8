//! Capabilities: [`Capabilities`] ↔ `CapabilitiesResponse`.

use std::collections::BTreeMap;

use isolab_proto::v1 as pb;

use super::ConvertError;
use crate::types::{BackendStatus, Capabilities, HostBudget, HostInfo};

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
        budget: c.budget.map(|b| pb::HostBudget {
            memory_bytes: b.memory_bytes,
            pids: b.pids,
            disk_bytes: b.disk_bytes,
            max_trials: b.max_trials,
            max_instances: b.max_instances,
        }),
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
        budget: c.budget.map(|b| HostBudget {
            memory_bytes: b.memory_bytes,
            pids: b.pids,
            disk_bytes: b.disk_bytes,
            max_trials: b.max_trials,
            max_instances: b.max_instances,
        }),
    })
}
