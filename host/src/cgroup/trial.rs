//! [`TrialCgroups`]: one trial's cgroups as the engine ([`super::engine`]) made them — the trial
//! cgroup `<agent dir>/<slug>` and one instance cgroup `…/i<index>` each — and everything done
//! to them until they are gone: statistics, kill, destroy, and the leftover scan.
//!
//! The instance cgroup is where limits apply and statistics are read, whatever runs in it: a
//! workload process (native), an OCI runtime's container (runc nests nothing: the instance
//! cgroup *is* the container's), a Docker or LXC container (the engine adds its own level below
//! ours), or a QEMU process. Counters there are hierarchical (CPU time, memory peak) or belong to
//! the level whose limit was hit (OOM kills, `failcnt`, refused forks), and it lives until
//! teardown. Runtimes also make directories in hierarchies the cgroup layer does not use
//! (`devices`, `name=systemd`, the v2 mount of a hybrid host); [`TrialCgroups::destroy`]
//! removes the trial's directory from every hierarchy ([`Hierarchies`]), and
//! [`TrialCgroups::leftovers`] looks in all of them.
//!
//! Two counters are booked by the kernel (cgroup v1) on the cgroup of the *task*, not on the
//! ancestor whose limit was hit: refused forks (`pids.events`, charged to the forking task's
//! cgroup) and OOM kills (`memory.oom_control`, charged to the victim's). With Docker and LXC both
//! live on the engine's level, which vanishes with the container. [`TrialCgroups::stats`]
//! therefore also reads that level (the "leaf", [`TrialCgroups::set_leaf`]) whenever it still
//! exists and keeps the highest counts seen, and a backend that learns of an OOM kill after the
//! fact reports it with [`TrialCgroups::note_oom_kill`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::leaks::{Leak, LeakReport, process_alive};

use super::hierarchy::Hierarchies;
use super::{AnyCgroup, Cgroup, CgroupError, CgroupLimits, CgroupManager, CgroupStats, JoinTarget};

/// What went wrong with a trial's cgroups: the errors every backend used to declare for itself.
#[derive(Debug, thiserror::Error)]
pub enum TrialCgroupError {
    /// The agent has no cgroup directory (so no backend can run trials).
    #[error("no trial cgroups here: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// A cgroup operation failed.
    #[error("cgroup {rel}: {source}")]
    Cgroup {
        /// The cgroup, relative to the agent's own.
        rel: String,
        /// The cause.
        #[source]
        source: CgroupError,
    },
    /// Statistics asked for an instance the trial does not have.
    #[error("no instance {index} in trial {trial}")]
    NoInstance {
        /// The trial slug.
        trial: String,
        /// The index asked for.
        index: u32,
    },
    /// A blocking cgroup task panicked or was cancelled.
    #[error("cgroup task of trial {trial} failed: {source}")]
    Task {
        /// The trial slug.
        trial: String,
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl TrialCgroupError {
    fn cgroup(rel: &str) -> impl FnOnce(CgroupError) -> Self + '_ {
        move |source| Self::Cgroup {
            rel: rel.to_owned(),
            source,
        }
    }
}

/// One instance's cgroup: where its processes run, limited once by the engine.
#[derive(Debug, Clone)]
pub struct InstanceCgroup {
    /// Instance index.
    pub index: u32,
    /// `<agent dir>/<slug>/i<index>`, relative to the agent's own cgroup.
    pub rel: String,
    /// The final limits: the platform's, tightened by the agent's envelope. Written by the
    /// engine, or (runc) by the runtime from the OCI `config.json` made of them.
    pub limits: CgroupLimits,
    /// The cgroup.
    pub cgroup: Arc<AnyCgroup>,
    /// The `cgroupsPath` that puts an OCI container exactly here.
    pub oci_path: String,
}

impl InstanceCgroup {
    /// Prepares the cgroup's `cgroup.procs` files for a child to join between fork and exec.
    pub fn join_target(&self) -> Result<JoinTarget, TrialCgroupError> {
        self.cgroup
            .join_target()
            .map_err(TrialCgroupError::cgroup(&self.rel))
    }
}

/// A trial's cgroups. Clones share what was seen of the leaves.
#[derive(Debug, Clone)]
pub struct TrialCgroups {
    /// The trial attempt's slug.
    pub slug: String,
    /// `<agent dir>/<slug>`.
    pub trial_rel: String,
    /// Instance cgroups, in index order.
    pub instances: Vec<InstanceCgroup>,
    pub(super) manager: Arc<CgroupManager>,
    pub(super) hierarchies: Arc<Hierarchies>,
    pub(super) kill_timeout: Duration,
    pub(super) leaves: Arc<Mutex<BTreeMap<u32, Leaf>>>,
}

/// The engine's level below an instance cgroup, and the task-booked counters seen on it.
#[derive(Debug, Clone, Default)]
pub(super) struct Leaf {
    rel: Option<String>,
    record: Option<PathBuf>,
    pids_limit_hits: u64,
    oom_kills: u64,
    oom_events: u64,
}

impl TrialCgroups {
    /// The cgroup of instance `index`.
    pub fn instance(&self, index: u32) -> Option<&InstanceCgroup> {
        self.instances.iter().find(|i| i.index == index)
    }

