//! Settings of the Docker backend: which daemon, and whether the agent may start its own.

use std::path::PathBuf;
use std::time::Duration;

/// The Engine socket when neither the configuration nor `DOCKER_HOST` names one.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Which Docker daemon the backend talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DaemonMode {
    /// Only the daemon at [`DockerConfig::socket`]; unavailable when none answers there.
    Existing,
    /// Always a private `dockerd` the agent starts (see [`super::PrivateDaemon`]) and stops.
    Private,
    /// The daemon at the socket when one answers, else a private one when `dockerd` is installed.
    #[default]
    Auto,
}

/// Settings of the Docker backend. `Default` suits a root agent: the system socket (or
/// `DOCKER_HOST` when it names a Unix socket), else a private daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfig {
    /// The Engine API socket of an existing daemon.
    pub socket: PathBuf,
    /// Which daemon to use.
    pub daemon: DaemonMode,
    /// Directory under which a private daemon keeps its data and runtime state; each agent uses
    /// `<state_dir>/<agent dir name>/dockerd`, removed when the backend is dropped.
    pub state_dir: PathBuf,
    /// The `dockerd` binary for a private daemon (a name on `PATH` or a path).
    pub dockerd: String,
    /// How long one Engine API call may take (image import included).
    pub api_timeout: Duration,
    /// How long a private daemon may take to answer after it was started.
    pub daemon_start_timeout: Duration,
    /// How long the probe container may take.
    pub probe_timeout: Duration,
    /// How long killing one trial's containers may take.
    pub stop_timeout: Duration,
    /// Remove the workload image at teardown too. Off by default: the image is tagged with the
    /// binary's hash and reused by the next trial (an intended cache, not a leak).
    pub remove_image: bool,
}

impl Default for DockerConfig {
    fn default() -> Self {
        let socket = std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
        Self {
            socket,
            daemon: DaemonMode::Auto,
            state_dir: PathBuf::from("/run/isolab"),
            dockerd: "dockerd".to_owned(),
            api_timeout: Duration::from_secs(120),
            daemon_start_timeout: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(10),
            remove_image: false,
        }
    }
}
