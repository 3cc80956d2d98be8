//! The development PKI (`isolab certs init`) and loading a TLS directory into tonic configs:
//! what is written, what a rerun keeps, what `--force` replaces, and which mistakes are named.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use isolab_tls::config::TlsConfigError;
use isolab_tls::{
    CertsError, Overwrite, client_tls, init_dev_pki, init_dev_pki_with, layout, server_tls,
};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer as _, X509Certificate};

fn names(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn der_of(path: &Path) -> Vec<u8> {
    let pem = fs::read(path).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    pem.contents
}

/// (DNS and IP SANs as strings, server auth, client auth).
fn inspect(path: &Path) -> (Vec<String>, bool, bool) {
    let der = der_of(path);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let mut sans = Vec::new();
    if let Some(ext) = cert.subject_alternative_name().unwrap() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => sans.push((*d).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(*bytes).unwrap()),
                        _ => std::net::IpAddr::from(<[u8; 16]>::try_from(*bytes).unwrap()),
                    };
                    sans.push(ip.to_string());
                }
                other => panic!("unexpected SAN {other:?}"),
            }
        }
    }
    let eku = cert.extended_key_usage().unwrap().map(|e| e.value.clone());
    let (server, client) = eku.map_or((false, false), |e| (e.server_auth, e.client_auth));
    (sans, server, client)
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn fresh_init_writes_a_ca_and_every_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tls");
    let pki = init_dev_pki(
        &dir,
        &names(&["r1", "r2"]),
        &names(&["lab.example", "10.0.0.7"]),
    )
    .unwrap();
    assert!(pki.ca_created);
    assert_eq!(mode(&dir), 0o700, "a new pki directory is private");
    assert_eq!(
        pki.agents
            .iter()
            .map(|a| a.identity.as_str())
            .collect::<Vec<_>>(),
        ["agent-r1", "agent-r2"]
    );

    let all = [
        &pki.coordinator,
        &pki.client,
        &pki.health,
        &pki.agents[0],
        &pki.agents[1],
    ];
    for id in all {
        assert!(id.created, "{}", id.identity);
        assert_eq!(mode(&id.key), 0o600, "{}", id.key.display());
        assert_eq!(mode(&id.cert), 0o644, "{}", id.cert.display());
    }
    assert_eq!(mode(&pki.ca_key), 0o600);

    let (sans, server, client) = inspect(&pki.agents[0].cert);
    for want in [
        "r1",
        "localhost",
        "127.0.0.1",
        "::1",
        "lab.example",
        "10.0.0.7",
    ] {
        assert!(
            sans.iter().any(|s| s == want),
            "agent-r1 lacks SAN {want}: {sans:?}"
        );
    }
    assert!(
        !sans.iter().any(|s| s == "r2"),
        "agent-r1 names r2: {sans:?}"
    );
    assert!(
        server && !client,
        "agent certificates authenticate servers only: an agent's key is no client"
    );
    let (_, server, client) = inspect(&pki.health.cert);
    assert!(!server && client, "the probes' certificate is client-only");
    let (sans, server, client) = inspect(&pki.coordinator.cert);
    assert!(sans.iter().any(|s| s == "coordinator") && sans.iter().any(|s| s == "lab.example"));
    assert!(server && client);
    let (_, server, client) = inspect(&pki.client.cert);
    assert!(
        !server && client,
        "the operator client certificate is client-only"
    );

    let ca_der = der_of(&pki.ca_cert);
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    assert!(ca.basic_constraints().unwrap().unwrap().value.ca);
    let leaf_der = der_of(&pki.agents[1].cert);
    let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
    assert_eq!(leaf.issuer().as_raw(), ca.subject().as_raw());
    assert!(
        !leaf
            .basic_constraints()
            .unwrap()
            .is_some_and(|b| b.value.ca)
    );

    // Everything it wrote loads for its use.
    server_tls(&dir, "coordinator").unwrap();
    server_tls(&dir, "agent-r2").unwrap();
    client_tls(&dir, "client", "coordinator").unwrap();
    client_tls(&dir, "coordinator", "r1").unwrap();
}

