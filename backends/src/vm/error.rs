//! [`VmError`]: what goes wrong in the vm backend, each variant naming the setting, file,
//! instance or cgroup concerned.

use super::accel::AccelError;
use super::cmdline::CmdlineError;
use super::initramfs::InitramfsError;
use super::launch::LaunchError;

/// What went wrong in the vm backend.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// What every backend can refuse or fail at.
    #[error(transparent)]
    Common(#[from] crate::error::CommonError),
    /// The backend cannot run here (no kernel, no QEMU, no static workload binary, no cgroups).
    #[error("vm backend unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// A platform setting the backend cannot honour.
    #[error("vm platform setting `{setting}`: {reason}")]
    BadSetting {
        /// The setting (`memory`, `machine`, …).
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The asked-for accelerator is not available.
    #[error(transparent)]
    Accel(#[from] AccelError),
    /// A workload that is not in the catalog.
    #[error("instance {instance}: unknown workload `{name}`; this agent runs only: {known}")]
    UnknownWorkload {
        /// Instance index.
        instance: u32,
        /// The name asked for.
        name: String,
        /// The catalog's names.
        known: String,
    },
    /// The kernel command line could not be built.
    #[error("instance {instance}: {source}")]
    Cmdline {
        /// Instance index.
        instance: u32,
        /// The cause.
        #[source]
        source: CmdlineError,
    },
    /// The initramfs could not be written.
    #[error(transparent)]
    Initramfs(#[from] InitramfsError),
    /// The trial directory could not be made or removed.
    #[error("trial directory {}: {source}", path.display())]
    TrialDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A guest disk could not be made.
    #[error("guest disk {}: {reason}", path.display())]
    Disk {
        /// The image file.
        path: std::path::PathBuf,
        /// What failed.
        reason: String,
    },
    /// The trial's bridge network could not be made or removed.
    #[error("VM network namespace {ns}: {reason}")]
    Network {
        /// The namespace.
        ns: String,
        /// What failed.
        reason: String,
    },
    /// A VM could not be started.
    #[error("instance {instance}: {source}")]
    Launch {
        /// Instance index.
        instance: u32,
        /// The cause.
        #[source]
        source: LaunchError,
    },
    /// VM processes that survived SIGKILL.
    #[error("QEMU processes {pids:?} still alive after SIGKILL")]
    Unkillable {
        /// Their pids.
        pids: Vec<u32>,
    },
    /// A blocking task panicked or was cancelled.
    #[error("background task of trial {trial} failed: {reason}")]
    Task {
        /// The trial slug.
        trial: String,
        /// The cause.
        reason: String,
    },
}

crate::error::from_common!(VmError);
