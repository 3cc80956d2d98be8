//! What an agent leaves when it goes away, and what a crashed one left.
//!
//! Everything the backend makes is named after the agent's cgroup directory
//! `<prefix>-<pid>-<n>`: the state directory `<state_dir>/<prefix>-<pid>-<n>` (runtime roots and
//! bundles), network namespaces `<prefix>-<pid>-<n>-<trial>…`, and the runtime-made cgroup
//! directories in hierarchies the cgroup layer does not manage. When the backend is dropped it
//! removes its own; at start it removes those of agents with the same prefix whose process no
//! longer exists. Nothing with another name, or of a live process, is touched.

use std::path::Path;

use super::backend::Inner;
use super::runtime::Runtime;
use super::runtimes::RuntimeTable;
use crate::process_alive;
use isolab_host::mounts::mounts_under;
use isolab_host::netns;

/// `<prefix>-<pid>-<n>` → (`prefix`, `pid`), also when followed by `-<more>`.
fn parse_agent_name<'a>(prefix: &str, name: &'a str) -> Option<(u32, &'a str)> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    let mut parts = rest.splitn(3, '-');
    let pid = parts.next()?.parse().ok()?;
    let n = parts.next()?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let agent_len = name.len() - parts.next().map_or(0, |more| more.len() + 1);
    Some((pid, &name[..agent_len]))
}

/// The prefix of this agent's directory name `<prefix>-<pid>-<n>`.
fn own_prefix(name: &str) -> Option<&str> {
    let mut it = name.rsplitn(3, '-');
    let (_n, _pid, prefix) = (it.next()?, it.next()?, it.next()?);
    Some(prefix)
}

/// Whether an agent directory name belongs to a process that is gone.
fn dead(prefix: &str, name: &str) -> Option<String> {
    let (pid, agent) = parse_agent_name(prefix, name)?;
    (pid != std::process::id() && process_alive(pid, None).is_none()).then(|| agent.to_owned())
}

/// Removes the leftovers of dead agents with this agent's prefix.
pub(crate) fn remove_stale(inner: &Inner, state_dir: &Path) {
    let Some(prefix) = own_prefix(inner.dir.name()) else {
        return;
    };
    let stale_ns: Vec<String> = netns::starting_with(&format!("{prefix}-"))
        .into_iter()
        .filter(|n| dead(prefix, n).is_some())
        .collect();
    if !stale_ns.is_empty() {
        tracing::warn!(
            ?stale_ns,
            "removing network namespaces of agents that are gone"
        );
        if let Err(e) = netns::delete(&stale_ns) {
            tracing::warn!("{e}");
        }
    }
    if let Ok(entries) = std::fs::read_dir(state_dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if dead(prefix, &name).is_some_and(|agent| agent == name) {
                tracing::warn!(dir = %e.path().display(), "removing the state of an agent that is gone");
                remove_state(&e.path(), &inner.runtimes);
            }
        }
    }
    let extra = inner
        .cgroups
        .hierarchies()
        .excluding(&inner.dir.manager().own_dirs());
    for h in &extra.list {
        let Ok(entries) = std::fs::read_dir(&h.own_dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() && dead(prefix, &name).is_some_and(|agent| agent == name) {
                let one = isolab_host::cgroup::Hierarchies {
                    list: vec![h.clone()],
                };
                if let Err(err) = one.remove(&name) {
                    tracing::warn!("removing a stale cgroup of an agent that is gone: {err}");
                }
            }
        }
    }
}

/// Deletes every container under the runtime roots of a state directory (each named after a
/// runtime of the agent's table), then the directory. A root whose name is not in the table is
/// not run: the binary is the table's, never one found by the directory's name.
fn remove_state(dir: &Path, runtimes: &RuntimeTable) {
    if let Ok(roots) = std::fs::read_dir(dir.join("runtime")) {
        for root in roots.flatten() {
            let key = root.file_name().to_string_lossy().into_owned();
            let Ok(entry) = runtimes.get(&key) else {
                tracing::warn!(runtime = %key, "runtime not configured; cannot delete its stale containers");
                continue;
            };
            let rt = Runtime::new(&key, entry.program.clone(), &entry.args, root.path());
            for id in rt.list().unwrap_or_default() {
                if let Err(e) = rt.delete(&id) {
                    tracing::warn!("deleting stale container {id}: {e}");
                }
            }
        }
    }
    if !mounts_under(dir).is_empty() {
        tracing::warn!(dir = %dir.display(), "mounts below a stale state directory; keeping it");
        return;
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), "removing a stale state directory: {e}");
    }
}

/// When the backend goes away: removes its network namespaces, its cgroup directory from the
/// hierarchies the cgroup layer does not manage (the runtime made it there; the agent directory
/// removes the others), and its state directory once no trial is left in it.
pub(crate) fn release_agent(inner: &Inner) {
    let ns = netns::starting_with(&format!("{}-", inner.dir.name()));
    if !ns.is_empty() {
        tracing::warn!(
            ?ns,
            "removing network namespaces left by trials of this agent"
        );
        if let Err(e) = netns::delete(&ns) {
            tracing::warn!("{e}");
        }
    }
    let extra = inner
        .cgroups
        .hierarchies()
        .excluding(&inner.dir.manager().own_dirs());
    if let Err(e) = extra.remove(inner.dir.name()) {
        tracing::warn!("removing the agent's cgroup from unmanaged hierarchies: {e}");
    }
    let trials = inner.state.join("trials");
    if std::fs::read_dir(&trials).is_ok_and(|mut d| d.next().is_some()) {
        tracing::warn!(dir = %trials.display(), "trial directories left; keeping the agent's state");
        return;
    }
    if !mounts_under(&inner.state).is_empty() {
        tracing::warn!(dir = %inner.state.display(), "mounts left; keeping the agent's state");
        return;
    }
    match std::fs::remove_dir_all(&inner.state) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %inner.state.display(), "removing the agent's state: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names_are_recognised_with_and_without_a_trial_suffix() {
        assert_eq!(
            parse_agent_name("isolab-agent", "isolab-agent-12-0"),
            Some((12, "isolab-agent-12-0"))
        );
        assert_eq!(
            parse_agent_name("isolab-agent", "isolab-agent-12-3-c0ffee-a0-i1"),
            Some((12, "isolab-agent-12-3"))
        );
        assert_eq!(parse_agent_name("isolab-agent", "isolab-agent-12"), None);
        assert_eq!(parse_agent_name("isolab-agent", "isolab-agent-x-0"), None);
        assert_eq!(parse_agent_name("isolab-agent", "other-12-0"), None);
        assert_eq!(
            own_prefix("isolab-test-ct-bridge-18100-1"),
            Some("isolab-test-ct-bridge")
        );
    }

    #[test]
    fn only_dead_agents_are_stale() {
        let me = std::process::id();
        assert_eq!(
            dead("p", &format!("p-{me}-0")),
            None,
            "our own names are never stale here"
        );
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        assert_eq!(
            dead("p", &format!("p-{gone}-4-t-a0")),
            Some(format!("p-{gone}-4"))
        );
    }
}
