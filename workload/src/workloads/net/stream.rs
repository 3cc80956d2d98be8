//! `tcp_stream`: one-way bulk TCP transfer, reported by the receiver (throughput and the CPU
//! time its receiving threads used) or, in `client` role, by the sender.
//!
//! | role | metrics |
//! |---|---|
//! | `loopback`, `server` | `gbit_s` (received), `receiver_cpu_pct`, `system_cpu_pct` (when `/proc/stat` is readable), `bytes`, `ops` (reads), `elapsed_s` |
//! | `client` | `gbit_s` (sent), `bytes`, `ops` (writes), `elapsed_s` |
//!
//! `receiver_cpu_pct` is the user+system CPU time of the receiving threads
//! (`getrusage(RUSAGE_THREAD)`) over the receive interval, in percent of one CPU (it can exceed
//! 100 with several connections). `system_cpu_pct` is the busy share of all CPUs from
//! `/proc/stat` over the same interval: inside a VM that is the guest's CPU use, softirq work
//! included, which is what Soltesz et al. measured; natively or in a container it is the host's.
//! The receive interval runs from the moment every connection is accepted to the last byte.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::conn::{self, NetConfig, PEER_GRACE, Role};
use crate::emit::Emitter;
use crate::measure::{Measured, check_stop, to_f64};
use crate::params::Params;
use crate::workloads::cpu_time::{SystemCpu, thread_cpu};
use crate::workloads::{WorkloadError, report_totals};

const W: &str = "tcp_stream";

/// Default bytes per write.
const DEFAULT_SIZE: u64 = 128 << 10;
/// Receive buffer size.
const RECV_BUF: usize = 128 << 10;

/// What one receiving thread saw.
#[derive(Debug, Default, Clone, Copy)]
struct Received {
    bytes: u64,
    reads: u64,
    last_byte: Option<Instant>,
    cpu: Duration,
}

/// What the receiving side saw, all connections together.
#[derive(Debug)]
struct ReceiveReport {
    bytes: u64,
    reads: u64,
    elapsed: Duration,
    cpu: Duration,
    system_cpu_pct: Option<f64>,
}

/// What the sending side did.
#[derive(Debug, Default, Clone, Copy)]
struct Sent {
    bytes: u64,
    writes: u64,
}

/// `tcp_stream`: see the module documentation.
pub(crate) fn tcp_stream(params: &Params, em: &mut Emitter<'_>) -> Result<(), WorkloadError> {
    let cfg = NetConfig::from_params(W, params, DEFAULT_SIZE)?;
    match cfg.role {
        Role::Server => {
            let listener = conn::listen(W, cfg.addr)?;
            let report = serve(&listener, &cfg, Instant::now() + cfg.duration + PEER_GRACE)?;
            report_received(em, &report)
        }
        Role::Client => {
            let streams =
                conn::connect_all(W, cfg.addr, cfg.connections, Instant::now() + PEER_GRACE)?;
            let (sent, elapsed) = send_all(streams, &cfg)?;
            em.summary("gbit_s", gbit_s(sent.bytes, elapsed), "Gbit/s", true)?;
            em.summary("bytes", to_f64(sent.bytes), "bytes", true)?;
            report_totals(
                em,
                &Measured {
                    ops: sent.writes,
                    elapsed,
                },
            )
        }
        Role::Loopback => {
            if cfg.addr.ip().is_loopback() {
                conn::ensure_loopback_up(W);
            }
            let listener = conn::listen(W, cfg.addr)?;
            let target = conn::connect_addr(&listener)
                .map_err(|e| WorkloadError::sys(W, "getsockname", e))?;
            let report = std::thread::scope(|scope| {
                let server = std::thread::Builder::new()
                    .name(format!("{W}-server"))
                    .spawn_scoped(scope, || {
                        serve(&listener, &cfg, Instant::now() + PEER_GRACE)
                    })
                    .map_err(|e| WorkloadError::sys(W, "spawn thread", e))?;
                let sent =
                    conn::connect_all(W, target, cfg.connections, Instant::now() + PEER_GRACE)
                        .and_then(|streams| send_all(streams, &cfg));
                let received = server
                    .join()
                    .unwrap_or(Err(WorkloadError::ThreadPanicked { workload: W }));
                sent?;
                received
            })?;
            report_received(em, &report)
        }
    }
}

