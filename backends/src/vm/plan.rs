//! Turning a trial into VMs: the platform's settings checked, and per instance the kernel
//! command line and the disk a file workload gets. The limits of each QEMU's cgroup are the
//! runner's cgroup engine's (this backend only names the memory QEMU needs when the platform
//! sets none: [`super::setup::qemu_memory_bytes`]).
//!
//! A workload that works in a directory (its catalog entry has a `dir` param, and the pipeline
//! gave none) gets a disk: a sparse raw file in the trial directory, formatted ext4 on the host
//! and mounted on the guest's `/tmp` by `/init`, so its files live on a block device as they do
//! for native and container instances, not in guest RAM. Every other workload's `/tmp` is a
//! tmpfs and its VM loads no module at all (the fastest boot).

use std::path::{Path, PathBuf};

use isolab_model::catalog;
use isolab_model::pipeline::{BackendKind, NetworkMode};
use isolab_model::plan::InstanceSpec;
use isolab_model::resolve::{ResolvedPlatform, VmPlatform};

use super::cmdline::GuestCmdline;
use super::error::VmError;
use super::modules::ModuleFile;
use super::net::{self, VmNic};
use super::qemu::{AccelKind, Machine, VmSpec};
use super::setup::{self, INITRAMFS_FILE, PlannedVm, Ready};
use crate::TrialContext;

/// The guest's disk as `/init` sees it (the first virtio-blk device).
pub const GUEST_DISK: &str = "/dev/vda";
/// Default size of a file workload's disk (sparse: only what is written takes host space).
pub const DEFAULT_DISK_BYTES: u64 = 1 << 30;

/// The machine-wide shape of a trial's VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Machine type.
    pub machine: Machine,
    /// Virtual CPUs per VM.
    pub vcpus: u32,
    /// Guest memory per VM.
    pub memory_mib: u64,
    /// Accelerator.
    pub accel: AccelKind,
}

impl Shape {
    /// The resolved platform's machine (unset: the QEMU's default machine), vCPUs and guest
    /// memory; the planner applied every other default and checked them.
    pub fn of(platform: &VmPlatform, default_machine: Machine, accel: AccelKind) -> Self {
        Self {
            machine: platform.machine.map_or(default_machine, Machine::from),
            vcpus: platform.vcpus,
            memory_mib: platform.guest_memory_mib,
            accel,
        }
    }
}

/// Whether `spec`'s workload gets a disk (see the module documentation).
pub fn wants_disk(spec: &InstanceSpec) -> bool {
    catalog::find(&spec.workload).is_some_and(|w| w.params.iter().any(|p| p.name == "dir"))
        && !spec.params.contains_key("dir")
}

/// The modules a trial's guests load: the machine's virtio transport, the block driver when
/// some instance gets a disk, the network driver on a bridge; none when neither.
pub fn modules(
    ready: &Ready,
    shape: &Shape,
    any_disk: bool,
    bridge: bool,
) -> Result<Vec<ModuleFile>, VmError> {
    if !any_disk && !bridge {
        return Ok(Vec::new());
    }
    let mut wanted: Vec<&str> = shape.machine.transport_modules().to_vec();
    if any_disk {
        wanted.push("virtio_blk");
    }
    if bridge {
        wanted.push("virtio_net");
    }
    ready
        .modules
        .order(&wanted)
        .map_err(|e| VmError::Unavailable {
            reason: e.to_string(),
        })
}

/// Everything a trial's VMs are booted with.
#[derive(Debug)]
pub struct TrialPlan {
    /// One per instance.
    pub vms: Vec<PlannedVm>,
    /// Modules the initramfs carries.
    pub modules: Vec<ModuleFile>,
    /// The bridge network (`network: bridge`): its namespace and every VM's tap.
    pub net: Option<(String, Vec<VmNic>)>,
}