#[test]
fn rerun_keeps_the_ca_and_issues_only_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let first = init_dev_pki(dir, &names(&["r1"]), &[]).unwrap();
    let ca_before = fs::read(&first.ca_cert).unwrap();
    let r1_before = fs::read(&first.agents[0].cert).unwrap();
    let coord_before = fs::read(&first.coordinator.cert).unwrap();

    let second = init_dev_pki(dir, &names(&["r1", "r2"]), &[]).unwrap();
    assert!(!second.ca_created);
    assert_eq!(
        fs::read(&second.ca_cert).unwrap(),
        ca_before,
        "the CA must not change"
    );
    assert!(!second.agents[0].created && second.agents[1].created);
    assert!(!second.coordinator.created && !second.client.created);
    assert_eq!(fs::read(&second.agents[0].cert).unwrap(), r1_before);
    assert_eq!(fs::read(&second.coordinator.cert).unwrap(), coord_before);
    // The new agent is signed by the kept CA.
    server_tls(dir, "agent-r2").unwrap();
    // An agent's certificate authenticates servers only.
    client_tls(dir, "agent-r2", "r1").unwrap_err();
    client_tls(dir, "coordinator", "r2").unwrap();

    // A SAN asked for now reissues the certificates that lack it, under the same CA.
    let third = init_dev_pki(
        dir,
        &names(&["r1", "r2"]),
        &names(&["coordinator.isolab.svc"]),
    )
    .unwrap();
    assert!(!third.ca_created && third.coordinator.created && third.agents[0].created);
    assert!(
        !third.client.created,
        "the client certificate names no server"
    );
    assert_eq!(fs::read(&third.ca_cert).unwrap(), ca_before);
    assert!(
        inspect(&third.coordinator.cert)
            .0
            .iter()
            .any(|s| s == "coordinator.isolab.svc")
    );
    server_tls(dir, "coordinator").unwrap();
}

#[test]
fn force_replaces_the_ca_and_removes_the_old_agents() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let first = init_dev_pki(dir, &names(&["r1", "r2"]), &[]).unwrap();
    let ca_before = fs::read(&first.ca_cert).unwrap();
    let forced = init_dev_pki_with(dir, &names(&["r2"]), &[], Overwrite::Force).unwrap();
    assert!(forced.ca_created && forced.agents[0].created && forced.coordinator.created);
    assert_ne!(fs::read(&forced.ca_cert).unwrap(), ca_before);
    assert_eq!(
        forced.removed,
        vec![dir.join("agent-r1-key.pem"), dir.join("agent-r1.pem")]
    );
    assert!(!dir.join("agent-r1.pem").exists());
    server_tls(dir, "agent-r2").unwrap();
    server_tls(dir, "coordinator").unwrap();
}

#[test]
fn half_a_ca_is_refused_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init_dev_pki(dir, &names(&["r1"]), &[]).unwrap();
    fs::remove_file(dir.join("ca-key.pem")).unwrap();
    let err = init_dev_pki(dir, &names(&["r1"]), &[]).unwrap_err();
    assert!(matches!(err, CertsError::IncompleteCa { .. }), "{err}");
    assert!(err.to_string().contains("ca-key.pem"), "{err}");
    // --force starts over.
    init_dev_pki_with(dir, &names(&["r1"]), &[], Overwrite::Force).unwrap();
    server_tls(dir, "agent-r1").unwrap();
}

#[test]
fn a_certificate_of_another_ca_is_not_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    init_dev_pki(&a, &names(&["r1"]), &[]).unwrap();
    init_dev_pki(&b, &names(&["r1"]), &[]).unwrap();
    for f in ["agent-r1.pem", "agent-r1-key.pem"] {
        fs::copy(b.join(f), a.join(f)).unwrap();
    }
    let err = init_dev_pki(&a, &names(&["r1"]), &[]).unwrap_err();
    assert!(
        matches!(err, CertsError::Stale { ref identity, .. } if identity == "agent-r1"),
        "{err}"
    );
}

