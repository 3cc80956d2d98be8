//! [`VmBackend`]: the `vm` backend on the [`Backend`] trait.
//!
//! Per trial: a directory `<runtime dir>/<agent dir>/<trial slug>/` holding the initramfs
//! (shared by the trial's instances; the workload is on each kernel command line), a cgroup
//! `<agent dir>/<slug>/i<index>` per QEMU process (memory ceiling = guest memory + QEMU's
//! overhead, the agent's pids ceiling, the instance's CPU weight), and one QEMU process per
//! instance named `<agent dir>-<slug>-i<index>` (its `-name`, which is how leftovers are found).
//! Stop kills every QEMU by pid (after checking it is still the process we started) and then
//! whatever is left in the cgroups; teardown removes cgroups and files, and the leftover scan
//! looks for the cgroup, the directory and any QEMU process carrying the trial's name.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use isolab_model::pipeline::{Accel, BackendKind};
use isolab_model::resolve::ResolvedPlatform;

use super::accel::{self, AccelChoice, KVM_DEVICE, KvmCheck, KvmVerdict};
use super::error::VmError;
use super::launch::{self, LaunchOptions, VmProcess};
use super::net;
use super::plan::{self, Shape};
use super::probe;
use super::qemu::{AccelKind, VmSpec};
use super::setup::{self, MadeVm, Ready, VmConfig};
use crate::backend::TRIAL_ENV;
use crate::backend::envelope::Ceilings;
use crate::backend::{
    AgentDir, Backend, BackendStatus, Launch, Leak, LeakReport, TrialContext, process_alive,
};
use crate::cgroup::{AnyCgroup, Cgroup, CgroupStats};

/// How long killing one cgroup's processes may take.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// The `vm` backend.
#[derive(Debug)]
pub struct VmBackend {
    dir: Result<Arc<AgentDir>, String>,
    ready: Result<Arc<Ready>, String>,
    ceilings: Ceilings,
    // Boxed: one backend per agent, kept small beside the others in `AnyBackend`.
    config: Box<VmConfig>,
    kvm: Box<KvmVerdict>,
    status: Box<tokio::sync::OnceCell<BackendStatus>>,
}

/// One prepared VM.
#[derive(Debug)]
struct VmInstance {
    index: u32,
    cgroup: Arc<AnyCgroup>,
    spec: VmSpec,
}

/// A prepared vm trial.
#[derive(Debug)]
pub struct VmPrepared {
    ctx: TrialContext,
    trial_dir: PathBuf,
    trial_cgroup: Arc<AnyCgroup>,
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
            let stale = crate::backend::remove_stale_runtime(&config.runtime_root(), d.name());
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
            dir,
            ready,
            ceilings,
            config: Box::new(config),
            kvm: Box::new(kvm),
            status: Box::default(),
        }
    }

    fn parts(&self) -> Result<(&Arc<AgentDir>, &Arc<Ready>), VmError> {
        let unavailable = |r: &String| VmError::Unavailable { reason: r.clone() };
        let ready = self.ready.as_ref().map_err(unavailable)?;
        let dir = self.dir.as_ref().map_err(unavailable)?;
        Ok((dir, ready))
    }

    /// Kernel, modules, QEMU and `/init`, when the backend is available.
    pub fn ready(&self) -> Option<&Ready> {
        self.ready.as_deref().ok()
    }

    /// The directory holding this agent's trial directories, when cgroups are usable.
    pub fn runtime_dir(&self) -> Option<PathBuf> {
        self.dir.as_ref().ok().map(|d| self.config.runtime_dir(d))
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

    fn instance(&self, prepared: &VmPrepared, index: u32) -> Result<Arc<AnyCgroup>, VmError> {
        prepared
            .instances
            .iter()
            .find(|i| i.index == index)
            .map(|i| Arc::clone(&i.cgroup))
            .ok_or_else(|| VmError::NoInstance {
                trial: prepared.ctx.slug(),
                index,
            })
    }
}

impl Drop for VmBackend {
    /// Removes this agent's runtime directory (empty once every trial was torn down).
    fn drop(&mut self) {
        if let Ok(dir) = &self.dir {
            let runtime = self.config.runtime_dir(dir);
            if let Err(e) = std::fs::remove_dir_all(&runtime)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!("removing {}: {e}", runtime.display());
            }
        }
    }
}

