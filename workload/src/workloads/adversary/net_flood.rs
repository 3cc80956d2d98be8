//! `net_flood`: sends `size`-byte UDP datagrams (default 1024) as fast as it can to `host:port`
//! (default `127.0.0.1:9`, discard) and nowhere else; the agent points it at the victim's
//! address inside the network namespaces it made. A loopback target gets `lo` brought up if it
//! is down (as `tcp_rr` does). Sends refused locally (`ENOBUFS`, `EAGAIN`,
//! an unreachable network) are counted and the flood goes on.
//!
//! Series every 100 ms: `packets_per_s`. Summary: `packets_per_s`, `mb_per_s` (payload,
//! 1 MB = 1e6 bytes), `send_errors`, `ops` (datagrams sent), `elapsed_s`.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Instant;

use super::clock::Clock;
use crate::emit::Emitter;
use crate::measure::{Measured, check_stop, to_f64};
use crate::params::Params;
use crate::workloads::net::ensure_loopback_up;
use crate::workloads::{WorkloadError, report_totals};

const W: &str = "net_flood";

/// Largest UDP payload over IPv4.
const MAX_DATAGRAM: u64 = 65_507;
/// Datagrams between two clock reads.
const BATCH: u64 = 64;

/// `net_flood`: see the module documentation.
pub(crate) fn net_flood(params: &Params, em: &mut Emitter<'_>) -> Result<(), WorkloadError> {
    let host = params.ip("host").unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let port = u16::try_from(params.count("port", 9)).unwrap_or(9);
    let size_bytes = params.bytes("size", 1024);
    let size = usize::try_from(size_bytes)
        .ok()
        .filter(|_| (1..=MAX_DATAGRAM).contains(&size_bytes))
        .ok_or_else(|| WorkloadError::InvalidParam {
            workload: W,
            param: "size",
            value: size_bytes.to_string(),
            expected: format!("from 1 to {MAX_DATAGRAM} bytes"),
        })?;
    let target = SocketAddr::new(host, port);
    if host.is_loopback() {
        ensure_loopback_up(W);
    }
    let local: IpAddr = match host {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((local, 0)).map_err(|e| WorkloadError::sys(W, "bind", e))?;
    let payload = vec![0xf1_u8; size];
    let mut clock = Clock::new(params.run_duration());
    let (mut sent, mut errors) = (0u64, 0u64);
    let (mut last_t, mut last_sent) = (Instant::now(), 0u64);
    while !clock.done() {
        for _ in 0..BATCH {
            match socket.send_to(&payload, target) {
                Ok(_) => sent += 1,
                Err(e) if refused_locally(e.kind(), e.raw_os_error()) => errors += 1,
                Err(e) => return Err(WorkloadError::sys(W, "sendto", e)),
            }
        }
        if let Some(t) = clock.tick() {
            let now = Instant::now();
            let window = now.duration_since(last_t).as_secs_f64().max(1e-9);
            em.series(
                "packets_per_s",
                to_f64(sent - last_sent) / window,
                "packets/s",
                true,
                t,
            )?;
            (last_t, last_sent) = (now, sent);
        }
    }
    let m = Measured {
        ops: sent,
        elapsed: clock.elapsed(),
    };
    em.summary("packets_per_s", m.ops_per_s(), "packets/s", true)?;
    em.summary(
        "mb_per_s",
        to_f64(sent * size_bytes) / 1e6 / m.elapsed_s(),
        "MB/s",
        true,
    )?;
    em.summary("send_errors", to_f64(errors), "errors", false)?;
    report_totals(em, &m)?;
    check_stop()
}

/// Errors that mean "this datagram was dropped here", not "the flood cannot go on".
fn refused_locally(kind: ErrorKind, raw: Option<i32>) -> bool {
    matches!(
        kind,
        ErrorKind::WouldBlock
            | ErrorKind::Interrupted
            | ErrorKind::ConnectionRefused
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
    ) || matches!(raw, Some(libc::ENOBUFS | libc::EPERM))
}