#[test]
fn bad_agent_names_and_sans_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in ["", "a/b", "../x", "-a", "a.", "r1-key", "a b", "ä"] {
        let err = init_dev_pki(tmp.path(), &names(&[bad]), &[]).unwrap_err();
        assert!(
            matches!(err, CertsError::InvalidAgentName { .. }),
            "{bad:?}: {err}"
        );
    }
    for bad in ["", "bad name", "a.*.b", "x:y"] {
        let err = init_dev_pki(tmp.path(), &[], &names(&[bad])).unwrap_err();
        assert!(
            matches!(err, CertsError::InvalidSan { .. }),
            "{bad:?}: {err}"
        );
    }
    assert!(
        fs::read_dir(tmp.path()).unwrap().next().is_none(),
        "nothing written on a bad request"
    );
    init_dev_pki(
        tmp.path(),
        &names(&["rack-1.node-2"]),
        &names(&["*.isolab.svc", "fd00::1"]),
    )
    .unwrap();
}

#[test]
fn loading_names_the_missing_or_bad_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init_dev_pki(dir, &names(&["r1", "r2"]), &[]).unwrap();

    let err = server_tls(dir, "agent-r9").unwrap_err();
    assert!(matches!(err, TlsConfigError::Missing { .. }), "{err}");
    assert!(
        err.to_string().contains("agent-r9.pem") && err.to_string().contains("certs init"),
        "{err}"
    );

    // The key of another identity.
    fs::copy(dir.join("agent-r2-key.pem"), dir.join("agent-r1-key.pem")).unwrap();
    let err = server_tls(dir, "agent-r1").unwrap_err();
    assert!(matches!(err, TlsConfigError::KeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains("agent-r1-key.pem"), "{err}");

    // Garbage where a certificate should be.
    fs::write(dir.join("coordinator.pem"), "not a certificate\n").unwrap();
    let err = client_tls(dir, "coordinator", "r2").unwrap_err();
    assert!(matches!(err, TlsConfigError::InvalidCert { .. }), "{err}");
    assert!(err.to_string().contains("coordinator.pem"), "{err}");

    fs::write(
        dir.join(layout::CA_CERT),
        "-----BEGIN CERTIFICATE-----\nAAAA\n",
    )
    .unwrap();
    let err = server_tls(dir, "agent-r2").unwrap_err();
    assert!(matches!(err, TlsConfigError::InvalidCert { .. }), "{err}");
    assert!(err.to_string().contains("ca.pem"), "{err}");
}

#[test]
fn loading_refuses_a_certificate_of_another_ca_or_for_the_wrong_use() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    init_dev_pki(&a, &names(&["r1"]), &[]).unwrap();
    init_dev_pki(&b, &names(&["r1"]), &[]).unwrap();

    // The client-only certificate cannot serve.
    let err = server_tls(&a, "client").unwrap_err();
    assert!(
        matches!(
            err,
            TlsConfigError::NotSignedByCa {
                usage: "server",
                ..
            }
        ),
        "{err}"
    );

    for f in ["agent-r1.pem", "agent-r1-key.pem"] {
        fs::copy(b.join(f), a.join(f)).unwrap();
    }
    let err = server_tls(&a, "agent-r1").unwrap_err();
    assert!(matches!(err, TlsConfigError::NotSignedByCa { .. }), "{err}");
    assert!(
        err.to_string().contains("agent-r1.pem") && err.to_string().contains("ca.pem"),
        "{err}"
    );
}

#[test]
fn the_agent_finds_its_one_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init_dev_pki(dir, &[], &[]).unwrap();
    let err = isolab_tls::find_agent_identity(dir).unwrap_err();
    assert!(matches!(err, TlsConfigError::NoIdentity { .. }), "{err}");
    init_dev_pki(dir, &names(&["node-a"]), &[]).unwrap();
    assert_eq!(
        isolab_tls::find_agent_identity(dir).unwrap(),
        "agent-node-a"
    );
    // Any identity: the coordinator, the client, the probes' and the agent are all there.
    let err = isolab_tls::find_identity(dir, "").unwrap_err();
    assert!(
        matches!(err, TlsConfigError::AmbiguousIdentity { ref found, .. } if found.len() == 4),
        "{err}"
    );
    assert_eq!(
        isolab_tls::find_identity(dir, "coord").unwrap(),
        "coordinator"
    );
    init_dev_pki(dir, &names(&["node-b"]), &[]).unwrap();
    let err = isolab_tls::find_agent_identity(dir).unwrap_err();
    assert!(
        matches!(err, TlsConfigError::AmbiguousIdentity { ref found, .. } if found == &["agent-node-a", "agent-node-b"]),
        "{err}"
    );
}
