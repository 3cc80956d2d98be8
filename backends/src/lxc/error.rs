//! [`LxcError`]: what goes wrong in the LXC backend.

use std::path::PathBuf;

use crate::rootfs::RootfsError;
use isolab_host::netns::NetnsError;

/// What went wrong in the LXC backend.
#[derive(Debug, thiserror::Error)]
pub enum LxcError {
    /// What every backend can refuse or fail at.
    #[error(transparent)]
    Common(#[from] crate::error::CommonError),
    /// The backend cannot run here.
    #[error("lxc backend unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
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
    /// The trial's network could not be made.
    #[error("network: {0}")]
    Network(#[source] NetnsError),
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

crate::error::from_common!(LxcError);
