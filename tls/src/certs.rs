//! A development PKI for isolab: the function behind `isolab certs init --dir DIR`.
//!
//! One CA (`ca.pem`, `ca-key.pem`) signs the coordinator's certificate (server and client
//! authentication), an operator client's (`client.pem`, client authentication, for `isolab submit`
//! and `isolab watch`), the health probes' (`health.pem`, client authentication) and one per agent
//! (`agent-<name>.pem`, server authentication only: an agent's key cannot act as a client).
//! Server certificates name their owner, `localhost`, `127.0.0.1`, `::1` and the extra SANs given.
//! Keys are ECDSA P-256, written with mode 0600; every file is written atomically.
//!
//! Running it again is safe: an existing CA is never overwritten (it signs whatever is missing, so
//! adding an agent is one more run), existing certificates are kept after checking they still
//! chain to the CA, and reissued by it only when they lack a name asked for now. Only [`Overwrite::Force`] replaces the CA, and then every certificate, and
//! removes agent certificates of the old CA that were not named again.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let pki = isolab_tls::init_dev_pki(dir.path(), &["r1".to_owned()], &[])?;
//! assert!(pki.ca_created && pki.agents[0].cert.ends_with("agent-r1.pem"));
//! # Ok(()) }
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use crate::config::{self, TlsConfigError};
use crate::files::{create_dir, read_string, write_file};
use crate::layout;

/// How long the CA is valid.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// How long the coordinator, client and agent certificates are valid.
pub const LEAF_VALIDITY_DAYS: i64 = 730;
/// Mode of private key files.
pub const KEY_MODE: u32 = 0o600;
/// Mode of certificate files.
pub const CERT_MODE: u32 = 0o644;

/// Whether existing files are kept or replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overwrite {
    /// Keep the CA and every certificate already there; issue only what is missing.
    #[default]
    Keep,
    /// Make a new CA and reissue everything (`isolab certs init --force`).
    Force,
}

/// One certificate and key in the PKI directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedIdentity {
    /// The identity (file stem): `coordinator`, `client` or `agent-<name>`.
    pub identity: String,
    /// The certificate file.
    pub cert: PathBuf,
    /// The key file.
    pub key: PathBuf,
    /// Issued by this call (`false`: kept from an earlier one).
    pub created: bool,
}

/// What [`init_dev_pki`] left in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pki {
    /// The PKI directory.
    pub dir: PathBuf,
    /// The CA certificate.
    pub ca_cert: PathBuf,
    /// The CA key.
    pub ca_key: PathBuf,
    /// The CA was made by this call.
    pub ca_created: bool,
    /// The coordinator's certificate.
    pub coordinator: IssuedIdentity,
    /// The operator client's certificate.
    pub client: IssuedIdentity,
    /// The health probes' certificate.
    pub health: IssuedIdentity,
    /// One per agent name, in the order given.
    pub agents: Vec<IssuedIdentity>,
    /// Files of the old CA's agents removed by [`Overwrite::Force`].
    pub removed: Vec<PathBuf>,
}

/// Why the development PKI could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// The directory could not be created or listed.
    #[error("cannot create or list the pki directory {dir}")]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// An agent name that cannot be a DNS name or a file name.
    #[error("invalid agent name {name:?}: {reason}")]
    InvalidAgentName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An extra subject alternative name that is neither a DNS name nor an IP address.
    #[error("invalid subject alternative name {san:?}: {reason}")]
    InvalidSan {
        /// The name.
        san: String,
        /// What rcgen said.
        reason: String,
    },
    /// Key or certificate generation failed.
    #[error("cannot generate {what}")]
    Generate {
        /// What was being generated.
        what: String,
        /// The rcgen error.
        #[source]
        source: rcgen::Error,
    },
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A file could not be written or removed.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Half a CA: a certificate without its key or a key without its certificate.
    #[error(
        "{present} exists but {absent} does not; restore it, or make a new CA with --force \
         (which reissues every certificate)"
    )]
    IncompleteCa {
        /// The file that is there.
        present: PathBuf,
        /// The file that is not.
        absent: PathBuf,
    },
    /// The existing CA files cannot be used to sign.
    #[error("cannot use the existing CA {path}: {reason}")]
    InvalidCa {
        /// The CA certificate or key file.
        path: PathBuf,
        /// What rcgen said.
        reason: String,
    },
    /// A certificate already in the directory is unusable (another CA's, expired, key mismatch).
    #[error("existing certificate {identity} is unusable; remove it or rerun with --force")]
    Stale {
        /// The identity.
        identity: String,
        /// Why.
        #[source]
        source: TlsConfigError,
    },
}

/// Makes (or completes) the development PKI in `dir` without replacing anything: the CA, the
/// coordinator, the client and `agent-<name>` for every name in `agent_names`. `extra_sans`
/// (DNS names or IP addresses) are added to the coordinator's and every agent's certificate.
pub fn init_dev_pki(
    dir: &Path,
    agent_names: &[String],
    extra_sans: &[String],
) -> Result<Pki, CertsError> {
    init_dev_pki_with(dir, agent_names, extra_sans, Overwrite::Keep)
}

