//! The host-wide envelope: what all running trials together may hold, enforced when a trial is
//! admitted (before anything of it is made) and again by the kernel, through the limits of the
//! agent's own cgroup directory ([`crate::budget::limit_agent_dir`]).
//!
//! # What is counted
//!
//! - memory: the sum of the memory limits of every running instance, each the limit the cgroup
//!   engine writes ([`isolab_host::cgroup::CgroupEngine::limits`], computed once at admission and handed
//!   to the runner);
//! - pids: the sum of their `pids.max`;
//! - disk: the bytes of scratch the agent makes for them (the `/tmp` tmpfs of runc, Docker and
//!   LXC instances, the disk images of VMs); a native instance's scratch tmpfs is as large as its
//!   memory limit and charged to its memory cgroup, so the memory budget already holds it;
//! - trials and instances running at once.
//!
//! # Defaults
//!
//! Each of memory, pids and disk is `base − reserve`, where the reserve (for the agent itself and
//! the operating system) is `max(floor, base / 10)`, never more than half of `base`:
//!
//! | resource | base | floor |
//! |---|---|---|
//! | memory | host RAM, or the memory limit of the cgroup the agent was started in (or of any cgroup above it, as a Kubernetes pod's) when smaller | 1 GiB |
//! | pids | `kernel.pid_max`, `kernel.threads-max`, or the `pids.max` of the agent's cgroup and those above it, the smallest | 1024 |
//! | disk | free space of the file system that holds the agent's temporary directory, at start | 1 GiB |
//!
//! At most [`DEFAULT_MAX_TRIALS`] trials and [`DEFAULT_MAX_INSTANCES`] instances at once.
//! Flags (`--budget-memory`, `--budget-pids`, `--budget-disk`, `--max-trials`, `--max-instances`)
//! replace a default; a pod's limit still lowers a configured memory or pids budget.
//!
//! An instance whose platform sets no memory or pids limit gets the per-instance ceiling, shrunk
//! to its share of the budget (`budget / instances of the trial`), so that a trial of many
//! unlimited instances fits ([`Ledger::fill_defaults`]); platforms that set limits are refused
//! when their sum does not fit, never silently shrunk.
//!
//! A trial beyond the budget is refused at once ([`BudgetError`], gRPC `RESOURCE_EXHAUSTED`),
//! never queued. Its [`Reservation`] is taken for the whole trial in one step and given back when
//! the runner is done with the trial's teardown (the guard is dropped, also on failure, cancel
//! and panic).

use std::sync::{Arc, Mutex, PoisonError};

use isolab_model::units::Bytes;

use isolab_host::cgroup::envelope::Ceilings;
use isolab_host::cgroup::{CgroupLimits, CgroupPlan};

mod host;
#[cfg(test)]
mod tests;

pub use host::{HostLimits, limit_agent_dir, own_limits};

/// Default most trials running at once.
pub const DEFAULT_MAX_TRIALS: usize = 16;
/// Default most instances running at once (all trials together).
pub const DEFAULT_MAX_INSTANCES: usize = 4096;
/// Default size of the `/tmp` tmpfs of a runc, Docker or LXC instance.
pub use isolab_backends::tmpfs::DEFAULT_TMP_BYTES;
/// HTTP/2 streams one connection may have open beyond the trials (capabilities, cancel, health).
pub const EXTRA_STREAMS: u32 = 32;

/// The budget as configured: `None` takes the default (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetConfig {
    /// `--budget-memory`.
    pub memory_bytes: Option<u64>,
    /// `--budget-pids`.
    pub pids: Option<u64>,
    /// `--budget-disk`.
    pub disk_bytes: Option<u64>,
    /// `--max-trials`.
    pub max_trials: usize,
    /// `--max-instances`.
    pub max_instances: usize,
    /// `--tmp-size`: the `/tmp` tmpfs of every runc, Docker and LXC instance.
    pub tmp_bytes: u64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            memory_bytes: None,
            pids: None,
            disk_bytes: None,
            max_trials: DEFAULT_MAX_TRIALS,
            max_instances: DEFAULT_MAX_INSTANCES,
            tmp_bytes: DEFAULT_TMP_BYTES,
        }
    }
}

