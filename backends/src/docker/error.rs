//! [`DockerError`]: what goes wrong in the Docker backend.

use super::daemon::DaemonError;
use isolab_host::netns::NetnsError;

/// What went wrong in the Docker backend.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// What every backend can refuse or fail at.
    #[error(transparent)]
    Common(#[from] crate::error::CommonError),
    /// The backend cannot run here.
    #[error("docker backend unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// A setting this backend cannot honour.
    #[error("docker backend: {what} is not supported")]
    Unsupported {
        /// The setting.
        what: String,
    },
    /// The platform's runtime is not a name the daemon knows (or not a name at all).
    #[error("docker runtime `{runtime}`: {reason}")]
    Runtime {
        /// The runtime asked for.
        runtime: String,
        /// Why it is refused, with the names the daemon knows.
        reason: String,
    },
    /// An Engine API call failed.
    #[error("docker {op} {target}: {source}")]
    Api {
        /// The operation (`create`, `start`, `import`…).
        op: &'static str,
        /// The container or image.
        target: String,
        /// The cause.
        #[source]
        source: bollard::errors::Error,
    },
    /// The workload image could not be built.
    #[error("workload image {tag}: {reason}")]
    Image {
        /// The tag.
        tag: String,
        /// Why.
        reason: String,
    },
    /// A private daemon could not be started.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// The trial's network could not be made or attached.
    #[error("network of instance {instance}: {source}")]
    Network {
        /// Instance index (or the trial's first).
        instance: u32,
        /// The cause.
        #[source]
        source: NetnsError,
    },
    /// A container started outside its instance cgroup (so outside its limits): it is killed.
    #[error(
        "instance {instance}: the container (pid {pid}) runs outside cgroup {cgroup}, so outside \
         its limits; the runtime `{runtime}` resolves cgroup_parent differently (youki does on \
         cgroup v1)"
    )]
    Misplaced {
        /// Instance index.
        instance: u32,
        /// The container's main process.
        pid: u32,
        /// The instance cgroup, relative to the agent's own.
        cgroup: String,
        /// The runtime asked for (empty: the daemon's default).
        runtime: String,
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

crate::error::from_common!(DockerError);

impl DockerError {
    /// An [`DockerError::Api`] error.
    pub(crate) fn api(
        op: &'static str,
        target: &str,
    ) -> impl FnOnce(bollard::errors::Error) -> Self {
        let target = target.to_owned();
        move |source| Self::Api { op, target, source }
    }
}
