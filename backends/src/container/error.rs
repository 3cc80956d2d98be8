//! [`ContainerError`]: what goes wrong in the container backend, naming the runtime, path,
//! cgroup or instance involved.

use std::path::PathBuf;

use super::bundle::BundleError;
use super::runtime::RuntimeError;
use crate::rootfs::RootfsError;
use isolab_host::cgroup::hierarchy::HierarchyError;
use isolab_host::netns::NetnsError;

/// What went wrong in the container backend.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// What every backend can refuse or fail at.
    #[error(transparent)]
    Common(#[from] crate::error::CommonError),
    /// The backend cannot run here at all.
    #[error("container backend unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// The platform's runtime cannot run here.
    #[error("container runtime `{runtime}` unavailable: {reason}")]
    RuntimeUnavailable {
        /// The runtime name or path.
        runtime: String,
        /// Why (from the probe, or the lookup).
        reason: String,
    },
    /// A directory of the trial's state could not be made or removed.
    #[error("state directory {}: {source}", path.display())]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A root filesystem could not be made.
    #[error("instance {instance}: {source}")]
    Rootfs {
        /// Instance index.
        instance: u32,
        /// The cause.
        #[source]
        source: RootfsError,
    },
    /// A bundle could not be built or written.
    #[error("instance {instance}: bundle {}: {source}", path.display())]
    Bundle {
        /// Instance index.
        instance: u32,
        /// The bundle directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: BundleError,
    },
    /// A runtime command failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The runtime could not be started for an instance.
    #[error("instance {instance}: cannot start runtime {}: {source}", program.display())]
    Spawn {
        /// Instance index.
        instance: u32,
        /// The runtime binary.
        program: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The bridge network could not be made or removed.
    #[error("bridge network of trial {trial}: {source}")]
    Netns {
        /// The trial slug.
        trial: String,
        /// The cause.
        #[source]
        source: NetnsError,
    },
    /// A cgroup directory of another hierarchy could not be removed.
    #[error(transparent)]
    Hierarchy(#[from] HierarchyError),
    /// Instances that did not stop in time.
    #[error("trial {trial}: instances {instances:?} still running after {timeout_ms} ms")]
    StopTimeout {
        /// The trial slug.
        trial: String,
        /// Their indexes.
        instances: Vec<u32>,
        /// How long was waited.
        timeout_ms: u128,
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

crate::error::from_common!(ContainerError);
