//! What a trial may leave behind, and how to tell whether a process we started still exists.

use std::fmt;

/// One thing a trial left behind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Leak {
    /// A process still alive (not a zombie).
    Process {
        /// Its pid.
        pid: u32,
        /// Its command name, if readable.
        comm: String,
    },
    /// A cgroup that still exists (relative to the agent's cgroup).
    Cgroup {
        /// Relative path.
        path: String,
    },
    /// A mount still in place.
    Mount {
        /// Mount point.
        path: String,
    },
    /// A network namespace still present.
    Netns {
        /// Its name.
        name: String,
    },
    /// A veth interface still present.
    Veth {
        /// Its name.
        name: String,
    },
    /// A tap interface still present.
    Tap {
        /// Its name.
        name: String,
    },
    /// A QEMU process still alive.
    Qemu {
        /// Its pid.
        pid: u32,
    },
    /// Something else, described.
    Other {
        /// What it is.
        what: String,
    },
}

impl fmt::Display for Leak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Process { pid, comm } => write!(f, "process {pid} ({comm}) still running"),
            Self::Cgroup { path } => write!(f, "cgroup {path} still exists"),
            Self::Mount { path } => write!(f, "mount {path} still mounted"),
            Self::Netns { name } => write!(f, "network namespace {name} still exists"),
            Self::Veth { name } => write!(f, "veth {name} still exists"),
            Self::Tap { name } => write!(f, "tap {name} still exists"),
            Self::Qemu { pid } => write!(f, "QEMU process {pid} still running"),
            Self::Other { what } => f.write_str(what),
        }
    }
}

/// Everything a teardown or a leftover check found; empty means clean.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeakReport {
    /// The leaks, sorted and without duplicates once [`LeakReport::merge`] was called.
    pub leaks: Vec<Leak>,
}

impl LeakReport {
    /// Whether nothing was left.
    pub fn is_clean(&self) -> bool {
        self.leaks.is_empty()
    }

    /// Adds one leak.
    pub fn push(&mut self, leak: Leak) {
        self.leaks.push(leak);
    }

    /// Adds another report's leaks; the result is sorted and deduplicated.
    pub fn merge(&mut self, other: LeakReport) {
        self.leaks.extend(other.leaks);
        self.leaks.sort();
        self.leaks.dedup();
    }

    /// One line per leak, for statuses.
    pub fn lines(&self) -> Vec<String> {
        self.leaks.iter().map(ToString::to_string).collect()
    }
}

/// Pids of live processes other than this one (not zombies) whose command line
/// (`/proc/<pid>/cmdline`, arguments separated by NUL) satisfies `matches`, in ascending order.
pub fn processes_whose_cmdline(matches: impl Fn(&[u8]) -> bool) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| matches(&c)))
        .filter(|&pid| process_alive(pid, None).is_some())
        .collect();
    pids.sort_unstable();
    pids
}

/// [`processes_whose_cmdline`] holding the bytes `needle` anywhere.
pub fn processes_naming(needle: &[u8]) -> Vec<u32> {
    processes_whose_cmdline(|c| c.windows(needle.len()).any(|w| w == needle))
}

/// The start time of process `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`),
/// which with the pid identifies a process even after its pid is reused.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether process `pid`, started at `start_time` (from [`process_start_time`]; `None` accepts
/// any), still exists and is not a zombie. Returns its command name when it does.
pub fn process_alive(pid: u32, start_time: Option<u64>) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let mut fields = stat[close + 1..].split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    if let Some(expected) = start_time {
        let started: u64 = fields.nth(18)?.parse().ok()?;
        if started != expected {
            return None;
        }
    }
    Some(comm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_identified_by_start_time() {
        let me = std::process::id();
        let start = process_start_time(me).expect("own stat readable");
        assert!(process_alive(me, Some(start)).is_some());
        assert!(process_alive(me, Some(start + 1)).is_none());
        assert!(process_alive(u32::MAX, None).is_none());
    }

    #[test]
    fn reaped_child_is_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(process_alive(pid, None).is_none());
    }

    #[test]
    fn merge_sorts_and_dedups() {
        let mut a = LeakReport::default();
        a.push(Leak::Cgroup { path: "b".into() });
        let mut b = LeakReport::default();
        b.push(Leak::Cgroup { path: "a".into() });
        b.push(Leak::Cgroup { path: "b".into() });
        a.merge(b);
        assert_eq!(
            a.lines(),
            vec!["cgroup a still exists", "cgroup b still exists"]
        );
        assert!(!a.is_clean());
    }
}