impl BudgetConfig {
    /// HTTP/2 streams one connection may have open: a stream per trial, and room for the calls
    /// beside them.
    pub fn max_concurrent_streams(&self) -> u32 {
        u32::try_from(self.max_trials)
            .unwrap_or(u32::MAX)
            .saturating_add(EXTRA_STREAMS)
    }
}

/// The budget in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Sum of the memory limits of running instances.
    pub memory_bytes: u64,
    /// Sum of their `pids.max`.
    pub pids: u64,
    /// Sum of their scratch bytes (tmpfs sizes, VM disks).
    pub disk_bytes: u64,
    /// Trials at once.
    pub trials: usize,
    /// Instances at once.
    pub instances: usize,
}

/// `base` less the reserve for the agent and the operating system: `max(floor, base / 10)`, at
/// most half of `base`.
pub fn less_reserve(base: u64, floor: u64) -> u64 {
    base - floor.max(base / 10).min(base / 2)
}

impl Budget {
    /// The budget from `config` on a host with `host`'s limits (see the module documentation).
    pub fn resolve(config: &BudgetConfig, host: &HostLimits) -> Self {
        let min_opt = |a: u64, b: Option<u64>| b.map_or(a, |b| a.min(b));
        let memory_base = min_opt(host.memory_bytes, host.own_memory_bytes);
        let pids_base = min_opt(host.pids, host.own_pids);
        Self {
            memory_bytes: min_opt(
                config
                    .memory_bytes
                    .unwrap_or_else(|| less_reserve(memory_base, 1 << 30)),
                host.own_memory_bytes,
            ),
            pids: min_opt(
                config.pids.unwrap_or_else(|| less_reserve(pids_base, 1024)),
                host.own_pids,
            ),
            disk_bytes: config
                .disk_bytes
                .unwrap_or_else(|| less_reserve(host.disk_free_bytes, 1 << 30)),
            trials: config.max_trials,
            instances: config.max_instances,
        }
    }
}

impl From<Budget> for isolab_wire::HostBudget {
    fn from(b: Budget) -> Self {
        let to_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        Self {
            memory_bytes: b.memory_bytes,
            pids: b.pids,
            disk_bytes: b.disk_bytes,
            max_trials: to_u64(b.trials),
            max_instances: to_u64(b.instances),
        }
    }
}

/// Which part of the budget a trial does not fit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// Memory limits.
    Memory,
    /// `pids.max`.
    Pids,
    /// Scratch bytes.
    Disk,
    /// Trials at once.
    Trials,
    /// Instances at once.
    Instances,
}

impl Resource {
    fn flag(self) -> &'static str {
        match self {
            Self::Memory => "--budget-memory",
            Self::Pids => "--budget-pids",
            Self::Disk => "--budget-disk",
            Self::Trials => "--max-trials",
            Self::Instances => "--max-instances",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory limits",
            Self::Pids => "pids",
            Self::Disk => "scratch disk",
            Self::Trials => "trials",
            Self::Instances => "instances",
        }
    }

    fn show(self, n: u64) -> String {
        match self {
            Self::Memory | Self::Disk => Bytes(n).to_string(),
            _ => n.to_string(),
        }
    }
}

/// A trial that does not fit in what is left of the budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "host budget exceeded: {what}: the trial asks {asked}, {in_use} in use by running trials, \
     budget {budget} ({flag}){never}",
    what = resource.name(),
    asked = resource.show(*asked),
    in_use = resource.show(*in_use),
    budget = resource.show(*budget),
    flag = resource.flag(),
    never = if asked > budget { "; it can never fit on this agent" } else { "" },
)]
pub struct BudgetError {
    /// What does not fit.
    pub resource: Resource,
    /// What the trial asks.
    pub asked: u64,
    /// What running trials hold.
    pub in_use: u64,
    /// The budget.
    pub budget: u64,
}

/// What one trial takes from the budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ask {
    /// Sum of its instances' memory limits.
    pub memory_bytes: u64,
    /// Sum of their `pids.max`.
    pub pids: u64,
    /// Its scratch bytes.
    pub disk_bytes: u64,
    /// Its instances.
    pub instances: u64,
}