fn report_received(em: &mut Emitter<'_>, r: &ReceiveReport) -> Result<(), WorkloadError> {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    em.summary("gbit_s", gbit_s(r.bytes, r.elapsed), "Gbit/s", true)?;
    em.summary(
        "receiver_cpu_pct",
        r.cpu.as_secs_f64() * 100.0 / secs,
        "%",
        false,
    )?;
    if let Some(pct) = r.system_cpu_pct {
        em.summary("system_cpu_pct", pct, "%", false)?;
    }
    em.summary("bytes", to_f64(r.bytes), "bytes", true)?;
    report_totals(
        em,
        &Measured {
            ops: r.reads,
            elapsed: r.elapsed,
        },
    )
}

fn gbit_s(bytes: u64, elapsed: Duration) -> f64 {
    to_f64(bytes) * 8.0 / 1e9 / elapsed.as_secs_f64().max(1e-9)
}

/// Accepts the connections (the first before `accept_deadline`) and receives until every
/// sender has closed, or the duration plus [`PEER_GRACE`] has passed.
fn serve(
    listener: &std::net::TcpListener,
    cfg: &NetConfig,
    accept_deadline: Instant,
) -> Result<ReceiveReport, WorkloadError> {
    let streams = conn::accept_all(W, listener, cfg.connections, accept_deadline)?;
    let start = Instant::now();
    let system_before = SystemCpu::read();
    let deadline = start + cfg.duration + PEER_GRACE;
    let parts = conn::on_threads(W, streams, |stream| receive(stream, deadline))?;
    let end = Instant::now();
    let system_pct = match (system_before, SystemCpu::read()) {
        (Some(a), Some(b)) => b.busy_pct_since(&a),
        _ => None,
    };
    let last = parts
        .iter()
        .filter_map(|p| p.last_byte)
        .max()
        .unwrap_or(end);
    Ok(ReceiveReport {
        bytes: parts.iter().map(|p| p.bytes).sum(),
        reads: parts.iter().map(|p| p.reads).sum(),
        elapsed: last.saturating_duration_since(start),
        cpu: parts.iter().map(|p| p.cpu).sum(),
        system_cpu_pct: system_pct,
    })
}

/// Reads until end-of-file (or `deadline`), then closes.
fn receive(mut stream: TcpStream, deadline: Instant) -> Result<Received, WorkloadError> {
    let mut buf = vec![0u8; RECV_BUF];
    let cpu_before = thread_cpu();
    let mut got = Received::default();
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.bytes += n as u64;
                got.reads += 1;
                got.last_byte = Some(Instant::now());
            }
            Err(e) if conn::is_timeout(&e) => {
                check_stop()?;
                if Instant::now() >= deadline {
                    eprintln!(
                        "isolab-workload: {W}: the sender did not finish in time; reporting what arrived"
                    );
                    break;
                }
            }
            Err(e) => return Err(WorkloadError::sys(W, "recv", e)),
        }
    }
    got.cpu = thread_cpu().saturating_sub(cpu_before);
    Ok(got)
}

/// Sends on every connection for the duration; returns the totals and the time it took.
fn send_all(streams: Vec<TcpStream>, cfg: &NetConfig) -> Result<(Sent, Duration), WorkloadError> {
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let parts = conn::on_threads(W, streams, |stream| send(stream, cfg.size, deadline))?;
    let elapsed = start.elapsed();
    let total = parts.iter().fold(Sent::default(), |acc, p| Sent {
        bytes: acc.bytes + p.bytes,
        writes: acc.writes + p.writes,
    });
    Ok((total, elapsed))
}

/// Writes `size`-byte buffers until `deadline`, then half-closes and waits for the receiver.
fn send(mut stream: TcpStream, size: usize, deadline: Instant) -> Result<Sent, WorkloadError> {
    let buf = vec![0x5a_u8; size];
    let mut sent = Sent::default();
    while Instant::now() < deadline {
        match stream.write(&buf) {
            Ok(n) => {
                sent.bytes += n as u64;
                sent.writes += 1;
            }
            Err(e) if conn::is_timeout(&e) => check_stop()?,
            Err(e) => return Err(WorkloadError::sys(W, "send", e)),
        }
    }
    conn::finish(W, &mut stream)?;
    Ok(sent)
}
