//! [`ContainerBase`]: what the backends that run the workload binary inside a container root
//! (container, docker, lxc) all hold: the cgroup engine (with the agent's cgroup directory) and
//! the workload binary, with whether it is statically linked. Their per-backend state derefs to
//! it, so each reads `inner.dir`, `inner.workload_bin` as before.

use std::path::PathBuf;
use std::sync::Arc;

use super::AgentDir;
use super::envelope::Ceilings;
use isolab_host::cgroup::CgroupEngine;
use isolab_model::pipeline::RootfsKind;

use super::rootfs::NotStatic;

/// The cgroup engine and the workload binary of a container backend.
#[derive(Debug)]
pub struct ContainerBase {
    /// The agent's cgroup directory (and through it the cgroup manager).
    pub dir: Arc<AgentDir>,
    /// The cgroup engine (for a probe's cgroups; a trial's are the runner's).
    pub cgroups: Arc<CgroupEngine>,
    /// The workload binary on the host.
    pub workload_bin: PathBuf,
    /// Whether it is statically linked (required by the `minimal` rootfs).
    pub workload_static: bool,
}

impl ContainerBase {
    /// From a backend constructor's arguments; the error text says why the backend cannot run.
    pub fn new(
        dir: &Result<Arc<AgentDir>, String>,
        workload_bin: Result<PathBuf, String>,
        ceilings: Ceilings,
    ) -> Result<Self, String> {
        let cgroups = CgroupEngine::for_backend(dir, ceilings)?;
        let workload_bin = workload_bin?;
        Ok(Self {
            dir: Arc::clone(cgroups.dir()),
            workload_static: super::rootfs::is_static_elf(&workload_bin) == Some(true),
            cgroups,
            workload_bin,
        })
    }

    /// Whether the workload binary can run in a root of `kind` (a `minimal` root needs it
    /// statically linked).
    pub fn check_static(&self, kind: RootfsKind) -> Result<(), NotStatic> {
        super::rootfs::check_static(kind, self.workload_static, &self.workload_bin)
    }
}

/// A probe container's cleanup: `Ok` when it left nothing, else what it left, one line.
pub fn nothing_left(problems: &[String]) -> Result<(), String> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "probe container left things behind: {}",
            problems.join("; ")
        ))
    }
}

/// `impl Deref<Target = ContainerBase>` for a backend's state struct with a field `base`, so
/// that `inner.dir` and `inner.workload_bin` read through to the base.
macro_rules! deref_to_base {
    ($t:ty) => {
        impl std::ops::Deref for $t {
            type Target = $crate::base::ContainerBase;

            fn deref(&self) -> &Self::Target {
                &self.base
            }
        }
    };
}
pub(crate) use deref_to_base;
