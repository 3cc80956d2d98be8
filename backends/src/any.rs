//! [`AnyBackend`]: one enum over every backend, implementing [`Backend`] by dispatch, so the
//! agent holds a plain list. A new backend adds a variant to each enum here.

use super::native::{NativeBackend, NativeError, NativePrepared};
use std::sync::Arc;

use super::{Backend, BackendStatus, Launch, LeakReport, TrialContext};
use crate::container::{ContainerBackend, ContainerError, ContainerPrepared};
use crate::docker::{DockerBackend, DockerError, DockerPrepared};
use crate::lxc::{LxcBackend, LxcError, LxcPrepared};
use crate::vm::{VmBackend, VmError, VmPrepared};
use isolab_host::cgroup::{CgroupEngine, CgroupPlan, TrialCgroups};

/// Every backend this agent has.
#[derive(Debug)]
pub enum AnyBackend {
    /// Plain processes.
    Native(NativeBackend),
    /// OCI containers run by an OCI runtime.
    Container(ContainerBackend),
    /// QEMU virtual machines.
    Vm(VmBackend),
    /// Docker Engine containers.
    Docker(DockerBackend),
    /// LXC system containers.
    Lxc(LxcBackend),
}

/// The per-trial state of any backend.
// One value per running trial, moved rarely: boxing the larger variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum AnyPrepared {
    /// Of the native backend.
    Native(NativePrepared),
    /// Of the container backend.
    Container(ContainerPrepared),
    /// Of the vm backend.
    Vm(VmPrepared),
    /// Of the docker backend.
    Docker(DockerPrepared),
    /// Of the lxc backend.
    Lxc(LxcPrepared),
}

/// The error of any backend.
#[derive(Debug, thiserror::Error)]
pub enum AnyBackendError {
    /// From the native backend.
    #[error(transparent)]
    Native(#[from] NativeError),
    /// From the container backend.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// From the vm backend.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// From the docker backend.
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// From the lxc backend.
    #[error(transparent)]
    Lxc(#[from] LxcError),
    /// A prepared trial handed to another backend than the one that prepared it (a bug).
    #[error("trial prepared by one backend handed to backend `{backend}`")]
    Mismatch {
        /// The backend it was handed to.
        backend: &'static str,
    },
}

impl Backend for AnyBackend {
    type Error = AnyBackendError;
    type Prepared = AnyPrepared;

    fn name(&self) -> &'static str {
        match self {
            Self::Native(b) => b.name(),
            Self::Container(b) => b.name(),
            Self::Vm(b) => b.name(),
            Self::Docker(b) => b.name(),
            Self::Lxc(b) => b.name(),
        }
    }

    async fn probe(&self) -> BackendStatus {
        match self {
            Self::Native(b) => b.probe().await,
            Self::Container(b) => b.probe().await,
            Self::Vm(b) => b.probe().await,
            Self::Docker(b) => b.probe().await,
            Self::Lxc(b) => b.probe().await,
        }
    }

    fn cgroup_engine(&self) -> Result<&Arc<CgroupEngine>, AnyBackendError> {
        match self {
            Self::Native(b) => Ok(b.cgroup_engine()?),
            Self::Container(b) => Ok(b.cgroup_engine()?),
            Self::Vm(b) => Ok(b.cgroup_engine()?),
            Self::Docker(b) => Ok(b.cgroup_engine()?),
            Self::Lxc(b) => Ok(b.cgroup_engine()?),
        }
    }

    fn kill_timeout(&self) -> std::time::Duration {
        match self {
            Self::Native(b) => b.kill_timeout(),
            Self::Container(b) => b.kill_timeout(),
            Self::Vm(b) => b.kill_timeout(),
            Self::Docker(b) => b.kill_timeout(),
            Self::Lxc(b) => b.kill_timeout(),
        }
    }

    async fn cgroup_plan(&self, trial: &TrialContext) -> Result<CgroupPlan, AnyBackendError> {
        match self {
            Self::Native(b) => Ok(b.cgroup_plan(trial).await?),
            Self::Container(b) => Ok(b.cgroup_plan(trial).await?),
            Self::Vm(b) => Ok(b.cgroup_plan(trial).await?),
            Self::Docker(b) => Ok(b.cgroup_plan(trial).await?),
            Self::Lxc(b) => Ok(b.cgroup_plan(trial).await?),
        }
    }

    async fn prepare(
        &self,
        trial: &TrialContext,
        cgroups: &TrialCgroups,
    ) -> Result<AnyPrepared, AnyBackendError> {
        match self {
            Self::Native(b) => Ok(AnyPrepared::Native(b.prepare(trial, cgroups).await?)),
            Self::Container(b) => Ok(AnyPrepared::Container(b.prepare(trial, cgroups).await?)),
            Self::Vm(b) => Ok(AnyPrepared::Vm(b.prepare(trial, cgroups).await?)),
            Self::Docker(b) => Ok(AnyPrepared::Docker(b.prepare(trial, cgroups).await?)),
            Self::Lxc(b) => Ok(AnyPrepared::Lxc(b.prepare(trial, cgroups).await?)),
        }
    }

    async fn start(&self, prepared: &mut AnyPrepared) -> Result<Launch, AnyBackendError> {
        match (self, prepared) {
            (Self::Native(b), AnyPrepared::Native(p)) => Ok(b.start(p).await?),
            (Self::Container(b), AnyPrepared::Container(p)) => Ok(b.start(p).await?),
            (Self::Vm(b), AnyPrepared::Vm(p)) => Ok(b.start(p).await?),
            (Self::Docker(b), AnyPrepared::Docker(p)) => Ok(b.start(p).await?),
            (Self::Lxc(b), AnyPrepared::Lxc(p)) => Ok(b.start(p).await?),
            _ => Err(AnyBackendError::Mismatch {
                backend: self.name(),
            }),
        }
    }

    async fn stop(&self, prepared: &AnyPrepared) -> Result<(), AnyBackendError> {
        match (self, prepared) {
            (Self::Native(b), AnyPrepared::Native(p)) => Ok(b.stop(p).await?),
            (Self::Container(b), AnyPrepared::Container(p)) => Ok(b.stop(p).await?),
            (Self::Vm(b), AnyPrepared::Vm(p)) => Ok(b.stop(p).await?),
            (Self::Docker(b), AnyPrepared::Docker(p)) => Ok(b.stop(p).await?),
            (Self::Lxc(b), AnyPrepared::Lxc(p)) => Ok(b.stop(p).await?),
            _ => Err(AnyBackendError::Mismatch {
                backend: self.name(),
            }),
        }
    }

    async fn teardown(&self, prepared: AnyPrepared) -> Vec<String> {
        match (self, prepared) {
            (Self::Native(b), AnyPrepared::Native(p)) => b.teardown(p).await,
            (Self::Container(b), AnyPrepared::Container(p)) => b.teardown(p).await,
            (Self::Vm(b), AnyPrepared::Vm(p)) => b.teardown(p).await,
            (Self::Docker(b), AnyPrepared::Docker(p)) => b.teardown(p).await,
            (Self::Lxc(b), AnyPrepared::Lxc(p)) => b.teardown(p).await,
            (b, _) => vec![AnyBackendError::Mismatch { backend: b.name() }.to_string()],
        }
    }

    fn leftovers(&self, trial: &TrialContext) -> LeakReport {
        match self {
            Self::Native(b) => b.leftovers(trial),
            Self::Container(b) => b.leftovers(trial),
            Self::Vm(b) => b.leftovers(trial),
            Self::Docker(b) => b.leftovers(trial),
            Self::Lxc(b) => b.leftovers(trial),
        }
    }
}
