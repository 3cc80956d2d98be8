//! Serving the agent over gRPC: the `isolab.v1.Agent` service and the standard health service
//! on one listener, with one shutdown future.
//!
//! On shutdown: health goes NOT_SERVING, running trials are cancelled and get the configured grace
//! period to tear down (what is cut off is logged), then the server stops; connections still open
//! after that get [`CONNECTION_DRAIN`] before the server is dropped (tonic alone would wait for
//! them forever).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use isolab_proto::v1::agent_server::AgentServer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::config::AgentConfig;
use crate::core::AgentCore;
use crate::service::AgentService;

/// HTTP/2 PING interval towards clients, and how long a PING may stay unanswered.
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// TCP keepalive on accepted connections (the kernel's probes, under the HTTP/2 PINGs).
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// How long open connections may linger once the trials are drained.
pub const CONNECTION_DRAIN: Duration = Duration::from_secs(3);
/// The default listen address of `isolab-agent`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7411";

/// Why the agent could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A non-loopback address without TLS.
    #[error("refusing to listen on {addr} without TLS (--tls-dir)")]
    InsecureListen {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// Binding the listener failed.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The listener's address could not be read.
    #[error("address of the listener: {source}")]
    LocalAddr {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server on {addr}: {source}")]
    Transport {
        /// The address served.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// The TLS configuration was refused by the server.
    #[error("TLS configuration for {addr}: {source}")]
    Tls {
        /// The address served.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// The serving task of a local agent panicked.
    #[error("local agent task: {source}")]
    Task {
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Refuses any address but loopback: without TLS, the agent only serves this machine.
pub fn check_listen_addr(addr: SocketAddr) -> Result<(), ServeError> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(ServeError::InsecureListen { addr })
    }
}

/// Serves a new agent with `config` on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    config: AgentConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let addr = listener
        .local_addr()
        .map_err(|source| ServeError::LocalAddr { source })?;
    check_listen_addr(addr)?;
    let core = AgentCore::new(config).await;
    serve_core(core, listener, shutdown).await
}

/// [`serve`] with mutual TLS when `tls` is given (any address), plaintext on loopback otherwise.
/// The TLS configuration comes from `isolab_tls::server_tls`, which requires every client to
/// present a certificate signed by the directory's CA.
pub async fn serve_tls(
    config: AgentConfig,
    listener: TcpListener,
    tls: Option<ServerTlsConfig>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let addr = listener
        .local_addr()
        .map_err(|source| ServeError::LocalAddr { source })?;
    if tls.is_none() {
        check_listen_addr(addr)?;
    }
    let core = AgentCore::new(config).await;
    serve_core_tls(core, listener, tls, shutdown).await
}

/// Serves an existing core (see [`serve`]).
pub async fn serve_core(
    core: AgentCore,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    serve_core_tls(core, listener, None, shutdown).await
}

/// Serves an existing core, with mutual TLS when `tls` is given (see [`serve_tls`]).
pub async fn serve_core_tls(
    core: AgentCore,
    listener: TcpListener,
    tls: Option<ServerTlsConfig>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let addr = listener
        .local_addr()
        .map_err(|source| ServeError::LocalAddr { source })?;
    // HTTP/2 PINGs and TCP keepalive find a coordinator that vanished (half-open connection)
    // within a minute, so its streams end and their trials are cancelled.
    // A stream per trial the budget admits, and room for the calls beside them.
    let mut builder = Server::builder()
        .max_concurrent_streams(Some(core.config().budget.max_concurrent_streams()))
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT));
    match tls {
        Some(tls) => {
            builder = builder
                .tls_config(tls)
                .map_err(|source| ServeError::Tls { addr, source })?;
        }
        None => check_listen_addr(addr)?,
    }
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<AgentServer<AgentService>>().await;
    let grace = core.config().grace;
    let (drained_tx, drained_rx) = oneshot::channel::<()>();
    let drain_core = core.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!(%addr, "shutting down: health NOT_SERVING, cancelling trials");
        reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        reporter
            .set_not_serving::<AgentServer<AgentService>>()
            .await;
        let report = drain_core.shutdown(grace).await;
        if report.cut_off.is_empty() {
            tracing::info!("every trial ended within the grace period");
        } else {
            tracing::warn!(
                "grace period of {grace:?} over; cut off trials {:?} (their processes were killed)",
                report.cut_off
            );
        }
        let _ = drained_tx.send(());
    };
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE));
    tracing::info!(%addr, "isolab agent serving");
    let server = builder
        .add_service(health)
        .add_service(AgentServer::new(AgentService::new(core)))
        .serve_with_incoming_shutdown(incoming, signal);
    let linger = async {
        if drained_rx.await.is_ok() {
            tokio::time::sleep(CONNECTION_DRAIN).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => result.map_err(|source| ServeError::Transport { addr, source }),
        () = linger => {
            tracing::warn!("connections still open {CONNECTION_DRAIN:?} after the drain; closing them");
            Ok(())
        }
    }
}

/// An agent serving on a loopback port inside this process: the embedded agent the coordinator
/// starts when no `--agent` is given. Dropping it begins its shutdown without waiting.
#[derive(Debug)]
pub struct LocalAgent {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Whether it serves mutual TLS.
    pub tls: bool,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl LocalAgent {
    /// The URL a gRPC client connects to (`http://127.0.0.1:PORT`, `https://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Begins its shutdown (cancel, bounded drain) without waiting: an agent dying mid-run, as
    /// far as its clients can tell.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts it down (cancel, bounded drain) and waits until it stopped.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("local agent: {e}"),
            Err(source) => tracing::warn!("{}", ServeError::Task { source }),
        }
    }
}

/// Starts an agent with `config` on `127.0.0.1:0` in this process.
pub async fn spawn_local(config: AgentConfig) -> Result<LocalAgent, ServeError> {
    spawn_local_tls(config, None).await
}

/// [`spawn_local`] with mutual TLS when `tls` is given.
pub async fn spawn_local_tls(
    config: AgentConfig,
    tls: Option<ServerTlsConfig>,
) -> Result<LocalAgent, ServeError> {
    let bind: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|source| ServeError::Bind { addr: bind, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServeError::LocalAddr { source })?;
    let (stop, stopped) = oneshot::channel::<()>();
    let with_tls = tls.is_some();
    let task = tokio::spawn(serve_tls(config, listener, tls, async move {
        let _ = stopped.await;
    }));
    Ok(LocalAgent {
        addr,
        tls: with_tls,
        stop: Some(stop),
        task,
    })
}
