//! What an agent leaves when it goes away, and what a crashed one left.
//!
//! Everything the backend makes is named after the agent's cgroup directory
//! `<prefix>-<owner>-<n>` (`<owner>` is `<pid>.<start ticks>`, see [`Owner`]): the state
//! directory `<state_dir>/<prefix>-<owner>-<n>` (runtime roots and bundles), network namespaces
//! `<prefix>-<owner>-<n>-<trial>…`, and the runtime-made cgroup directories in hierarchies the
//! cgroup layer does not manage. When the backend is dropped it removes its own; at start it
//! removes those of agents with the same prefix whose owner is not alive (gone, or its pid now
//! another process's, this agent's included). Nothing with another name, or of a live agent,
//! is touched.

use std::path::Path;

use super::backend::Inner;
use super::runtime::Runtime;
use super::runtimes::RuntimeTable;
use isolab_host::mounts::mounts_under;
use isolab_host::netns;
use isolab_host::owner::Owner;

/// `<prefix>-<owner>-<n>` → (owner, agent name), also when followed by `-<more>`.
fn parse_agent_name<'a>(prefix: &str, name: &'a str) -> Option<(Owner, &'a str)> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    let mut parts = rest.splitn(3, '-');
    let owner = Owner::parse(parts.next()?)?;
    let n = parts.next()?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let agent_len = name.len() - parts.next().map_or(0, |more| more.len() + 1);
    Some((owner, &name[..agent_len]))
}

/// The prefix of this agent's directory name `<prefix>-<owner>-<n>`.
fn own_prefix(name: &str) -> Option<&str> {
    let mut it = name.rsplitn(3, '-');
    let (_n, _pid, prefix) = (it.next()?, it.next()?, it.next()?);
    Some(prefix)
}

/// The agent part of a name whose owner is not alive (never this process's own names).
fn dead(prefix: &str, name: &str) -> Option<String> {
    let (owner, agent) = parse_agent_name(prefix, name)?;
    (!owner.is_alive()).then(|| agent.to_owned())
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

/// How long processes of a dead agent's state directory get to die after SIGKILL.
const KILL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Live processes whose command line names a path below `dir`: what a dead agent started with
/// its state directory (a private `dockerd`, its `containerd` and shims, `lxc-execute`, a
/// runtime), never anything else, since only the agent makes such paths.
fn processes_naming(dir: &Path) -> Vec<u32> {
    let mut needle = dir.as_os_str().as_encoded_bytes().to_vec();
    needle.push(b'/');
    isolab_host::leaks::processes_naming(&needle)
}

/// SIGKILLs the processes of a dead agent's state directory and waits (bounded) until they
/// are gone; returns those still alive.
fn kill_processes_naming(dir: &Path) -> Vec<u32> {
    let pids = processes_naming(dir);
    if pids.is_empty() {
        return pids;
    }
    tracing::warn!(?pids, dir = %dir.display(), "killing processes of an agent that is gone");
    for &pid in &pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid.cast_signed()),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let deadline = std::time::Instant::now() + KILL_WAIT;
    loop {
        let alive: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|&p| isolab_host::leaks::process_alive(p, None).is_some())
            .collect();
        if alive.is_empty() || std::time::Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Deletes every container under the runtime roots of a state directory (each named after a
/// runtime of the agent's table; a root whose name is not in the table is not run: the binary is
/// the table's, never one found by the directory's name), kills what else the dead agent started
/// there (a private Docker daemon), detaches its mounts, then removes it.
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
    let alive = kill_processes_naming(dir);
    if !alive.is_empty() {
        tracing::warn!(?alive, dir = %dir.display(), "processes of a stale state directory survived; keeping it");
        return;
    }
    // A killed private dockerd leaves its overlay, netns and data-root mounts.
    for point in mounts_under(dir) {
        isolab_host::mounts::detach(&point);
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
        let o = Owner {
            pid: 12,
            start_ticks: 77,
        };
        assert_eq!(
            parse_agent_name("isolab-agent", "isolab-agent-12.77-0"),
            Some((o, "isolab-agent-12.77-0"))
        );
        assert_eq!(
            parse_agent_name("isolab-agent", "isolab-agent-12.77-3-c0ffee-a0-i1"),
            Some((o, "isolab-agent-12.77-3"))
        );
        assert_eq!(parse_agent_name("isolab-agent", "isolab-agent-12.77"), None);
        assert_eq!(parse_agent_name("isolab-agent", "isolab-agent-12-0"), None);
        assert_eq!(parse_agent_name("isolab-agent", "isolab-agent-x-0"), None);
        assert_eq!(parse_agent_name("isolab-agent", "other-12.77-0"), None);
        assert_eq!(
            own_prefix("isolab-test-ct-bridge-18100.5-1"),
            Some("isolab-test-ct-bridge")
        );
    }

    #[test]
    fn processes_naming_a_stale_state_directory_are_killed_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("p-1.1-0");
        let other = dir.path().join("p-1.1-00");
        std::fs::create_dir_all(state.join("dk")).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        let sleeper = |arg: &Path| {
            // `sleep` with the path as its argv[0]: in the command line, as a daemon's paths are.
            use std::os::unix::process::CommandExt as _;
            std::process::Command::new("sleep")
                .arg0(arg)
                .arg("600")
                .spawn()
                .unwrap()
        };
        let mut inside = sleeper(&state.join("dk/docker.sock"));
        let mut beside = sleeper(&other.join("x"));
        assert_eq!(processes_naming(&state), vec![inside.id()]);
        let reaper = std::thread::spawn(move || inside.wait().unwrap());
        assert_eq!(kill_processes_naming(&state), Vec::<u32>::new());
        assert!(!reaper.join().unwrap().success());
        assert!(
            isolab_host::leaks::process_alive(beside.id(), None).is_some(),
            "a process naming another directory was killed"
        );
        beside.kill().unwrap();
        beside.wait().unwrap();
    }

    #[test]
    fn only_dead_agents_are_stale() {
        let me = Owner::me();
        assert_eq!(
            dead("p", &format!("p-{me}-0")),
            None,
            "our own names are never stale here"
        );
        // Our pid, another start time: a predecessor that had our pid (PID 1 after a restart).
        let before = Owner {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert_eq!(
            dead("p", &format!("p-{before}-2-t")),
            Some(format!("p-{before}-2"))
        );
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = Owner {
            pid: child.id(),
            start_ticks: isolab_host::leaks::process_start_time(child.id()).unwrap_or(1),
        };
        child.wait().unwrap();
        assert_eq!(
            dead("p", &format!("p-{gone}-4-t-a0")),
            Some(format!("p-{gone}-4"))
        );
    }
}
