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

const DURATION: ParamInfo = ParamInfo {
    name: "duration",
    help: "how long to measure, e.g. `2s` (default: the trial's duration)",
};
const ITERATIONS: ParamInfo = ParamInfo {
    name: "iterations",
    help: "fixed number of operations instead of a duration",
};

const DIR: ParamInfo = ParamInfo {
    name: "dir",
    help: "directory to work in (default: a fresh temp dir, removed at the end)",
};
const ROLE: ParamInfo = ParamInfo {
    name: "role",
    help: "loopback (server thread and client in this instance over 127.0.0.1), server or client (default loopback)",
};
const HOST: ParamInfo = ParamInfo {
    name: "host",
    help: "IP address: the server's for a client, the one to listen on for a server (default 127.0.0.1 / 0.0.0.0)",
};
const PORT: ParamInfo = ParamInfo {
    name: "port",
    help: "TCP port (default 7001; loopback: any free port)",
};
const CONNECTIONS: ParamInfo = ParamInfo {
    name: "connections",
    help: "parallel connections (default 1)",
};

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
        params: &[
            DURATION,
            ITERATIONS,
            ParamInfo {
                name: "size",
                help: "mapping size per round (default 64MiB)",
            },
        ],
    },
    WorkloadInfo {
        name: "mmap",
        kind: WorkloadKind::Benchmark,
        summary: "mmap+munmap of a region; us per pair",
        params: &[
            DURATION,
            ITERATIONS,
            ParamInfo {
                name: "size",
                help: "region size (default 1MiB)",
            },
        ],
    },
    WorkloadInfo {
        name: "file_ops",
        kind: WorkloadKind::Benchmark,
        summary: "create, write, close and delete small files; us per file",
        params: &[
            DURATION,
            ITERATIONS,
            ParamInfo {
                name: "size",
                help: "bytes written per file (default 0)",
            },
            ParamInfo {
                name: "dir",
                help: "directory to work in (default: a fresh temp dir)",
            },
        ],
    },
    WorkloadInfo {
        name: "mem_bw",
        kind: WorkloadKind::Benchmark,
        summary: "memory read, write and copy bandwidth; GB/s",
        params: &[
            DURATION,
            ParamInfo {
                name: "size",
                help: "buffer size (default 64MiB)",
            },
        ],
    },
    WorkloadInfo {
        name: "cpu_spin",
        kind: WorkloadKind::Benchmark,
        summary: "CPU-bound work units; units/s every 100 ms and in total",
        params: &[
            DURATION,
            ParamInfo {
                name: "interval",
                help: "reporting interval (default 100ms)",
            },
            ParamInfo {
                name: "threads",
                help: "spinning threads (default 1)",
            },
        ],
    },
    WorkloadInfo {
        name: "idle",
        kind: WorkloadKind::Benchmark,
        summary: "sleeps for the duration using no CPU (density: how many instances stay alive); awake = 1 at the start",
        params: &[DURATION],
    },
    WorkloadInfo {
        name: "tcp_stream",
        kind: WorkloadKind::Benchmark,
        summary: "one-way TCP bulk transfer; Gbit/s and the receiver's CPU use",
        params: &[
            DURATION,
            ROLE,
            HOST,
            PORT,
            ParamInfo {
                name: "size",
                help: "bytes per write (default 128KiB)",
            },
            CONNECTIONS,
        ],
    },
    WorkloadInfo {
        name: "tcp_rr",
        kind: WorkloadKind::Benchmark,
        summary: "TCP request/response ping-pong; p50/p99 latency in us and transactions/s",
        params: &[
            DURATION,
            ROLE,
            HOST,
            PORT,
            ParamInfo {
                name: "size",
                help: "request and response bytes (default 1)",
            },
            CONNECTIONS,
        ],
    },
    WorkloadInfo {
        name: "oltp",
        kind: WorkloadKind::Benchmark,
        summary: "TPC-B-like transactions on an embedded SQLite database; tps and p99 latency",
        params: &[
            DURATION,
            ParamInfo {
                name: "scale",
                help: "branches; each has 10 tellers and 10000 accounts (default 1)",
            },
            DIR,
        ],
    },
    WorkloadInfo {
        name: "fileserver",
        kind: WorkloadKind::Benchmark,
        summary: "postmark-like small-file create, append, read and delete mix; ops/s and MB/s",
        params: &[
            DURATION,
            ParamInfo {
                name: "files",
                help: "files in the pool (default 1000)",
            },
            ParamInfo {
                name: "subdirs",
                help: "directories the pool is spread over (default 10)",
            },
            ParamInfo {
                name: "size",
                help: "largest file size (default 16KiB)",
            },
            DIR,
        ],
    },
    WorkloadInfo {
        name: "build",
        kind: WorkloadKind::Benchmark,
        summary: "kernel-build-like load: parallel fork+exec children compressing generated sources; jobs/s",
        params: &[
            DURATION,
            ParamInfo {
                name: "jobs",
                help: "children running at once (default: online CPUs)",
            },
            ParamInfo {
                name: "size",
                help: "generated source bytes per job (default 256KiB)",
            },
            DIR,
        ],
    },
    WorkloadInfo {
        name: "disk",
        kind: WorkloadKind::Benchmark,
        summary: "sequential write/read MB/s, 4 KiB random read IOPS and fsync latency",
        params: &[
            DURATION,
            ParamInfo {
                name: "size",
                help: "test file size (default 64MiB)",
            },
            DIR,
        ],
    },
    WorkloadInfo {
        name: "fork_bomb",
        kind: WorkloadKind::Adversary,
        summary: "forks sleeping children until refused; forks made and refused",
        params: &[
            DURATION,
            ParamInfo {
                name: "max_forks",
                help: "stop forking at this many children (default: no limit)",
            },
        ],
    },
    WorkloadInfo {
        name: "memory_bomb",
        kind: WorkloadKind::Adversary,
        summary: "allocates and touches memory until refused or killed; bytes reached",
        params: &[
            DURATION,
            ParamInfo {
                name: "step",
                help: "bytes allocated per step (default 16MiB)",
            },
            ParamInfo {
                name: "limit",
                help: "stop allocating at this many bytes (default: no limit)",
            },
        ],
    },
    WorkloadInfo {
        name: "disk_bomb",
        kind: WorkloadKind::Adversary,
        summary: "writes and fsyncs until the quota or the device is full; bytes written",
        params: &[
            DURATION,
            ParamInfo {
                name: "step",
                help: "bytes written per step (default 4MiB)",
            },
            ParamInfo {
                name: "limit",
                help: "stop writing at this many bytes (default: no limit)",
            },
            DIR,
        ],
    },
    WorkloadInfo {
        name: "cpu_hog",
        kind: WorkloadKind::Adversary,
        summary: "threads spinning on the CPU; spins/s",
        params: &[
            DURATION,
            ParamInfo {
                name: "threads",
                help: "spinning threads (default: online CPUs)",
            },
        ],
    },
    WorkloadInfo {
        name: "net_flood",
        kind: WorkloadKind::Adversary,
        summary: "UDP datagram flood towards one address; packets/s and MB/s",
        params: &[
            DURATION,
            ParamInfo {
                name: "host",
                help: "target IP address (default 127.0.0.1)",
            },
            ParamInfo {
                name: "port",
                help: "target UDP port (default 9, discard)",
            },
            ParamInfo {
                name: "size",
                help: "datagram payload bytes (default 1024)",
            },
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
