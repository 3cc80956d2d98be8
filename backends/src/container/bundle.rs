//! The OCI bundle of one instance: `config.json`, built with the `oci-spec` crate.
//!
//! What every container gets: the workload as process 1 (`/isolab-workload NAME --param k=v…`),
//! no terminal, root with no capabilities at all and `noNewPrivileges`, the seccomp profile of
//! [`super::seccomp`], runc's default masked and read-only paths, a read-only root, new pid,
//! mount, uts, ipc and cgroup namespaces, a network namespace per [`NetAttach`], small rlimits
//! (no core dumps), a device cgroup that denies everything but the runtime's default devices,
//! and the resources of [`resources`]: the platform's limits tightened by the agent's ceilings.

use std::path::{Path, PathBuf};

use oci_spec::OciSpecError;
use oci_spec::runtime::{
    Capabilities, LinuxBlockIoBuilder, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
    LinuxDeviceCgroupBuilder, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
    LinuxThrottleDeviceBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder, get_default_maskedpaths,
    get_default_readonly_paths,
};

use crate::rootfs::{Rootfs, WORKLOAD_PATH};
use isolab_host::cgroup::CgroupLimits;

/// The OCI runtime spec version the bundles declare (what runc 1.1 implements).
pub const OCI_VERSION: &str = "1.0.2";
/// CFS period when the limits give none (100 ms), as the cgroup layer uses.
const DEFAULT_PERIOD_US: u64 = 100_000;
/// Smallest CFS quota the kernel accepts (1 ms).
const MIN_QUOTA_US: u64 = 1_000;
/// Open files allowed in a container (soft and hard); lowering needs no privilege.
const NOFILE: u64 = 1024;

/// Why a bundle could not be built or written.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A limit that the spec cannot express.
    #[error("limit {name} = {value}: {reason}")]
    InvalidLimit {
        /// Which limit.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// `oci-spec` refused a part of the spec.
    #[error("building the OCI spec: {0}")]
    Build(#[from] OciSpecError),
    /// `config.json` could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// How an instance's network is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetAttach {
    /// A fresh network namespace with only loopback.
    None,
    /// The host's network namespace (no network namespace of its own).
    Host,
    /// Join the network namespace at this path (a bridge port made by the agent).
    Netns(PathBuf),
}

pub use isolab_host::cgroup::HostFeatures;

/// Everything one instance's `config.json` is made from.
#[derive(Debug, Clone)]
pub struct BundleInput<'a> {
    /// Workload arguments after the program (`NAME --param k=v…`).
    pub args: &'a [String],
    /// Instance index (in the environment as `ISOLAB_INSTANCE`).
    pub instance: u32,
    /// Trial attempt slug (in the environment as `ISOLAB_TRIAL`, see
    /// [`crate::TRIAL_ENV`]).
    pub trial: &'a str,
    /// Host name inside the container.
    pub hostname: &'a str,
    /// The root made by [`crate::rootfs::create`] (at `<bundle>/rootfs`).
    pub rootfs: &'a Rootfs,
    /// The workload binary on the host, bound read-only at [`WORKLOAD_PATH`].
    pub workload_bin: &'a Path,
    /// Network attachment.
    pub network: &'a NetAttach,
    /// `cgroupsPath`, relative to the runtime's own cgroup.
    pub cgroups_path: &'a str,
    /// Limits of the instance (already tightened by the safety envelope).
    pub limits: &'a CgroupLimits,
    /// What the host supports.
    pub features: HostFeatures,
}

