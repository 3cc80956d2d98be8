//! What the vm backend finds once (kernel, modules, QEMU, `/init`), what it makes per trial
//! (directory, initramfs, disks, bridge network; the cgroups are the runner's), and the
//! leftover scan for VM processes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use isolab_model::catalog;
use isolab_model::plan::InstanceSpec;

use super::accel::{KVM_PROBE_TIMEOUT, KvmCheck};
use super::cmdline;
use super::error::VmError;
use super::initramfs;
use super::kernel::{self, GuestKernel};
use super::modules::{ModuleFile, ModuleIndex};
use super::plan::TrialPlan;
use super::qemu::{AccelKind, Machine, TCG_TB_MIB, VmSpec};
use super::vmm::Vmm;
use crate::{AgentDir, TrialContext};

/// The initramfs's file name in a trial directory.
pub const INITRAMFS_FILE: &str = "initramfs.cpio";
/// Smallest guest memory that boots (checked by the planner, see
/// [`isolab_model::resolve::MIN_GUEST_MEMORY_MIB`]).
pub const MIN_GUEST_MIB: u64 = isolab_model::resolve::MIN_GUEST_MEMORY_MIB;
/// Host memory QEMU needs beyond the guest's (device model, TCG's code cache, page tables);
/// measured: a `-m 128` microvm costs about 200 MB of RSS under TCG.
pub const QEMU_OVERHEAD_MIB: u64 = 160;

/// The vm backend's settings (the agent's `--kernel`, `--modules`, `--qemu` flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// Kernel image, or a directory with `vmlinux`/`vmlinuz` (default
    /// [`kernel::DEFAULT_KERNEL_DIR`]).
    pub kernel: Option<PathBuf>,
    /// Directory of `.ko` modules (default: `modules/` beside the kernel).
    pub modules: Option<PathBuf>,
    /// QEMU binary (default `qemu-system-x86_64` in `PATH`).
    pub qemu: Option<PathBuf>,
    /// Where trial directories go (default `vm/` in [`isolab_host::state_dir::DEFAULT_STATE_DIR`]; the
    /// agent sets its state directory's).
    pub runtime_root: Option<PathBuf>,
    /// How long a KVM probe VM gets to answer.
    pub kvm_probe_timeout: Duration,
    /// How long the TCG probe VM (run once, by the availability probe) gets.
    pub tcg_probe_timeout: Duration,
    /// A KVM verdict given in advance instead of probing (tests; an operator who knows).
    pub kvm_override: Option<KvmCheck>,
    /// Size of the (sparse) disk a file workload's VM gets.
    pub disk_bytes: u64,
}

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            kernel: None,
            modules: None,
            qemu: None,
            runtime_root: None,
            kvm_probe_timeout: KVM_PROBE_TIMEOUT,
            tcg_probe_timeout: Duration::from_secs(60),
            kvm_override: None,
            disk_bytes: super::plan::DEFAULT_DISK_BYTES,
        }
    }
}

impl VmConfig {
    /// The directory holding every agent's runtime directory.
    pub fn runtime_root(&self) -> PathBuf {
        self.runtime_root.clone().unwrap_or_else(|| {
            Path::new(isolab_host::state_dir::DEFAULT_STATE_DIR).join(isolab_host::state_dir::VM)
        })
    }

    /// The directory holding this agent's trial directories.
    pub fn runtime_dir(&self, dir: &AgentDir) -> PathBuf {
        self.runtime_root().join(dir.name())
    }
}

/// Everything found once, at agent start.
#[derive(Debug)]
pub struct Ready {
    /// The guest kernel.
    pub kernel: GuestKernel,
    /// Its modules.
    pub modules: ModuleIndex,
    /// The VMM.
    pub vmm: Vmm,
    /// The VMM's version line.
    pub vmm_version: String,
    /// The static workload binary that becomes `/init`.
    pub init: PathBuf,
    /// Host TSC frequency for `tsc_early_khz`.
    pub tsc_khz: Option<u64>,
    /// Machine type when the platform names none: microvm, or q35 when this QEMU lacks it.
    pub default_machine: Machine,
    /// Initramfs archives already built, by the modules they carry (`/init` does not change
    /// while the agent runs, so every trial of a kind gets the same bytes).
    archives: Mutex<HashMap<Vec<String>, Arc<Vec<u8>>>>,
}

