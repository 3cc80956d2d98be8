//! Control groups behind one interface, for cgroup v1 (legacy/hybrid) and v2 (unified), and the
//! one engine that makes, limits, reads, kills and removes every trial's cgroups.
//!
//! # Where things are
//!
//! - How a cgroup limit is written: [`envelope`] computes an instance's final limits (platform
//!   limits under the agent's ceilings), [`CgroupEngine::create`] (`engine.rs`) makes the
//!   instance cgroup and calls [`Cgroup::apply`], which writes the kernel files (`v1.rs`,
//!   `v2.rs`; checks and unit conversions in `limits.rs`).
//! - A trial's cgroups from creation to removal: [`TrialCgroups`] (`trial.rs`); the agent's
//!   own directory that holds them: [`AgentDir`] (`agent_dir.rs`); every mounted hierarchy, for
//!   what runtimes make beyond ours: [`Hierarchies`] (`hierarchy.rs`).
//!
//! # Layout
//!
//! The agent nests every cgroup it makes under the cgroup it was started in (read from
//! `/proc/self/cgroup`), separately in every controller it uses. A cgroup is named by a path
//! relative to that "own" cgroup (`rel`, e.g. `isolab-<pid>/<trial>/<instance>`); the same `rel`
//! exists once per v1 controller, or once on the v2 hierarchy. [`CgroupManager::detect`] looks at
//! the real mounts; [`CgroupManager::with_root`] takes any directory so that tests run against a
//! fake cgroupfs in a temp dir. [`CgroupManager::create`] hands back an [`AnyCgroup`], which
//! dispatches the [`Cgroup`] trait to [`V1Cgroup`] or [`V2Cgroup`].
//!
//! # Rules
//!
//! - Never move our own processes: a new child joins its cgroup itself, between fork and exec, by
//!   writing `0` into every file of [`Cgroup::procs_files`] (see [`JoinTarget`]). The one
//!   exception is at start-up on v2, when the agent sits in the cgroup it must hand controllers
//!   down from (a container's own cgroup): it moves into a leaf `agent` of it and makes trial
//!   cgroups beside that leaf, so that the pod's limits bound every instance (`leaf.rs`).
//! - Never touch a cgroup we did not create: writes go only below our own cgroup, into the `rel`
//!   paths the caller named. `rel` is checked (no `..`, no absolute path, not empty).
//! - v1 uses cpu, cpuacct, cpuset, memory, pids, blkio and freezer, whichever are mounted; they
//!   may be separate mounts (`cpu`, `cpuacct`) or joined (`cpu,cpuacct`). Each new cpuset level
//!   gets `cpuset.cpus`/`cpuset.mems` copied from its parent before any task can join.
//! - v2 enables the needed controllers in `cgroup.subtree_control` of the intermediate levels of
//!   `rel` (never of our own cgroup or above). The "no internal processes" rule applies: only
//!   leaves hold processes, so a cgroup that already has processes cannot get children with
//!   controllers. The controllers available at all are those of our own cgroup's
//!   `cgroup.subtree_control` ([`CgroupManager::controllers`]).
//! - A requested limit whose control file is missing is an error naming the file, except I/O
//!   weight, which is skipped with a warning (it needs a proportional I/O scheduler).
//!
//! # This machine (hybrid v1)
//!
//! Debian 12 with v1 controllers and an almost empty v2 at `/sys/fs/cgroup/unified`. Memory is on
//! v1, so [`CgroupManager::detect`] picks v1. The agent's shell sits at `/process_api/<hash>` in the
//! memory hierarchy and at `/` in the others, so instance cgroups land at
//! `/sys/fs/cgroup/memory/process_api/<hash>/<rel>` and `/sys/fs/cgroup/<ctrl>/<rel>`. The sandbox's
//! PID 1 does not reap orphans: whoever kills processes should be a child subreaper and reap them.

pub mod agent_dir;
pub mod engine;
pub mod envelope;
mod error;
mod factory;
mod fsutil;
pub mod hierarchy;
mod join;
mod kill;
mod leaf;
mod limits;
pub mod stats;
mod trial;
mod v1;
mod v2;

#[cfg(test)]
mod fake_tests;
#[cfg(test)]
mod real_tests;

use std::path::PathBuf;
use std::time::Duration;

pub use agent_dir::AgentDir;
pub use engine::{CgroupEngine, CgroupPlan, InstanceLevel};
pub use error::CgroupError;
pub use factory::CgroupManager;
pub use hierarchy::{Hierarchies, HostFeatures};
pub use join::JoinTarget;
pub use trial::{InstanceCgroup, TrialCgroupError, TrialCgroups};
pub use v1::V1Cgroup;
pub use v2::V2Cgroup;

/// Which cgroup hierarchy is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum CgroupVersion {
    /// Legacy or hybrid: one hierarchy per controller.
    V1,
    /// Unified hierarchy.
    V2,
}