/// The spec of one instance.
pub fn spec(input: &BundleInput<'_>) -> Result<Spec, BundleError> {
    let mut args = vec![WORKLOAD_PATH.to_owned()];
    args.extend(input.args.iter().cloned());
    let no_caps = Capabilities::new();
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(UserBuilder::default().uid(0u32).gid(0u32).build()?)
        .args(args)
        .env(vec![
            "PATH=/usr/local/bin:/usr/bin:/bin".to_owned(),
            "LANG=C".to_owned(),
            "TMPDIR=/tmp".to_owned(),
            format!("ISOLAB_INSTANCE={}", input.instance),
            format!("{}={}", crate::TRIAL_ENV, input.trial),
        ])
        .cwd("/")
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(no_caps.clone())
                .effective(no_caps.clone())
                .inheritable(no_caps.clone())
                .permitted(no_caps.clone())
                .ambient(no_caps)
                .build()?,
        )
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .hard(NOFILE)
                .soft(NOFILE)
                .build()?,
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitCore)
                .hard(0u64)
                .soft(0u64)
                .build()?,
        ])
        .no_new_privileges(true)
        .build()?;

    let mut namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ]
    .into_iter()
    .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
    .collect::<Result<Vec<LinuxNamespace>, _>>()?;
    match input.network {
        NetAttach::Host => {}
        NetAttach::None => {
            namespaces.push(
                LinuxNamespaceBuilder::default()
                    .typ(LinuxNamespaceType::Network)
                    .build()?,
            );
        }
        NetAttach::Netns(path) => namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(path.clone())
                .build()?,
        ),
    }

    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources(input.limits, input.features)?)
        .cgroups_path(PathBuf::from(input.cgroups_path))
        .seccomp(super::seccomp::default_profile())
        .masked_paths(get_default_maskedpaths())
        .readonly_paths(get_default_readonly_paths())
        .build()?;

    Ok(SpecBuilder::default()
        .version(OCI_VERSION)
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(true)
                .build()?,
        )
        .hostname(input.hostname)
        .mounts(mounts(input)?)
        .process(process)
        .linux(linux)
        .annotations(std::collections::HashMap::new())
        .build()?)
}

