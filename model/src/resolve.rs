//! The resolved platform: a pipeline's [`Platform`] with every default applied and every unit
//! typed, one shape per backend. The YAML type stops here: `isolab plan` shows the resolved form,
//! the wire carries it to agents, and an agent never applies a pipeline default itself.
//!
//! Guest memory (`memory`, what a VM boots with) is [`VmPlatform::guest_memory_mib`]; the cgroup
//! limit of an instance (`limits.memory`) is [`InstanceLimits::memory_bytes`]: two names that
//! cannot be confused. The rules that [`resolve`] relies on are checked by
//! [`crate::validate`] with a file position; [`resolve`] repeats them (a caller may skip
//! validation), naming the field.
//!
//! ```
//! use isolab_model::pipeline::{BackendKind, Platform};
//! use isolab_model::resolve::{ResolvedPlatform, resolve};
//! let yaml = "backend: vm\nmemory: 128MiB\nlimits: { memory: 1GiB }\n";
//! let platform: Platform = isolab_model::yaml::from_str(yaml).unwrap();
//! let ResolvedPlatform::Vm(vm) = resolve(&platform).unwrap() else { unreachable!() };
//! assert_eq!((vm.guest_memory_mib, vm.vcpus), (128, 1));
//! assert_eq!(vm.limits.memory_bytes, Some(1 << 30));
//! ```

use serde::{Deserialize, Serialize};

use crate::pipeline::{Accel, BackendKind, Limits, NetworkMode, Platform, RootfsKind};

/// The OCI runtime of a container platform that names none.
pub const DEFAULT_RUNTIME: &str = "runc";
/// Virtual CPUs of a VM platform that sets none.
pub const DEFAULT_VCPUS: u32 = 1;
/// Guest memory of a VM platform that sets none.
pub const DEFAULT_GUEST_MEMORY_MIB: u64 = 256;
/// Smallest guest memory that boots: Debian's cloud kernel reserves about 48 MiB for itself
/// (33 MiB image, memory map, initramfs), and at 72 MiB it dies of memory deadlock in early
/// initcalls; 80 MiB boots (measured on QEMU 7.2, microvm, TCG and PVH alike).
pub const MIN_GUEST_MEMORY_MIB: u64 = 80;

/// The limits of one instance's cgroup as the pipeline asks for them, in kernel units. The
/// agent's own ceilings are applied on top, once, by the agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceLimits {
    /// Memory limit in bytes (swap off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Maximum number of tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_max: Option<u64>,
    /// Relative CPU weight, 1..=10000 (v2 `cpu.weight` scale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u64>,
    /// Hard CPU cap in CPUs (0.5 = half of one CPU, 2.0 = two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_quota_cpus: Option<f64>,
    /// CPUs the instance may run on, cpuset syntax.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset_cpus: Option<String>,
    /// Relative block I/O weight, 1..=10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_weight: Option<u64>,
    /// Block I/O bandwidth cap in bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_bps: Option<u64>,
}

impl From<&Limits> for InstanceLimits {
    fn from(l: &Limits) -> Self {
        Self {
            memory_bytes: l.memory.map(|b| b.get()),
            pids_max: l.pids,
            cpu_weight: l.cpu_weight,
            cpu_quota_cpus: l.cpu_quota.map(|p| p.fraction()),
            cpuset_cpus: l.cpuset.clone(),
            io_weight: l.io_weight,
            io_bps: l.io_bps.map(|b| b.get()),
        }
    }
}

/// A QEMU machine type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmMachine {
    /// `microvm`: virtio-mmio devices, the fastest boot.
    Microvm,
    /// `q35`: a PC with PCIe, virtio-pci devices.
    Q35,
}

impl VmMachine {
    /// Every machine type, in the order error messages list them.
    pub const ALL: [Self; 2] = [Self::Microvm, Self::Q35];

    /// The name pipelines and QEMU's `-M` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Microvm => "microvm",
            Self::Q35 => "q35",
        }
    }

    /// The inverse of [`VmMachine::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

/// A `native` platform.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NativePlatform {
    /// Network attachment.
    pub network: NetworkMode,
    /// Limits of each instance's cgroup.
    pub limits: InstanceLimits,
}

/// A `container` platform (an OCI runtime).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerPlatform {
    /// The runtime by name; the agent maps names to binaries.
    pub runtime: String,
    /// Extra runtime arguments (allowlisted by the agent).
    pub runtime_args: Vec<String>,
    /// Root filesystem flavour.
    pub rootfs: RootfsKind,
    /// Network attachment.
    pub network: NetworkMode,
    /// Limits of each instance's cgroup.
    pub limits: InstanceLimits,
}

/// A `docker` platform.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerPlatform {
    /// The Docker runtime by name; `None`: the daemon's default.
    pub runtime: Option<String>,
    /// Root filesystem flavour.
    pub rootfs: RootfsKind,
    /// Network attachment.
    pub network: NetworkMode,
    /// Limits of each instance's cgroup.
    pub limits: InstanceLimits,
}

