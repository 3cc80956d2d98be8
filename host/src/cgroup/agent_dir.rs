//! The agent's own cgroup directory, under which every trial's cgroups live.
//!
//! Naming: `<prefix>-<pid>-<n>` directly under the cgroup the agent was started in (in every
//! controller), where `n` counts the agents started in this process. So several agents (in one
//! process, as tests do, or in several) can share a cgroup without touching each other's trials.
//! At claim time, directories `<prefix>-<pid>-<n>` whose process no longer exists (a crashed
//! agent), or whose pid is ours but that no live agent of this process holds, are killed and
//! removed; nothing else is ever touched.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::leaks::process_alive;
use crate::mounts;

use super::{Cgroup, CgroupError, CgroupManager};

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
        let me = std::process::id();
        let name = format!("{prefix}-{me}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let mut live = LIVE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut removed = Vec::new();
        for entry in manager.list("") {
            let Some(pid) = owner_pid(prefix, &entry) else {
                continue;
            };
            let stale = if pid == me {
                !live.contains(&entry)
            } else {
                process_alive(pid, None).is_none()
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

/// The pid in `<prefix>-<pid>-<n>`, if `name` has that shape.
fn owner_pid(prefix: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    let (pid, n) = rest.split_once('-')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Removes the directories (`<root>/<prefix>-<pid>-<n>`: VM runtime dirs, scratch roots) of agents with the same
/// prefix as `own` (this agent's `<prefix>-<pid>-<n>`) whose process is gone: what a crashed
/// agent left. Their QEMUs died with them (`PR_SET_PDEATHSIG`), their cgroups and network
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
        let (Some(pid), Some(n)) = (it.next().and_then(|p| p.parse::<u32>().ok()), it.next())
        else {
            continue;
        };
        let ours = pid == std::process::id();
        if ours || !n.bytes().all(|b| b.is_ascii_digit()) || process_alive(pid, None).is_some() {
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
        let dead = child.id();
        child.wait().unwrap();
        let me = std::process::id();
        let names = [
            format!("isolab-agent-{dead}-0"),
            format!("isolab-agent-{me}-1"),
            "isolab-agent-1-0".to_owned(),
            format!("other-{dead}-0"),
            "isolab-agent-x-0".to_owned(),
        ];
        for n in &names {
            std::fs::create_dir_all(root.path().join(n).join("trial")).unwrap();
        }
        let removed = remove_stale_runtime(root.path(), &format!("isolab-agent-{me}-0"));
        assert_eq!(removed, vec![root.path().join(&names[0])]);
        for n in &names[1..] {
            assert!(root.path().join(n).exists(), "{n} was removed");
        }
        assert!(remove_stale_runtime(root.path(), "noprefix").is_empty());
    }

    #[test]
    fn only_our_naming_is_recognised() {
        assert_eq!(owner_pid("isolab-agent", "isolab-agent-123-0"), Some(123));
        assert_eq!(owner_pid("isolab-agent", "isolab-agent-123-x"), None);
        assert_eq!(owner_pid("isolab-agent", "isolab-agent-123"), None);
        assert_eq!(owner_pid("isolab-agent", "other-123-0"), None);
        assert_eq!(owner_pid("isolab-agent", "isolab-agentx-123-0"), None);
    }
}