/// [`init_dev_pki`] with a choice to replace the CA and every certificate.
pub fn init_dev_pki_with(
    dir: &Path,
    agent_names: &[String],
    extra_sans: &[String],
    overwrite: Overwrite,
) -> Result<Pki, CertsError> {
    for name in agent_names {
        check_agent_name(name)?;
    }
    for san in extra_sans {
        check_san(san)?;
    }
    create_dir(dir)?;
    let ca_cert = dir.join(layout::CA_CERT);
    let ca_key = dir.join(layout::CA_KEY);
    let mut ca = CaSource::Existing { loaded: None };
    let mut removed = Vec::new();
    let ca_created = match (overwrite, ca_cert.exists(), ca_key.exists()) {
        (Overwrite::Keep, true, true) => false,
        (Overwrite::Keep, true, false) => return Err(incomplete(&ca_cert, &ca_key)),
        (Overwrite::Keep, false, true) => return Err(incomplete(&ca_key, &ca_cert)),
        (Overwrite::Keep, false, false) | (Overwrite::Force, ..) => {
            if overwrite == Overwrite::Force {
                removed = remove_stale_agents(dir, agent_names)?;
            }
            ca = CaSource::New(make_ca(&ca_cert, &ca_key)?);
            true
        }
    };
    let force = ca_created;
    let server_sans = |own: &str| -> Vec<String> {
        let mut sans = vec![
            own.to_owned(),
            "localhost".into(),
            "127.0.0.1".into(),
            "::1".into(),
        ];
        sans.extend(extra_sans.iter().cloned());
        dedup(sans)
    };
    let both = [
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let coordinator = issue(
        dir,
        &mut ca,
        layout::COORDINATOR,
        server_sans(layout::COORDINATOR),
        &both,
        force,
    )?;
    let client = issue(
        dir,
        &mut ca,
        layout::CLIENT,
        vec![layout::CLIENT.to_owned()],
        &[ExtendedKeyUsagePurpose::ClientAuth],
        force,
    )?;
    let health = issue(
        dir,
        &mut ca,
        layout::HEALTH,
        vec![layout::HEALTH.to_owned()],
        &[ExtendedKeyUsagePurpose::ClientAuth],
        force,
    )?;
    let mut agents = Vec::with_capacity(agent_names.len());
    for name in dedup(agent_names.to_vec()) {
        let identity = layout::agent_identity(&name);
        agents.push(issue(
            dir,
            &mut ca,
            &identity,
            server_sans(&name),
            &[ExtendedKeyUsagePurpose::ServerAuth],
            force,
        )?);
    }
    Ok(Pki {
        dir: dir.to_path_buf(),
        ca_cert,
        ca_key,
        ca_created,
        coordinator,
        client,
        health,
        agents,
        removed,
    })
}

/// The CA that signs: made by this call, or the directory's, loaded when first needed.
enum CaSource {
    New(Issuer<'static, KeyPair>),
    Existing {
        loaded: Option<Issuer<'static, KeyPair>>,
    },
}

impl CaSource {
    fn issuer(&mut self, dir: &Path) -> Result<&Issuer<'static, KeyPair>, CertsError> {
        match self {
            CaSource::New(issuer) => Ok(issuer),
            CaSource::Existing { loaded } => match loaded {
                Some(issuer) => Ok(issuer),
                None => Ok(loaded.insert(load_ca(dir)?)),
            },
        }
    }
}

fn make_ca(cert_path: &Path, key_path: &Path) -> Result<Issuer<'static, KeyPair>, CertsError> {
    let generate = |source| CertsError::Generate {
        what: "the CA".to_owned(),
        source,
    };
    let key = KeyPair::generate().map_err(generate)?;
    let mut params = CertificateParams::default();
    // A per-CA suffix, so that two development CAs are told apart in errors ("unknown issuer")
    // and in `openssl x509 -noout -issuer` output.
    let id: String = params
        .key_identifier(&key)
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    params.distinguished_name = distinguished_name(&format!("isolab development CA {id}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, CA_VALIDITY_DAYS);
    let cert = params.self_signed(&key).map_err(generate)?;
    write_file(key_path, key.serialize_pem().as_bytes(), KEY_MODE)?;
    write_file(cert_path, cert.pem().as_bytes(), CERT_MODE)?;
    Ok(Issuer::new(params, key))
}

fn load_ca(dir: &Path) -> Result<Issuer<'static, KeyPair>, CertsError> {
    let cert_path = dir.join(layout::CA_CERT);
    let key_path = dir.join(layout::CA_KEY);
    let cert_pem = read_string(&cert_path)?;
    let key_pem = read_string(&key_path)?;
    let invalid = |path: &Path, e: rcgen::Error| CertsError::InvalidCa {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let key = KeyPair::from_pem(&key_pem).map_err(|e| invalid(&key_path, e))?;
    Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| invalid(&cert_path, e))
}

/// Issues `identity` unless a usable certificate and key for it are there already (and `force`
/// is off).
fn issue(
    dir: &Path,
    ca: &mut CaSource,
    identity: &str,
    sans: Vec<String>,
    usages: &[ExtendedKeyUsagePurpose],
    force: bool,
) -> Result<IssuedIdentity, CertsError> {
    let cert = layout::cert_path(dir, identity);
    let key = layout::key_path(dir, identity);
    if !force && cert.exists() && key.exists() {
        let server_only = !usages.contains(&ExtendedKeyUsagePurpose::ClientAuth);
        config::check_identity(dir, identity, server_only).map_err(|source| CertsError::Stale {
            identity: identity.to_owned(),
            source,
        })?;
        // Kept unless a name asked for now (a new --san) is not in it, or it carries a usage it
        // should not (an agent certificate of an older version with client authentication):
        // then reissue it.
        if config::names_not_covered(&cert, &sans).is_empty()
            && !(server_only && config::has_client_auth(&cert))
        {
            return Ok(IssuedIdentity {
                identity: identity.to_owned(),
                cert,
                key,
                created: false,
            });
        }
    }
    let generate = |source| CertsError::Generate {
        what: identity.to_owned(),
        source,
    };
    let mut params = CertificateParams::new(sans).map_err(generate)?;
    params.distinguished_name = distinguished_name(identity);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usages.to_vec();
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, LEAF_VALIDITY_DAYS);
    let key_pair = KeyPair::generate().map_err(generate)?;
    let signed = params
        .signed_by(&key_pair, ca.issuer(dir)?)
        .map_err(generate)?;
    write_file(&key, key_pair.serialize_pem().as_bytes(), KEY_MODE)?;
    write_file(&cert, signed.pem().as_bytes(), CERT_MODE)?;
    Ok(IssuedIdentity {
        identity: identity.to_owned(),
        cert,
        key,
        created: true,
    })
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "isolab");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Valid from an hour ago (clock skew between hosts) for `days`.
fn set_validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

