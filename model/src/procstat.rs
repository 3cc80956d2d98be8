//! The aggregate `cpu` line of `/proc/stat`, parsed once for the agent (host noise around a
//! trial) and the workload (system CPU use inside an instance).

/// CPU time of all cores by category, in clock ticks (`USER_HZ`, normally 10 ms), as the `cpu`
/// line of `/proc/stat` lists it: `user nice system idle iowait irq softirq steal [guest
/// guest_nice]`. Guest time is already counted in user and nice, so it is not kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTicks {
    /// Normal processes in user mode.
    pub user: u64,
    /// Niced processes in user mode.
    pub nice: u64,
    /// Kernel mode.
    pub system: u64,
    /// Idle.
    pub idle: u64,
    /// Idle, waiting for I/O.
    pub iowait: u64,
    /// Servicing interrupts.
    pub irq: u64,
    /// Servicing softirqs.
    pub softirq: u64,
    /// Taken by the hypervisor for other guests.
    pub steal: u64,
}

impl CpuTicks {
    /// From the text of `/proc/stat`; `None` without a `cpu` line of at least four numbers
    /// (fields a kernel does not list count as 0).
    pub fn parse(proc_stat: &str) -> Option<Self> {
        let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        if v.len() < 4 {
            return None;
        }
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        Some(Self {
            user: at(0),
            nice: at(1),
            system: at(2),
            idle: at(3),
            iowait: at(4),
            irq: at(5),
            softirq: at(6),
            steal: at(7),
        })
    }

    /// Time this machine's own work took: user, nice, system, irq and softirq (not steal).
    pub fn busy(&self) -> u64 {
        self.user + self.nice + self.system + self.irq + self.softirq
    }

    /// All time: busy, idle, iowait and steal.
    pub fn total(&self) -> u64 {
        self.busy() + self.idle + self.iowait + self.steal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_line_is_split_by_category() {
        let t = CpuTicks::parse("cpu  100 5 50 800 40 3 2 7 9 9\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!(
            t.busy(),
            160,
            "user nice system irq softirq; guest not again"
        );
        assert_eq!(t.steal, 7);
        assert_eq!(t.total(), 1007);
        let short = CpuTicks::parse("cpu 1 2 3 4\n").unwrap();
        assert_eq!((short.busy(), short.total()), (6, 10));
        assert!(CpuTicks::parse("intr 1 2 3").is_none());
        assert!(CpuTicks::parse("cpu 1 2 x 4").is_none());
        assert!(CpuTicks::parse("cpu 1 2 3").is_none());
    }
}