    /// `<agent dir>/<slug>/i<index>`.
    pub fn instance_rel(&self, index: u32) -> String {
        format!("{}/i{index}", self.trial_rel)
    }

    /// Names the engine's cgroup below instance `index` (relative to the agent's own).
    pub fn set_leaf(&self, index: u32, rel: String) {
        self.leaves
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(index)
            .or_default()
            .rel = Some(rel);
    }

    /// Names a file where the engine copies the leaf's event counters just before it removes
    /// the leaf (`key value` lines of `memory.oom_control`, `memory.events`, `pids.events`).
    pub fn set_record(&self, index: u32, path: PathBuf) {
        self.leaves
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(index)
            .or_default()
            .record = Some(path);
    }

    /// Records that the backend saw an OOM kill in instance `index` (at least one is counted).
    pub fn note_oom_kill(&self, index: u32) {
        let mut leaves = self.leaves.lock().unwrap_or_else(PoisonError::into_inner);
        let leaf = leaves.entry(index).or_default();
        leaf.oom_kills = leaf.oom_kills.max(1);
        leaf.oom_events = leaf.oom_events.max(1);
    }

    /// Whether process `pid` is inside instance `index`'s cgroup in every hierarchy the cgroup
    /// layer uses: an engine or runtime that resolves `cgroup_parent` differently (youki takes a
    /// relative path from the hierarchy's root on v1) would put it outside our limits. `None`
    /// when the process is gone already (nothing to tell).
    pub fn holds(&self, index: u32, pid: u32) -> Option<bool> {
        let rel = self.instance_rel(index);
        let mut found = true;
        for dir in self.manager.own_dirs() {
            let mut pids = BTreeSet::new();
            // A directory that vanished holds nothing.
            let _ = super::fsutil::collect_pids(&dir.join(&rel), &mut pids);
            found &= pids.contains(&pid);
        }
        if found {
            return Some(true);
        }
        process_alive(pid, None).map(|_| false)
    }

