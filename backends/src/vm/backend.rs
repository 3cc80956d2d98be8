//! [`VmBackend`]: the `vm` backend on the [`Backend`] trait.
//!
//! Per trial: a directory `<runtime dir>/<agent dir>/<trial slug>/` holding the initramfs
//! (shared by the trial's instances; the workload is on each kernel command line), and one QEMU
//! process per instance named `<agent dir>-<slug>-i<index>` (its `-name`, which is how leftovers
//! are found), started inside the instance cgroup the runner's engine made (its memory limit,
//! when the platform sets none, is what QEMU needs: guest memory + QEMU's overhead, which
//! [`VmBackend`]'s cgroup plan tells the engine). Stop kills every QEMU by pid (after checking
//! it is still the process we started); teardown removes the files and the bridge network, and
//! the leftover scan looks for the directory, the network and any QEMU process carrying the
//! trial's name.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use isolab_model::pipeline::{Accel, BackendKind};
use isolab_model::resolve::ResolvedPlatform;

use super::accel::{self, AccelChoice, KVM_DEVICE, KvmCheck, KvmVerdict};
use super::error::VmError;
use super::launch::{self, LaunchOptions, VmProcess};
use super::net;
use super::plan::{self, Shape};
use super::probe;
use super::qemu::{AccelKind, VmSpec};
use super::setup::{self, Ready, VmConfig};
use crate::TRIAL_ENV;
use crate::envelope::Ceilings;
use crate::{AgentDir, Backend, BackendStatus, Launch, Leak, LeakReport, TrialContext};
use isolab_host::cgroup::{
    CgroupEngine, CgroupPlan, InstanceCgroup, TrialCgroupError, TrialCgroups,
};

/// The `vm` backend.
#[derive(Debug)]
pub struct VmBackend {
    engine: Result<Arc<CgroupEngine>, String>,
    ready: Result<Arc<Ready>, String>,
    // Boxed: one backend per agent, kept small beside the others in `AnyBackend`.
    config: Box<VmConfig>,
    kvm: Box<KvmVerdict>,
    status: Box<tokio::sync::OnceCell<BackendStatus>>,
}

/// One prepared VM.
#[derive(Debug)]
struct VmInstance {
    cgroup: InstanceCgroup,
    spec: VmSpec,
}

/// A prepared vm trial.
#[derive(Debug)]
pub struct VmPrepared {
    ctx: TrialContext,
    trial_dir: PathBuf,
    instances: Vec<VmInstance>,
    accel: AccelChoice,
    /// The bridge network's namespace, when the platform asked for one.
    net_ns: Option<String>,
    running: Mutex<Vec<VmProcess>>,
}

impl VmPrepared {
    /// The accelerator the trial's VMs use.
    pub fn accel(&self) -> &AccelChoice {
        &self.accel
    }
}

impl VmBackend {
    /// A vm backend nesting its cgroups in `dir` and booting `workload_bin` (which must be
    /// static) as `/init`; problems with either, the kernel or QEMU make it unavailable with the
    /// reason.
    pub fn new(
        dir: Result<Arc<AgentDir>, String>,
        workload_bin: Result<PathBuf, String>,
        ceilings: Ceilings,
        config: VmConfig,
    ) -> Self {
        let ready = workload_bin.and_then(|bin| Ready::find(&config, bin).map(Arc::new));
        if let Ok(d) = &dir {
            let stale = crate::remove_stale_runtime(&config.runtime_root(), d.name());
            if !stale.is_empty() {
                tracing::warn!(
                    ?stale,
                    "removed VM trial directories of agents that are gone"
                );
            }
        }
        let kvm = match config.kvm_override.clone() {
            Some(check) => KvmVerdict::fixed(check),
            None => KvmVerdict::new(),
        };
        Self {
            engine: CgroupEngine::for_backend(&dir, ceilings),
            ready,
            config: Box::new(config),
            kvm: Box::new(kvm),
            status: Box::default(),
        }
    }

    fn parts(&self) -> Result<(&Arc<AgentDir>, &Arc<Ready>), VmError> {
        let unavailable = |r: &String| VmError::Unavailable { reason: r.clone() };
        let ready = self.ready.as_ref().map_err(unavailable)?;
        let engine = self.engine.as_ref().map_err(unavailable)?;
        Ok((engine.dir(), ready))
    }

    fn dir(&self) -> Option<&Arc<AgentDir>> {
        self.engine.as_ref().ok().map(|e| e.dir())
    }

    /// The accelerator the platform's `accel` comes to here.
    async fn accel_for(&self, requested: Accel) -> Result<AccelChoice, VmError> {
        let check = match requested {
            Accel::Tcg => KvmCheck::Unusable {
                reason: "not asked".into(),
            },
            _ => self.kvm_check().await,
        };
        Ok(accel::decide(requested, &check)?)
    }

