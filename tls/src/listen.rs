//! The listener policy shared by `isolab-agent` and `isolab serve`.
//!
//! With TLS any address is fine. Without TLS a listener may only bind a loopback address, and only
//! when plaintext is allowed: the caller passes `allow_plaintext = true` when the user gave
//! [`ALLOW_PLAINTEXT_FLAG`] or kept the default loopback address. A non-loopback address without
//! TLS (including `0.0.0.0` and `::`) is refused whatever the flags say.

use std::net::{IpAddr, SocketAddr};

/// The command-line flag that names a TLS directory.
pub const TLS_DIR_FLAG: &str = "--tls-dir";
/// The command-line flag that allows plaintext on loopback.
pub const ALLOW_PLAINTEXT_FLAG: &str = "--allow-plaintext";

/// Why a listener address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    /// Plaintext on an address other hosts can reach.
    #[error(
        "refusing to listen on {addr} without TLS: plaintext is allowed on loopback only; \
         give {TLS_DIR_FLAG} DIR (make one with `isolab certs init --dir DIR`) or listen on 127.0.0.1"
    )]
    NotLoopback {
        /// The refused address.
        addr: SocketAddr,
    },
    /// Plaintext on loopback without the explicit permission.
    #[error(
        "refusing to listen on {addr} without TLS: plaintext needs {ALLOW_PLAINTEXT_FLAG} \
         (or give {TLS_DIR_FLAG} DIR)"
    )]
    PlaintextNotAllowed {
        /// The refused address.
        addr: SocketAddr,
    },
}

/// Whether `addr` may be listened on: always with `tls`; without it only on loopback and only
/// when `allow_plaintext`.
///
/// ```
/// use isolab_tls::check_listen;
/// assert!(check_listen("127.0.0.1:7411".parse().unwrap(), false, true).is_ok());
/// assert!(check_listen("0.0.0.0:7411".parse().unwrap(), false, true).is_err());
/// assert!(check_listen("0.0.0.0:7411".parse().unwrap(), true, false).is_ok());
/// ```
pub fn check_listen(addr: SocketAddr, tls: bool, allow_plaintext: bool) -> Result<(), ListenError> {
    if tls {
        return Ok(());
    }
    if !is_loopback(addr.ip()) {
        return Err(ListenError::NotLoopback { addr });
    }
    if !allow_plaintext {
        return Err(ListenError::PlaintextNotAllowed { addr });
    }
    Ok(())
}

/// Loopback, counting IPv4-mapped IPv6 loopback (`::ffff:127.0.0.1`) too.
fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn tls_allows_every_address() {
        for a in ["0.0.0.0:7411", "[::]:7411", "10.1.2.3:1", "127.0.0.1:0"] {
            assert_eq!(check_listen(addr(a), true, false), Ok(()), "{a}");
        }
    }

    #[test]
    fn plaintext_on_loopback_only_when_allowed() {
        for a in [
            "127.0.0.1:7411",
            "127.8.9.1:1",
            "[::1]:7411",
            "[::ffff:127.0.0.1]:7411",
        ] {
            assert_eq!(check_listen(addr(a), false, true), Ok(()), "{a}");
            assert_eq!(
                check_listen(addr(a), false, false),
                Err(ListenError::PlaintextNotAllowed { addr: addr(a) }),
                "{a}"
            );
        }
    }

    #[test]
    fn plaintext_elsewhere_is_refused_even_when_allowed() {
        for a in [
            "0.0.0.0:7411",
            "[::]:7411",
            "192.168.1.5:7411",
            "[::ffff:10.0.0.1]:1",
        ] {
            for allow in [false, true] {
                let err = check_listen(addr(a), false, allow).unwrap_err();
                assert_eq!(err, ListenError::NotLoopback { addr: addr(a) });
                let msg = err.to_string();
                assert!(
                    msg.contains(&addr(a).to_string()) && msg.contains("--tls-dir"),
                    "{msg}"
                );
            }
        }
    }
}
