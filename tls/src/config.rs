//! A TLS directory (see [`crate::layout`]) loaded into tonic's mutual-TLS configurations.
//!
//! Both sides trust only the directory's `ca.pem`: a server requires every client to present a
//! certificate signed by it ([`server_tls`]); a client presents its own certificate and checks the
//! server's against it and against the expected name ([`client_tls`]). Every file is read and
//! checked here (PEM parses, the key belongs to the certificate, the certificate chains to the CA
//! for the use it is loaded for), so a mistake is reported with the file's path instead of as a
//! failed handshake later.
//!
//! ```no_run
//! use std::path::Path;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = Path::new("/etc/isolab/tls");
//! let server = isolab_tls::server_tls(dir, "coordinator")?;
//! let client = isolab_tls::client_tls(dir, "coordinator", "agent-r1")?;
//! # let _ = (server, client); Ok(()) }
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::layout;

/// Why a TLS directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// A file the configuration needs does not exist.
    #[error(
        "tls file {path} is missing (create the directory with `isolab certs init --dir {dir}`)"
    )]
    Missing {
        /// The missing file.
        path: PathBuf,
        /// The TLS directory.
        dir: PathBuf,
    },
    /// A file exists but could not be read.
    #[error("cannot read tls file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A certificate file holds no valid PEM certificate.
    #[error("{path} is not a PEM certificate: {reason}")]
    InvalidCert {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A key file holds no usable PEM private key.
    #[error("{path} is not a usable PEM private key: {reason}")]
    InvalidKey {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The key does not belong to the certificate.
    #[error("{key} is not the private key of {cert}: {reason}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// The certificate does not chain to the CA for the use it is loaded for.
    #[error("{cert} is not valid as a {usage} certificate signed by {ca}: {reason}")]
    NotSignedByCa {
        /// The certificate file.
        cert: PathBuf,
        /// The CA file.
        ca: PathBuf,
        /// `server` or `client`.
        usage: &'static str,
        /// What the verifier said (unknown issuer, expired, wrong extended key usage…).
        reason: String,
    },
    /// No certificate of the wanted kind in the directory.
    #[error(
        "no certificate ({prefix}*.pem, besides ca.pem) in {dir}; create one with `isolab certs init`"
    )]
    NoIdentity {
        /// The TLS directory.
        dir: PathBuf,
        /// The identity prefix looked for (`agent-`, or empty for any).
        prefix: String,
    },
    /// More than one, so the caller cannot tell which is its own.
    #[error("{dir} holds several certificates ({}); name the identity to use", found.join(", "))]
    AmbiguousIdentity {
        /// The TLS directory.
        dir: PathBuf,
        /// The identities found.
        found: Vec<String>,
    },
}

/// Which side of a connection a certificate authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Usage {
    Server,
    Client,
}

impl Usage {
    fn name(self) -> &'static str {
        match self {
            Usage::Server => "server",
            Usage::Client => "client",
        }
    }
}

/// The PEM texts of one identity, checked.
struct LoadedIdentity {
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

/// The server side: presents `<identity>.pem` and requires every client to present a certificate
/// signed by `ca.pem` (a client without one, or with one from another CA, fails the handshake).
///
/// `identity` is a file stem: `coordinator` or `agent-<name>` (see [`crate::layout`]).
pub fn server_tls(dir: &Path, identity: &str) -> Result<ServerTlsConfig, TlsConfigError> {
    install_crypto_provider();
    let loaded = load(dir, identity, Usage::Server)?;
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(loaded.cert_pem, loaded.key_pem))
        .client_ca_root(Certificate::from_pem(loaded.ca_pem)))
}

/// The client side: presents `<identity>.pem`, trusts only `ca.pem`, and expects the server's
/// certificate to name `domain` (an agent's name such as `r1`, `coordinator`, `localhost`, or a
/// name given with `--san` at `isolab certs init`), whatever address is dialled.
pub fn client_tls(
    dir: &Path,
    identity: &str,
    domain: &str,
) -> Result<ClientTlsConfig, TlsConfigError> {
    install_crypto_provider();
    let loaded = load(dir, identity, Usage::Client)?;
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(loaded.ca_pem))
        .identity(Identity::from_pem(loaded.cert_pem, loaded.key_pem))
        .domain_name(domain))
}

/// The one agent identity (`agent-<name>`) in `dir`, for an agent started with only `--tls-dir`
/// (in Kubernetes every agent pod mounts a Secret holding exactly one agent certificate).
pub fn find_agent_identity(dir: &Path) -> Result<String, TlsConfigError> {
    find_identity(dir, layout::AGENT_PREFIX)
}

/// The one identity in `dir` whose name starts with `prefix` (`""`: any), the CA's excepted.
/// Kubernetes Secrets hold one identity each, so a process can find its own without a name.
pub fn find_identity(dir: &Path, prefix: &str) -> Result<String, TlsConfigError> {
    let entries = std::fs::read_dir(dir).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => TlsConfigError::Missing {
            path: dir.to_path_buf(),
            dir: dir.to_path_buf(),
        },
        _ => TlsConfigError::Read {
            path: dir.to_path_buf(),
            source,
        },
    })?;
    let ca = layout::CA_CERT.trim_end_matches(".pem");
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| TlsConfigError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        let Some(identity) = name.to_str().and_then(layout::identity_of_cert_file) else {
            continue;
        };
        if identity.starts_with(prefix) && identity != ca {
            found.push(identity.to_owned());
        }
    }
    found.sort();
    match found.len() {
        0 => Err(TlsConfigError::NoIdentity {
            dir: dir.to_path_buf(),
            prefix: prefix.to_owned(),
        }),
        1 => Ok(found.remove(0)),
        _ => Err(TlsConfigError::AmbiguousIdentity {
            dir: dir.to_path_buf(),
            found,
        }),
    }
}

