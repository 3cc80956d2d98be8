//! [`CgroupEngine`]: the one place where a trial's cgroups are made and limited, for every
//! backend and on v1 and v2 alike ([`super::CgroupManager`] hides the difference).
//!
//! The runner (`isolab_backends::lifecycle`) asks the engine for a trial's cgroups before the
//! backend prepares anything: the trial cgroup `<agent dir>/<slug>` and, per instance,
//! `…/i<index>` with its final limits — the resolved platform's limits tightened by the agent's
//! safety envelope ([`super::envelope`]), computed here and nowhere else. What was left by an
//! earlier, unfinished run of the same attempt is removed first. The backend then only puts its
//! processes into the instance cgroups ([`super::InstanceCgroup`]); statistics, kill, removal
//! and the leftover scan are the engine's too ([`super::TrialCgroups`]).
//!
//! A backend shapes this with a [`CgroupPlan`]: the memory limit when the platform sets none
//! (the vm backend: what its QEMU needs), and whether an OCI runtime makes the instance level
//! itself from `config.json` (runc: then the engine only names the cgroup, and the limits it
//! computed go into the bundle).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::leaks::LeakReport;

use super::agent_dir::AgentDir;
use super::envelope::{Ceilings, block_device_of, instance_limits};
use super::hierarchy::Hierarchies;
use super::trial::{self, InstanceCgroup, TrialCgroupError, TrialCgroups};
use super::{Cgroup, CgroupLimits};
use isolab_model::plan::InstanceSpec;
use isolab_model::resolve::InstanceLimits;

/// How long killing the processes of one cgroup may take by default.
pub const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// Who makes an instance's cgroup directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum InstanceLevel {
    /// The engine makes it and writes its limits (native, Docker, LXC, vm).
    #[default]
    Engine,
    /// An OCI runtime makes it from `cgroupsPath` and writes the limits the engine computed
    /// (they travel in the bundle's `config.json`); the engine names it, reads and removes it.
    Runtime,
}

/// What a backend asks of the engine for one trial.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupPlan {
    /// An instance's memory limit when the platform sets none; `None`: the agent's ceiling.
    pub memory_default_bytes: Option<u64>,
    /// A path on the file system whose block device an `io_bps` cap applies to; `None`: the
    /// temporary directory's.
    pub io_path: Option<PathBuf>,
    /// Who makes the instance level.
    pub instance_level: InstanceLevel,
    /// How long killing one cgroup's processes may take.
    pub kill_timeout: Duration,
}

impl Default for CgroupPlan {
    fn default() -> Self {
        Self {
            memory_default_bytes: None,
            io_path: None,
            instance_level: InstanceLevel::Engine,
            kill_timeout: KILL_TIMEOUT,
        }
    }
}

/// Makes every trial's cgroups below the agent's cgroup directory.
#[derive(Debug)]
pub struct CgroupEngine {
    dir: Arc<AgentDir>,
    hierarchies: Arc<Hierarchies>,
    ceilings: Ceilings,
    io_device: Option<(u64, u64)>,
    /// Block devices of the `io_path`s plans named, looked up once each.
    io_devices: Mutex<BTreeMap<PathBuf, Option<(u64, u64)>>>,
}

impl CgroupEngine {
    /// The engine for the agent's cgroup directory `dir` with the agent's `ceilings`; `Err`
    /// (the text says why) when the mounted hierarchies cannot be read.
    pub fn new(dir: Arc<AgentDir>, ceilings: Ceilings) -> Result<Self, String> {
        let hierarchies = Hierarchies::detect().map_err(|e| e.to_string())?;
        Ok(Self {
            dir,
            hierarchies: Arc::new(hierarchies),
            ceilings,
            io_device: block_device_of(&std::env::temp_dir()),
            io_devices: Mutex::default(),
        })
    }

    /// As [`Self::new`], or the reason there is none, from a backend constructor's arguments.
    pub fn for_backend(
        dir: &Result<Arc<AgentDir>, String>,
        ceilings: Ceilings,
    ) -> Result<Arc<Self>, String> {
        let dir = Arc::clone(dir.as_ref()?);
        Self::new(dir, ceilings).map(Arc::new)
    }

    /// The agent's cgroup directory.
    pub fn dir(&self) -> &Arc<AgentDir> {
        &self.dir
    }

    /// Every cgroup hierarchy mounted here.
    pub fn hierarchies(&self) -> &Hierarchies {
        &self.hierarchies
    }

    /// The agent's ceilings.
    pub fn ceilings(&self) -> Ceilings {
        self.ceilings
    }

    /// `<agent dir>/<slug>`.
    pub fn trial_rel(&self, slug: &str) -> String {
        self.dir.rel(slug)
    }

