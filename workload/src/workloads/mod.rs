//! The workloads, dispatched by catalog name, and the error type they share.

mod adversary;
mod aligned;
mod build;
mod compile;
mod cpu_spin;
mod cpu_time;
mod disk;
mod file_ops;
mod fileserver;
mod idle;
mod latency;
mod memory;
mod net;
mod oltp;
mod process;
mod workdir;

pub(crate) use compile::{COMPILE_SUBCOMMAND, compile_main};

use std::io;
use std::path::PathBuf;

use crate::cli::RunRequest;
use crate::emit::Emitter;
use crate::measure::Measured;
use crate::params::Params;

/// A workload's entry point.
type WorkloadFn = fn(&Params, &mut Emitter<'_>) -> Result<(), WorkloadError>;

/// Every implemented workload; must name exactly the catalog's workloads (a test checks).
const IMPLEMENTED: &[(&str, WorkloadFn)] = &[
    ("syscall", process::syscall),
    ("fork_exit", process::fork_exit),
    ("fork_exec", process::fork_exec),
    ("ctxsw", process::ctxsw),
    ("page_fault", memory::page_fault),
    ("mmap", memory::mmap),
    ("file_ops", file_ops::file_ops),
    ("mem_bw", memory::mem_bw),
    ("cpu_spin", cpu_spin::cpu_spin),
    ("idle", idle::idle),
    ("tcp_stream", net::tcp_stream),
    ("tcp_rr", net::tcp_rr),
    ("oltp", oltp::oltp),
    ("fileserver", fileserver::fileserver),
    ("build", build::build),
    ("disk", disk::disk),
    ("fork_bomb", adversary::fork_bomb),
    ("memory_bomb", adversary::memory_bomb),
    ("disk_bomb", adversary::disk_bomb),
    ("cpu_hog", adversary::cpu_hog),
    ("net_flood", adversary::net_flood),
];

/// Why a workload failed while running.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkloadError {
    /// The catalog names a workload this binary does not implement.
    #[error("workload `{workload}` is in the catalog but not implemented by this binary")]
    NotImplemented {
        /// The workload.
        workload: &'static str,
    },
    /// A param value the workload cannot use (a usage error, exit 2).
    #[error("{workload}: invalid value `{value}` for param `{param}`: expected {expected}")]
    InvalidParam {
        /// The workload.
        workload: &'static str,
        /// The param name.
        param: &'static str,
        /// The value, as understood.
        value: String,
        /// What would have been accepted.
        expected: String,
    },
    /// A system call failed.
    #[error("{workload}: {call} failed: {source}")]
    Sys {
        /// The workload.
        workload: &'static str,
        /// The call, e.g. `fork`.
        call: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A file-system operation failed on a path.
    #[error("{workload}: {op} `{path}` failed: {source}")]
    Io {
        /// The workload.
        workload: &'static str,
        /// The operation, e.g. `create`.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A child process misbehaved (exec failed, died, exited non-zero).
    #[error("{workload}: child process {what}")]
    Child {
        /// The workload.
        workload: &'static str,
        /// What happened.
        what: String,
    },
    /// No directory could be created for temporary files.
    #[error(
        "{workload}: no writable directory for temporary files (tried {tried}); pass --param dir=PATH"
    )]
    NoTempDir {
        /// The workload.
        workload: &'static str,
        /// The candidates tried, with why each failed.
        tried: String,
    },
    /// A buffer could not be allocated.
    #[error("{workload}: cannot allocate {bytes} bytes")]
    Alloc {
        /// The workload.
        workload: &'static str,
        /// The size asked for.
        bytes: u64,
    },
    /// The other end of a connection misbehaved or never came.
    #[error("{workload}: peer {what}")]
    Peer {
        /// The workload.
        workload: &'static str,
        /// What happened.
        what: String,
    },
    /// The embedded database failed.
    #[error("{workload}: cannot {what}: {source}")]
    Sqlite {
        /// The workload.
        workload: &'static str,
        /// What it was doing, e.g. `insert an account`.
        what: &'static str,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A worker thread panicked.
    #[error("{workload}: a worker thread panicked")]
    ThreadPanicked {
        /// The workload.
        workload: &'static str,
    },
    /// A computed value was NaN or infinite.
    #[error("metric `{metric}` came out non-finite")]
    NonFinite {
        /// The metric.
        metric: String,
    },
    /// stdout (or the console) refused a sample.
    #[error("writing a sample failed: {0}")]
    Output(#[source] io::Error),
    /// SIGINT or SIGTERM arrived.
    #[error("interrupted by {signal}")]
    Interrupted {
        /// The signal's name, e.g. `SIGTERM`.
        signal: &'static str,
    },
}

impl WorkloadError {
    /// The process exit code: 2 for a usage error, 1 for everything else.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::InvalidParam { .. } => 2,
            _ => 1,
        }
    }

    /// A failed system call, with the last OS error.
    pub(crate) fn sys(
        workload: &'static str,
        call: &'static str,
        source: impl Into<io::Error>,
    ) -> Self {
        Self::Sys {
            workload,
            call,
            source: source.into(),
        }
    }
}

/// Looks up the implementation of a workload.
fn lookup(name: &str) -> Option<WorkloadFn> {
    IMPLEMENTED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
}

/// Runs the requested workload, writing its samples to `emitter`.
pub(crate) fn run(request: &RunRequest, emitter: &mut Emitter<'_>) -> Result<(), WorkloadError> {
    let workload = request.info.name;
    let f = lookup(workload).ok_or(WorkloadError::NotImplemented { workload })?;
    f(&request.params, emitter)
}

/// Writes the usual summary of a per-operation workload: `metric` (the mean time per operation
/// in `unit`, `ns` or `us`, divided by `per_op` events per operation), `ops_per_s`, `ops` and
/// `elapsed_s`.
pub(crate) fn report_per_op(
    emitter: &mut Emitter<'_>,
    measured: &Measured,
    metric: &str,
    unit: &str,
    per_op: f64,
) -> Result<(), WorkloadError> {
    let scale = match unit {
        "ns" => 1e9,
        "us" => 1e6,
        "ms" => 1e3,
        _ => 1.0,
    };
    emitter.summary(metric, measured.secs_per_op() * scale / per_op, unit, false)?;
    emitter.summary("ops_per_s", measured.ops_per_s(), "ops/s", true)?;
    report_totals(emitter, measured)
}

/// Writes `ops` and `elapsed_s`, which every workload ends with.
pub(crate) fn report_totals(
    emitter: &mut Emitter<'_>,
    measured: &Measured,
) -> Result<(), WorkloadError> {
    emitter.summary("ops", crate::measure::to_f64(measured.ops), "ops", true)?;
    emitter.summary("elapsed_s", measured.elapsed.as_secs_f64(), "s", false)
}

#[cfg(test)]
mod tests {
    use isolab_model::catalog::{self, WORKLOADS};

    use super::*;

    #[test]
    fn every_catalog_entry_is_implemented_and_vice_versa() {
        for w in WORKLOADS {
            assert!(
                lookup(w.name).is_some(),
                "catalog workload `{}` is not implemented",
                w.name
            );
        }
        for (name, _) in IMPLEMENTED {
            assert!(
                catalog::find(name).is_some(),
                "`{name}` is implemented but not in the catalog"
            );
        }
        assert_eq!(
            IMPLEMENTED.len(),
            WORKLOADS.len(),
            "a workload is implemented twice"
        );
    }
}
