//! The agent's configuration: where the workload binary is, the safety envelope, the bounds on
//! what a trial may ask for, the runtimes a trial may name, labels, the shutdown grace period and
//! which cgroup hierarchy to use.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use isolab_model::validate::ParamBounds;

use isolab_backends::container::RuntimeTable;
use isolab_host::cgroup::CgroupVersion;

/// Default hard `pids` ceiling of every instance cgroup.
pub const DEFAULT_CEILING_PIDS: u64 = 4096;
/// Default grace period for running trials to end after shutdown begins.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// Default prefix of the agent's own cgroup directory (see [`AgentConfig::cgroup_prefix`]).
pub const DEFAULT_CGROUP_PREFIX: &str = "isolab-agent";

/// Which cgroup hierarchy the agent creates its cgroups in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CgroupSource {
    /// The real `/sys/fs/cgroup`, nested under the agent's own cgroup from `/proc/self/cgroup`.
    #[default]
    Detect,
    /// Another root (a fake cgroupfs in tests), with its version and a `/proc/self/cgroup` text.
    Root {
        /// The directory that stands for `/sys/fs/cgroup`.
        root: PathBuf,
        /// Which layout it has.
        version: CgroupVersion,
        /// The contents `/proc/self/cgroup` would have.
        proc_self_cgroup: String,
    },
}

/// Everything the agent is configured with. `Default` gives a loopback-ready local agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// The `isolab-workload` binary; `None` means [`isolab_host::workload_bin::locate`] at start.
    pub workload_bin: Option<PathBuf>,
    /// Labels reported in capabilities (rack, zone…), used by placement.
    pub labels: BTreeMap<String, String>,
    /// Hard `pids.max` of every instance cgroup, whatever the pipeline asks.
    pub ceiling_pids: u64,
    /// Hard memory limit of every instance cgroup; `None` means half of the host's RAM.
    pub ceiling_memory_bytes: Option<u64>,
    /// How long running trials get to end after shutdown begins.
    pub grace: Duration,
    /// Which cgroup hierarchy to use.
    pub cgroups: CgroupSource,
    /// Prefix of the agent's cgroup directory. The directory is `<prefix>-<owner>-<n>` under
    /// the agent's own cgroup (`<owner>` is `<pid>.<start ticks>`, see [`isolab_host::owner`]; `n`
    /// counts agents started in one process), so that several agents can share a cgroup; at
    /// start an agent removes `<prefix>-*` directories whose owner is not alive (left by a
    /// crashed agent, also one that had this agent's pid) and never touches any other.
    pub cgroup_prefix: String,
    /// Host name reported in capabilities and statuses; `None` uses the kernel's.
    pub hostname: Option<String>,
    /// How often running instances' cgroup statistics are sampled.
    pub stats_interval: Duration,
    /// The vm backend's guest kernel, modules and QEMU (`--kernel`, `--modules`, `--qemu`).
    pub vm: isolab_backends::vm::VmConfig,
    /// Upper bounds on parameter values, durations and timeouts of the trials admitted
    /// (`crate::admission`); the defaults are `isolab validate`'s.
    pub bounds: ParamBounds,
    /// The host-wide budget of all running trials together ([`crate::budget`]).
    pub budget: crate::budget::BudgetConfig,
    /// The state directory everything the agent creates on disk lives under (see
    /// [`isolab_host::state_dir`]); default [`isolab_host::state_dir::DEFAULT_STATE_DIR`].
    pub state_dir: PathBuf,
    /// The OCI runtimes trials may name (`--runtime NAME=/abs/path`, `--runtime-arg NAME=ARG`);
    /// the default is `runc`, `crun`, `youki` and `runsc` as found on `PATH` at start.
    pub runtimes: RuntimeTable,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            workload_bin: None,
            labels: BTreeMap::new(),
            ceiling_pids: DEFAULT_CEILING_PIDS,
            ceiling_memory_bytes: None,
            grace: DEFAULT_GRACE,
            cgroups: CgroupSource::Detect,
            cgroup_prefix: DEFAULT_CGROUP_PREFIX.to_owned(),
            hostname: None,
            stats_interval: Duration::from_millis(100),
            vm: isolab_backends::vm::VmConfig::default(),
            bounds: ParamBounds::default(),
            budget: crate::budget::BudgetConfig::default(),
            state_dir: PathBuf::from(isolab_host::state_dir::DEFAULT_STATE_DIR),
            runtimes: RuntimeTable::detect(),
        }
    }
}

impl AgentConfig {
    /// The memory ceiling in force: the configured one, else half of `host_memory_bytes`.
    pub fn effective_ceiling_memory_bytes(&self, host_memory_bytes: u64) -> u64 {
        self.ceiling_memory_bytes
            .unwrap_or(host_memory_bytes / 2)
            .max(1 << 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_ceiling_defaults_to_half_of_ram() {
        let c = AgentConfig::default();
        assert_eq!(c.effective_ceiling_memory_bytes(8 << 30), 4 << 30);
        let c = AgentConfig {
            ceiling_memory_bytes: Some(1 << 30),
            ..AgentConfig::default()
        };
        assert_eq!(c.effective_ceiling_memory_bytes(8 << 30), 1 << 30);
    }
}
