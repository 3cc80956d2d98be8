//! Roles, addresses and connection set-up shared by the TCP workloads.
//!
//! - `loopback` (default): a server thread and the client in this process over `127.0.0.1`
//!   (or `host`), any free port unless `port` is given; brings `lo` up if it is down (a VM
//!   whose `/init` set up no network). Works in every backend.
//! - `server`: listens on `host:port` (default `0.0.0.0:7001`), waits up to the duration plus
//!   [`PEER_GRACE`] for its first client, serves `connections` connections and reports what it
//!   received.
//! - `client`: connects to `host:port` (default `127.0.0.1:7001`), retrying for up to
//!   [`PEER_GRACE`] since the server may start later, then drives the traffic for the duration.
//!
//! Sockets carry [`POLL`] read and write timeouts so blocked threads still notice SIGINT/SIGTERM
//! and their deadlines.

use std::io::{self, ErrorKind};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::measure::check_stop;
use crate::params::Params;
use crate::workloads::WorkloadError;

/// Port of `server` and `client` when none is given.
pub(super) const DEFAULT_PORT: u16 = 7001;
/// How long a server waits beyond the duration, and a client retries connecting.
pub(super) const PEER_GRACE: Duration = Duration::from_secs(10);
/// Socket timeouts: how often a blocked thread wakes to check its deadline and the stop flag.
pub(super) const POLL: Duration = Duration::from_millis(100);
/// Pause between connection attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Which side(s) of the traffic this instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Both, in one process.
    Loopback,
    /// The receiving / answering side.
    Server,
    /// The sending / asking side.
    Client,
}

/// The validated network params.
#[derive(Debug, Clone)]
pub(super) struct NetConfig {
    /// The role.
    pub(super) role: Role,
    /// Where to listen (loopback, server) or connect (client).
    pub(super) addr: SocketAddr,
    /// Parallel connections.
    pub(super) connections: usize,
    /// Bytes per write (stream) or per request and response (rr).
    pub(super) size: usize,
    /// How long the client drives traffic.
    pub(super) duration: Duration,
}

impl NetConfig {
    /// Reads `role`, `host`, `port`, `size` (default `default_size`) and `connections`.
    pub(super) fn from_params(
        workload: &'static str,
        params: &Params,
        default_size: u64,
    ) -> Result<Self, WorkloadError> {
        let role = match params.choice("role", "loopback") {
            "server" => Role::Server,
            "client" => Role::Client,
            _ => Role::Loopback,
        };
        let host = params.ip("host").unwrap_or(match role {
            Role::Server => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Role::Loopback | Role::Client => IpAddr::V4(Ipv4Addr::LOCALHOST),
        });
        let port = match (params.count_opt("port"), role) {
            (Some(p), _) => u16::try_from(p).unwrap_or(DEFAULT_PORT),
            (None, Role::Loopback) => 0,
            (None, _) => DEFAULT_PORT,
        };
        if role == Role::Loopback && host.is_unspecified() {
            return Err(WorkloadError::InvalidParam {
                workload,
                param: "host",
                value: host.to_string(),
                expected: "an address to connect to in loopback role, e.g. 127.0.0.1".into(),
            });
        }
        let size_bytes = params.bytes("size", default_size);
        let size = usize::try_from(size_bytes)
            .ok()
            .filter(|s| (1..=64 << 20).contains(s))
            .ok_or_else(|| WorkloadError::InvalidParam {
                workload,
                param: "size",
                value: size_bytes.to_string(),
                expected: "from 1 byte to 64MiB".into(),
            })?;
        Ok(Self {
            role,
            addr: SocketAddr::new(host, port),
            connections: usize::try_from(params.count("connections", 1)).unwrap_or(1),
            size,
            duration: params.run_duration(),
        })
    }
}