    /// Kernel, modules, QEMU and `/init`, when the backend is available.
    pub fn ready(&self) -> Option<&Ready> {
        self.ready.as_deref().ok()
    }

    /// The directory holding this agent's trial directories, when cgroups are usable.
    pub fn runtime_dir(&self) -> Option<PathBuf> {
        self.dir().map(|d| self.config.runtime_dir(d))
    }

    /// Whether KVM works here (booting a probe VM on it the first time).
    pub async fn kvm_check(&self) -> KvmCheck {
        let Ok((dir, ready)) = self.parts() else {
            return KvmCheck::Unusable {
                reason: "the vm backend is unavailable".into(),
            };
        };
        let (dir, ready) = (Arc::clone(dir), Arc::clone(ready));
        let runtime = self.config.runtime_dir(&dir);
        self.kvm
            .get(
                std::path::Path::new(KVM_DEVICE),
                self.config.kvm_probe_timeout,
                |timeout| async move {
                    probe::boot_probe(&ready, &dir, &runtime, AccelKind::Kvm, timeout).await
                },
            )
            .await
            .clone()
    }

    /// The accelerator `auto` picks here, with the reason.
    pub async fn auto_accel(&self) -> AccelChoice {
        let check = self.kvm_check().await;
        accel::decide(Accel::Auto, &check).unwrap_or_else(|e| AccelChoice {
            accel: AccelKind::Tcg,
            reason: e.to_string(),
        })
    }

    async fn probe_inner(&self) -> Result<BackendStatus, String> {
        let (dir, ready) = self.parts().map_err(|e| e.to_string())?;
        let choice = self.auto_accel().await;
        if choice.accel == AccelKind::Tcg {
            // KVM's probe proved nothing about TCG; one boot shows kernel, initramfs and QEMU work.
            let runtime = self.config.runtime_dir(dir);
            probe::boot_probe(
                ready,
                dir,
                &runtime,
                AccelKind::Tcg,
                self.config.tcg_probe_timeout,
            )
            .await
            .map_err(|why| format!("a probe VM on TCG {why}"))?;
        }
        Ok(BackendStatus {
            name: self.name().into(),
            available: true,
            version: format!("{} ({})", ready.vmm_version, ready.kernel.version),
            reason: String::new(),
            accel: choice.accel.as_str().into(),
        })
    }
}

impl Drop for VmBackend {
    /// Removes this agent's runtime directory (empty once every trial was torn down).
    fn drop(&mut self) {
        if let Some(dir) = self.dir() {
            let runtime = self.config.runtime_dir(dir);
            if let Err(e) = std::fs::remove_dir_all(&runtime)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!("removing {}: {e}", runtime.display());
            }
        }
    }
}

impl Backend for VmBackend {
    type Error = VmError;
    type Prepared = VmPrepared;