/// An `lxc` platform.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LxcPlatform {
    /// Root filesystem flavour.
    pub rootfs: RootfsKind,
    /// Network attachment.
    pub network: NetworkMode,
    /// Limits of each instance's cgroup.
    pub limits: InstanceLimits,
}

/// A `vm` platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmPlatform {
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Guest memory in MiB: what the guest kernel sees (not a cgroup limit).
    pub guest_memory_mib: u64,
    /// Accelerator choice (`auto` is decided by the agent's KVM probe).
    pub accel: Accel,
    /// Machine type; `None`: the host's (microvm where QEMU has it, else q35).
    pub machine: Option<VmMachine>,
    /// Network attachment.
    pub network: NetworkMode,
    /// Limits of each QEMU process's cgroup.
    pub limits: InstanceLimits,
}

/// A platform with every default applied, one shape per backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum ResolvedPlatform {
    /// A plain process.
    Native(NativePlatform),
    /// An OCI runtime container.
    Container(ContainerPlatform),
    /// A QEMU virtual machine.
    Vm(VmPlatform),
    /// A Docker Engine container.
    Docker(DockerPlatform),
    /// An LXC container.
    Lxc(LxcPlatform),
}

impl ResolvedPlatform {
    /// The backend.
    pub fn backend(&self) -> BackendKind {
        match self {
            Self::Native(_) => BackendKind::Native,
            Self::Container(_) => BackendKind::Container,
            Self::Vm(_) => BackendKind::Vm,
            Self::Docker(_) => BackendKind::Docker,
            Self::Lxc(_) => BackendKind::Lxc,
        }
    }

    /// The native settings, if this is a native platform.
    pub fn as_native(&self) -> Option<&NativePlatform> {
        match self {
            Self::Native(p) => Some(p),
            _ => None,
        }
    }

    /// The container settings, if this is a container platform.
    pub fn as_container(&self) -> Option<&ContainerPlatform> {
        match self {
            Self::Container(p) => Some(p),
            _ => None,
        }
    }

    /// The VM settings, if this is a vm platform.
    pub fn as_vm(&self) -> Option<&VmPlatform> {
        match self {
            Self::Vm(p) => Some(p),
            _ => None,
        }
    }

    /// The Docker settings, if this is a docker platform.
    pub fn as_docker(&self) -> Option<&DockerPlatform> {
        match self {
            Self::Docker(p) => Some(p),
            _ => None,
        }
    }

    /// The LXC settings, if this is an lxc platform.
    pub fn as_lxc(&self) -> Option<&LxcPlatform> {
        match self {
            Self::Lxc(p) => Some(p),
            _ => None,
        }
    }

    /// Limits of each instance's cgroup, as the pipeline asks for them.
    pub fn limits(&self) -> &InstanceLimits {
        match self {
            Self::Native(p) => &p.limits,
            Self::Container(p) => &p.limits,
            Self::Vm(p) => &p.limits,
            Self::Docker(p) => &p.limits,
            Self::Lxc(p) => &p.limits,
        }
    }

    /// Limits, mutable (tests tighten them).
    pub fn limits_mut(&mut self) -> &mut InstanceLimits {
        match self {
            Self::Native(p) => &mut p.limits,
            Self::Container(p) => &mut p.limits,
            Self::Vm(p) => &mut p.limits,
            Self::Docker(p) => &mut p.limits,
            Self::Lxc(p) => &mut p.limits,
        }
    }

    /// Network attachment.
    pub fn network(&self) -> NetworkMode {
        match self {
            Self::Native(p) => p.network,
            Self::Container(p) => p.network,
            Self::Vm(p) => p.network,
            Self::Docker(p) => p.network,
            Self::Lxc(p) => p.network,
        }
    }
}