/// Agent names become a DNS name in the certificate and part of a file name.
fn check_agent_name(name: &str) -> Result<(), CertsError> {
    let bad = |reason| {
        Err(CertsError::InvalidAgentName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 253 {
        return bad("must have 1 to 253 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return bad("only letters, digits, '-' and '.' are allowed");
    }
    if name.starts_with(['-', '.']) || name.ends_with(['-', '.']) || name.contains("..") {
        return bad("must not start or end with '-' or '.', nor hold '..'");
    }
    if name.ends_with("-key") {
        return bad("must not end with '-key' (it would look like a key file)");
    }
    Ok(())
}

/// An IP address, a DNS name, or a wildcard DNS name (`*.isolab.svc`).
fn check_san(san: &str) -> Result<(), CertsError> {
    let bad = |reason: String| {
        Err(CertsError::InvalidSan {
            san: san.to_owned(),
            reason,
        })
    };
    if san.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let as_dns = san.strip_prefix("*.").unwrap_or(san);
    if as_dns.contains('*') {
        return bad("a wildcard is allowed only as the whole first label (*.example)".to_owned());
    }
    if let Err(e) = rustls_pki_types::DnsName::try_from(as_dns) {
        return bad(format!("neither an IP address nor a DNS name ({e})"));
    }
    CertificateParams::new(vec![san.to_owned()])
        .map(|_| ())
        .or_else(|e| bad(e.to_string()))
}

/// Removes `agent-*` certificates and keys not in `keep` (they belong to the CA being replaced).
fn remove_stale_agents(dir: &Path, keep: &[String]) -> Result<Vec<PathBuf>, CertsError> {
    let dir_err = |source| CertsError::Dir {
        dir: dir.to_path_buf(),
        source,
    };
    let keep: Vec<String> = keep.iter().map(|n| layout::agent_identity(n)).collect();
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir).map_err(dir_err)? {
        let name = entry.map_err(dir_err)?.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(identity) = layout::identity_of_cert_file(name) else {
            continue;
        };
        if !identity.starts_with(layout::AGENT_PREFIX) || keep.iter().any(|k| k == identity) {
            continue;
        }
        for path in [
            layout::cert_path(dir, identity),
            layout::key_path(dir, identity),
        ] {
            match fs::remove_file(&path) {
                Ok(()) => removed.push(path),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(CertsError::Write { path, source }),
            }
        }
    }
    removed.sort();
    Ok(removed)
}

fn incomplete(present: &Path, absent: &Path) -> CertsError {
    CertsError::IncompleteCa {
        present: present.to_path_buf(),
        absent: absent.to_path_buf(),
    }
}

fn dedup(items: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}
