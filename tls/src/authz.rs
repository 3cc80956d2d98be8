//! Who may call what: the caller's identity and the per-call allowlists.
//!
//! Under mutual TLS the caller is the identity of its certificate: the common name, which
//! `isolab certs init` sets to the identity (`coordinator`, `client`, `health`, `agent-<name>`;
//! see [`crate::layout`]); any other CA must follow the same convention. Every certificate of the
//! CA passes the handshake, so each call then checks the identity against its allowlist:
//!
//! | service | calls | allowed callers |
//! |---|---|---|
//! | agent | `RunTrial`, `Cancel`, `Capabilities` | [`AGENT_CALLERS`]: `coordinator` |
//! | coordinator | `SubmitRun`, `CancelRun` | [`SUBMIT_CALLERS`]: `client` |
//! | coordinator | `WatchRun`, `ListRuns` | [`WATCH_CALLERS`]: `client`, `coordinator` |
//! | either | `grpc.health.v1` | any certificate of the CA (the probes use `health`) |
//!
//! Agent certificates carry server authentication only, so an agent's key cannot even complete a
//! handshake as a client. Without TLS (plain text, loopback only) the caller is the local user
//! owning the peer socket ([`crate::peer_uid`]): root, or the user the server itself runs as (an
//! embedded agent of an unprivileged `isolab run` runs with that user's rights anyway); anyone
//! else is refused.

use std::fmt;
use std::net::SocketAddr;

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::layout;
use crate::peer_uid::{self, PeerUidError};

/// Who may call the agent's `RunTrial`, `Cancel` and `Capabilities`.
pub const AGENT_CALLERS: &[&str] = &[layout::COORDINATOR];
/// Who may submit or cancel runs on the coordinator.
pub const SUBMIT_CALLERS: &[&str] = &[layout::CLIENT];
/// Who may watch or list runs on the coordinator.
pub const WATCH_CALLERS: &[&str] = &[layout::CLIENT, layout::COORDINATOR];

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A certificate identity (mutual TLS).
    Identity(String),
    /// A local user on plain-text loopback, allowed as root or as the server's own user.
    LocalUser {
        /// The uid owning the peer socket.
        uid: u32,
    },
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Identity(id) => write!(f, "identity `{id}`"),
            Self::LocalUser { uid } => write!(f, "local uid {uid}"),
        }
    }
}

/// Why a call was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    /// A certificate identity not on the call's allowlist.
    #[error("{call}: identity `{identity}` may not call this; allowed: {}", allowed.join(", "))]
    Forbidden {
        /// The call, e.g. `RunTrial`.
        call: &'static str,
        /// The caller's identity.
        identity: String,
        /// Who may.
        allowed: Vec<String>,
    },
    /// The peer certificate could not be read.
    #[error("{call}: the client certificate has no usable identity: {reason}")]
    BadCertificate {
        /// The call.
        call: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A local user who is neither root nor the server's own user.
    #[error(
        "{call}: local user uid {uid} may not call this server over plain text; only root{} may \
         (run as root, or use mutual TLS with --tls-dir)",
        own_uid.filter(|u| *u != 0).map(|u| format!(" or uid {u}")).unwrap_or_default()
    )]
    LocalUser {
        /// The call.
        call: &'static str,
        /// The peer's uid.
        uid: u32,
        /// The server's own effective uid.
        own_uid: Option<u32>,
    },
    /// Plain text, but the peer's user could not be found (fail closed).
    #[error("{call}: cannot tell which local user is calling{}: {reason}", peer.map(|p| format!(" from {p}")).unwrap_or_default())]
    UnknownPeer {
        /// The call.
        call: &'static str,
        /// The peer's address, when known.
        peer: Option<SocketAddr>,
        /// Why.
        reason: String,
    },
}