impl Ask {
    /// What a trial with these final instance limits and `disk_bytes` of scratch asks. An
    /// instance without a limit (none is, after the envelope) would count as the whole budget.
    pub fn of(limits: &[(u32, CgroupLimits)], disk_bytes: u64) -> Self {
        let sum = |f: fn(&CgroupLimits) -> Option<u64>| {
            limits
                .iter()
                .fold(0u64, |a, (_, l)| a.saturating_add(f(l).unwrap_or(u64::MAX)))
        };
        Self {
            memory_bytes: sum(|l| l.memory_bytes),
            pids: sum(|l| l.pids_max),
            disk_bytes,
            instances: u64::try_from(limits.len()).unwrap_or(u64::MAX),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Usage {
    ask: Ask,
    trials: u64,
}

/// The budget and what running trials hold of it; shared by every trial of one agent.
#[derive(Debug)]
pub struct Ledger {
    budget: Budget,
    ceilings: Ceilings,
    used: Mutex<Usage>,
}

impl Ledger {
    /// An empty ledger for `budget`; `ceilings` are the per-instance ceilings.
    pub fn new(budget: Budget, ceilings: Ceilings) -> Arc<Self> {
        Arc::new(Self {
            budget,
            ceilings,
            used: Mutex::default(),
        })
    }

    /// The budget.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// What running trials hold now.
    pub fn in_use(&self) -> Ask {
        self.lock().ask
    }

    /// Trials holding a reservation now.
    pub fn trials(&self) -> u64 {
        self.lock().trials
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Usage> {
        self.used.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The limits of instances whose platform sets none: the ceiling, shrunk to the instance's
    /// share of the budget among `instances` (a backend's own default, the VM's QEMU memory,
    /// stays as it is).
    pub fn fill_defaults(&self, plan: &mut CgroupPlan, instances: usize) {
        let n = u64::try_from(instances.max(1)).unwrap_or(u64::MAX);
        plan.memory_default_bytes.get_or_insert(
            self.ceilings
                .memory_bytes
                .min(self.budget.memory_bytes / n)
                .max(1 << 20),
        );
        plan.pids_default
            .get_or_insert(self.ceilings.pids.min(self.budget.pids / n).max(1));
    }

    /// Takes `ask` and one trial from the budget, all or nothing; the reservation gives them
    /// back when dropped.
    pub fn reserve(self: &Arc<Self>, ask: Ask) -> Result<Reservation, BudgetError> {
        let mut used = self.lock();
        let b = self.budget;
        let to_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let checks = [
            (Resource::Trials, 1, used.trials, to_u64(b.trials)),
            (
                Resource::Instances,
                ask.instances,
                used.ask.instances,
                to_u64(b.instances),
            ),
            (
                Resource::Memory,
                ask.memory_bytes,
                used.ask.memory_bytes,
                b.memory_bytes,
            ),
            (Resource::Pids, ask.pids, used.ask.pids, b.pids),
            (
                Resource::Disk,
                ask.disk_bytes,
                used.ask.disk_bytes,
                b.disk_bytes,
            ),
        ];
        for (resource, asked, in_use, budget) in checks {
            if asked.saturating_add(in_use) > budget {
                return Err(BudgetError {
                    resource,
                    asked,
                    in_use,
                    budget,
                });
            }
        }
        used.trials += 1;
        used.ask.memory_bytes += ask.memory_bytes;
        used.ask.pids += ask.pids;
        used.ask.disk_bytes += ask.disk_bytes;
        used.ask.instances += ask.instances;
        Ok(Reservation {
            ledger: Arc::clone(self),
            ask,
        })
    }
}

/// One trial's part of the budget, given back on drop.
#[derive(Debug)]
pub struct Reservation {
    ledger: Arc<Ledger>,
    ask: Ask,
}

impl Reservation {
    /// What it holds.
    pub fn ask(&self) -> Ask {
        self.ask
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut used = self.ledger.lock();
        used.trials -= 1;
        used.ask.memory_bytes -= self.ask.memory_bytes;
        used.ask.pids -= self.ask.pids;
        used.ask.disk_bytes -= self.ask.disk_bytes;
        used.ask.instances -= self.ask.instances;
    }
}
