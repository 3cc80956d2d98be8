//! The agent's own cgroup directory, under which every trial's cgroups live.
//!
//! Naming: `<prefix>-<owner>-<n>` directly under the cgroup the agent was started in (in every
//! controller), where `<owner>` is the agent process as `<pid>.<start ticks>` ([`Owner`]) and `n`
//! counts the agents started in this process. So several agents (in one process, as tests do,
//! or in several) can share a cgroup without touching each other's trials. At claim time,
//! directories `<prefix>-<owner>-<n>` whose owner is not alive (a crashed agent, also one that
//! had the pid this agent has now, as PID 1 of a container after a restart), or that are ours
//! but that no live agent of this process holds, are killed and removed; nothing else is ever
//! touched.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::mounts;

use super::{Cgroup, CgroupError, CgroupManager};
use crate::owner::Owner;

/// How long killing the processes of a stale or released directory may take.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// Counter for `<n>` in the directory name.
static NEXT: AtomicU64 = AtomicU64::new(0);
/// Directory names held by live [`AgentDir`]s of this process.
static LIVE: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// The agent's cgroup directory; removed (with anything left in it) on drop.
#[derive(Debug)]
pub struct AgentDir {
    manager: Arc<CgroupManager>,
    name: String,
}

impl AgentDir {
    /// Removes stale directories of crashed agents with this prefix, then creates this agent's.
    /// Returns the directory and the stale directories it removed.
    pub fn claim(
        manager: Arc<CgroupManager>,
        prefix: &str,
    ) -> Result<(Self, Vec<String>), CgroupError> {
        let name = format!(
            "{prefix}-{}-{}",
            Owner::me(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut live = LIVE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut removed = Vec::new();
        for entry in manager.list("") {
            let Some(owner) = owner_of(prefix, &entry) else {
                continue;
            };
            let stale = if owner.is_me() {
                !live.contains(&entry)
            } else {
                !owner.is_alive()
            };
            if stale {
                tracing::warn!(cgroup = %entry, "removing stale cgroup of a previous agent");
                let cg = manager.open(&entry)?;
                cg.kill_all(KILL_TIMEOUT)?;
                cg.remove()?;
                removed.push(entry);
            }
        }
        manager.create(&name)?;
        live.insert(name.clone());
        Ok((Self { manager, name }, removed))
    }

    /// The directory's name (relative to the agent's own cgroup).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cgroup manager.
    pub fn manager(&self) -> &Arc<CgroupManager> {
        &self.manager
    }

    /// `<name>/<sub>`: a path below this directory.
    pub fn rel(&self, sub: &str) -> String {
        format!("{}/{sub}", self.name)
    }

    /// Kills everything in the directory and removes it.
    pub fn release(&self) -> Result<(), CgroupError> {
        if !self.manager.exists(&self.name) {
            return Ok(());
        }
        let cg = self.manager.open(&self.name)?;
        cg.kill_all(KILL_TIMEOUT)?;
        cg.remove()
    }
}

impl Drop for AgentDir {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            tracing::warn!(cgroup = %self.name, "could not remove the agent's cgroup: {e}");
        }
        LIVE.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.name);
    }
}

/// The owner in `<prefix>-<owner>-<n>`, if `name` has that shape.
fn owner_of(prefix: &str, name: &str) -> Option<Owner> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    let (owner, n) = rest.split_once('-')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Owner::parse(owner)
}

/// Removes the directories (`<root>/<prefix>-<owner>-<n>`: VM runtime dirs, scratch roots) of
/// agents with the same prefix as `own` (this agent's `<prefix>-<owner>-<n>`) whose owner is not
/// alive: what a crashed agent left. Their QEMUs died with them (`PR_SET_PDEATHSIG`), their cgroups and network
/// namespaces are removed by the cgroup layer and the container backend. Returns what it removed.
pub fn remove_stale_runtime(root: &Path, own: &str) -> Vec<PathBuf> {
    let mut parts = own.rsplitn(3, '-');
    let (Some(_), Some(_), Some(prefix)) = (parts.next(), parts.next(), parts.next()) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) else {
            continue;
        };
        let mut it = rest.splitn(2, '-');
        let (Some(owner), Some(n)) = (it.next().and_then(Owner::parse), it.next()) else {
            continue;
        };
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || owner.is_alive() {
            continue;
        }
        // A crashed agent's tmpfs scratch is still mounted there: detach it first.
        for point in mounts::mounts_under(&entry.path()) {
            mounts::detach(&point);
        }
        if std::fs::remove_dir_all(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_runtime_dirs_of_dead_agents_with_our_prefix_go() {
        let root = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = child.id();
        let dead_start = crate::leaks::process_start_time(dead_pid).unwrap_or(1);
        child.wait().unwrap();
        let dead = Owner {
            pid: dead_pid,
            start_ticks: dead_start,
        };
        let me = Owner::me();
        // This process's pid with another start time: an agent that had our pid before.
        let same_pid = Owner {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        let names = [
            format!("isolab-agent-{dead}-0"),
            format!("isolab-agent-{same_pid}-0"),
            format!("isolab-agent-{me}-1"),
            format!("isolab-agent-{dead_pid}-0"),
            format!("other-{dead}-0"),
            "isolab-agent-x-0".to_owned(),
        ];
        for n in &names {
            std::fs::create_dir_all(root.path().join(n).join("trial")).unwrap();
        }
        let mut removed = remove_stale_runtime(root.path(), &format!("isolab-agent-{me}-0"));
        removed.sort();
        let mut expected = vec![root.path().join(&names[0]), root.path().join(&names[1])];
        expected.sort();
        assert_eq!(removed, expected);
        for n in &names[2..] {
            assert!(root.path().join(n).exists(), "{n} was removed");
        }
        assert!(remove_stale_runtime(root.path(), "noprefix").is_empty());
    }

    #[test]
    fn only_our_naming_is_recognised() {
        let o = Some(Owner {
            pid: 123,
            start_ticks: 45,
        });
        assert_eq!(owner_of("isolab-agent", "isolab-agent-123.45-0"), o);
        assert_eq!(owner_of("isolab-agent", "isolab-agent-123.45-x"), None);
        assert_eq!(owner_of("isolab-agent", "isolab-agent-123.45"), None);
        assert_eq!(owner_of("isolab-agent", "isolab-agent-123-0"), None);
        assert_eq!(owner_of("isolab-agent", "other-123.45-0"), None);
        assert_eq!(owner_of("isolab-agent", "isolab-agentx-123.45-0"), None);
    }
}