/// Installs rustls' `ring` provider as the process default unless one is installed already.
/// tonic's server builds its rustls configuration with the process default, which rustls cannot
/// pick by itself once some dependency enables a second provider; [`server_tls`] and
/// [`client_tls`] call this, so callers need not.
pub fn install_crypto_provider() {
    if CryptoProvider::get_default().is_none() {
        // Losing a race with another thread installing one is fine: any provider will do.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Checks that `identity`'s files load and chain to the CA, for server authentication when
/// `server` (agents), else for client authentication.
pub(crate) fn check_identity(
    dir: &Path,
    identity: &str,
    server: bool,
) -> Result<(), TlsConfigError> {
    let usage = if server { Usage::Server } else { Usage::Client };
    load(dir, identity, usage).map(|_| ())
}

/// Whether the certificate in `cert_path` allows client authentication (no extended key usage
/// extension allows every use); an unreadable certificate counts as allowing it.
pub(crate) fn has_client_auth(cert_path: &Path) -> bool {
    let Ok(pem) = std::fs::read(cert_path) else {
        return true;
    };
    let Ok(der) = CertificateDer::from_pem_slice(&pem) else {
        return true;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return true;
    };
    match cert.extended_key_usage() {
        Ok(Some(eku)) => eku.value.client_auth || eku.value.any,
        Ok(None) => true,
        Err(_) => true,
    }
}

/// The names in `names` that the certificate in `cert_path` is not valid for as a server. Wildcard
/// names are not checked; an unreadable certificate covers nothing.
pub(crate) fn names_not_covered(cert_path: &Path, names: &[String]) -> Vec<String> {
    let checkable = names.iter().filter(|n| !n.contains('*'));
    let Ok(pem) = std::fs::read(cert_path) else {
        return checkable.cloned().collect();
    };
    let Ok(der) = CertificateDer::from_pem_slice(&pem) else {
        return checkable.cloned().collect();
    };
    let Ok(parsed) = ParsedCertificate::try_from(&der) else {
        return checkable.cloned().collect();
    };
    checkable
        .filter(|name| {
            ServerName::try_from(name.as_str()).map_or(true, |sn| {
                rustls::client::verify_server_name(&parsed, &sn).is_err()
            })
        })
        .cloned()
        .collect()
}

fn load(dir: &Path, identity: &str, usage: Usage) -> Result<LoadedIdentity, TlsConfigError> {
    let ca_path = dir.join(layout::CA_CERT);
    let cert_path = layout::cert_path(dir, identity);
    let key_path = layout::key_path(dir, identity);
    let ca_pem = read(dir, &ca_path)?;
    let cert_pem = read(dir, &cert_path)?;
    let key_pem = read(dir, &key_path)?;

    let ca_certs = parse_certs(&ca_path, &ca_pem)?;
    let chain = parse_certs(&cert_path, &cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsConfigError::InvalidKey {
        path: key_path.clone(),
        reason: e.to_string(),
    })?;

    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain.clone(), key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsConfigError::KeyMismatch {
            cert: cert_path.clone(),
            key: key_path.clone(),
            reason: e.to_string(),
        },
        _ => TlsConfigError::InvalidKey {
            path: key_path.clone(),
            reason: e.to_string(),
        },
    })?;
    verify_chain(&ca_path, &ca_certs, &cert_path, &chain, usage, provider)?;
    Ok(LoadedIdentity {
        ca_pem,
        cert_pem,
        key_pem,
    })
}

/// Checks that `chain[0]` chains to one of `ca_certs` for `usage`, now.
fn verify_chain(
    ca_path: &Path,
    ca_certs: &[CertificateDer<'static>],
    cert_path: &Path,
    chain: &[CertificateDer<'static>],
    usage: Usage,
    provider: CryptoProvider,
) -> Result<(), TlsConfigError> {
    let not_signed = |reason: String| TlsConfigError::NotSignedByCa {
        cert: cert_path.to_path_buf(),
        ca: ca_path.to_path_buf(),
        usage: usage.name(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for ca in ca_certs {
        roots
            .add(ca.clone())
            .map_err(|e| TlsConfigError::InvalidCert {
                path: ca_path.to_path_buf(),
                reason: format!("not usable as a trust anchor: {e}"),
            })?;
    }
    let Some((end_entity, intermediates)) = chain.split_first() else {
        return Err(TlsConfigError::InvalidCert {
            path: cert_path.to_path_buf(),
            reason: "no CERTIFICATE block found".to_owned(),
        });
    };
    let now = UnixTime::now();
    match usage {
        Usage::Server => {
            let parsed = ParsedCertificate::try_from(end_entity).map_err(|e| {
                TlsConfigError::InvalidCert {
                    path: cert_path.to_path_buf(),
                    reason: e.to_string(),
                }
            })?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &parsed,
                &roots,
                intermediates,
                now,
                provider.signature_verification_algorithms.all,
            )
            .map_err(|e| not_signed(e.to_string()))
        }
        Usage::Client => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::new(provider))
                    .build()
                    .map_err(|e| not_signed(e.to_string()))?;
            verifier
                .verify_client_cert(end_entity, intermediates, now)
                .map(|_| ())
                .map_err(|e| not_signed(e.to_string()))
        }
    }
}

fn read(dir: &Path, path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => TlsConfigError::Missing {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
        },
        _ => TlsConfigError::Read {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Every certificate in a PEM text; at least one.
fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let invalid = |reason: String| TlsConfigError::InvalidCert {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(e.to_string()))?;
    if certs.is_empty() {
        return Err(invalid("no CERTIFICATE block found".to_owned()));
    }
    Ok(certs)
}
