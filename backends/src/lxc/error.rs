//! [`LxcError`]: what goes wrong in the LXC backend.

use std::path::PathBuf;

use crate::args::ArgsError;
use crate::rootfs::RootfsError;
use isolab_host::cgroup::TrialCgroupError;
use isolab_host::netns::NetnsError;

/// What went wrong in the LXC backend.
#[derive(Debug, thiserror::Error)]
pub enum LxcError {
    /// The trial's platform is another backend's.
    #[error(transparent)]
    Platform(#[from] crate::PlatformMismatch),
    /// The backend cannot run here.
    #[error("lxc backend unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// The instance's command line is not allowed.
    #[error(transparent)]
    Args(#[from] ArgsError),
    /// A `minimal` root needs a statically linked workload.
    #[error(transparent)]
    NotStatic(#[from] crate::rootfs::NotStatic),
    /// The root directory could not be made.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    /// A file of the trial could not be written or removed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The trial's cgroups.
    #[error(transparent)]
    Cgroups(#[from] TrialCgroupError),
    /// The trial's network could not be made.
    #[error("network: {0}")]
    Network(#[source] NetnsError),
    /// `lxc-execute` could not be started.
    #[error("instance {instance}: cannot start {}: {source}", program.display())]
    Spawn {
        /// Instance index.
        instance: u32,
        /// The binary.
        program: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A blocking task panicked or was cancelled.
    #[error("blocking task of trial {trial} failed: {source}")]
    Task {
        /// The trial slug.
        trial: String,
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },
}