    fn name(&self) -> &'static str {
        "vm"
    }

    async fn probe(&self) -> BackendStatus {
        self.status
            .get_or_init(|| async {
                self.probe_inner()
                    .await
                    .unwrap_or_else(|reason| BackendStatus::unavailable("vm", reason))
            })
            .await
            .clone()
    }

    /// (Kernel, modules and QEMU are checked first: their absence is the more useful reason.)
    fn cgroup_engine(&self) -> Result<&Arc<CgroupEngine>, VmError> {
        let unavailable = |r: &String| VmError::Unavailable { reason: r.clone() };
        self.ready.as_ref().map_err(unavailable)?;
        self.engine.as_ref().map_err(unavailable)
    }

    /// Each QEMU's memory limit when the platform sets none: what the guest and QEMU need
    /// (refused when that is above the agent's ceiling).
    async fn cgroup_plan(&self, ctx: &TrialContext) -> Result<CgroupPlan, VmError> {
        let (dir, ready) = self.parts()?;
        let platform = ctx.platform(BackendKind::Vm, ResolvedPlatform::as_vm)?;
        let accel = self.accel_for(platform.accel).await?;
        let shape = Shape::of(platform, ready.default_machine, accel.accel);
        let qemu_bytes = setup::qemu_memory_bytes(shape.memory_mib, accel.accel);
        let ceiling = self.cgroup_engine()?.ceilings().memory_bytes;
        if qemu_bytes > ceiling {
            return Err(VmError::BadSetting {
                setting: "memory",
                reason: format!(
                    "guest memory {} MiB plus QEMU's overhead needs {} MiB, above the agent's \
                     memory ceiling of {} MiB",
                    shape.memory_mib,
                    qemu_bytes >> 20,
                    ceiling >> 20
                ),
            });
        }
        Ok(CgroupPlan {
            memory_default_bytes: Some(qemu_bytes),
            io_path: Some(self.config.runtime_dir(dir)),
            ..CgroupPlan::default()
        })
    }

    async fn prepare(
        &self,
        ctx: &TrialContext,
        cgroups: &TrialCgroups,
    ) -> Result<VmPrepared, VmError> {
        let (dir, ready) = self.parts()?;
        let platform = ctx.platform(BackendKind::Vm, ResolvedPlatform::as_vm)?;
        let accel = self.accel_for(platform.accel).await?;
        let shape = Shape::of(platform, ready.default_machine, accel.accel);
        let slug = ctx.slug();
        let trial_dir = self.config.runtime_dir(dir).join(&slug);
        let plan = plan::plan_trial(
            ctx,
            ready,
            &shape,
            &format!("{}-{slug}", dir.name()),
            &trial_dir,
        )?;
        let disk_bytes = self.config.disk_bytes;
        let net_ns = plan.net.as_ref().map(|(ns, _)| ns.clone());
        let ready = Arc::clone(ready);
        let made_dir = trial_dir.clone();
        let task = tokio::task::spawn_blocking(move || {
            setup::make_trial(&ready, &made_dir, plan, disk_bytes)
        });
        let made = task.await.map_err(|source| VmError::Task {
            trial: ctx.slug(),
            reason: source.to_string(),
        })??;
        let instances = made
            .into_iter()
            .map(|vm| {
                let cgroup = cgroups.instance(vm.index).cloned().ok_or_else(|| {
                    TrialCgroupError::NoInstance {
                        trial: ctx.slug(),
                        index: vm.index,
                    }
                })?;
                Ok(VmInstance {
                    cgroup,
                    spec: vm.spec,
                })
            })
            .collect::<Result<Vec<_>, VmError>>();
        let instances = match instances {
            Ok(i) => i,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&trial_dir);
                if let Some(ns) = &net_ns
                    && let Err(cleanup) = net::destroy(ns)
                {
                    tracing::warn!("cleaning up after a failed prepare: {cleanup}");
                }
                return Err(e);
            }
        };
        Ok(VmPrepared {
            ctx: ctx.clone(),
            trial_dir,
            instances,
            accel,
            net_ns,
            running: Mutex::new(Vec::new()),
        })
    }

    async fn start(&self, prepared: &mut VmPrepared) -> Result<Launch, VmError> {
        let (_, ready) = self.parts()?;
        let mut handles = Vec::with_capacity(prepared.instances.len());
        for inst in &prepared.instances {
            let index = inst.cgroup.index;
            let env = vec![
                (TRIAL_ENV, prepared.ctx.slug()),
                ("ISOLAB_INSTANCE", index.to_string()),
            ];
            let join = inst.cgroup.join_target()?;
            let opts = LaunchOptions {
                join: Some(join),
                env,
                netns: prepared.net_ns.as_deref().map(net::ns_path),
                ..LaunchOptions::default()
            };
            let (handle, process) = launch::spawn_vm(&ready.vmm, &inst.spec, index, opts)
                .await
                .map_err(|source| VmError::Launch {
                    instance: index,
                    source,
                })?;
            prepared
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(process);
            handles.push(handle);
        }
        Ok(Launch {
            instances: handles,
            accel: Some(prepared.accel.accel.as_str().to_owned()),
        })
    }

    /// Kills every QEMU by pid (after checking it is still the process we started).
    async fn stop(&self, prepared: &VmPrepared) -> Result<(), VmError> {
        let processes = prepared
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        launch::kill_vms(&processes).await
    }

    async fn teardown(&self, prepared: VmPrepared) -> Vec<String> {
        let VmPrepared {
            trial_dir, net_ns, ..
        } = prepared;
        tokio::task::spawn_blocking(move || {
            let mut errors = Vec::new();
            if let Err(e) = std::fs::remove_dir_all(&trial_dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                errors.push(format!("removing {}: {e}", trial_dir.display()));
            }
            if let Some(ns) = &net_ns
                && let Err(e) = net::destroy(ns)
            {
                errors.push(e.to_string());
            }
            errors
        })
        .await
        .unwrap_or_else(|e| vec![format!("teardown task failed: {e}")])
    }

    fn leftovers(&self, ctx: &TrialContext) -> LeakReport {
        let mut report = LeakReport::default();
        let Some(dir) = self.dir() else {
            return report;
        };
        let slug = ctx.slug();
        let prefix = format!("{}-{slug}", dir.name());
        for pid in setup::vm_processes(&format!("{prefix}-i")) {
            report.push(Leak::Qemu { pid });
        }
        for leak in net::leftovers(&prefix) {
            report.push(leak);
        }
        let trial_dir = self.config.runtime_dir(dir).join(&slug);
        if trial_dir.exists() {
            report.push(Leak::Other {
                what: format!("file {} still exists", trial_dir.display()),
            });
        }
        report
    }
}
