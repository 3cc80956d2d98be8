//! Control groups behind one interface, for cgroup v1 (legacy/hybrid) and v2 (unified).
//!
//! The agent nests every cgroup it makes under the cgroup it was started in (read from
//! `/proc/self/cgroup`), in every controller it uses, and never moves its own processes.
//! [`CgroupManager::detect`] looks at the real `/sys/fs/cgroup`; [`CgroupManager::with_root`] takes
//! any directory so that tests run against a fake cgroupfs in a temp dir.
//!
//! Layout: `<own cgroup>/<agent_dir>/<trial>/<instance>` where `agent_dir` is given at creation
//! (e.g. `isolab-<pid>`). [`Cgroup`] is one such directory (across all v1 controllers).

// (contract only: implementations land in v1.rs, v2.rs, stats.rs, factory.rs)

use std::path::PathBuf;

/// Which cgroup hierarchy is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Legacy or hybrid: one hierarchy per controller.
    V1,
    /// Unified hierarchy.
    V2,
}

/// Limits for one cgroup; `None` leaves the kernel's default (unlimited).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupLimits {
    /// Hard memory limit; swap is disabled where the kernel allows.
    pub memory_bytes: Option<u64>,
    /// Maximum number of tasks.
    pub pids_max: Option<u64>,
    /// CPU weight on the v2 scale 1..=10000 (v1: shares = weight × 1024 / 100).
    pub cpu_weight: Option<u64>,
    /// CPU cap as a fraction of one CPU (0.5 = half, 2.0 = two CPUs).
    pub cpu_quota: Option<f64>,
    /// CFS period for the quota, default 100 ms.
    pub cpu_period_us: Option<u64>,
    /// cpuset CPUs (`0-1`).
    pub cpuset_cpus: Option<String>,
    /// Block I/O weight 1..=10000 (v1 blkio.weight is clamped to 10..=1000).
    pub io_weight: Option<u64>,
    /// Read and write bytes/s cap, applied to each listed device (major, minor).
    pub io_bps: Option<(u64, Vec<(u64, u64)>)>,
}

/// Version-neutral statistics of one cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct CgroupStats {
    /// User CPU time.
    pub cpu_user_ns: u64,
    /// System CPU time.
    pub cpu_system_ns: u64,
    /// Total CPU time (v1 cpuacct.usage; v2 usage_usec).
    pub cpu_usage_ns: u64,
    /// Memory in use now.
    pub memory_current_bytes: u64,
    /// Highest memory use seen (0 when the kernel does not track it).
    pub memory_peak_bytes: u64,
    /// Times the memory limit was hit (v1 failcnt / v2 `max` events).
    pub memory_limit_hits: u64,
    /// OOM events.
    pub oom_events: u64,
    /// Processes killed by the OOM killer.
    pub oom_kills: u64,
    /// Tasks now.
    pub pids_current: u64,
    /// Times a fork was refused by pids.max.
    pub pids_limit_hits: u64,
    /// Bytes read from block devices.
    pub io_read_bytes: u64,
    /// Bytes written to block devices.
    pub io_write_bytes: u64,
}
