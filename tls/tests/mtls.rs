//! Mutual TLS end to end: a tonic server (the standard gRPC health service) configured by
//! `server_tls` on 127.0.0.1:0 answers a client holding a CA-signed certificate, and refuses a
//! plaintext client, a client whose certificate comes from a foreign CA, and a client that
//! presents none. The `isolab-health-probe` binary (the Kubernetes exec probe) is checked against
//! the same server.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Server};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as PbStatus;
use tonic_health::pb::health_client::HealthClient;

/// Bounds every network step so a broken build fails instead of hanging; not a timing assertion.
const STEP_BOUND: Duration = Duration::from_secs(20);

struct TestServer {
    addr: SocketAddr,
    reporter: tonic_health::server::HealthReporter,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl TestServer {
    async fn start(dir: &Path, identity: &str) -> TestServer {
        let tls = isolab_tls::server_tls(dir, identity).unwrap();
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", ServingStatus::Serving)
            .await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            Server::builder()
                .tls_config(tls)?
                .add_service(health)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
        });
        TestServer {
            addr,
            reporter,
            stop,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        // After the signal tonic waits for every open connection: bound it.
        let joined = tokio::time::timeout(STEP_BOUND, self.task).await;
        let result = joined
            .expect("server did not shut down")
            .expect("server task panicked");
        result.expect("server failed");
    }
}

/// One health check over `endpoint`: the status, or the error text of whichever step failed.
async fn check(endpoint: Endpoint) -> Result<i32, String> {
    let endpoint = endpoint.connect_timeout(STEP_BOUND).timeout(STEP_BOUND);
    let attempt = async {
        let channel: Channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_err(|e| format!("check: {e:?}"))?;
        Ok(response.into_inner().status)
    };
    tokio::time::timeout(STEP_BOUND * 2, attempt)
        .await
        .unwrap_or_else(|_| Err("no answer".into()))
}

fn https(addr: SocketAddr) -> Endpoint {
    Endpoint::from_shared(format!("https://{addr}")).unwrap()
}

/// A client built by hand from PEM files, so that it can present a certificate `client_tls`
/// would refuse to load (another CA's) or none at all.
fn manual_tls(ca: &Path, identity: Option<(&Path, &Path)>) -> ClientTlsConfig {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(fs::read(ca).unwrap()))
        .domain_name("r1");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(
            fs::read(cert).unwrap(),
            fs::read(key).unwrap(),
        ));
    }
    tls
}

fn pki(dir: &Path) {
    isolab_tls::init_dev_pki(dir, &["r1".to_owned()], &[]).unwrap();
}

#[tokio::test]
async fn mutual_tls_admits_only_clients_signed_by_the_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let (ours, foreign) = (tmp.path().join("ours"), tmp.path().join("foreign"));
    pki(&ours);
    pki(&foreign);
    let server = TestServer::start(&ours, "agent-r1").await;
    let serving = PbStatus::Serving as i32;

    // The coordinator and the operator client, configured by client_tls, are served.
    for identity in ["coordinator", "client"] {
        let tls = isolab_tls::client_tls(&ours, identity, "r1").unwrap();
        let got = check(https(server.addr).tls_config(tls).unwrap()).await;
        assert_eq!(got, Ok(serving), "{identity}");
    }
    // The same hand-built path as the refused clients below, with our own certificate: served.
    // So a refusal below is the certificate's doing, not the construction's.
    let own = manual_tls(
        &ours.join("ca.pem"),
        Some((
            &ours.join("coordinator.pem"),
            &ours.join("coordinator-key.pem"),
        )),
    );
    assert_eq!(
        check(https(server.addr).tls_config(own).unwrap()).await,
        Ok(serving)
    );

    // Plaintext HTTP/2 to the TLS port.
    let plain = Endpoint::from_shared(format!("http://{}", server.addr)).unwrap();
    let got = check(plain).await;
    assert!(got.is_err(), "plaintext client was served: {got:?}");

    // A certificate from a foreign CA (the client trusts our CA, so only the server can refuse).
    let alien = manual_tls(
        &ours.join("ca.pem"),
        Some((
            &foreign.join("coordinator.pem"),
            &foreign.join("coordinator-key.pem"),
        )),
    );
    let got = check(https(server.addr).tls_config(alien).unwrap()).await;
    assert!(
        got.is_err(),
        "client with a foreign CA's certificate was served: {got:?}"
    );

    // An agent's certificate used as a client: agent certificates carry server authentication
    // only, so the server refuses it in the handshake (and client_tls will not even load it).
    let agent_as_client = manual_tls(
        &ours.join("ca.pem"),
        Some((&ours.join("agent-r1.pem"), &ours.join("agent-r1-key.pem"))),
    );
    let got = check(https(server.addr).tls_config(agent_as_client).unwrap()).await;
    assert!(
        got.is_err(),
        "an agent certificate was accepted as a client: {got:?}"
    );
    let e = isolab_tls::client_tls(&ours, "agent-r1", "r1").unwrap_err();
    assert!(e.to_string().contains("client certificate"), "{e}");

    // No certificate at all.
    let anonymous = manual_tls(&ours.join("ca.pem"), None);
    let got = check(https(server.addr).tls_config(anonymous).unwrap()).await;
    assert!(
        got.is_err(),
        "client without a certificate was served: {got:?}"
    );

    // The refusals did not hurt the server.
    let tls = isolab_tls::client_tls(&ours, "coordinator", "r1").unwrap();
    assert_eq!(
        check(https(server.addr).tls_config(tls).unwrap()).await,
        Ok(serving)
    );
    server.stop().await;
}