impl Ready {
    /// Finds kernel, modules and VMM, and checks that `init` is a static executable; the
    /// error text names what is missing.
    pub fn find(config: &VmConfig, init: PathBuf) -> Result<Self, String> {
        let kernel = kernel::locate(config.kernel.as_deref(), config.modules.as_deref())
            .map_err(|e| e.to_string())?;
        let modules = ModuleIndex::scan(&kernel.modules_dir).map_err(|e| e.to_string())?;
        let vmm = Vmm::qemu(config.qemu.as_deref()).map_err(|e| e.to_string())?;
        let vmm_version = vmm.version().map_err(|e| e.to_string())?;
        let head =
            read_head(&init, 64 * 1024).map_err(|e| format!("reading {}: {e}", init.display()))?;
        if !initramfs::is_static_elf(&head) {
            return Err(initramfs::InitramfsError::NotStatic { path: init }.to_string());
        }
        let machines = vmm.machines();
        let default_machine = if machines.is_empty() || machines.iter().any(|m| m == "microvm") {
            Machine::Microvm
        } else {
            tracing::warn!(
                "{} offers no microvm machine; VMs default to q35",
                vmm.binary().display()
            );
            Machine::Q35
        };
        Ok(Self {
            kernel,
            modules,
            vmm,
            vmm_version,
            init,
            tsc_khz: cmdline::host_tsc_khz(),
            default_machine,
            archives: Mutex::default(),
        })
    }

    /// Writes the initramfs carrying `modules` to `path`, building it on first use. Blocking.
    pub fn write_initramfs(&self, path: &Path, modules: &[ModuleFile]) -> Result<(), VmError> {
        let key: Vec<String> = modules.iter().map(|m| m.name.clone()).collect();
        let cached = self
            .archives
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        let bytes = match cached {
            Some(bytes) => bytes,
            None => {
                let bytes = Arc::new(initramfs::build(&self.init, modules)?);
                self.archives
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(key, Arc::clone(&bytes));
                bytes
            }
        };
        use std::io::Write as _;
        isolab_host::state_dir::create_file(path)
            .and_then(|mut f| f.write_all(bytes.as_slice()))
            .map_err(|source| {
                VmError::Initramfs(initramfs::InitramfsError::Write {
                    path: path.to_path_buf(),
                    source,
                })
            })
    }
}

/// Makes the empty directory `dir` = `<runtime root>/<agent dir>/<name>`, removing what was there
/// (a symbolic link is removed, not followed) and creating `<agent dir>` when missing, without
/// following a symbolic link below the runtime root
/// ([`isolab_host::state_dir::create_dirs_beneath`]). Blocking.
pub(crate) fn fresh_dir(dir: &Path) -> std::io::Result<()> {
    let (Some(name), Some(agent), Some(root)) = (
        dir.file_name(),
        dir.parent().and_then(Path::file_name),
        dir.parent().and_then(Path::parent),
    ) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{}: not <runtime root>/<agent>/<name>", dir.display()),
        ));
    };
    match std::fs::symlink_metadata(dir) {
        // `remove_dir_all` does not follow symbolic links inside the directory either.
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(dir)?,
        Ok(_) => std::fs::remove_file(dir)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    isolab_host::state_dir::create_dirs_beneath(root, &Path::new(agent).join(name)).map(|_| ())
}

fn read_head(path: &Path, n: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(path)?.take(n).read_to_end(&mut head)?;
    Ok(head)
}

/// Host memory ceiling of one QEMU process: guest memory, QEMU's overhead, TCG's code cache.
pub fn qemu_memory_bytes(guest_mib: u64, accel: AccelKind) -> u64 {
    let tb = if accel == AccelKind::Tcg {
        TCG_TB_MIB
    } else {
        0
    };
    (guest_mib + QEMU_OVERHEAD_MIB + tb) << 20
}