/// Kernel file systems, the `/tmp` tmpfs, the workload binary and the host binds.
fn mounts(input: &BundleInput<'_>) -> Result<Vec<Mount>, BundleError> {
    let fs = |dest: &str, typ: &str, source: &str, options: &[&str]| {
        MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source(source)
            .options(options.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
            .build()
    };
    let bind_ro = |dest: &Path, source: &Path| {
        MountBuilder::default()
            .destination(dest)
            .typ("bind")
            .source(source)
            .options(vec![
                "rbind".into(),
                "ro".into(),
                "nosuid".into(),
                "nodev".into(),
            ])
            .build()
    };
    let mut m = vec![
        fs("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        fs(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        fs(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        )?,
        fs(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        fs(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        fs(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        fs("/tmp", "tmpfs", "tmpfs", &["nosuid", "nodev", "mode=1777"])?,
        bind_ro(Path::new(WORKLOAD_PATH), input.workload_bin)?,
    ];
    for b in &input.rootfs.binds {
        m.push(bind_ro(&b.path, &b.path)?);
    }
    Ok(m)
}

/// The cgroup resources of a container: memory with swap equal to memory (no swap), pids, CPU
/// shares (v1 scale: weight × 1024 / 100; runc converts for v2), CFS quota and period, cpuset,
/// block I/O weight (clamped to v1's 10..=1000) and bandwidth, and a device cgroup that denies
/// all but the runtime's defaults.
pub fn resources(l: &CgroupLimits, features: HostFeatures) -> Result<LinuxResources, BundleError> {
    let to_i64 = |name, v: u64| {
        i64::try_from(v).map_err(|_| BundleError::InvalidLimit {
            name,
            value: v.to_string(),
            reason: "too large",
        })
    };
    let mut r = LinuxResourcesBuilder::default().devices(vec![
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()?,
    ]);
    if let Some(bytes) = l.memory_bytes {
        if bytes == 0 {
            return Err(BundleError::InvalidLimit {
                name: "memory",
                value: "0".into(),
                reason: "must be positive",
            });
        }
        let bytes = to_i64("memory", bytes)?;
        let mut mem = LinuxMemoryBuilder::default().limit(bytes);
        if features.swap_limit {
            // OCI `swap` is memory + swap: equal to the limit means no swap at all.
            mem = mem.swap(bytes);
        } else {
            tracing::warn!("swap limit not supported by this kernel's cgroups: swap not limited");
        }
        r = r.memory(mem.build()?);
    }
    if let Some(max) = l.pids_max {
        r = r.pids(
            LinuxPidsBuilder::default()
                .limit(to_i64("pids", max)?)
                .build()?,
        );
    }
    let mut cpu = LinuxCpuBuilder::default();
    let mut any_cpu = false;
    if let Some(w) = l.cpu_weight {
        if !(1..=10_000).contains(&w) {
            return Err(BundleError::InvalidLimit {
                name: "cpu_weight",
                value: w.to_string(),
                reason: "must be 1..=10000",
            });
        }
        cpu = cpu.shares((w * 1024 / 100).clamp(2, 262_144));
        any_cpu = true;
    }
    if let Some(q) = l.cpu_quota {
        if !(q.is_finite() && q > 0.0 && q <= 4096.0) {
            return Err(BundleError::InvalidLimit {
                name: "cpu_quota",
                value: q.to_string(),
                reason: "must be a CPU count in (0, 4096]",
            });
        }
        let period = l.cpu_period_us.unwrap_or(DEFAULT_PERIOD_US);
        cpu = cpu
            .period(period)
            .quota(to_i64("cpu_quota", quota_us(q, period))?);
        any_cpu = true;
    }
    if let Some(cpus) = &l.cpuset_cpus {
        cpu = cpu.cpus(cpus.clone());
        any_cpu = true;
    }
    if any_cpu {
        r = r.cpu(cpu.build()?);
    }
    let mut blkio = LinuxBlockIoBuilder::default();
    let mut any_blkio = false;
    if let Some(w) = l.io_weight {
        if features.io_weight {
            let w = u16::try_from(w.clamp(10, 1000)).unwrap_or(1000);
            blkio = blkio.weight(w);
            any_blkio = true;
        } else {
            tracing::warn!(
                "no proportional I/O scheduler (blkio/io weight file missing): io_weight skipped"
            );
        }
    }
    if let Some((bps, devices)) = &l.io_bps
        && !devices.is_empty()
    {
        let throttles = devices
            .iter()
            .map(|&(major, minor)| {
                LinuxThrottleDeviceBuilder::default()
                    .major(to_i64("io_bps device major", major)?)
                    .minor(to_i64("io_bps device minor", minor)?)
                    .rate(*bps)
                    .build()
                    .map_err(BundleError::from)
            })
            .collect::<Result<Vec<_>, _>>()?;
        blkio = blkio
            .throttle_read_bps_device(throttles.clone())
            .throttle_write_bps_device(throttles);
        any_blkio = true;
    }
    if any_blkio {
        r = r.block_io(blkio.build()?);
    }
    Ok(r.build()?)
}

/// Quota in microseconds per period for a fraction of CPUs (checked beforehand: finite, > 0,
/// at most 4096), at least the kernel's minimum.
fn quota_us(cpus: f64, period_us: u64) -> u64 {
    #[allow(clippy::cast_precision_loss)] // periods are at most 1e6: exact in f64
    let q = (cpus * period_us as f64).round();
    // 0 < cpus <= 4096 and period <= 1e6: q fits in u64 and is not negative.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let q = q as u64;
    q.max(MIN_QUOTA_US)
}

/// Writes `config.json` into `bundle_dir`.
pub fn write(bundle_dir: &Path, spec: &Spec) -> Result<(), BundleError> {
    let path = bundle_dir.join("config.json");
    let text = to_json(spec);
    std::fs::write(&path, text).map_err(|source| BundleError::Write { path, source })
}

/// The spec as pretty JSON (what [`write()`] stores).
pub fn to_json(spec: &Spec) -> String {
    // A Spec is plain data (strings, numbers, maps with string keys): it always serializes.
    serde_json::to_string_pretty(spec).unwrap_or_default()
}

#[cfg(test)]
#[path = "bundle_tests.rs"]
mod tests;