#[tokio::test]
async fn the_client_refuses_a_server_of_another_ca_or_name() {
    let tmp = tempfile::tempdir().unwrap();
    let (ours, foreign) = (tmp.path().join("ours"), tmp.path().join("foreign"));
    pki(&ours);
    pki(&foreign);
    let impostor = TestServer::start(&foreign, "agent-r1").await;
    let tls = isolab_tls::client_tls(&ours, "coordinator", "r1").unwrap();
    let got = check(https(impostor.addr).tls_config(tls).unwrap()).await;
    assert!(
        got.is_err(),
        "client accepted a server of another CA: {got:?}"
    );
    impostor.stop().await;

    // Our own CA's agent, but not the one the client expects by name.
    let server = TestServer::start(&ours, "agent-r1").await;
    let tls = isolab_tls::client_tls(&ours, "coordinator", "r2").unwrap();
    let got = check(https(server.addr).tls_config(tls).unwrap()).await;
    assert!(got.is_err(), "client accepted agent-r1 as r2: {got:?}");
    let tls = isolab_tls::client_tls(&ours, "coordinator", "localhost").unwrap();
    assert_eq!(
        check(https(server.addr).tls_config(tls).unwrap()).await,
        Ok(PbStatus::Serving as i32)
    );
    server.stop().await;
}

/// Runs the `isolab-health-probe` binary; its exit code and output.
async fn probe(addr: SocketAddr, tls_dir: &Path, identity: Option<&str>) -> (i32, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_isolab-health-probe"));
    cmd.arg("--addr")
        .arg(addr.to_string())
        .arg("--tls-dir")
        .arg(tls_dir);
    if let Some(identity) = identity {
        cmd.arg("--identity").arg(identity);
    }
    let out = tokio::time::timeout(STEP_BOUND * 2, cmd.output())
        .await
        .expect("probe hung")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().expect("probe killed by a signal"), text)
}

#[tokio::test]
async fn the_health_probe_binary_checks_over_mutual_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let (ours, foreign) = (tmp.path().join("ours"), tmp.path().join("foreign"));
    pki(&ours);
    pki(&foreign);
    // A directory shaped like the agents' Kubernetes Secret: the CA, the agent's identity and
    // the probes' `health` identity (the agent's own certificate cannot act as a client).
    let secret = tmp.path().join("secret");
    fs::create_dir(&secret).unwrap();
    for f in [
        "ca.pem",
        "agent-r1.pem",
        "agent-r1-key.pem",
        "health.pem",
        "health-key.pem",
    ] {
        fs::copy(ours.join(f), secret.join(f)).unwrap();
    }
    let server = TestServer::start(&ours, "agent-r1").await;

    let (code, out) = probe(server.addr, &ours, Some("coordinator")).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("SERVING"), "{out}");
    let (code, out) = probe(server.addr, &secret, None).await;
    assert_eq!(code, 0, "the health identity is found by itself: {out}");
    let (code, out) = probe(server.addr, &secret, Some("agent-r1")).await;
    assert_eq!(code, 2, "an agent certificate is no client: {out}");

    // Several identities, none named and no `health`: a usage error, not a guess.
    for f in ["health.pem", "health-key.pem"] {
        fs::remove_file(ours.join(f)).unwrap();
    }
    let (code, out) = probe(server.addr, &ours, None).await;
    assert_eq!(code, 2, "{out}");
    let (code, out) = probe(server.addr, &tmp.path().join("absent"), None).await;
    assert_eq!(code, 2, "{out}");

    // A server of another CA is not trusted.
    let (code, out) = probe(server.addr, &foreign, Some("coordinator")).await;
    assert_eq!(code, 1, "{out}");

    server
        .reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let (code, out) = probe(server.addr, &secret, None).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("NOT_SERVING"), "{out}");
    server.stop().await;
}
