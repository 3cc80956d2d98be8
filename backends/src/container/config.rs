//! Settings of the container backend.

use std::path::PathBuf;
use std::time::Duration;

/// The runtimes probed at agent start and reported in capabilities.
pub const DEFAULT_RUNTIMES: [&str; 4] = ["runc", "crun", "youki", "runsc"];

/// Settings of the container backend. `Default` suits a root agent on a normal host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerConfig {
    /// Directory for runtime state and bundles; each agent uses its own subdirectory (named like
    /// its cgroup directory), so it never sees containers it did not create.
    pub state_dir: PathBuf,
    /// Runtimes (names on `PATH`, or paths) probed at start and reported.
    pub runtimes: Vec<String>,
    /// How long a probe container may take (the runtimes are probed concurrently, so this is
    /// also about how long the probe of the whole backend may take).
    pub probe_timeout: Duration,
    /// How long killing one trial's containers may take.
    pub stop_timeout: Duration,
}

impl Default for ContainerConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/run/isolab"),
            runtimes: DEFAULT_RUNTIMES.iter().map(|s| (*s).to_owned()).collect(),
            probe_timeout: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(15),
        }
    }
}
