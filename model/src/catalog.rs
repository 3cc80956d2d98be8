//! The catalog of workloads: the only programs an agent will ever run.
//!
//! Both validation (is this name known?) and the workload binary (which function runs it?)
//! read this list, so the two cannot drift apart.

/// Whether a workload measures something or attacks its neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    /// Measures and reports performance.
    Benchmark,
    /// Tries to exhaust a resource (fork bomb, memory bomb…); reports what it reached.
    Adversary,
}

/// A parameter a workload accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamInfo {
    /// Parameter name (`--param NAME=…`).
    pub name: &'static str,
    /// What it means, with its unit and default.
    pub help: &'static str,
}

/// One entry of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkloadInfo {
    /// Name used in pipelines and on the command line.
    pub name: &'static str,
    /// Benchmark or adversary.
    pub kind: WorkloadKind,
    /// One line on what it does and reports.
    pub summary: &'static str,
    /// Parameters it accepts; any other is an error.
    pub params: &'static [ParamInfo],
}

const DURATION: ParamInfo =
    ParamInfo { name: "duration", help: "how long to measure, e.g. `2s` (default: the trial's duration)" };
const ITERATIONS: ParamInfo =
    ParamInfo { name: "iterations", help: "fixed number of operations instead of a duration" };

/// Every workload isolab knows, in catalog order.
pub const WORKLOADS: &[WorkloadInfo] = &[
    WorkloadInfo {
        name: "syscall",
        kind: WorkloadKind::Benchmark,
        summary: "getppid() in a loop; ns per call",
        params: &[DURATION, ITERATIONS],
    },
    WorkloadInfo {
        name: "fork_exit",
        kind: WorkloadKind::Benchmark,
        summary: "fork() a child that exits at once, wait for it; us per process",
        params: &[DURATION, ITERATIONS],
    },
    WorkloadInfo {
        name: "fork_exec",
        kind: WorkloadKind::Benchmark,
        summary: "fork() and exec() the workload binary itself as a no-op; us per process",
        params: &[DURATION, ITERATIONS],
    },
    WorkloadInfo {
        name: "ctxsw",
        kind: WorkloadKind::Benchmark,
        summary: "pipe ping-pong between two processes; us per context switch",
        params: &[DURATION, ITERATIONS],
    },
    WorkloadInfo {
        name: "page_fault",
        kind: WorkloadKind::Benchmark,
        summary: "touch fresh anonymous pages; ns per minor fault",
        params: &[DURATION, ITERATIONS, ParamInfo { name: "size", help: "mapping size per round (default 64MiB)" }],
    },
    WorkloadInfo {
        name: "mmap",
        kind: WorkloadKind::Benchmark,
        summary: "mmap+munmap of a region; us per pair",
        params: &[DURATION, ITERATIONS, ParamInfo { name: "size", help: "region size (default 1MiB)" }],
    },
    WorkloadInfo {
        name: "file_ops",
        kind: WorkloadKind::Benchmark,
        summary: "create, write, close and delete small files; us per file",
        params: &[
            DURATION,
            ITERATIONS,
            ParamInfo { name: "size", help: "bytes written per file (default 0)" },
            ParamInfo { name: "dir", help: "directory to work in (default: a fresh temp dir)" },
        ],
    },
    WorkloadInfo {
        name: "mem_bw",
        kind: WorkloadKind::Benchmark,
        summary: "memory read, write and copy bandwidth; GB/s",
        params: &[DURATION, ParamInfo { name: "size", help: "buffer size (default 64MiB)" }],
    },
    WorkloadInfo {
        name: "cpu_spin",
        kind: WorkloadKind::Benchmark,
        summary: "CPU-bound work units; units/s every 100 ms and in total",
        params: &[
            DURATION,
            ParamInfo { name: "interval", help: "reporting interval (default 100ms)" },
            ParamInfo { name: "threads", help: "spinning threads (default 1)" },
        ],
    },
];

/// Looks a workload up by name.
pub fn find(name: &str) -> Option<&'static WorkloadInfo> {
    WORKLOADS.iter().find(|w| w.name == name)
}

/// The names of all workloads, for error messages.
pub fn names() -> Vec<&'static str> {
    WORKLOADS.iter().map(|w| w.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut n = names();
        n.sort_unstable();
        n.dedup();
        assert_eq!(n.len(), WORKLOADS.len());
        assert!(find("syscall").is_some());
        assert!(find("nope").is_none());
    }
}