impl From<AuthzError> for tonic::Status {
    fn from(e: AuthzError) -> Self {
        match e {
            AuthzError::BadCertificate { .. } | AuthzError::UnknownPeer { .. } => {
                tonic::Status::unauthenticated(e.to_string())
            }
            AuthzError::Forbidden { .. } | AuthzError::LocalUser { .. } => {
                tonic::Status::permission_denied(e.to_string())
            }
        }
    }
}

/// The identity a DER certificate stands for: its subject's common name.
pub fn identity_of(cert_der: &[u8]) -> Result<String, String> {
    let (_, cert) = X509Certificate::from_der(cert_der).map_err(|e| e.to_string())?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .ok_or_else(|| "no common name in the subject".to_owned())?;
    cn.as_str()
        .map(str::to_owned)
        .map_err(|e| format!("common name is not text: {e}"))
}

/// The caller of `req`, checked against `allowed` identities (TLS) or against root and this
/// process's user (plain text).
pub fn authorize<T>(
    req: &tonic::Request<T>,
    call: &'static str,
    allowed: &[&str],
) -> Result<Caller, AuthzError> {
    if let Some(certs) = req.peer_certs() {
        let leaf = certs.first().ok_or_else(|| AuthzError::BadCertificate {
            call,
            reason: "no certificate presented".to_owned(),
        })?;
        let identity =
            identity_of(leaf).map_err(|reason| AuthzError::BadCertificate { call, reason })?;
        if !allowed.contains(&identity.as_str()) {
            return Err(AuthzError::Forbidden {
                call,
                identity,
                allowed: allowed.iter().map(|a| (*a).to_owned()).collect(),
            });
        }
        return Ok(Caller::Identity(identity));
    }
    let unknown =
        |peer: Option<SocketAddr>, reason: String| AuthzError::UnknownPeer { call, peer, reason };
    let (Some(peer), Some(local)) = (req.remote_addr(), req.local_addr()) else {
        return Err(unknown(
            None,
            "no peer address on the connection".to_owned(),
        ));
    };
    if !peer.ip().is_loopback() && !is_mapped_loopback(peer) {
        return Err(unknown(
            Some(peer),
            "plain text is served to loopback peers only".to_owned(),
        ));
    }
    let uid = peer_uid::peer_uid(peer, local)
        .map_err(|e: PeerUidError| unknown(Some(peer), e.to_string()))?;
    let own_uid = peer_uid::own_euid();
    if uid == 0 || Some(uid) == own_uid {
        Ok(Caller::LocalUser { uid })
    } else {
        Err(AuthzError::LocalUser { call, uid, own_uid })
    }
}

fn is_mapped_loopback(a: SocketAddr) -> bool {
    match a.ip() {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        std::net::IpAddr::V4(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_name_is_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::init_dev_pki(dir.path(), &["r1".to_owned()], &[]).unwrap();
        for (issued, want) in [
            (&pki.coordinator, "coordinator"),
            (&pki.client, "client"),
            (&pki.agents[0], "agent-r1"),
        ] {
            let pem = std::fs::read(&issued.cert).unwrap();
            let der = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
                .next()
                .unwrap()
                .unwrap();
            assert_eq!(identity_of(&der).unwrap(), want);
        }
        assert!(identity_of(b"not a certificate").is_err());
    }

    #[test]
    fn refusals_name_the_call_and_who_may() {
        let e = AuthzError::Forbidden {
            call: "RunTrial",
            identity: "client".into(),
            allowed: vec!["coordinator".into()],
        };
        assert_eq!(
            e.to_string(),
            "RunTrial: identity `client` may not call this; allowed: coordinator"
        );
        assert_eq!(tonic::Status::from(e).code(), tonic::Code::PermissionDenied);
        let e = AuthzError::LocalUser {
            call: "RunTrial",
            uid: 65534,
            own_uid: Some(0),
        };
        let text = e.to_string();
        assert!(
            text.contains("local user uid 65534") && text.contains("only root may (run as root"),
            "{text}"
        );
    }

    use rustls_pki_types::pem::PemObject as _;
}