/// Why a platform could not be resolved (`isolab validate` reports the same with a position).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("platform field `{field}`: {reason}")]
pub struct ResolveError {
    /// The field, as the pipeline spells it (`memory`, `machine`).
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// Guest memory in MiB from a VM platform's `memory`: a whole number of MiB, at least
/// [`MIN_GUEST_MEMORY_MIB`]; the default when unset.
pub fn guest_memory_mib(memory_bytes: Option<u64>) -> Result<u64, ResolveError> {
    let Some(bytes) = memory_bytes else {
        return Ok(DEFAULT_GUEST_MEMORY_MIB);
    };
    let bad = |reason: String| ResolveError {
        field: "memory",
        reason,
    };
    if bytes % (1 << 20) != 0 {
        return Err(bad(format!("{bytes} bytes is not a whole number of MiB")));
    }
    let mib = bytes >> 20;
    if mib < MIN_GUEST_MEMORY_MIB {
        return Err(bad(format!(
            "{mib} MiB is below the {MIN_GUEST_MEMORY_MIB} MiB a guest needs to boot"
        )));
    }
    Ok(mib)
}

/// Applies every default of `p` for its backend. Fields of other backends are ignored (the
/// validator rejects them).
pub fn resolve(p: &Platform) -> Result<ResolvedPlatform, ResolveError> {
    let limits = InstanceLimits::from(&p.limits);
    let network = p.network.unwrap_or_default();
    let rootfs = p.rootfs.unwrap_or_default();
    Ok(match p.backend {
        BackendKind::Native => ResolvedPlatform::Native(NativePlatform { network, limits }),
        BackendKind::Container => ResolvedPlatform::Container(ContainerPlatform {
            runtime: p
                .runtime
                .clone()
                .unwrap_or_else(|| DEFAULT_RUNTIME.to_owned()),
            runtime_args: p.runtime_args.clone(),
            rootfs,
            network,
            limits,
        }),
        BackendKind::Docker => ResolvedPlatform::Docker(DockerPlatform {
            runtime: p.runtime.clone(),
            rootfs,
            network,
            limits,
        }),
        BackendKind::Lxc => ResolvedPlatform::Lxc(LxcPlatform {
            rootfs,
            network,
            limits,
        }),
        BackendKind::Vm => {
            let machine = match p.machine.as_deref() {
                None => None,
                Some(name) => Some(VmMachine::parse(name).ok_or_else(|| ResolveError {
                    field: "machine",
                    reason: format!("unknown machine `{name}` (microvm or q35)"),
                })?),
            };
            ResolvedPlatform::Vm(VmPlatform {
                vcpus: p.vcpus.unwrap_or(DEFAULT_VCPUS),
                guest_memory_mib: guest_memory_mib(p.memory.map(|b| b.get()))?,
                accel: p.accel.unwrap_or_default(),
                machine,
                network,
                limits,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::{Bytes, Percent};

    fn platform(backend: BackendKind) -> Platform {
        Platform {
            backend,
            runtime: None,
            runtime_args: vec![],
            rootfs: None,
            network: None,
            limits: Limits::default(),
            vcpus: None,
            memory: None,
            accel: None,
            machine: None,
        }
    }

    #[test]
    fn defaults_are_applied_per_backend() {
        let ResolvedPlatform::Container(c) = resolve(&platform(BackendKind::Container)).unwrap()
        else {
            panic!("not a container");
        };
        assert_eq!(c.runtime, "runc");
        assert_eq!(c.rootfs, RootfsKind::Minimal);
        assert_eq!(c.network, NetworkMode::None);
        let ResolvedPlatform::Vm(v) = resolve(&platform(BackendKind::Vm)).unwrap() else {
            panic!("not a vm");
        };
        assert_eq!(v.vcpus, 1);
        assert_eq!(v.guest_memory_mib, DEFAULT_GUEST_MEMORY_MIB);
        assert_eq!(v.accel, Accel::Auto);
        assert_eq!(v.machine, None);
        let ResolvedPlatform::Docker(d) = resolve(&platform(BackendKind::Docker)).unwrap() else {
            panic!("not docker");
        };
        assert_eq!(d.runtime, None, "docker's own default runtime");
    }

    #[test]
    fn limits_are_typed_in_kernel_units() {
        let mut p = platform(BackendKind::Native);
        p.limits = Limits {
            memory: Some(Bytes(64 << 20)),
            pids: Some(32),
            cpu_weight: Some(200),
            cpu_quota: Some(Percent(1.5)),
            cpuset: Some("0".into()),
            io_weight: Some(50),
            io_bps: Some(Bytes(1 << 20)),
        };
        let r = resolve(&p).unwrap();
        assert_eq!(r.backend(), BackendKind::Native);
        let l = r.limits();
        assert_eq!(l.memory_bytes, Some(64 << 20));
        assert_eq!(l.pids_max, Some(32));
        assert_eq!(l.cpu_quota_cpus, Some(1.5));
        assert_eq!(l.io_bps, Some(1 << 20));
    }

    #[test]
    fn guest_memory_must_boot_and_be_whole_mib() {
        assert_eq!(guest_memory_mib(Some(128 << 20)), Ok(128));
        assert_eq!(guest_memory_mib(Some(80 << 20)), Ok(80));
        let low = guest_memory_mib(Some(64 << 20)).unwrap_err();
        assert_eq!(low.field, "memory");
        assert!(low.reason.contains("below the 80 MiB"), "{low}");
        assert!(guest_memory_mib(Some((128 << 20) + 1)).is_err());
        let mut p = platform(BackendKind::Vm);
        p.machine = Some("pc".into());
        assert_eq!(resolve(&p).unwrap_err().field, "machine");
    }

    #[test]
    fn the_json_form_names_the_backend() {
        let r = resolve(&platform(BackendKind::Lxc)).unwrap();
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["backend"], "lxc");
        assert_eq!(serde_json::from_value::<ResolvedPlatform>(json).unwrap(), r);
    }
}
