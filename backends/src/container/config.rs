//! Settings of the container backend.

use std::path::PathBuf;
use std::time::Duration;

pub use isolab_model::validate::DEFAULT_RUNTIMES;

use super::runtimes::RuntimeTable;

/// Settings of the container backend. `Default` suits a root agent on a normal host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerConfig {
    /// Directory for runtime state and bundles; each agent uses its own subdirectory (named like
    /// its cgroup directory), so it never sees containers it did not create.
    pub state_dir: PathBuf,
    /// The runtimes trials may name (name → binary and operator arguments), probed at start
    /// and reported, with [`DEFAULT_RUNTIMES`] not among them reported unavailable.
    pub runtimes: RuntimeTable,
    /// How long a probe container may take (the runtimes are probed concurrently, so this is
    /// also about how long the probe of the whole backend may take).
    pub probe_timeout: Duration,
    /// How long killing one trial's containers may take.
    pub stop_timeout: Duration,
    /// Size of every instance's `/tmp` tmpfs (counted in the agent's disk budget).
    pub tmp_bytes: u64,
}

impl Default for ContainerConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/run/isolab"),
            runtimes: RuntimeTable::detect(),
            probe_timeout: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(15),
            tmp_bytes: crate::tmpfs::DEFAULT_TMP_BYTES,
        }
    }
}
