//! File names inside a TLS directory.
//!
//! ```text
//! ca.pem                  the CA certificate every side trusts
//! ca-key.pem              the CA key (0600; only `isolab certs init` needs it, never a server)
//! coordinator.pem         the coordinator (server and client authentication)
//! coordinator-key.pem
//! client.pem              an operator's client (`isolab submit`, `isolab watch`): client authentication only
//! client-key.pem
//! health.pem              health probes: client authentication, allowed only the health service
//! health-key.pem
//! agent-<name>.pem        one per agent: server authentication only
//! agent-<name>-key.pem
//! ```
//!
//! An *identity* is the stem of a certificate file and its certificate's common name:
//! `coordinator`, `client`, `health` or `agent-<name>`. Servers authorize each call by it (see
//! [`crate::authz`]).

use std::path::{Path, PathBuf};

/// The CA certificate.
pub const CA_CERT: &str = "ca.pem";
/// The CA private key.
pub const CA_KEY: &str = "ca-key.pem";
/// The coordinator's identity.
pub const COORDINATOR: &str = "coordinator";
/// The operator client's identity (`isolab submit`, `isolab watch`).
pub const CLIENT: &str = "client";
/// The health probes' identity (`isolab-health-probe`): may call only `grpc.health.v1`.
pub const HEALTH: &str = "health";
/// Prefix of every agent identity.
pub const AGENT_PREFIX: &str = "agent-";

/// The identity of the agent called `name`: `agent-<name>`.
pub fn agent_identity(name: &str) -> String {
    format!("{AGENT_PREFIX}{name}")
}

/// The certificate file of `identity` in `dir`: `<dir>/<identity>.pem`.
pub fn cert_path(dir: &Path, identity: &str) -> PathBuf {
    dir.join(format!("{identity}.pem"))
}

/// The key file of `identity` in `dir`: `<dir>/<identity>-key.pem`.
pub fn key_path(dir: &Path, identity: &str) -> PathBuf {
    dir.join(format!("{identity}-key.pem"))
}

/// The identity a certificate file name stands for, if it is one (`agent-a.pem` → `agent-a`);
/// key files and other names give `None`.
pub fn identity_of_cert_file(file_name: &str) -> Option<&str> {
    let stem = file_name.strip_suffix(".pem")?;
    (!stem.ends_with("-key") && !stem.is_empty()).then_some(stem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_identity() {
        let dir = Path::new("/tls");
        assert_eq!(
            cert_path(dir, &agent_identity("r1")),
            Path::new("/tls/agent-r1.pem")
        );
        assert_eq!(
            key_path(dir, COORDINATOR),
            Path::new("/tls/coordinator-key.pem")
        );
    }

    #[test]
    fn key_files_are_not_identities() {
        assert_eq!(identity_of_cert_file("agent-a.pem"), Some("agent-a"));
        assert_eq!(identity_of_cert_file("agent-a-key.pem"), None);
        assert_eq!(identity_of_cert_file("ca-key.pem"), None);
        assert_eq!(identity_of_cert_file("notes.txt"), None);
        assert_eq!(identity_of_cert_file(".pem"), None);
    }
}
