//! `tcp_rr`: request/response over TCP (`TCP_NODELAY`): the client writes `size` bytes (default
//! 1) and waits for the server to echo them back, one transaction at a time per connection.
//!
//! | role | metrics |
//! |---|---|
//! | `loopback`, `client` | `p50_us`, `p99_us` (latency of one transaction), `transactions_per_s`, `ops` (transactions), `elapsed_s` |
//! | `server` | `transactions_per_s` (echoed), `ops`, `elapsed_s` |
//!
//! Server and client must be given the same `size`: the server echoes messages of its own size.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::conn::{self, Filled, NetConfig, PEER_GRACE, Role};
use crate::emit::Emitter;
use crate::measure::{Measured, to_f64};
use crate::params::Params;
use crate::workloads::latency::Histogram;
use crate::workloads::{WorkloadError, report_totals};

const W: &str = "tcp_rr";

/// `tcp_rr`: see the module documentation.
pub(crate) fn tcp_rr(params: &Params, em: &mut Emitter<'_>) -> Result<(), WorkloadError> {
    let cfg = NetConfig::from_params(W, params, 1)?;
    match cfg.role {
        Role::Server => {
            let listener = conn::listen(W, cfg.addr)?;
            let (served, elapsed) =
                serve(&listener, &cfg, Instant::now() + cfg.duration + PEER_GRACE)?;
            let m = Measured {
                ops: served,
                elapsed,
            };
            em.summary("transactions_per_s", m.ops_per_s(), "transactions/s", true)?;
            report_totals(em, &m)
        }
        Role::Client => {
            let streams =
                conn::connect_all(W, cfg.addr, cfg.connections, Instant::now() + PEER_GRACE)?;
            let (hist, elapsed) = ask_all(streams, &cfg)?;
            report_latency(em, &hist, elapsed)
        }
        Role::Loopback => {
            if cfg.addr.ip().is_loopback() {
                conn::ensure_loopback_up(W);
            }
            let listener = conn::listen(W, cfg.addr)?;
            let target = conn::connect_addr(&listener)
                .map_err(|e| WorkloadError::sys(W, "getsockname", e))?;
            let (hist, elapsed) = std::thread::scope(|scope| {
                let server = std::thread::Builder::new()
                    .name(format!("{W}-server"))
                    .spawn_scoped(scope, || {
                        serve(&listener, &cfg, Instant::now() + PEER_GRACE)
                    })
                    .map_err(|e| WorkloadError::sys(W, "spawn thread", e))?;
                let asked =
                    conn::connect_all(W, target, cfg.connections, Instant::now() + PEER_GRACE)
                        .and_then(|streams| ask_all(streams, &cfg));
                let served = server
                    .join()
                    .unwrap_or(Err(WorkloadError::ThreadPanicked { workload: W }));
                let asked = asked?;
                served?;
                Ok::<_, WorkloadError>(asked)
            })?;
            report_latency(em, &hist, elapsed)
        }
    }
}

fn report_latency(
    em: &mut Emitter<'_>,
    hist: &Histogram,
    elapsed: Duration,
) -> Result<(), WorkloadError> {
    let (Some(p50), Some(p99)) = (hist.quantile_ns(0.5), hist.quantile_ns(0.99)) else {
        return Err(WorkloadError::Peer {
            workload: W,
            what: "completed no transaction within the duration".into(),
        });
    };
    let m = Measured {
        ops: hist.count(),
        elapsed,
    };
    em.summary("p50_us", to_f64(p50) / 1e3, "us", false)?;
    em.summary("p99_us", to_f64(p99) / 1e3, "us", false)?;
    em.summary("transactions_per_s", m.ops_per_s(), "transactions/s", true)?;
    report_totals(em, &m)
}

/// Accepts the connections and echoes on each until the client closes; returns the
/// transactions served and the time from the last accept to the last close.
fn serve(
    listener: &std::net::TcpListener,
    cfg: &NetConfig,
    accept_deadline: Instant,
) -> Result<(u64, Duration), WorkloadError> {
    let streams = conn::accept_all(W, listener, cfg.connections, accept_deadline)?;
    let start = Instant::now();
    let deadline = start + cfg.duration + PEER_GRACE;
    let counts = conn::on_threads(W, streams, |stream| echo(stream, cfg.size, deadline))?;
    Ok((counts.iter().sum(), start.elapsed()))
}

fn echo(mut stream: TcpStream, size: usize, deadline: Instant) -> Result<u64, WorkloadError> {
    stream
        .set_nodelay(true)
        .map_err(|e| WorkloadError::sys(W, "setsockopt", e))?;
    let mut buf = vec![0u8; size];
    let mut served = 0u64;
    while conn::read_full(W, &mut stream, &mut buf, deadline)? == Filled::Full {
        if !conn::write_full(W, &mut stream, &buf, deadline)? {
            break;
        }
        served += 1;
    }
    Ok(served)
}

/// Runs transactions on every connection for the duration; returns the latencies and the
/// time it took.
fn ask_all(
    streams: Vec<TcpStream>,
    cfg: &NetConfig,
) -> Result<(Histogram, Duration), WorkloadError> {
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let parts = conn::on_threads(W, streams, |stream| ask(stream, cfg.size, deadline))?;
    let elapsed = start.elapsed();
    let mut total = Histogram::default();
    for p in &parts {
        total.merge(p);
    }
    Ok((total, elapsed))
}

fn ask(mut stream: TcpStream, size: usize, deadline: Instant) -> Result<Histogram, WorkloadError> {
    stream
        .set_nodelay(true)
        .map_err(|e| WorkloadError::sys(W, "setsockopt", e))?;
    let request = vec![0x42_u8; size];
    let mut response = vec![0u8; size];
    let mut hist = Histogram::default();
    // A transaction stuck past this point means the server is gone.
    let give_up = deadline + PEER_GRACE;
    let mut now = Instant::now();
    while now < deadline {
        let t0 = now;
        if !conn::write_full(W, &mut stream, &request, give_up)? {
            return Err(stuck());
        }
        if conn::read_full(W, &mut stream, &mut response, give_up)? == Filled::Closed {
            return Err(WorkloadError::Peer {
                workload: W,
                what: "closed the connection before answering".into(),
            });
        }
        now = Instant::now();
        hist.record(now - t0);
    }
    conn::finish(W, &mut stream)?;
    Ok(hist)
}

fn stuck() -> WorkloadError {
    WorkloadError::Peer {
        workload: W,
        what: "stopped answering".into(),
    }
}
