//! `isolab-workload`: the static benchmark binary that every isolab instance runs.
//!
//! ```text
//! isolab-workload NAME [--param KEY=VALUE]…   run one workload, JSON-lines samples on stdout
//! isolab-workload --list                      the catalog: workloads and their params
//! isolab-workload --help                      usage
//! ```
//!
//! Each sample is one line on stdout, exactly an [`isolab_model::sample::Sample`]
//! (`metric`, `value`, `unit`, `higher_is_better`, and `t_offset_s` for time series), flushed
//! line by line; nothing else is written to stdout. Diagnostics go to stderr. Exit codes:
//! 0 success, 1 runtime failure (a system call failed, interrupted by SIGINT/SIGTERM), 2 usage
//! error (unknown workload or param, bad value; the message names the workload, the param and what
//! was expected).
//!
//! The list of workloads and params is [`isolab_model::catalog::WORKLOADS`]; this binary only
//! dispatches by name (a unit test checks both lists match). Params every benchmark shares:
//! `duration` (`2s`, `500ms`; default `1s`) and, where the catalog lists it, `iterations` (a fixed
//! number of operations; wins over `duration`). In duration mode a short calibration (which also
//! warms up) picks a batch size so that the clock is read every few milliseconds, not every
//! operation; calibration operations are not counted.
//!
//! | workload | what one operation is | metrics (unit) |
//! |---|---|---|
//! | `syscall` | `syscall(SYS_getppid)` (never cached by libc) | `ns_per_call` (ns), `ops_per_s` |
//! | `fork_exit` | `fork`, child `_exit(0)`, parent `waitpid` | `us_per_process` (us), `ops_per_s` |
//! | `fork_exec` | `fork` + `execve` of this binary as `__noop` + `waitpid` | `us_per_process` (us), `ops_per_s` |
//! | `ctxsw` | one byte there and back over two pipes between two processes pinned to one CPU | `us_per_switch` (us, round trip / 2), `ops_per_s` (round trips) |
//! | `page_fault` | map `size` (64MiB) anonymous, no huge pages, touch one byte per page (timed), unmap | `ns_per_fault` (ns), `faults_per_s`, `faults` |
//! | `mmap` | `mmap` + `munmap` of `size` (1MiB), untouched | `us_per_op` (us), `ops_per_s` |
//! | `file_ops` | create, write `size` (0) bytes, close, unlink, in a fresh directory | `us_per_file` (us), `ops_per_s` |
//! | `mem_bw` | one pass over a `size` (64MiB) buffer: sum of u64s, fill, copy of one half onto the other | `read_gb_s`, `write_gb_s`, `copy_gb_s` (GB/s = 1e9 bytes/s, bytes copied) |
//! | `cpu_spin` | a fixed unit of integer hashing, on `threads` (1) threads | `units_per_s` every `interval` (100ms) with `t_offset_s`, then a summary `units_per_s`, `total_units` and `process_cpu_ns` (the process's own CPU time) |
//! | `tcp_stream` | bulk TCP transfer for the duration (`role` loopback/server/client, `connections`, `size` 128KiB per write) | receiver: `gbit_s`, `receiver_cpu_pct`, `system_cpu_pct`, `bytes`; client: `gbit_s`, `bytes` |
//! | `tcp_rr` | one `size` (1 byte) request and its echo, per connection | `p50_us`, `p99_us`, `transactions_per_s` (server: `transactions_per_s`) |
//! | `oltp` | one TPC-B-like SQLite transaction (`scale` branches of 10 000 accounts) | `tps`, `p50_ms`, `p99_ms`, `setup_s` |
//! | `fileserver` | one of create/delete/read/append on a pool of `files` (1000) small files in `subdirs` (10) | `ops_per_s`, `mb_per_s` |
//! | `build` | one job: fork+exec of `__compile`, which compresses `size` (256KiB) of generated C; `jobs` at once | `jobs_per_s` |
//! | `disk` | sequential write/read of `size` (64MiB), 4 KiB random reads, 4 KiB write+fsync | `seq_write_mb_s`, `seq_read_mb_s`, `rand_read_iops`, `fsync_p50_us`, `fsync_p99_us`, `direct_io` |
//! | `fork_bomb` (adversary) | fork sleeping children until refused | series and summary `forks`, `refused` |
//! | `memory_bomb` (adversary) | map and touch `step` (16MiB) more memory | series `bytes_reached` after every step; summary `bytes_reached`, `refused` |
//! | `disk_bomb` (adversary) | append and fsync `step` (4MiB) until the disk or quota is full | series `bytes_written`; summary `bytes_written`, `full` |
//! | `cpu_hog` (adversary) | spin on `threads` (all CPUs) | series and summary `spins_per_s` |
//! | `net_flood` (adversary) | UDP datagrams of `size` (1024) to `host:port` (127.0.0.1:9) | series `packets_per_s`; summary `packets_per_s`, `mb_per_s`, `send_errors` |
//!
//! Every workload ends with `ops` (operations counted, unit `ops`) and `elapsed_s` (s), which
//! make the others checkable. Latencies have `higher_is_better: false`, rates `true`.
//! `mem_bw` splits its duration evenly among its three phases; `ops` is the total of passes.
//! In `page_fault` an operation is one mapping (so `iterations` counts mappings) and only the
//! touching is timed. `cpu_spin` rates are the units done over the interval actually elapsed, so
//! a throttled or descheduled instance shows lower values; a last window shorter than half an
//! interval is not reported (its units count in the summary).
//!
//! Each module under `workloads/` documents its workload in full (roles, phases, exact metric
//! definitions). Adversaries run until their duration ends or they are killed, report progress
//! as time series so the last value survives a kill, and at SIGINT/SIGTERM clean up, print their
//! summary and exit 1; they rely on the agent's safety envelope to contain them.
//!
//! `file_ops` (and every workload with a `dir` param) works in `dir` when given, else in the first
//! of `$TMPDIR`, `/tmp`, the current directory and `/` where it can create a fresh directory (an
//! empty container rootfs may have no `/tmp`); that directory is removed at the end, also on error
//! or SIGINT/SIGTERM.
//!
//! Build it static (it runs in an empty rootfs and as a VM's `/init`):
//! `RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p isolab-workload --target x86_64-unknown-linux-gnu`.
//! It uses nothing that needs dynamic loading (no NSS, no DNS).

