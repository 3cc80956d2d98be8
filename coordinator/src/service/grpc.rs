//! The gRPC edge of the coordinator service: `isolab.v1.Coordinator` over tonic, with mutual TLS
//! (or plaintext on loopback) and the standard `grpc.health.v1` service for probes, one shutdown
//! future and a bounded drain.
//!
//! Every call is authorized by its caller ([`isolab_tls::authorize`]): `SubmitRun` and
//! `CancelRun` only from the `client` identity, `WatchRun` and `ListRuns` from `client` or
//! `coordinator`; on plain-text loopback only root or the coordinator's own user.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use isolab_proto::v1 as pb;
use pb::coordinator_server::{Coordinator, CoordinatorServer};
use tokio::net::TcpListener;
use tonic::transport::{Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

use super::convert;
use super::core::ServiceCore;
use isolab_tls::authz::{SUBMIT_CALLERS, WATCH_CALLERS};

/// Checks the caller of `req` against `allowed`; a refusal is logged.
fn authorize<T>(req: &Request<T>, call: &'static str, allowed: &[&str]) -> Result<(), Status> {
    isolab_tls::authorize(req, call, allowed)
        .map(|caller| tracing::debug!(%caller, call, "authorized"))
        .map_err(|e| {
            tracing::warn!("refused: {e}");
            e.into()
        })
}

/// How long connections (watchers) get after the drain before the server closes them.
pub const CONNECTION_LINGER: Duration = Duration::from_secs(3);

/// Why the service could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Plaintext on an address other hosts can reach.
    #[error(transparent)]
    Listen(#[from] isolab_tls::ListenError),
    /// The listener's address could not be read.
    #[error("address of the listener: {source}")]
    LocalAddr {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS configuration was refused.
    #[error("TLS on {addr}: {source}")]
    Tls {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server on {addr}: {source}")]
    Transport {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
}

/// The tonic service: translates requests for the core and its answers back.
#[derive(Debug, Clone)]
pub struct CoordinatorService {
    core: ServiceCore,
}

impl CoordinatorService {
    /// Serves `core`.
    pub fn new(core: ServiceCore) -> Self {
        Self { core }
    }
}

/// The stream of `WatchRun`.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::RunEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    async fn submit_run(
        &self,
        request: Request<pb::SubmitRunRequest>,
    ) -> Result<Response<pb::SubmitRunResponse>, Status> {
        authorize(&request, "SubmitRun", SUBMIT_CALLERS)?;
        let req = convert::submit_from_pb(request.into_inner());
        let core = self.core.clone();
        // Planning a large pipeline is CPU work: keep it off the reactor.
        let submitted = tokio::task::spawn_blocking(move || core.submit(req))
            .await
            .map_err(|e| Status::internal(format!("submit task: {e}")))??;
        Ok(Response::new(convert::submitted_to_pb(submitted)))
    }

    type WatchRunStream = WatchStream;

    async fn watch_run(
        &self,
        request: Request<pb::WatchRunRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        authorize(&request, "WatchRun", WATCH_CALLERS)?;
        let req = request.into_inner();
        let run = (!req.run_id.is_empty()).then_some(req.run_id.as_str());
        let sub = self.core.watch(run)?;
        let samples = req.samples;
        let stream = futures::stream::unfold((sub, false), move |(mut sub, done)| async move {
            if done {
                return None;
            }
            loop {
                let ev = sub.next().await?;
                if ev.is_sample() && !samples {
                    continue;
                }
                let finished = ev.is_run_finished();
                return Some((Ok(convert::event_to_pb(&ev)), (sub, finished)));
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        authorize(&request, "ListRuns", WATCH_CALLERS)?;
        let runs = self
            .core
            .list()
            .into_iter()
            .map(convert::run_info_to_pb)
            .collect();
        Ok(Response::new(pb::ListRunsResponse { runs }))
    }

    async fn cancel_run(
        &self,
        request: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::CancelRunResponse>, Status> {
        authorize(&request, "CancelRun", SUBMIT_CALLERS)?;
        let phase = self.core.cancel(&request.into_inner().run_id)?;
        Ok(Response::new(pb::CancelRunResponse {
            state: phase.as_str().to_owned(),
        }))
    }
}

/// Serves `core` on `listener` (mutual TLS when `tls` is given, else plaintext, which
/// [`isolab_tls::check_listen`] allows on loopback only) and executes its queue, until
/// `shutdown` resolves. Then submissions are refused, running trials get `drain_timeout` to
/// finish (then they are cancelled), undispatched trials are recorded as not run, and
/// connections get [`CONNECTION_LINGER`] before the server closes.
pub async fn serve(
    core: ServiceCore,
    listener: TcpListener,
    tls: Option<ServerTlsConfig>,
    allow_plaintext: bool,
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
) -> Result<(), ServeError> {
    let addr = listener
        .local_addr()
        .map_err(|source| ServeError::LocalAddr { source })?;
    isolab_tls::check_listen(addr, tls.is_some(), allow_plaintext)?;
    // HTTP/2 PINGs and TCP keepalive find a client that vanished (half-open connection).
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .map_err(|source| ServeError::Tls { addr, source })?;
    }
    let runner = {
        let core = core.clone();
        tokio::spawn(async move { core.supervise_queue().await })
    };
    // The standard health service, for probes (`isolab-health-probe` in the Kubernetes manifests).
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<CoordinatorServer<CoordinatorService>>()
        .await;
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let drain_core = core.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!(%addr, "shutting down: health NOT_SERVING, refusing submissions, draining running trials");
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        reporter
            .set_not_serving::<CoordinatorServer<CoordinatorService>>()
            .await;
        drain_core.shutdown(drain_timeout).await;
        let _ = drained_tx.send(());
    };
    tracing::info!(%addr, "isolab coordinator serving");
    let server = builder
        .add_service(health)
        .add_service(CoordinatorServer::new(CoordinatorService::new(core)))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener)
                .with_keepalive(Some(Duration::from_secs(60))),
            signal,
        );
    let linger = async {
        if drained_rx.await.is_ok() {
            tokio::time::sleep(CONNECTION_LINGER).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let result = tokio::select! {
        r = server => r.map_err(|source| ServeError::Transport { addr, source }),
        () = linger => Ok(()),
    };
    runner.abort();
    result
}