    fn io_device(&self, plan: &CgroupPlan) -> Option<(u64, u64)> {
        let Some(path) = &plan.io_path else {
            return self.io_device;
        };
        *self
            .io_devices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(path.clone())
            .or_insert_with(|| {
                block_device_of(path.ancestors().find(|p| p.exists()).unwrap_or(path))
            })
    }

    /// The final limits of each instance: the platform's tightened by the envelope.
    pub fn limits(
        &self,
        platform: &InstanceLimits,
        instances: &[InstanceSpec],
        plan: &CgroupPlan,
    ) -> Vec<(u32, CgroupLimits)> {
        let io_device = self.io_device(plan);
        instances
            .iter()
            .map(|spec| {
                let limits = instance_limits(
                    self.ceilings,
                    platform,
                    spec,
                    io_device,
                    plan.memory_default_bytes,
                );
                (spec.index, limits)
            })
            .collect()
    }

    /// Makes the trial cgroup of `slug` and one instance cgroup per `(index, limits)` (limited
    /// unless the runtime makes it, see [`InstanceLevel`]), removing first what an earlier,
    /// unfinished attempt left. On error removes what it made. Blocks.
    pub fn create(
        &self,
        slug: &str,
        limits: Vec<(u32, CgroupLimits)>,
        plan: &CgroupPlan,
    ) -> Result<TrialCgroups, TrialCgroupError> {
        let manager = self.dir.manager();
        let trial_rel = self.trial_rel(slug);
        let timeout = plan.kill_timeout;
        if !trial::destroy(manager, &self.hierarchies, &trial_rel, timeout).is_empty() {
            tracing::warn!(cgroup = %trial_rel, "could not fully remove an earlier attempt's cgroups");
        }
        let cg_err = |rel: &str| {
            let rel = rel.to_owned();
            move |source| TrialCgroupError::Cgroup { rel, source }
        };
        manager.create(&trial_rel).map_err(cg_err(&trial_rel))?;
        self.inherit_cpusets(&trial_rel);
        let made = limits
            .into_iter()
            .map(|(index, limits)| {
                let rel = format!("{trial_rel}/i{index}");
                let cgroup = match plan.instance_level {
                    InstanceLevel::Engine => {
                        let cg = manager.create(&rel).map_err(cg_err(&rel))?;
                        cg.apply(&limits).map_err(cg_err(&rel))?;
                        self.inherit_cpusets(&rel);
                        cg
                    }
                    InstanceLevel::Runtime => manager.open(&rel).map_err(cg_err(&rel))?,
                };
                Ok(InstanceCgroup {
                    index,
                    oci_path: self.hierarchies.cgroups_path(&rel),
                    rel,
                    limits,
                    cgroup: Arc::new(cgroup),
                })
            })
            .collect::<Result<Vec<_>, TrialCgroupError>>();
        match made {
            Ok(instances) => Ok(TrialCgroups {
                slug: slug.to_owned(),
                trial_rel,
                instances,
                manager: Arc::clone(manager),
                hierarchies: Arc::clone(&self.hierarchies),
                kill_timeout: timeout,
                leaves: Arc::default(),
            }),
            Err(e) => {
                for problem in trial::destroy(manager, &self.hierarchies, &trial_rel, timeout) {
                    tracing::warn!("cleaning up after a failed prepare: {problem}");
                }
                Err(e)
            }
        }
    }

    /// On a v1 `cpuset` hierarchy, makes new children of `rel` start with its CPUs and memory
    /// nodes (`cgroup.clone_children`): engines and runtimes create their levels below ours, and
    /// a cpuset cgroup with no CPUs refuses every task (`ENOSPC`).
    fn inherit_cpusets(&self, rel: &str) {
        for h in self
            .hierarchies
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

    /// Anything of trial attempt `slug` still in any hierarchy: processes and directories, with
    /// or without its [`TrialCgroups`]. Blocks.
    pub fn leftovers(&self, slug: &str) -> LeakReport {
        trial::leftovers(&self.hierarchies, &self.trial_rel(slug))
    }

    /// Kills what runs in the cgroups of `slug` and removes them everywhere (a probe's, or
    /// what a failed start left); returns what failed. Blocks.
    pub fn destroy(&self, slug: &str) -> Vec<String> {
        trial::destroy(
            self.dir.manager(),
            &self.hierarchies,
            &self.trial_rel(slug),
            KILL_TIMEOUT,
        )
    }

    /// Removes the agent directory's level from the hierarchies the cgroup layer does not
    /// manage (runtimes made it there, in `devices`, `name=systemd` or a hybrid host's v2
    /// mount), when the agent goes away. The cgroup layer removes its own hierarchies' level.
    pub fn release_unmanaged(&self) {
        let extra = self.hierarchies.excluding(&self.dir.manager().own_dirs());
        if let Err(e) = extra.remove(self.dir.name()) {
            tracing::warn!("removing the agent's cgroup from unmanaged hierarchies: {e}");
        }
    }
}