mod cli;
mod emit;
mod measure;
mod params;
mod pid1;
mod workloads;

use std::io::Write;
use std::process::ExitCode;

use cli::Command;
use emit::Emitter;

/// Hidden subcommand `fork_exec` executes: exits at once.
pub(crate) const NOOP_SUBCOMMAND: &str = "__noop";

fn main() -> ExitCode {
    // A VM's kernel starts /init with no arguments; a container's PID 1 always has some.
    if std::process::id() == 1 && std::env::args_os().len() == 1 {
        pid1::run(); // inside a VM: /init (see pid1.rs); never returns
    }
    let mut args = std::env::args_os().skip(1).peekable();
    if args.peek().is_some_and(|a| a == NOOP_SUBCOMMAND) {
        return ExitCode::SUCCESS;
    }
    if args
        .peek()
        .is_some_and(|a| a == workloads::COMPILE_SUBCOMMAND)
    {
        args.next();
        return workloads::compile_main(args);
    }
    match cli::parse(args) {
        Err(e) => {
            eprintln!("isolab-workload: {e}");
            ExitCode::from(2)
        }
        Ok(Command::Help) => print_stdout(cli::HELP),
        Ok(Command::Version) => {
            print_stdout(concat!("isolab-workload ", env!("CARGO_PKG_VERSION")))
        }
        Ok(Command::List) => print_stdout(&cli::catalog_text()),
        Ok(Command::Run(run)) => {
            measure::install_stop_handlers();
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let mut emitter = Emitter::new(&mut out, "");
            match workloads::run(&run, &mut emitter) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("isolab-workload: {e}");
                    ExitCode::from(e.exit_code())
                }
            }
        }
    }
}

/// Prints help or list text; a closed stdout is a runtime failure.
fn print_stdout(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{}", text.trim_end()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("isolab-workload: writing to stdout failed: {e}");
            ExitCode::FAILURE
        }
    }
}