/// Brings the loopback interface up when it is down, as in a fresh VM whose `/init` configured
/// no network or a network namespace nobody set up; best effort (it needs `CAP_NET_ADMIN`), and a
/// no-op where `lo` is already up.
pub(crate) fn ensure_loopback_up(workload: &'static str) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: socket takes plain integers; a non-negative result is a descriptor we own.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return;
    }
    // SAFETY: `raw` is a fresh descriptor owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = libc::c_char::from_ne_bytes([*src]);
    }
    // SAFETY: SIOCGIFFLAGS reads into the ifreq we pass, which lives across the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut ifr) } < 0 {
        return;
    }
    // SAFETY: after SIOCGIFFLAGS the flags member of the union is the one the kernel filled.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    let up = libc::c_short::try_from(libc::IFF_UP).unwrap_or(1);
    if flags & up != 0 {
        return;
    }
    ifr.ifr_ifru.ifru_flags = flags | up;
    // SAFETY: SIOCSIFFLAGS reads the ifreq we pass, which lives across the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &raw const ifr) };
    if rc == 0 {
        eprintln!("isolab-workload: {workload}: brought the loopback interface up");
    } else {
        eprintln!(
            "isolab-workload: {workload}: the loopback interface is down and cannot be brought up: {}",
            io::Error::last_os_error()
        );
    }
}

/// Binds the listening socket.
pub(super) fn listen(
    workload: &'static str,
    addr: SocketAddr,
) -> Result<TcpListener, WorkloadError> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| WorkloadError::sys(workload, "bind", annotate(e, addr)))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| WorkloadError::sys(workload, "set_nonblocking", e))?;
    Ok(listener)
}

/// The address a loopback client connects to: the listener's, with an unspecified IP replaced.
pub(super) fn connect_addr(listener: &TcpListener) -> io::Result<SocketAddr> {
    let mut addr = listener.local_addr()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Ok(addr)
}

/// Accepts `n` connections: the first before `first_deadline`, the others within
/// [`PEER_GRACE`] of the first. Each accepted socket is blocking with [`POLL`] timeouts.
pub(super) fn accept_all(
    workload: &'static str,
    listener: &TcpListener,
    n: usize,
    first_deadline: Instant,
) -> Result<Vec<TcpStream>, WorkloadError> {
    let mut streams = Vec::with_capacity(n);
    let mut deadline = first_deadline;
    while streams.len() < n {
        check_stop()?;
        match listener.accept() {
            Ok((stream, _peer)) => {
                prepare(workload, &stream)?;
                if streams.is_empty() {
                    deadline = Instant::now() + PEER_GRACE;
                }
                streams.push(stream);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                if Instant::now() >= deadline {
                    let addr = listener
                        .local_addr()
                        .map_or_else(|_| "?".into(), |a| a.to_string());
                    return Err(WorkloadError::Peer {
                        workload,
                        what: format!(
                            "only {} of {n} clients connected to {addr} in time",
                            streams.len()
                        ),
                    });
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(WorkloadError::sys(workload, "accept", e)),
        }
    }
    Ok(streams)
}

/// Opens `n` connections to `addr`, retrying refused or unreachable attempts until `deadline`.
pub(super) fn connect_all(
    workload: &'static str,
    addr: SocketAddr,
    n: usize,
    deadline: Instant,
) -> Result<Vec<TcpStream>, WorkloadError> {
    let mut streams = Vec::with_capacity(n);
    while streams.len() < n {
        check_stop()?;
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = TcpStream::connect_timeout(&addr, left.clamp(POLL, Duration::from_secs(1)));
        match attempt {
            Ok(stream) => {
                prepare(workload, &stream)?;
                streams.push(stream);
            }
            Err(e) if Instant::now() < deadline && retryable(&e) => {
                std::thread::sleep(RETRY_PAUSE);
            }
            Err(e) => {
                return Err(WorkloadError::Peer {
                    workload,
                    what: format!(
                        "cannot connect to {addr} ({} of {n} connected): {e}",
                        streams.len()
                    ),
                });
            }
        }
    }
    Ok(streams)
}

/// Errors worth another connection attempt: the server may not be listening yet or its
/// network may not be up yet.
fn retryable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused
            | ErrorKind::TimedOut
            | ErrorKind::Interrupted
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
            | ErrorKind::AddrNotAvailable
    )
}

