//! Reaping orphans: a killed workload's children would otherwise become zombies of PID 1, which in
//! some sandboxes never reaps them, until the host runs out of pids (a fork bomb leaves
//! thousands). The agent makes itself a child subreaper, so orphans of its instances are
//! re-parented to it, and after each trial reaps those zombies by pid.
//!
//! Reaping by pid, never `wait(-1)`, keeps the exit status of every direct child (each instance's
//! main process, which tokio waits for) to its owner: direct children are registered here while
//! they are spawned and until they are waited for, and only zombies with a given command name
//! that are not registered are reaped. Any backend whose helpers can leave orphans (a runtime that
//! daemonizes) reaps them after its teardown with [`reap_orphans`] and their command name; a
//! backend that spawns children it waits for itself with the workload's command name registers
//! them with [`spawn_registered`].

use std::collections::BTreeSet;
use std::sync::Mutex;

/// Pids of direct children whose exit belongs to someone else (tokio's `Child::wait`).
static DIRECT_CHILDREN: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Makes this process the child subreaper of its descendants (`PR_SET_CHILD_SUBREAPER`).
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer argument and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Runs `spawn` with the registry locked and registers the pid it returns, so that no reaping pass
/// can take a direct child's exit status between fork and registration.
pub fn spawn_registered<T>(
    spawn: impl FnOnce() -> std::io::Result<T>,
    pid_of: impl Fn(&T) -> Option<u32>,
) -> std::io::Result<T> {
    let mut direct = DIRECT_CHILDREN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let child = spawn()?;
    if let Some(pid) = pid_of(&child) {
        direct.insert(pid);
    }
    Ok(child)
}

/// Forgets a direct child once it was waited for.
pub fn unregister(pid: u32) {
    DIRECT_CHILDREN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&pid);
}

/// The command name the kernel shows for a program file (its name, cut to 15 bytes).
pub fn comm_of(program: &std::path::Path) -> String {
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

/// Reaps zombie children of this process named `comm` that are not registered direct children.
/// Returns the pids reaped.
pub fn reap_orphans(comm: &str) -> Vec<u32> {
    let direct = DIRECT_CHILDREN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut reaped = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if direct.contains(&pid) {
            continue;
        }
        let Some((name, state, ppid)) = stat_of(pid) else {
            continue;
        };
        if ppid != me || state != 'Z' || name != comm {
            continue;
        }
        let Ok(raw) = i32::try_from(pid) else {
            continue;
        };
        // SAFETY: waitpid on one specific pid that is our zombie child, with WNOHANG; the status
        // pointer may be null.
        let rc = unsafe { libc::waitpid(raw, std::ptr::null_mut(), libc::WNOHANG) };
        if rc == raw {
            reaped.push(pid);
        }
    }
    reaped
}

/// Command name, state and parent pid of `pid`.
fn stat_of(pid: u32) -> Option<(String, char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    let mut rest = stat[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((name, state, ppid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_is_cut_to_fifteen_bytes() {
        assert_eq!(
            comm_of(std::path::Path::new("/x/isolab-workload")),
            "isolab-workload"
        );
        assert_eq!(
            comm_of(std::path::Path::new("/x/a-rather-long-program-name")),
            "a-rather-long-p"
        );
    }

    #[test]
    fn own_stat_parses() {
        let (_, state, ppid) = stat_of(std::process::id()).expect("own stat");
        assert!(state == 'R' || state == 'S');
        assert!(ppid > 0);
    }
}
