//! Serving: the health service goes SERVING → NOT_SERVING when shutdown begins and the server
//! then stops; non-loopback addresses without TLS are refused, by the library and the binary.

mod common;

use std::time::Duration;

use futures::StreamExt;
use isolab_agent::config::AgentConfig;
use isolab_agent::serve::{ServeError, serve};
use tokio::net::TcpListener;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Guards against a hang; not a timing assertion.
const HANG: Duration = Duration::from_secs(60);

fn config() -> AgentConfig {
    AgentConfig {
        // No trial runs here: the workload binary is not needed.
        workload_bin: Some("/nonexistent/isolab-workload".into()),
        cgroup_prefix: "isolab-test-health".into(),
        state_dir: common::state_dir(),
        ..AgentConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_serving_then_not_serving_after_shutdown_begins() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(config(), listener, async move {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel);
    for service in ["", "isolab.v1.Agent"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("Check")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "isolab.v1.Agent".into(),
        })
        .await
        .expect("Watch")
        .into_inner();
    let first = watch
        .next()
        .await
        .expect("first status")
        .expect("status")
        .status;
    assert_eq!(first, ServingStatus::Serving as i32);
    stop.send(()).expect("server alive");
    let next = tokio::time::timeout(HANG, watch.next())
        .await
        .expect("a status change")
        .expect("stream open")
        .expect("status")
        .status;
    assert_eq!(next, ServingStatus::NotServing as i32);
    drop(watch);
    drop(health);
    let served = tokio::time::timeout(HANG, server)
        .await
        .expect("server stops");
    served.expect("server task").expect("served cleanly");
}

#[tokio::test]
async fn non_loopback_without_tls_is_refused() {
    let listener = TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let err = serve(config(), listener, async {})
        .await
        .expect_err("must refuse");
    assert!(matches!(err, ServeError::InsecureListen { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("refusing to listen on 0.0.0.0:"),
        "{err}"
    );
    assert!(
        err.to_string().ends_with("without TLS (--tls-dir)"),
        "{err}"
    );
}

#[test]
fn the_binary_refuses_non_loopback_without_tls() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_isolab-agent"))
        .args(["--listen", "0.0.0.0:7411"])
        .output()
        .expect("run isolab-agent");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:7411 without TLS")
            && stderr.contains("--tls-dir"),
        "stderr: {stderr}"
    );
}
