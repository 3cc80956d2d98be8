//! What confines a running instance, read from the host: the seccomp mode and effective
//! capabilities of its workload processes (`/proc/<pid>/status`), for the tests that check each
//! platform runs with the hardening it ships by default (Docker's default profile and
//! capabilities, LXC's `common.conf`, the runc bundle's filter and empty capability set).
//!
//! [`observe`] runs the `idle` workload on a platform, and once it has reported, reads every
//! process of the trial (by its `ISOLAB_TRIAL` environment) whose command is the workload binary;
//! then it cancels the trial and checks that nothing is left.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use isolab_model::pipeline::Platform;

use crate::conformance;
use crate::core::TrialEvent;
use isolab_backends::{Backend, TRIAL_ENV};

/// The confinement of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confinement {
    /// The process (host pid).
    pub pid: u32,
    /// `Seccomp:` 0 none, 1 strict, 2 filter.
    pub seccomp: u8,
    /// `CapEff:` the effective capability set.
    pub cap_eff: u64,
    /// `CapBnd:` the bounding set.
    pub cap_bnd: u64,
}

impl Confinement {
    /// Reads `/proc/<pid>/status`; `None` when the process is gone or a field is missing.
    pub fn of(pid: u32) -> Option<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        Some(Self {
            pid,
            seccomp: field("Seccomp")?.parse().ok()?,
            cap_eff: u64::from_str_radix(field("CapEff")?, 16).ok()?,
            cap_bnd: u64::from_str_radix(field("CapBnd")?, 16).ok()?,
        })
    }
}

/// Capability numbers by the names LXC uses (`lxc.cap.drop`), from `linux/capability.h`.
pub const CAPABILITIES: &[(&str, u32)] = &[
    ("chown", 0),
    ("dac_override", 1),
    ("dac_read_search", 2),
    ("fowner", 3),
    ("fsetid", 4),
    ("kill", 5),
    ("setgid", 6),
    ("setuid", 7),
    ("setpcap", 8),
    ("linux_immutable", 9),
    ("net_bind_service", 10),
    ("net_broadcast", 11),
    ("net_admin", 12),
    ("net_raw", 13),
    ("ipc_lock", 14),
    ("ipc_owner", 15),
    ("sys_module", 16),
    ("sys_rawio", 17),
    ("sys_chroot", 18),
    ("sys_ptrace", 19),
    ("sys_pacct", 20),
    ("sys_admin", 21),
    ("sys_boot", 22),
    ("sys_nice", 23),
    ("sys_resource", 24),
    ("sys_time", 25),
    ("sys_tty_config", 26),
    ("mknod", 27),
    ("lease", 28),
    ("audit_write", 29),
    ("audit_control", 30),
    ("setfcap", 31),
    ("mac_override", 32),
    ("mac_admin", 33),
    ("syslog", 34),
    ("wake_alarm", 35),
    ("block_suspend", 36),
    ("audit_read", 37),
    ("perfmon", 38),
    ("bpf", 39),
    ("checkpoint_restore", 40),
];

/// The mask of capabilities `names` (LXC's spelling); `None` for a name not known.
pub fn mask(names: &[&str]) -> Option<u64> {
    names.iter().try_fold(0u64, |m, n| {
        let bit = CAPABILITIES.iter().find(|(c, _)| c == n)?.1;
        Some(m | 1 << bit)
    })
}

/// Runs the `idle` workload on `platform`, reads the confinement of its workload processes once
/// it has reported, cancels it and asserts nothing is left. Panics when no workload process was
/// found.
pub async fn observe<B: Backend>(backend: &B, platform: &Platform) -> Vec<Confinement> {
    observe_commands(backend, platform, |argv0| {
        argv0.ends_with(b"isolab-workload")
    })
    .await
}

/// [`observe`] for the trial's processes whose command (`argv[0]`) `is_observed` picks, e.g.
/// gVisor's sandbox, whose workload is not a host process.
pub async fn observe_commands<B: Backend>(
    backend: &B,
    platform: &Platform,
    is_observed: impl Fn(&[u8]) -> bool + Send + 'static,
) -> Vec<Confinement> {
    let trial = conformance::trial(
        platform,
        "idle",
        1,
        &[("duration", "30s")],
        Duration::from_secs(30),
        Duration::from_secs(60),
    );
    let needle = format!("{TRIAL_ENV}={}-a0", trial.id).into_bytes();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let found = Arc::clone(&seen);
    let o = conformance::run(backend, trial, move |e| {
        if !matches!(e, TrialEvent::Sample { .. }) {
            return false;
        }
        let mut found = found.lock().unwrap_or_else(PoisonError::into_inner);
        if found.is_empty() {
            *found = trial_processes(&needle, &is_observed)
                .into_iter()
                .filter_map(Confinement::of)
                .collect();
        }
        true
    })
    .await;
    conformance::assert_clean(backend, &o);
    let seen = seen.lock().unwrap_or_else(PoisonError::into_inner).clone();
    assert!(
        !seen.is_empty(),
        "no process of the trial found ({}): {:?}",
        o.status.message,
        o.events
    );
    seen
}

/// Live processes whose environment holds `needle`, and their descendants (a runtime may start
/// the instance's processes with an environment of their own), whose command `is_observed` picks.
fn trial_processes(needle: &[u8], is_observed: &impl Fn(&[u8]) -> bool) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let all: Vec<(u32, u32)> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, parent(pid)?)))
        .collect();
    let mut found: Vec<u32> = all
        .iter()
        .map(|(pid, _)| *pid)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == needle))
        })
        .collect();
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        let children: Vec<u32> = all
            .iter()
            .filter(|(c, pp)| *pp == p && !found.contains(c))
            .map(|(c, _)| *c)
            .collect();
        found.extend(children);
        i += 1;
    }
    found
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).next().is_some_and(is_observed))
        })
        .collect()
}

/// The parent pid from `/proc/<pid>/stat` (the field after the command's closing parenthesis).
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reads_and_masks_add_up() {
        let me = Confinement::of(std::process::id()).expect("own status");
        assert_eq!(me.cap_eff & !me.cap_bnd, 0, "{me:?}");
        assert_eq!(mask(&["chown", "kill"]), Some(0b100001));
        assert_eq!(mask(&["mac_admin"]), Some(1 << 33));
        assert_eq!(mask(&["no_such_cap"]), None);
    }
}