/// A cgroup controller the agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Controller {
    /// CPU weight and bandwidth.
    Cpu,
    /// CPU accounting (v1 only; part of `cpu` on v2).
    Cpuacct,
    /// CPU and memory-node placement.
    Cpuset,
    /// Memory limit and accounting.
    Memory,
    /// Task count limit.
    Pids,
    /// Block I/O (v1).
    Blkio,
    /// Block I/O (v2).
    Io,
    /// Freezing (v1 only; built into every cgroup on v2).
    Freezer,
}

impl Controller {
    /// Controllers used on v1, in the order they are created.
    pub const V1: [Self; 7] = [
        Self::Cpu,
        Self::Cpuacct,
        Self::Cpuset,
        Self::Memory,
        Self::Pids,
        Self::Blkio,
        Self::Freezer,
    ];
    /// Controllers used on v2.
    pub const V2: [Self; 5] = [Self::Cpu, Self::Cpuset, Self::Io, Self::Memory, Self::Pids];

    /// Kernel name of the controller.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cpuacct => "cpuacct",
            Self::Cpuset => "cpuset",
            Self::Memory => "memory",
            Self::Pids => "pids",
            Self::Blkio => "blkio",
            Self::Io => "io",
            Self::Freezer => "freezer",
        }
    }

    /// Controller for a kernel name, among those of `version`.
    pub fn from_name(name: &str, version: CgroupVersion) -> Option<Self> {
        let all: &[Self] = match version {
            CgroupVersion::V1 => &Self::V1,
            CgroupVersion::V2 => &Self::V2,
        };
        all.iter().copied().find(|c| c.name() == name)
    }
}

impl std::fmt::Display for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
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

/// Version-neutral statistics of one cgroup: the wire's [`isolab_wire::InstanceStats`], filled
/// here and sent as they are.
pub use isolab_wire::InstanceStats as CgroupStats;

/// One cgroup (in every controller it spans). All methods block; call them from
/// `spawn_blocking` in async code.
pub trait Cgroup {
    /// Path relative to the agent's own cgroup, as given at creation.
    fn rel_path(&self) -> &str;
    /// Writes the limits; a requested limit without its control file is an error.
    fn apply(&self, limits: &CgroupLimits) -> Result<(), CgroupError>;
    /// Every `cgroup.procs` a new child must join (one per distinct v1 hierarchy).
    fn procs_files(&self) -> Vec<PathBuf>;
    /// Moves a process (that we started) into this cgroup in every controller.
    fn add_pid(&self, pid: u32) -> Result<(), CgroupError>;
    /// Processes in this cgroup and its children, sorted, without duplicates.
    fn pids(&self) -> Result<Vec<u32>, CgroupError>;
    /// Current statistics.
    fn stats(&self) -> Result<CgroupStats, CgroupError>;
    /// Kills every process in this cgroup and its children and waits until none is left;
    /// returns the pids signalled (so that a subreaper can reap them).
    fn kill_all(&self, timeout: Duration) -> Result<Vec<u32>, CgroupError>;
    /// Removes this cgroup and its children in every controller; `Ok` if already gone.
    fn remove(&self) -> Result<(), CgroupError>;
}

/// A v1 or v2 cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyCgroup {
    /// Legacy hierarchy.
    V1(V1Cgroup),
    /// Unified hierarchy.
    V2(V2Cgroup),
}

impl AnyCgroup {
    /// Which hierarchy this cgroup lives on.
    pub fn version(&self) -> CgroupVersion {
        match self {
            Self::V1(_) => CgroupVersion::V1,
            Self::V2(_) => CgroupVersion::V2,
        }
    }

    /// Prepares [`Self::procs_files`] for a `pre_exec` hook.
    pub fn join_target(&self) -> Result<JoinTarget, CgroupError> {
        JoinTarget::new(&self.procs_files())
    }
}

macro_rules! dispatch {
    ($self:ident, $cg:ident => $e:expr) => {
        match $self {
            AnyCgroup::V1($cg) => $e,
            AnyCgroup::V2($cg) => $e,
        }
    };
}

impl Cgroup for AnyCgroup {
    fn rel_path(&self) -> &str {
        dispatch!(self, c => c.rel_path())
    }
    fn apply(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        dispatch!(self, c => c.apply(limits))
    }
    fn procs_files(&self) -> Vec<PathBuf> {
        dispatch!(self, c => c.procs_files())
    }
    fn add_pid(&self, pid: u32) -> Result<(), CgroupError> {
        dispatch!(self, c => c.add_pid(pid))
    }
    fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        dispatch!(self, c => c.pids())
    }
    fn stats(&self) -> Result<CgroupStats, CgroupError> {
        dispatch!(self, c => c.stats())
    }
    fn kill_all(&self, timeout: Duration) -> Result<Vec<u32>, CgroupError> {
        dispatch!(self, c => c.kill_all(timeout))
    }
    fn remove(&self) -> Result<(), CgroupError> {
        dispatch!(self, c => c.remove())
    }
}
