//! The local user behind a loopback TCP connection, from the kernel's socket table.
//!
//! `SO_PEERCRED` exists only for Unix sockets. For a TCP connection on loopback the peer's socket
//! is in the same network namespace, and `/proc/net/tcp` (`tcp6`) lists it with its owner's uid:
//! the entry whose local address is the peer's address and whose remote address is ours, in state
//! ESTABLISHED. The entry exists as long as the connection does, so the lookup made while serving
//! a request on it finds it; when it cannot be found the caller is refused (fail closed).
//!
//! Why not a Unix socket with mode 0600: the agent and the coordinator serve gRPC over TCP
//! everywhere (mutual TLS between hosts, the embedded agent on `127.0.0.1:0`), every client and
//! test dials a TCP URL, and the Kubernetes probes too; a second transport would have to be
//! dialled, served and tested beside the first. The uid of the peer's socket is what the kernel
//! recorded when the socket was made (the creator's effective uid), which is the same fact
//! `SO_PEERCRED` gives for a Unix socket at `connect`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// State of an established TCP connection in `/proc/net/tcp`.
const ESTABLISHED: &str = "01";

/// Why the peer's uid could not be found.
#[derive(Debug, thiserror::Error)]
pub enum PeerUidError {
    /// The socket table could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No established connection from `peer` to `local` is listed.
    #[error("no established connection from {peer} to {local} in the kernel's socket table")]
    NotFound {
        /// The peer's address.
        peer: SocketAddr,
        /// Ours.
        local: SocketAddr,
    },
}

/// The uid owning the socket at `peer` connected to our `local` address, looked up in
/// `/proc/net/tcp` and `/proc/net/tcp6`.
pub fn peer_uid(peer: SocketAddr, local: SocketAddr) -> Result<u32, PeerUidError> {
    let mut tables = vec!["/proc/net/tcp6"];
    if peer.is_ipv4() || is_mapped(peer.ip()) {
        tables.insert(0, "/proc/net/tcp");
    }
    for table in tables {
        let text = match std::fs::read_to_string(Path::new(table)) {
            Ok(t) => t,
            // A kernel without IPv6 has no tcp6 table.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && table.ends_with('6') => continue,
            Err(source) => {
                return Err(PeerUidError::Read {
                    path: table.to_owned(),
                    source,
                });
            }
        };
        if let Some(uid) = find_uid(&text, peer, local) {
            return Ok(uid);
        }
    }
    Err(PeerUidError::NotFound { peer, local })
}

/// The uid column of the entry `peer` → `local` (established) in a `/proc/net/tcp{,6}` text.
pub fn find_uid(table: &str, peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid …
        let (l, r, st, uid) = (f.get(1)?, f.get(2)?, f.get(3)?, f.get(7)?);
        (*st == ESTABLISHED
            && parse_addr(l).is_some_and(|a| same(a, peer))
            && parse_addr(r).is_some_and(|a| same(a, local)))
        .then(|| uid.parse().ok())
        .flatten()
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits `:PORT` (IPv6): each 32-bit word in host byte order.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // The kernel prints the address's bytes read as native-endian 32-bit words.
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let w = ip.get(i * 8..i * 8 + 8)?;
                chunk.copy_from_slice(&word(w)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Equal addresses, an IPv4-mapped IPv6 address equal to its IPv4 form.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && canonical(a.ip()) == canonical(b.ip())
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn is_mapped(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some())
}

/// This process's effective uid, from `/proc/self/status`.
pub fn own_euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn parses_the_kernels_address_format() {
        // 127.0.0.1:8080 on a little-endian host.
        let a = parse_addr("0100007F:1F90").unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(a, "127.0.0.1:8080".parse().unwrap());
        }
        let v6 = parse_addr("00000000000000000000000001000000:0050").unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(v6, "[::1]:80".parse().unwrap());
        }
        assert!(parse_addr("nonsense").is_none());
    }

    #[test]
    fn finds_the_owner_of_a_real_loopback_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let client = TcpStream::connect(local).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let uid = peer_uid(peer, local).expect("the connection is listed");
        assert_eq!(Some(uid), own_euid());
        drop(client);
        let unknown: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(matches!(
            peer_uid(unknown, local),
            Err(PeerUidError::NotFound { .. })
        ));
    }
}
