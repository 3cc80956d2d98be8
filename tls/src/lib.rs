//! Mutual TLS for isolab's gRPC connections.
//!
//! - [`certs`]: a development PKI (a CA, the coordinator, a client and one certificate per agent),
//!   the function behind `isolab certs init --dir DIR`.
//! - [`config`]: a TLS directory loaded into tonic's server and client configurations, each side
//!   presenting its certificate and requiring the peer's to be signed by the directory's CA.
//! - [`listen`]: the listener policy: plaintext only on loopback and only when allowed.
//! - [`layout`]: the file names inside a TLS directory.
//! - [`authz`]: who may call what, from the peer certificate's identity or, on plain-text
//!   loopback, the peer socket's local user ([`peer_uid`]).
#![forbid(unsafe_code)]

pub mod authz;
pub mod certs;
pub mod config;
mod files;
pub mod layout;
pub mod listen;
pub mod peer_uid;

pub use authz::{AuthzError, Caller, authorize};
pub use certs::{CertsError, IssuedIdentity, Overwrite, Pki, init_dev_pki, init_dev_pki_with};
pub use config::{TlsConfigError, client_tls, find_agent_identity, find_identity, server_tls};
pub use listen::{ListenError, check_listen};
