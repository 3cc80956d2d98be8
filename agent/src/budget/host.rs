//! What the host (or the pod) allows, read once at start, and the limits written on the agent's
//! own cgroup directory so that the kernel holds the budget even if the accounting is wrong.

use std::path::Path;

use isolab_host::cgroup::{
    AgentDir, Cgroup, CgroupError, CgroupLimits, CgroupManager, CgroupVersion, Controller,
};

use super::Budget;

/// Values at or above this in a limit file mean "no limit" (v1 writes `PAGE_COUNTER_MAX` pages,
/// 9223372036854771712, for an unlimited `memory.limit_in_bytes`).
const UNLIMITED: u64 = 1 << 62;

/// What the host allows, before any reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLimits {
    /// Physical memory.
    pub memory_bytes: u64,
    /// The smaller of `kernel.pid_max` and `kernel.threads-max`.
    pub pids: u64,
    /// Free space of the file system that holds the agent's temporary directory.
    pub disk_free_bytes: u64,
    /// The memory limit of the cgroup the agent was started in or of any above it (a
    /// Kubernetes pod's or container's limit), if any.
    pub own_memory_bytes: Option<u64>,
    /// Their smallest `pids.max`, if any.
    pub own_pids: Option<u64>,
}

impl HostLimits {
    /// Reads this host: `memory_bytes` from the host facts, the rest from `/proc/sys/kernel`,
    /// `statvfs` of `temp_dir` and, when cgroups are usable, the limits above the agent
    /// ([`own_limits`]).
    pub fn read(memory_bytes: u64, temp_dir: &Path, manager: Option<&CgroupManager>) -> Self {
        let sysctl = |name: &str| {
            std::fs::read_to_string(Path::new("/proc/sys/kernel").join(name))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
        };
        let pids = [sysctl("pid_max"), sysctl("threads-max")]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(32768);
        // `fsblkcnt_t` and `c_ulong` are u64 here, narrower on 32-bit targets.
        #[allow(clippy::useless_conversion)]
        let disk_free_bytes = nix::sys::statvfs::statvfs(temp_dir)
            .map(|s| u64::from(s.blocks_available()).saturating_mul(u64::from(s.fragment_size())))
            .unwrap_or(0);
        let (own_memory_bytes, own_pids) = manager.map_or((None, None), own_limits);
        Self {
            memory_bytes,
            pids,
            disk_free_bytes,
            own_memory_bytes,
            own_pids,
        }
    }
}

/// The smallest memory limit and `pids.max` on the path from the agent's own cgroup up to the
/// root of its hierarchy (what a Kubernetes pod, a container or a systemd slice set); `None` for
/// no limit. Only reads.
pub fn own_limits(manager: &CgroupManager) -> (Option<u64>, Option<u64>) {
    let memory_file = match manager.version() {
        CgroupVersion::V1 => "memory.limit_in_bytes",
        CgroupVersion::V2 => "memory.max",
    };
    (
        smallest_up(manager.own_dir(Controller::Memory).as_deref(), memory_file),
        smallest_up(manager.own_dir(Controller::Pids).as_deref(), "pids.max"),
    )
}

/// The smallest limit in `file` of `dir` and its ancestors that have the file.
fn smallest_up(dir: Option<&Path>, file: &str) -> Option<u64> {
    dir?.ancestors()
        .map_while(|d| std::fs::read_to_string(d.join(file)).ok())
        .filter_map(|text| parse_limit(&text))
        .min()
}

/// A limit file's value: `None` for `max` or an unlimited number.
fn parse_limit(text: &str) -> Option<u64> {
    let text = text.trim();
    if text == "max" {
        return None;
    }
    text.parse::<u64>().ok().filter(|&n| n < UNLIMITED)
}

