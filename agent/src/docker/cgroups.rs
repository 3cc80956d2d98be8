//! A trial's cgroups for engines that add their own level below ours (Docker, LXC): the trial
//! cgroup `<agent dir>/<slug>` and one instance cgroup `…/i<index>` each, made by the agent with
//! the instance's limits before the engine puts its container below it.
//!
//! The engine's level comes and goes with the container, so the instance cgroup is where limits
//! apply and statistics are read: counters there are hierarchical (CPU time, memory peak) or
//! belong to the level whose limit was hit (OOM kills, `failcnt`, refused forks), and it lives
//! until teardown. The engines also make directories in hierarchies the cgroup layer does not
//! use (`devices`, `name=systemd`, the v2 mount of a hybrid host); teardown removes the trial's
//! directory from every hierarchy ([`Hierarchies`]), and the leak check looks in all of them.
//!
//! Two counters are booked by the kernel (cgroup v1) on the cgroup of the *task*, not on the
//! ancestor whose limit was hit: refused forks (`pids.events`, charged to the forking task's
//! cgroup) and OOM kills (`memory.oom_control`, charged to the victim's). Both live on the
//! engine's level, which vanishes with the container. [`TrialCgroups::stats`] therefore also
//! reads that level (the "leaf") whenever it still exists and keeps the highest counts seen, and
//! an engine that learns of an OOM kill after the fact reports it with
//! [`TrialCgroups::note_oom_kill`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::backend::{AgentDir, Leak, LeakReport, process_alive};
use crate::cgroup::{AnyCgroup, Cgroup, CgroupError, CgroupLimits, CgroupManager, CgroupStats};
use crate::container::hierarchy::Hierarchies;

/// A trial's cgroups. Clones share what was seen of the leaves.
#[derive(Debug, Clone)]
pub struct TrialCgroups {
    /// `<agent dir>/<slug>`.
    pub trial_rel: String,
    /// Instance cgroups by index.
    pub instances: Vec<(u32, Arc<AnyCgroup>)>,
    manager: Arc<CgroupManager>,
    leaves: Arc<Mutex<BTreeMap<u32, Leaf>>>,
}

/// The engine's level below an instance cgroup, and the task-booked counters seen on it.
#[derive(Debug, Clone, Default)]
struct Leaf {
    rel: Option<String>,
    record: Option<std::path::PathBuf>,
    pids_limit_hits: u64,
    oom_kills: u64,
    oom_events: u64,
}

impl TrialCgroups {
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
    pub fn set_record(&self, index: u32, path: std::path::PathBuf) {
        self.leaves
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(index)
            .or_default()
            .record = Some(path);
    }

    /// Records that the engine saw an OOM kill in instance `index` (at least one is counted).
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
            let mut pids = std::collections::BTreeSet::new();
            collect_pids(&dir.join(&rel), &mut pids);
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
    /// memory+swap limit hits), with the refused forks and OOM kills of
    /// its leaf (read now if it still exists, else the highest seen) when those are higher.
    pub fn stats(&self, index: u32) -> Result<CgroupStats, (String, CgroupError)> {
        let cg = self.instance(index).ok_or_else(|| {
            let rel = self.instance_rel(index);
            (rel.clone(), CgroupError::Gone { rel })
        })?;
        let mut stats = cg.stats().map_err(|e| (cg.rel_path().to_owned(), e))?;
        stats.memory_limit_hits = stats
            .memory_limit_hits
            .max(self.memsw_failcnt(cg.rel_path()));
        let mut leaves = self.leaves.lock().unwrap_or_else(PoisonError::into_inner);
        let leaf = leaves.entry(index).or_default();
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
            let counters = crate::cgroup::stats::parse_flat_keyed(&text);
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

    /// The cgroup of instance `index`.
    pub fn instance(&self, index: u32) -> Option<&Arc<AnyCgroup>> {
        self.instances
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, c)| c)
    }

    /// `<agent dir>/<slug>/i<index>`.
    pub fn instance_rel(&self, index: u32) -> String {
        format!("{}/i{index}", self.trial_rel)
    }
}