/// The workload name and its params for the guest command line, with the trial's duration
/// added when the workload takes one and none was given.
pub fn workload_params(
    ctx: &TrialContext,
    spec: &InstanceSpec,
) -> Result<(String, Vec<(String, String)>), VmError> {
    let info = catalog::find(&spec.workload).ok_or_else(|| VmError::UnknownWorkload {
        instance: spec.index,
        name: spec.workload.clone(),
        known: catalog::names().join(", "),
    })?;
    let mut params: Vec<(String, String)> = spec
        .params
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    if !spec.params.contains_key("duration") && info.params.iter().any(|p| p.name == "duration") {
        params.push(("duration".into(), ctx.trial.duration.to_string()));
    }
    Ok((info.name.to_owned(), params))
}

/// One VM to boot.
#[derive(Debug)]
pub struct PlannedVm {
    /// Instance index.
    pub index: u32,
    /// How it boots.
    pub spec: VmSpec,
}

/// Makes the trial directory with its initramfs (carrying `plan`'s modules) and disks
/// (`disk_bytes` each) and the bridge network if planned; removes what it made on error and
/// hands back the planned VMs. Blocking.
pub fn make_trial(
    ready: &Ready,
    trial_dir: &Path,
    plan: TrialPlan,
    disk_bytes: u64,
) -> Result<Vec<PlannedVm>, VmError> {
    let TrialPlan {
        vms: plans,
        modules,
        net,
    } = plan;
    let dir_err = |source| VmError::TrialDir {
        path: trial_dir.to_path_buf(),
        source,
    };
    fresh_dir(trial_dir).map_err(dir_err)?;
    let made = (|| {
        ready.write_initramfs(&trial_dir.join(INITRAMFS_FILE), &modules)?;
        for disk in plans.iter().filter_map(|p| p.spec.disk.as_deref()) {
            super::plan::make_disk(disk, disk_bytes)?;
        }
        if let Some((ns, nics)) = &net {
            super::net::create(ns, nics)?;
        }
        Ok(())
    })();
    match made {
        Ok(()) => Ok(plans),
        Err(e) => {
            let _ = std::fs::remove_dir_all(trial_dir);
            if let Some((ns, _)) = &net
                && let Err(cleanup) = super::net::destroy(ns)
            {
                tracing::warn!("cleaning up after a failed prepare: {cleanup}");
            }
            Err(e)
        }
    }
}

/// Pids of live processes whose command line carries a VM name starting with `prefix` (after
/// QEMU's `-name`), for leftover scans.
pub fn vm_processes(prefix: &str) -> Vec<u32> {
    isolab_host::leaks::processes_whose_cmdline(|cmdline| {
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        args.windows(2)
            .any(|w| w[0] == b"-name" && w[1].starts_with(prefix.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_dirs_never_follow_a_planted_symlink() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("precious"), b"keep").unwrap();
        // Where the agent's runtime directory goes: refused.
        std::os::unix::fs::symlink(outside.path(), root.path().join("agent-1.1-0")).unwrap();
        let e = fresh_dir(&root.path().join("agent-1.1-0/t-a0")).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // Where the trial directory goes: the link itself is replaced by a directory.
        std::fs::create_dir(root.path().join("agent-1.1-1")).unwrap();
        let trial = root.path().join("agent-1.1-1/t-a0");
        std::os::unix::fs::symlink(outside.path(), &trial).unwrap();
        fresh_dir(&trial).unwrap();
        assert!(std::fs::symlink_metadata(&trial).unwrap().is_dir());
        // A stale trial directory with a link inside: removed without following it.
        std::os::unix::fs::symlink(outside.path(), trial.join("inner")).unwrap();
        fresh_dir(&trial).unwrap();
        assert_eq!(std::fs::read_dir(&trial).unwrap().count(), 0);
        let left: Vec<_> = std::fs::read_dir(outside.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["precious"]);
        assert_eq!(
            std::fs::read(outside.path().join("precious")).unwrap(),
            b"keep"
        );
        assert!(fresh_dir(Path::new("/")).is_err());
    }
}
