//! CPU time: of the calling thread (`getrusage(RUSAGE_THREAD)`, which needs no `/proc`) and of
//! the whole system as its kernel sees it (`/proc/stat`; inside a VM, the guest's CPUs).

use std::time::Duration;

use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::time::TimeValLike;

/// User plus system CPU time the calling thread has used so far (zero if unavailable).
pub(crate) fn thread_cpu() -> Duration {
    match getrusage(UsageWho::RUSAGE_THREAD) {
        Ok(u) => {
            let micros = u.user_time().num_microseconds() + u.system_time().num_microseconds();
            Duration::from_micros(u64::try_from(micros).unwrap_or(0))
        }
        Err(_) => Duration::ZERO,
    }
}

/// User plus system CPU time the whole process has used so far (zero if unavailable): the
/// figure its cgroup's exact accounting (`cpuacct.usage`, `cpu.stat`) must agree with.
pub(crate) fn process_cpu() -> Duration {
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let micros = u.user_time().num_microseconds() + u.system_time().num_microseconds();
            Duration::from_micros(u64::try_from(micros).unwrap_or(0))
        }
        Err(_) => Duration::ZERO,
    }
}

/// Busy and total jiffies of all CPUs, from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SystemCpu {
    busy: u64,
    total: u64,
}

impl SystemCpu {
    /// Reads `/proc/stat`; `None` when it is not mounted (an empty container rootfs).
    pub(crate) fn read() -> Option<Self> {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        Self::parse(&text)
    }

    /// Parses the `cpu` line ([`isolab_model::procstat::CpuTicks`]); idle and iowait are not
    /// busy, steal is (the CPUs were not this system's to use).
    fn parse(text: &str) -> Option<Self> {
        let t = isolab_model::procstat::CpuTicks::parse(text)?;
        Some(Self {
            busy: t.busy() + t.steal,
            total: t.total(),
        })
    }

    /// Percent of all CPUs' time that was busy between `earlier` and `self` (100 = every CPU
    /// busy all along); `None` when no time passed.
    pub(crate) fn busy_pct_since(&self, earlier: &Self) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let busy = self.busy.checked_sub(earlier.busy)?;
        (total > 0).then(|| crate::measure::to_f64(busy) * 100.0 / crate::measure::to_f64(total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat() {
        let a = SystemCpu::parse("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        let b = SystemCpu::parse("cpu  200 0 100 850 50 0 0 0 0 0\n").unwrap();
        assert_eq!(a.total, 1000);
        assert_eq!(a.busy, 150);
        let pct = b.busy_pct_since(&a).unwrap();
        assert!((pct - 75.0).abs() < 1e-9, "{pct}");
        assert_eq!(a.busy_pct_since(&a), None);
        assert!(SystemCpu::parse("intr 1 2 3").is_none());
    }

    #[test]
    fn thread_cpu_grows_with_work() {
        let before = thread_cpu();
        let mut x = 1u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(thread_cpu() > before);
    }
}
