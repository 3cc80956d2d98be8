//! Noise on the record: how busy the host was besides the trial while its instances ran.
//!
//! A snapshot is the host's CPU time by category from the `cpu` line of `/proc/stat` (in
//! `USER_HZ` ticks, summed over all cores) and the agent process's own CPU time
//! (`getrusage(RUSAGE_SELF)`, microseconds). Two snapshots, and the CPU time the trial's
//! instances used (their cgroups, nanoseconds), give fractions of the host's whole capacity over
//! the span: what the hypervisor stole, what ran outside the trial's cgroups, what the agent used.
//! `/proc/stat` counts in 10 ms ticks per core, so over a 0.5 s span on 2 cores a fraction is good
//! to about ±0.02: enough to flag a repetition that ran on a busy host, which is what it is for.

use std::time::Duration;

use crate::core::HostNoise;

/// Nanoseconds per `USER_HZ` tick (100 Hz on every Linux architecture isolab runs on).
const NS_PER_TICK: u64 = 10_000_000;

/// CPU time counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct CpuSnapshot {
    /// Busy time of all cores (user, nice, system, irq, softirq; guest time is inside user), ticks.
    busy_ticks: u64,
    /// Steal, ticks.
    steal_ticks: u64,
    /// All time of all cores, ticks (busy, idle, iowait and steal).
    total_ticks: u64,
    /// The agent process's user + system time, microseconds.
    agent_us: u64,
}

/// The aggregate `cpu` line of `/proc/stat`: (busy, steal, total) ticks.
fn parse_proc_stat(text: &str) -> Option<(u64, u64, u64)> {
    let t = isolab_model::procstat::CpuTicks::parse(text)?;
    Some((t.busy(), t.steal, t.total()))
}

impl CpuSnapshot {
    /// Reads the counters now; `None` when `/proc/stat` cannot be read.
    pub(crate) fn now() -> Option<Self> {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        let (busy_ticks, steal_ticks, total_ticks) = parse_proc_stat(&text)?;
        let agent_us = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
            .map(|u| {
                let us = |t: nix::sys::time::TimeVal| {
                    u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000
                        + u64::try_from(t.tv_usec()).unwrap_or(0)
                };
                us(u.user_time()) + us(u.system_time())
            })
            .unwrap_or(0);
        Some(Self {
            busy_ticks,
            steal_ticks,
            total_ticks,
            agent_us,
        })
    }
}

/// The noise between `start` and `end`, given the CPU time the trial's instances used in that
/// span (`None` when one instance's could not be read). `None` when no time passed.
#[allow(clippy::cast_precision_loss)] // ratios of counters far below 2^52
pub(crate) fn noise(
    start: CpuSnapshot,
    end: CpuSnapshot,
    span: Duration,
    trial_cpu_ns: Option<u64>,
) -> Option<HostNoise> {
    let total_ticks = end.total_ticks.checked_sub(start.total_ticks)?;
    if total_ticks == 0 {
        return None;
    }
    let total_ns = (total_ticks * NS_PER_TICK) as f64;
    let busy_ns = end.busy_ticks.saturating_sub(start.busy_ticks) * NS_PER_TICK;
    let steal = end.steal_ticks.saturating_sub(start.steal_ticks) as f64;
    let agent_ns = end.agent_us.saturating_sub(start.agent_us) * 1_000;
    Some(HostNoise {
        span_s: span.as_secs_f64(),
        steal_fraction: steal / total_ticks as f64,
        background_cpu_fraction: trial_cpu_ns
            .map(|trial| busy_ns.saturating_sub(trial) as f64 / total_ns),
        agent_cpu_fraction: (agent_ns as f64 / total_ns).min(1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  100 5 50 1000 10 2 3 40 7 0\ncpu0 50 2 25 500 5 1 1 20 3 0\nintr 1\n";

    #[test]
    fn proc_stat_line_is_split_into_busy_steal_and_total() {
        assert_eq!(parse_proc_stat(STAT), Some((160, 40, 1210)));
        assert_eq!(parse_proc_stat("cpu  1 2\n"), None);
        assert_eq!(parse_proc_stat("intr 5\n"), None);
        assert_eq!(parse_proc_stat("cpu  1 x 3 4\n"), None);
    }

    #[test]
    fn fractions_of_the_span() {
        let start = CpuSnapshot {
            busy_ticks: 1000,
            steal_ticks: 10,
            total_ticks: 5000,
            agent_us: 0,
        };
        // 200 ticks passed (1 s on 2 cores); 120 busy, of which the trial used 1.0 s = 100 ticks;
        // 10 stolen; the agent used 20 ms.
        let end = CpuSnapshot {
            busy_ticks: 1120,
            steal_ticks: 20,
            total_ticks: 5200,
            agent_us: 20_000,
        };
        let n = noise(start, end, Duration::from_secs(1), Some(1_000_000_000)).unwrap();
        assert!((n.steal_fraction - 0.05).abs() < 1e-9, "{n:?}");
        assert!(
            (n.background_cpu_fraction.unwrap() - 0.10).abs() < 1e-9,
            "{n:?}"
        );
        assert!((n.agent_cpu_fraction - 0.01).abs() < 1e-9, "{n:?}");
        let unknown = noise(start, end, Duration::from_secs(1), None).unwrap();
        assert_eq!(unknown.background_cpu_fraction, None);
        assert!(noise(start, start, Duration::ZERO, Some(0)).is_none());
    }

    #[test]
    fn a_real_snapshot_moves_forward() {
        let a = CpuSnapshot::now().expect("/proc/stat");
        let t = std::time::Instant::now();
        // Busy until this process used 50 ms of CPU: ticks pass and, with no trial, all busy
        // time is background.
        let mut b = a;
        while b.agent_us < a.agent_us + 50_000 {
            b = CpuSnapshot::now().expect("/proc/stat");
        }
        assert!(b.total_ticks > a.total_ticks, "{a:?} {b:?}");
        assert!(b.busy_ticks > a.busy_ticks, "{a:?} {b:?}");
        let n = noise(a, b, t.elapsed(), Some(0)).unwrap();
        assert!(n.background_cpu_fraction.unwrap() > 0.0, "{n:?}");
        assert!(n.agent_cpu_fraction > 0.0, "{n:?}");
    }
}