/// Blocking mode with short timeouts.
fn prepare(workload: &'static str, stream: &TcpStream) -> Result<(), WorkloadError> {
    stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(POLL)))
        .and_then(|()| stream.set_write_timeout(Some(POLL)))
        .map_err(|e| WorkloadError::sys(workload, "setsockopt", e))
}

/// Whether an I/O error only means "timed out or interrupted, try again".
pub(super) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

fn annotate(e: io::Error, addr: SocketAddr) -> io::Error {
    io::Error::new(e.kind(), format!("{addr}: {e}"))
}

/// How a full read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Filled {
    /// The buffer is full.
    Full,
    /// The peer closed before sending anything more, or the deadline passed.
    Closed,
}

/// Fills `buf` from `stream`, riding out timeouts until `deadline`. A close in the middle of
/// a message is an error.
pub(super) fn read_full(
    workload: &'static str,
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<Filled, WorkloadError> {
    use std::io::Read;
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(Filled::Closed),
            Ok(0) => {
                return Err(WorkloadError::Peer {
                    workload,
                    what: format!(
                        "closed the connection in the middle of a {}-byte message",
                        buf.len()
                    ),
                });
            }
            Ok(n) => filled += n,
            Err(e) if is_timeout(&e) => {
                check_stop()?;
                if Instant::now() >= deadline {
                    return Ok(Filled::Closed);
                }
            }
            Err(e) => return Err(WorkloadError::sys(workload, "recv", e)),
        }
    }
    Ok(Filled::Full)
}

/// Writes all of `buf`, riding out timeouts; `false` when `deadline` passed first.
pub(super) fn write_full(
    workload: &'static str,
    stream: &mut TcpStream,
    buf: &[u8],
    deadline: Instant,
) -> Result<bool, WorkloadError> {
    use std::io::Write;
    let mut done = 0;
    while done < buf.len() {
        match stream.write(&buf[done..]) {
            Ok(n) => done += n,
            Err(e) if is_timeout(&e) => {
                check_stop()?;
                if Instant::now() >= deadline {
                    return Ok(false);
                }
            }
            Err(e) => return Err(WorkloadError::sys(workload, "send", e)),
        }
    }
    Ok(true)
}

/// After sending: half-close and wait (up to [`PEER_GRACE`]) for the peer to close, so that
/// everything sent has been taken before this side reports or exits.
pub(super) fn finish(workload: &'static str, stream: &mut TcpStream) -> Result<(), WorkloadError> {
    use std::io::Read;
    // A peer that already left makes shutdown fail with ENOTCONN: nothing left to wait for.
    if stream.shutdown(std::net::Shutdown::Write).is_err() {
        return Ok(());
    }
    let until = Instant::now() + PEER_GRACE;
    let mut sink = [0u8; 4096];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {
                check_stop()?;
                if Instant::now() >= until {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(()),
            Err(e) => return Err(WorkloadError::sys(workload, "recv", e)),
        }
    }
}

/// Runs `work` on a scoped thread per item and collects the results in order; a thread that
/// cannot start or panics is an error.
pub(super) fn on_threads<T, R, F>(
    workload: &'static str,
    items: Vec<T>,
    work: F,
) -> Result<Vec<R>, WorkloadError>
where
    T: Send,
    R: Send,
    F: Fn(T) -> Result<R, WorkloadError> + Sync,
{
    std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let work = &work;
            let handle = std::thread::Builder::new()
                .name(format!("{workload}-{i}"))
                .spawn_scoped(scope, move || work(item))
                .map_err(|e| WorkloadError::sys(workload, "spawn thread", e))?;
            handles.push(handle);
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or(Err(WorkloadError::ThreadPanicked { workload }))
            })
            .collect()
    })
}
