//! Who made a thing: the agent process that owns a cgroup directory, a runtime state directory,
//! a network namespace, a container or a VM, encoded in its name.
//!
//! A bare pid does not identify an agent: pids are reused, and in a container the agent is PID 1
//! after every restart, so a restarted agent would take its predecessor's leftovers for its own.
//! An [`Owner`] is the pair (pid, start time), the start time being field 22 of
//! `/proc/<pid>/stat` (clock ticks since boot): two processes never have both in common during
//! one boot. It is written `<pid>.<start>` in every name the agent gives (see
//! [`crate::cgroup::AgentDir`]: `<prefix>-<pid>.<start>-<n>`), and an owner is alive only when
//! a process with that pid exists now *and* started at that tick. So an agent restarted with the
//! same pid sees its predecessor as dead and sweeps what it left.

use std::fmt;
use std::sync::OnceLock;

use crate::leaks::{process_alive, process_start_time};

/// The process that owns a leftover: its pid and its start time in clock ticks since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner {
    /// Process id (as seen in this agent's pid namespace).
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`.
    pub start_ticks: u64,
}

impl Owner {
    /// This process.
    pub fn me() -> Self {
        static ME: OnceLock<Owner> = OnceLock::new();
        *ME.get_or_init(|| {
            let pid = std::process::id();
            Owner {
                pid,
                // `/proc/self` is always readable; 0 only if /proc is not mounted, in which case
                // no owner can be checked and every sweep finds nothing alive but us.
                start_ticks: process_start_time(pid).unwrap_or(0),
            }
        })
    }

    /// Parses the `<pid>.<start>` token of a name; `None` for anything else (other naming, or
    /// the pid-only naming of agents before owners carried a start time).
    pub fn parse(token: &str) -> Option<Self> {
        let (pid, start) = token.split_once('.')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(pid) || !digits(start) {
            return None;
        }
        Some(Self {
            pid: pid.parse().ok()?,
            start_ticks: start.parse().ok()?,
        })
    }

    /// Whether this is the current process.
    pub fn is_me(&self) -> bool {
        *self == Self::me()
    }

    /// Whether the owner still runs: a process with this pid exists (not a zombie) and started
    /// at this tick. A reused pid, the same pid after a restart (PID 1 in a container) and a
    /// gone process all count as dead.
    pub fn is_alive(&self) -> bool {
        self.is_me() || process_alive(self.pid, Some(self.start_ticks)).is_some()
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.pid, self.start_ticks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_other_shapes_are_refused() {
        let o = Owner {
            pid: 12,
            start_ticks: 3456,
        };
        assert_eq!(o.to_string(), "12.3456");
        assert_eq!(Owner::parse("12.3456"), Some(o));
        for bad in ["12", "12.", ".3", "12.3x", "a.3", "12.3.4", "", "-1.2"] {
            assert_eq!(Owner::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn liveness_needs_the_same_pid_and_start_time() {
        let me = Owner::me();
        assert!(me.is_alive());
        assert_eq!(Owner::parse(&me.to_string()), Some(me));
        // The same pid with another start time: a previous process that had this pid.
        let earlier = Owner {
            start_ticks: me.start_ticks.wrapping_sub(1),
            ..me
        };
        assert!(!earlier.is_me());
        assert!(!earlier.is_alive(), "same pid, other start: dead");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let start = process_start_time(pid);
        child.wait().unwrap();
        let gone = Owner {
            pid,
            start_ticks: start.unwrap_or(1),
        };
        assert!(!gone.is_alive());
    }
}