    /// v1 with swap accounting: `memory.memsw.failcnt`. With swap disabled (memory limit =
    /// memory+swap limit) the memory+swap counter is charged first and fails first, so a limit
    /// hit shows there and not in `memory.failcnt`. 0 where the file does not exist.
    fn memsw_failcnt(&self, rel: &str) -> u64 {
        self.manager
            .own_dirs()
            .iter()
            .map(|d| d.join(rel).join("memory.memsw.failcnt"))
            .find(|p| p.exists())
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Statistics of instance `index`: its cgroup's (`memory_limit_hits` including v1's
    /// memory+swap limit hits), with the refused forks and OOM kills of its leaf (read now if it
    /// still exists, else the highest seen) when those are higher. Blocks (briefly).
    pub fn stats(&self, index: u32) -> Result<CgroupStats, TrialCgroupError> {
        let inst = self
            .instance(index)
            .ok_or_else(|| TrialCgroupError::NoInstance {
                trial: self.slug.clone(),
                index,
            })?;
        let mut stats = inst
            .cgroup
            .stats()
            .map_err(TrialCgroupError::cgroup(&inst.rel))?;
        stats.memory_limit_hits = stats.memory_limit_hits.max(self.memsw_failcnt(&inst.rel));
        let mut leaves = self.leaves.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(leaf) = leaves.get_mut(&index) else {
            return Ok(stats);
        };
        if let Some(rel) = leaf.rel.as_deref()
            && self.manager.exists(rel)
            && let Ok(now) = self.manager.open(rel).and_then(|l| l.stats())
        {
            leaf.pids_limit_hits = leaf.pids_limit_hits.max(now.pids_limit_hits);
            leaf.oom_kills = leaf.oom_kills.max(now.oom_kills);
            leaf.oom_events = leaf.oom_events.max(now.oom_events);
        }
        if let Some(text) = leaf
            .record
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
        {
            let counters = super::stats::parse_flat_keyed(&text);
            let get = |k: &str| counters.get(k).copied().unwrap_or(0);
            leaf.pids_limit_hits = leaf.pids_limit_hits.max(get("max"));
            leaf.oom_kills = leaf.oom_kills.max(get("oom_kill"));
            leaf.oom_events = leaf.oom_events.max(get("oom_kill").max(get("oom")));
        }
        stats.pids_limit_hits = stats.pids_limit_hits.max(leaf.pids_limit_hits);
        stats.oom_kills = stats.oom_kills.max(leaf.oom_kills);
        stats.oom_events = stats.oom_events.max(leaf.oom_events);
        Ok(stats)
    }

    /// Kills every process in the instance cgroups and waits (up to the plan's kill timeout
    /// each) until they are gone; returns the pids signalled. Blocks.
    pub fn kill(&self) -> Result<Vec<u32>, TrialCgroupError> {
        let mut first = None;
        let mut killed = Vec::new();
        for inst in &self.instances {
            match inst.cgroup.kill_all(self.kill_timeout) {
                Ok(pids) => killed.extend(pids),
                Err(e) => {
                    first.get_or_insert(TrialCgroupError::cgroup(&inst.rel)(e));
                }
            }
        }
        first.map_or(Ok(killed), Err)
    }

    /// Kills every process anywhere in the trial cgroup (also in levels a runtime made beside
    /// the instance cgroups, such as LXC's monitor cgroups) and waits until they are gone.
    /// Blocks.
    pub fn kill_trial(&self) -> Result<Vec<u32>, TrialCgroupError> {
        if !self.manager.exists(&self.trial_rel) {
            return Ok(Vec::new());
        }
        self.manager
            .open(&self.trial_rel)
            .and_then(|cg| cg.kill_all(self.kill_timeout))
            .map_err(TrialCgroupError::cgroup(&self.trial_rel))
    }

    /// The cgroup manager (the version, our own directories).
    pub fn manager(&self) -> &CgroupManager {
        &self.manager
    }

    /// Every cgroup hierarchy mounted here.
    pub fn hierarchies(&self) -> &Hierarchies {
        &self.hierarchies
    }

    /// Kills what runs in the trial cgroup and removes it from every hierarchy; returns what
    /// failed (empty when all is gone). Blocks.
    pub fn destroy(&self) -> Vec<String> {
        destroy(
            &self.manager,
            &self.hierarchies,
            &self.trial_rel,
            self.kill_timeout,
        )
    }

    /// Processes in the trial cgroup (any hierarchy) and the directories themselves. Blocks.
    pub fn leftovers(&self) -> LeakReport {
        leftovers(&self.hierarchies, &self.trial_rel)
    }
}

/// Kills what runs in `trial_rel` and removes it from every hierarchy; returns what failed
/// (empty when all is gone). Blocks.
pub(super) fn destroy(
    manager: &CgroupManager,
    hierarchies: &Hierarchies,
    trial_rel: &str,
    timeout: Duration,
) -> Vec<String> {
    let mut problems = Vec::new();
    if manager.exists(trial_rel) {
        match manager.open(trial_rel) {
            Ok(cg) => {
                if let Err(e) = cg.kill_all(timeout) {
                    problems.push(format!("cgroup {trial_rel}: {e}"));
                }
                if let Err(e) = cg.remove() {
                    problems.push(format!("cgroup {trial_rel}: {e}"));
                }
            }
            Err(e) => problems.push(format!("cgroup {trial_rel}: {e}")),
        }
    }
    if let Err(e) = hierarchies.remove(trial_rel) {
        problems.push(e.to_string());
    }
    problems
}

/// Processes in `trial_rel` (any hierarchy) and the directories themselves. Blocks.
pub(super) fn leftovers(hierarchies: &Hierarchies, trial_rel: &str) -> LeakReport {
    let mut report = LeakReport::default();
    for pid in hierarchies.pids(trial_rel) {
        if let Some(comm) = process_alive(pid, None) {
            report.push(Leak::Process { pid, comm });
        }
    }
    for (hierarchy, _) in hierarchies.existing(trial_rel) {
        report.push(Leak::Cgroup {
            path: format!("{trial_rel} ({hierarchy})"),
        });
    }
    report
}
