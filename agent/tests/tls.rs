//! Mutual TLS on the agent: a client with a certificate from the agent's CA is served; a plaintext
//! client and a client whose certificate comes from another CA are refused.

mod common;

use std::time::Duration;

use isolab_agent::config::AgentConfig;
use isolab_agent::serve::{LocalAgent, spawn_local_tls};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Guards against a hang; not a timing assertion.
const HANG: Duration = Duration::from_secs(30);

fn config() -> AgentConfig {
    AgentConfig {
        // No trial runs here: the workload binary is not needed.
        workload_bin: Some("/nonexistent/isolab-workload".into()),
        cgroup_prefix: "isolab-test-tls".into(),
        state_dir: common::state_dir(),
        ..AgentConfig::default()
    }
}

async fn tls_agent(dir: &std::path::Path) -> LocalAgent {
    isolab_tls::init_dev_pki(dir, &["a1".to_owned()], &[]).expect("pki");
    let identity = isolab_tls::find_agent_identity(dir).expect("identity");
    assert_eq!(identity, "agent-a1");
    let tls = isolab_tls::server_tls(dir, &identity).expect("server tls");
    let agent = spawn_local_tls(config(), Some(tls)).await.expect("spawn");
    assert!(agent.url().starts_with("https://"), "{}", agent.url());
    agent
}

/// Connects (lazily: the handshake happens on the first call) and asks for health.
async fn health(channel: Channel) -> Result<i32, tonic::Status> {
    let mut client = HealthClient::new(channel);
    let reply = tokio::time::timeout(
        HANG,
        client.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .expect("no hang")?;
    Ok(reply.into_inner().status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_ca_client_is_served() {
    let dir = tempfile::tempdir().expect("tmp");
    let agent = tls_agent(dir.path()).await;
    let tls = isolab_tls::client_tls(dir.path(), "coordinator", "a1").expect("client tls");
    let channel = Endpoint::from_shared(agent.url())
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls config")
        .connect_lazy();
    let status = health(channel).await.expect("served over mTLS");
    assert_eq!(status, ServingStatus::Serving as i32);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_client_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let agent = tls_agent(dir.path()).await;
    let channel = Endpoint::from_shared(format!("http://{}", agent.addr))
        .expect("endpoint")
        .connect_lazy();
    let err = health(channel)
        .await
        .expect_err("plaintext must be refused");
    assert_ne!(err.code(), tonic::Code::Ok, "{err}");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_ca_client_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let agent = tls_agent(dir.path()).await;
    let foreign = tempfile::tempdir().expect("tmp");
    isolab_tls::init_dev_pki(foreign.path(), &["a1".to_owned()], &[]).expect("foreign pki");
    // The foreign client trusts the agent's CA (so its side of the handshake succeeds) but
    // presents a certificate of its own CA: the agent must refuse it.
    isolab_tls::config::install_crypto_provider();
    let read = |p: std::path::PathBuf| std::fs::read(p).expect("read pem");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(dir.path().join("ca.pem"))))
        .identity(Identity::from_pem(
            read(foreign.path().join("coordinator.pem")),
            read(foreign.path().join("coordinator-key.pem")),
        ))
        .domain_name("a1");
    let channel = Endpoint::from_shared(agent.url())
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls config")
        .connect_lazy();
    let err = health(channel)
        .await
        .expect_err("foreign CA must be refused");
    assert_ne!(err.code(), tonic::Code::Ok, "{err}");
    agent.shutdown().await;
}