/// Kills and removes a cgroup subtree.
fn destroy(cg: &AnyCgroup) -> Result<(), VmError> {
    let rel = cg.rel_path().to_owned();
    cg.kill_all(KILL_TIMEOUT)
        .map_err(|source| VmError::Cgroup {
            rel: rel.clone(),
            source,
        })?;
    cg.remove()
        .map_err(|source| VmError::Cgroup { rel, source })
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

    async fn prepare(&self, ctx: &TrialContext) -> Result<VmPrepared, VmError> {
        let (dir, ready) = self.parts()?;
        let platform = ctx.platform(BackendKind::Vm, ResolvedPlatform::as_vm)?;
        let requested = platform.accel;
        let check = match requested {
            Accel::Tcg => KvmCheck::Unusable {
                reason: "not asked".into(),
            },
            _ => self.kvm_check().await,
        };
        let accel = accel::decide(requested, &check)?;
        let shape = Shape::of(platform, ready.default_machine, accel.accel);
        let qemu_bytes = setup::qemu_memory_bytes(shape.memory_mib, accel.accel);
        if qemu_bytes > self.ceilings.memory_bytes {
            return Err(VmError::BadSetting {
                setting: "memory",
                reason: format!(
                    "guest memory {} MiB plus QEMU's overhead needs {} MiB, above the agent's \
                     memory ceiling of {} MiB",
                    shape.memory_mib,
                    qemu_bytes >> 20,
                    self.ceilings.memory_bytes >> 20
                ),
            });
        }
        let slug = ctx.slug();
        let runtime = self.config.runtime_dir(dir);
        let trial_dir = runtime.join(&slug);
        let io_device = crate::backend::envelope::block_device_of(
            runtime.ancestors().find(|p| p.exists()).unwrap_or(&runtime),
        );
        let plan = plan::plan_trial(
            ctx,
            ready,
            &shape,
            &format!("{}-{slug}", dir.name()),
            &trial_dir,
            self.ceilings,
            qemu_bytes,
            io_device,
        )?;
        let disk_bytes = self.config.disk_bytes;
        let net_ns = plan.net.as_ref().map(|(ns, _)| ns.clone());
        let (dir, ready) = (Arc::clone(dir), Arc::clone(ready));
        let made_dir = trial_dir.clone();
        let task = tokio::task::spawn_blocking(move || {
            setup::make_trial(&dir, &ready, &slug, &made_dir, plan, disk_bytes)
        });
        let (trial_cgroup, made) = task.await.map_err(|source| VmError::Task {
            trial: ctx.slug(),
            reason: source.to_string(),
        })??;
        let instances = made
            .into_iter()
            .map(
                |MadeVm {
                     index,
                     cgroup,
                     spec,
                 }| VmInstance {
                    index,
                    cgroup: Arc::new(cgroup),
                    spec,
                },
            )
            .collect();
        Ok(VmPrepared {
            ctx: ctx.clone(),
            trial_dir,
            trial_cgroup: Arc::new(trial_cgroup),
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
            let env = vec![
                (TRIAL_ENV, prepared.ctx.slug()),
                ("ISOLAB_INSTANCE", inst.index.to_string()),
            ];
            let rel = inst.cgroup.rel_path().to_owned();
            let join = inst
                .cgroup
                .join_target()
                .map_err(|source| VmError::Cgroup { rel, source })?;
            let opts = LaunchOptions {
                join: Some(join),
                env,
                netns: prepared.net_ns.as_deref().map(net::ns_path),
                ..LaunchOptions::default()
            };
            let (handle, process) = launch::spawn_vm(&ready.vmm, &inst.spec, inst.index, opts)
                .await
                .map_err(|source| VmError::Launch {
                    instance: inst.index,
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

    fn stats(&self, prepared: &VmPrepared, index: u32) -> Result<CgroupStats, VmError> {
        let cg = self.instance(prepared, index)?;
        cg.stats().map_err(|source| VmError::Cgroup {
            rel: cg.rel_path().to_owned(),
            source,
        })
    }

    async fn stop(&self, prepared: &VmPrepared) -> Result<(), VmError> {
        let processes = prepared
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let killed = launch::kill_vms(&processes).await;
        let cgroups: Vec<_> = prepared
            .instances
            .iter()
            .map(|i| Arc::clone(&i.cgroup))
            .collect();
        let trial = prepared.ctx.slug();
        let swept = tokio::task::spawn_blocking(move || {
            cgroups.iter().try_for_each(|cg| {
                cg.kill_all(KILL_TIMEOUT)
                    .map(drop)
                    .map_err(|source| VmError::Cgroup {
                        rel: cg.rel_path().to_owned(),
                        source,
                    })
            })
        })
        .await
        .map_err(|e| VmError::Task {
            trial,
            reason: e.to_string(),
        })?;
        killed.and(swept)
    }

    async fn teardown(&self, prepared: VmPrepared) -> LeakReport {
        let stopped = self.stop(&prepared).await;
        let VmPrepared {
            ctx,
            trial_dir,
            trial_cgroup,
            instances,
            net_ns,
            ..
        } = prepared;
        let done = tokio::task::spawn_blocking(move || {
            let mut errors: Vec<String> =
                stopped.err().map(|e| e.to_string()).into_iter().collect();
            for inst in &instances {
                if let Err(e) = destroy(&inst.cgroup) {
                    errors.push(e.to_string());
                }
            }
            if let Err(e) = destroy(&trial_cgroup) {
                errors.push(e.to_string());
            }
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
        .await;
        let mut report = self.leftovers(&ctx);
        let errors = done.unwrap_or_else(|e| vec![format!("teardown task failed: {e}")]);
        for e in errors {
            tracing::warn!(trial = %ctx.slug(), "teardown: {e}");
            if !report.is_clean() {
                report.push(Leak::Other {
                    what: format!("teardown error: {e}"),
                });
            }
        }
        report
    }

    fn leftovers(&self, ctx: &TrialContext) -> LeakReport {
        let mut report = LeakReport::default();
        let Ok(dir) = &self.dir else {
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
        let rel = dir.rel(&slug);
        if dir.manager().exists(&rel) {
            if let Ok(pids) = dir.manager().open(&rel).and_then(|cg| cg.pids()) {
                for pid in pids {
                    let comm = process_alive(pid, None).unwrap_or_default();
                    report.push(Leak::Process { pid, comm });
                }
            }
            report.push(Leak::Cgroup { path: rel });
        }
        report.merge(LeakReport::default());
        report
    }
}