/// Plans every instance's VM: `vm_prefix` names them (`<prefix>-i<index>`) and a bridge
/// network's namespace, `trial_dir` holds the initramfs and disks.
pub fn plan_trial(
    ctx: &TrialContext,
    ready: &Ready,
    shape: &Shape,
    vm_prefix: &str,
    trial_dir: &Path,
) -> Result<TrialPlan, VmError> {
    let platform = ctx.platform(BackendKind::Vm, ResolvedPlatform::as_vm)?;
    let any_disk = ctx.trial.instances.iter().any(wants_disk);
    let bridge = platform.network == NetworkMode::Bridge;
    let modules = modules(ready, shape, any_disk, bridge)?;
    let mut vms = Vec::with_capacity(ctx.trial.instances.len());
    let mut nics = Vec::new();
    for spec in &ctx.trial.instances {
        let (workload, params) = setup::workload_params(ctx, spec)?;
        let disk = wants_disk(spec).then(|| trial_dir.join(format!("disk-i{}.raw", spec.index)));
        let nic = if bridge {
            Some(net::nic(vm_prefix, spec.index)?)
        } else {
            None
        };
        let cmdline = GuestCmdline {
            console: "ttyS0".into(),
            tsc_khz: ready.tsc_khz,
            workload: Some(workload),
            params,
            modules: if disk.is_some() || nic.is_some() {
                modules.iter().map(|m| m.name.clone()).collect()
            } else {
                Vec::new()
            },
            disk: disk.as_ref().map(|_| GUEST_DISK.to_owned()),
            net: nic.as_ref().map(VmNic::guest_net),
            extra: shape
                .machine
                .kernel_words()
                .iter()
                .map(|w| (*w).to_owned())
                .collect(),
            ..GuestCmdline::default()
        }
        .render()
        .map_err(|source| VmError::Cmdline {
            instance: spec.index,
            source,
        })?;
        let vm = VmSpec {
            name: format!("{vm_prefix}-i{}", spec.index),
            kernel: ready.kernel.image.clone(),
            initramfs: trial_dir.join(INITRAMFS_FILE),
            cmdline,
            vcpus: shape.vcpus,
            memory_mib: shape.memory_mib,
            accel: shape.accel,
            machine: shape.machine,
            nic: nic.as_ref().map(|n| n.nic.clone()),
            disk,
        };
        nics.extend(nic);
        vms.push(PlannedVm {
            index: spec.index,
            spec: vm,
        });
    }
    let net = bridge.then(|| (vm_prefix.to_owned(), nics));
    Ok(TrialPlan { vms, modules, net })
}

/// Makes the sparse raw file `path` of `bytes` and formats it ext4 (no reserved blocks, lazy
/// inode tables: about 30 ms for 1 GiB). Blocking.
pub fn make_disk(path: &Path, bytes: u64) -> Result<(), VmError> {
    let err = |reason: String| VmError::Disk {
        path: path.to_path_buf(),
        reason,
    };
    std::fs::File::create(path)
        .and_then(|f| f.set_len(bytes))
        .map_err(|e| err(format!("creating it failed: {e}")))?;
    let mkfs = find_mkfs().ok_or_else(|| err("mkfs.ext4 not found (install e2fsprogs)".into()))?;
    let out = std::process::Command::new(&mkfs)
        .args([
            "-F",
            "-q",
            "-m",
            "0",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1",
        ])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| err(format!("running {} failed: {e}", mkfs.display())))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(err(format!(
            "{} failed ({}): {}",
            mkfs.display(),
            out.status,
            stderr.trim()
        )));
    }
    Ok(())
}

/// `mkfs.ext4` in `PATH` or the sbin directories.
fn find_mkfs() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join("mkfs.ext4"))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use isolab_model::pipeline::ParamValue;
    use isolab_model::plan::Role;

    use super::*;

    fn instance(workload: &str, dir: Option<&str>) -> InstanceSpec {
        InstanceSpec {
            index: 0,
            role: Role::Peer,
            group: None,
            workload: workload.into(),
            params: dir
                .map(|d| ("dir".to_owned(), ParamValue::Str(d.into())))
                .into_iter()
                .collect(),
            cpu_weight: None,
            cpu_reservation: None,
        }
    }

    #[test]
    fn file_workloads_get_a_disk_unless_given_a_dir() {
        assert!(wants_disk(&instance("file_ops", None)));
        assert!(!wants_disk(&instance("file_ops", Some("/somewhere"))));
        assert!(!wants_disk(&instance("syscall", None)));
        assert!(!wants_disk(&instance("no_such_workload", None)));
    }

    #[test]
    fn a_disk_is_sparse_and_formatted() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("d.raw");
        if find_mkfs().is_none() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI needs mkfs.ext4 (e2fsprogs)"
            );
            eprintln!("skipped: no mkfs.ext4");
            return;
        }
        make_disk(&disk, 256 << 20).unwrap();
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&disk).unwrap();
        assert_eq!(meta.len(), 256 << 20);
        assert!(
            meta.blocks() * 512 < 64 << 20,
            "not sparse: {} blocks",
            meta.blocks()
        );
        let bytes = std::fs::read(&disk).unwrap();
        assert_eq!(&bytes[0x438..0x43a], &[0x53, 0xef], "ext4 superblock magic");
        let err = make_disk(&dir.path().join("missing/d.raw"), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing/d.raw"), "{err}");
    }
}