/// Writes the budget's memory and pids as the limits of the agent's own directory (v1 and v2),
/// under which every trial's cgroups live: the kernel then holds the envelope even if the
/// accounting had a bug. Only the agent's directory is written, nothing above it. Blocks.
pub fn limit_agent_dir(dir: &AgentDir, budget: &Budget) -> Result<(), CgroupError> {
    let cg = dir.manager().open(dir.name())?;
    cg.apply(&CgroupLimits {
        memory_bytes: Some(budget.memory_bytes),
        pids_max: Some(budget.pids),
        ..CgroupLimits::default()
    })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::sync::Arc;

    use super::*;
    use crate::budget::{BudgetConfig, less_reserve};

    const GIB: u64 = 1 << 30;

    fn put(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn get(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// A fake v1 cgroupfs: the agent sits at `/kubepods/pod1/c1` in memory and pids, and the
    /// pod level (`/kubepods/pod1`) carries `pod_memory` and `pod_pids`.
    fn fake_v1(pod_memory: &str, pod_pids: &str) -> (tempfile::TempDir, CgroupManager) {
        let tmp = tempfile::tempdir().unwrap();
        let unlimited = "9223372036854771712\n";
        for (root_file, value) in [
            ("memory/memory.limit_in_bytes", unlimited),
            ("memory/kubepods/memory.limit_in_bytes", unlimited),
            ("memory/kubepods/pod1/memory.limit_in_bytes", pod_memory),
            ("memory/kubepods/pod1/c1/memory.limit_in_bytes", unlimited),
            ("pids/kubepods/pod1/pids.max", pod_pids),
            ("pids/kubepods/pod1/c1/pids.max", "max\n"),
        ] {
            put(&tmp.path().join(root_file), value);
        }
        let proc_cgroup = "4:memory:/kubepods/pod1/c1\n3:pids:/kubepods/pod1/c1\n";
        let m = CgroupManager::with_root(tmp.path(), CgroupVersion::V1, proc_cgroup).unwrap();
        (tmp, m)
    }

    #[test]
    fn a_pod_limit_above_the_agent_lowers_the_default_budget_v1() {
        let (_tmp, m) = fake_v1("4294967296\n", "1000\n");
        assert_eq!(own_limits(&m), (Some(4 * GIB), Some(1000)));
        let host = HostLimits {
            memory_bytes: 64 * GIB,
            pids: 32768,
            disk_free_bytes: 0,
            own_memory_bytes: Some(4 * GIB),
            own_pids: Some(1000),
        };
        let b = Budget::resolve(&BudgetConfig::default(), &host);
        assert_eq!(b.memory_bytes, less_reserve(4 * GIB, GIB));
        assert_eq!(b.memory_bytes, 3 * GIB);
        assert_eq!(b.pids, 500);
        let (_tmp, free) = fake_v1("9223372036854771712\n", "max\n");
        assert_eq!(own_limits(&free), (None, None), "no limit anywhere");
    }

    #[test]
    fn a_pod_limit_above_the_agent_lowers_the_default_budget_v2() {
        let tmp = tempfile::tempdir().unwrap();
        let pod = tmp.path().join("kubepods.slice/pod1");
        put(&pod.join("memory.max"), "2147483648\n");
        put(&pod.join("pids.max"), "max\n");
        put(&pod.join("c1/memory.max"), "max\n");
        put(&pod.join("c1/pids.max"), "700\n");
        put(&pod.join("c1/cgroup.subtree_control"), "memory pids\n");
        let m = CgroupManager::with_root(
            tmp.path(),
            CgroupVersion::V2,
            "0::/kubepods.slice/pod1/c1\n",
        )
        .unwrap();
        assert_eq!(own_limits(&m), (Some(2 * GIB), Some(700)));
    }

    #[test]
    fn the_agent_dir_carries_the_budget_v1_and_nothing_above_is_written() {
        let (tmp, m) = fake_v1("4294967296\n", "1000\n");
        let (dir, _) = AgentDir::claim(Arc::new(m), "isolab-budget-test").unwrap();
        let mem = tmp.path().join("memory/kubepods/pod1/c1").join(dir.name());
        let pids = tmp.path().join("pids/kubepods/pod1/c1").join(dir.name());
        // The files the kernel makes in a new cgroup.
        put(&mem.join("memory.limit_in_bytes"), "9223372036854771712\n");
        put(
            &mem.join("memory.memsw.limit_in_bytes"),
            "9223372036854771712\n",
        );
        put(&pids.join("pids.max"), "max\n");
        let budget = Budget {
            memory_bytes: 3 * GIB,
            pids: 500,
            disk_bytes: 0,
            trials: 1,
            instances: 1,
        };
        limit_agent_dir(&dir, &budget).unwrap();
        assert_eq!(get(&mem.join("memory.limit_in_bytes")), "3221225472");
        assert_eq!(get(&mem.join("memory.memsw.limit_in_bytes")), "3221225472");
        assert_eq!(get(&pids.join("pids.max")), "500");
        assert_eq!(
            get(&tmp
                .path()
                .join("memory/kubepods/pod1/c1/memory.limit_in_bytes")),
            "9223372036854771712\n",
            "the agent's own cgroup is left alone"
        );
    }

    #[test]
    fn the_agent_dir_carries_the_budget_v2() {
        let tmp = tempfile::tempdir().unwrap();
        put(&tmp.path().join("cgroup.subtree_control"), "memory pids\n");
        let m = CgroupManager::with_root(tmp.path(), CgroupVersion::V2, "0::/\n").unwrap();
        let (dir, _) = AgentDir::claim(Arc::new(m), "isolab-budget-test").unwrap();
        let d = tmp.path().join(dir.name());
        put(&d.join("memory.max"), "max\n");
        put(&d.join("memory.swap.max"), "max\n");
        put(&d.join("pids.max"), "max\n");
        let budget = Budget {
            memory_bytes: GIB,
            pids: 123,
            disk_bytes: 0,
            trials: 1,
            instances: 1,
        };
        limit_agent_dir(&dir, &budget).unwrap();
        assert_eq!(get(&d.join("memory.max")), "1073741824");
        assert_eq!(get(&d.join("pids.max")), "123");
    }

    #[test]
    fn limit_files_read_max_and_huge_as_unlimited() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("2147483648\n"), Some(2 << 30));
        assert_eq!(parse_limit("garbage"), None);
    }
}
