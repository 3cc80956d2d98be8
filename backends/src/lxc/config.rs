//! Settings of the LXC backend.

use std::path::PathBuf;
use std::time::Duration;

/// Settings of the LXC backend. `Default` suits a root agent with Debian's `lxc` package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LxcConfig {
    /// Directory for the LXC path (`-P`) and the trials' roots and configurations; each agent
    /// uses `<state_dir>/<agent dir name>/lxc`, so it only ever sees its own containers.
    pub state_dir: PathBuf,
    /// The `lxc-execute` binary (a name on `PATH` or a path).
    pub lxc_execute: String,
    /// LXC's shipped shared configuration, whose capability drops and seccomp profile every
    /// instance gets ([`super::hardening`]).
    pub common_conf: PathBuf,
    /// How long the probe container may take.
    pub probe_timeout: Duration,
    /// How long killing one trial's containers may take.
    pub stop_timeout: Duration,
    /// Size of every instance's `/tmp` tmpfs (counted in the agent's disk budget).
    pub tmp_bytes: u64,
}

impl Default for LxcConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/run/isolab"),
            lxc_execute: "lxc-execute".to_owned(),
            common_conf: PathBuf::from(super::hardening::COMMON_CONF),
            probe_timeout: Duration::from_secs(20),
            stop_timeout: Duration::from_secs(5),
            tmp_bytes: crate::tmpfs::DEFAULT_TMP_BYTES,
        }
    }
}