/// Makes the trial cgroup of `slug` and one limited instance cgroup per `(index, limits)`,
/// removing first what an earlier, unfinished attempt left. On error removes what it made and
/// returns the failing path with the cause. Blocks.
pub fn make(
    dir: &AgentDir,
    hierarchies: &Hierarchies,
    slug: &str,
    limits: &[(u32, CgroupLimits)],
    timeout: Duration,
) -> Result<TrialCgroups, (String, CgroupError)> {
    let manager = dir.manager();
    let trial_rel = dir.rel(slug);
    if !destroy(dir, hierarchies, &trial_rel, timeout).is_empty() {
        tracing::warn!(cgroup = %trial_rel, "could not fully remove an earlier attempt's cgroups");
    }
    manager
        .create(&trial_rel)
        .map_err(|e| (trial_rel.clone(), e))?;
    inherit_cpusets(hierarchies, &trial_rel);
    let made = limits
        .iter()
        .map(|(index, l)| {
            let rel = format!("{trial_rel}/i{index}");
            let cg = manager.create(&rel).map_err(|e| (rel.clone(), e))?;
            cg.apply(l).map_err(|e| (rel.clone(), e))?;
            inherit_cpusets(hierarchies, &rel);
            Ok((*index, Arc::new(cg)))
        })
        .collect::<Result<Vec<_>, (String, CgroupError)>>();
    match made {
        Ok(instances) => Ok(TrialCgroups {
            trial_rel,
            instances,
            manager: Arc::clone(manager),
            leaves: Arc::new(Mutex::new(BTreeMap::new())),
        }),
        Err(e) => {
            for problem in destroy(dir, hierarchies, &trial_rel, timeout) {
                tracing::warn!("cleaning up after a failed prepare: {problem}");
            }
            Err(e)
        }
    }
}

/// On a v1 `cpuset` hierarchy, makes new children of `rel` start with its CPUs and memory nodes
/// (`cgroup.clone_children`): the engines create their levels below ours, and a cpuset cgroup
/// with no CPUs refuses every task (`ENOSPC`).
fn inherit_cpusets(hierarchies: &Hierarchies, rel: &str) {
    for h in hierarchies
        .list
        .iter()
        .filter(|h| h.name.split(',').any(|c| c == "cpuset"))
    {
        let file = h.own_dir.join(rel).join("cgroup.clone_children");
        if file.exists()
            && let Err(e) = std::fs::write(&file, "1")
        {
            tracing::warn!(path = %file.display(), "cannot set cgroup.clone_children: {e}");
        }
    }
}

/// Kills every process in the instance cgroups and waits until they are gone. Blocks.
pub fn kill(cgroups: &TrialCgroups, timeout: Duration) -> Result<(), (String, CgroupError)> {
    let mut first = None;
    for (_, cg) in &cgroups.instances {
        if let Err(e) = cg.kill_all(timeout) {
            first.get_or_insert((cg.rel_path().to_owned(), e));
        }
    }
    first.map_or(Ok(()), Err)
}

/// Kills what runs in `trial_rel` and removes it from every hierarchy; returns what failed
/// (empty when all is gone). Blocks.
pub fn destroy(
    dir: &AgentDir,
    hierarchies: &Hierarchies,
    trial_rel: &str,
    timeout: Duration,
) -> Vec<String> {
    let manager = dir.manager();
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

/// Removes the agent directory's level from the hierarchies the cgroup layer does not manage
/// (the engines made it there, in `devices`, `name=systemd` or a hybrid host's v2 mount), when
/// the backend goes away. The cgroup layer removes its own hierarchies' level itself.
pub fn release_agent(dir: &AgentDir, hierarchies: &Hierarchies) {
    let extra = hierarchies.excluding(&dir.manager().own_dirs());
    if let Err(e) = extra.remove(dir.name()) {
        tracing::warn!("removing the agent's cgroup from unmanaged hierarchies: {e}");
    }
}

/// Pids in `dir`'s `cgroup.procs` and in those of its descendants.
fn collect_pids(dir: &std::path::Path, out: &mut std::collections::BTreeSet<u32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        {
            collect_pids(&e.path(), out);
        }
    }
}

/// Processes in `trial_rel` (any hierarchy) and the directories themselves. Blocks.
pub fn leftovers(hierarchies: &Hierarchies, trial_rel: &str) -> LeakReport {
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
