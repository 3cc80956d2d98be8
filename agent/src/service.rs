//! The `isolab.v1.Agent` gRPC service: translates requests into [`AgentCore`] calls and core
//! events into protobuf, and errors into `tonic::Status` in one place ([`ServiceError`]).
//!
//! Every call is authorized first ([`isolab_tls::authorize`]): under mutual TLS only the
//! `coordinator` identity may call the agent; on plain-text loopback only root or the agent's own
//! user. Refusals are logged and answered with PERMISSION_DENIED naming the caller.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use isolab_proto::v1 as pb;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::core::{AgentCore, RunTrialError};
use isolab_tls::authz::AGENT_CALLERS;
use isolab_wire::convert::{self, ConvertError};

/// The caller of `req` if it may call the agent; else the refusal, logged.
fn authorize<T>(req: &Request<T>, call: &'static str) -> Result<(), Status> {
    match isolab_tls::authorize(req, call, AGENT_CALLERS) {
        Ok(caller) => {
            tracing::debug!(%caller, call, "authorized");
            Ok(())
        }
        Err(e) => {
            tracing::warn!("refused: {e}");
            Err(e.into())
        }
    }
}

/// Everything a gRPC call can fail with before its stream starts.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request could not be read.
    #[error("invalid request: {0}")]
    Convert(#[from] ConvertError),
    /// The core refused the trial.
    #[error(transparent)]
    RunTrial(#[from] RunTrialError),
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        let message = e.to_string();
        match e {
            ServiceError::Convert(_) => Status::invalid_argument(message),
            ServiceError::RunTrial(r) => match r {
                RunTrialError::ShuttingDown { .. } => Status::unavailable(message),
                RunTrialError::InvalidTrial { .. } | RunTrialError::UnknownWorkload { .. } => {
                    Status::invalid_argument(message)
                }
                RunTrialError::BackendNotImplemented { .. } => Status::failed_precondition(message),
                RunTrialError::AlreadyRunning { .. } => Status::already_exists(message),
                RunTrialError::ResourceExhausted { .. } => Status::resource_exhausted(message),
            },
        }
    }
}

/// The gRPC face of an [`AgentCore`].
#[derive(Debug, Clone)]
pub struct AgentService {
    core: AgentCore,
}

impl AgentService {
    /// Serves `core`.
    pub fn new(core: AgentCore) -> Self {
        Self { core }
    }

    /// The core behind the service.
    pub fn core(&self) -> &AgentCore {
        &self.core
    }
}

/// The stream of a `RunTrial` call.
pub type TrialEventStream = Pin<Box<dyn Stream<Item = Result<pb::TrialEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::agent_server::Agent for AgentService {
    async fn capabilities(
        &self,
        request: Request<pb::CapabilitiesRequest>,
    ) -> Result<Response<pb::CapabilitiesResponse>, Status> {
        authorize(&request, "Capabilities")?;
        let caps = self.core.capabilities().await;
        Ok(Response::new(convert::capabilities_to_proto(&caps)))
    }

    type RunTrialStream = TrialEventStream;

    async fn run_trial(
        &self,
        request: Request<pb::RunTrialRequest>,
    ) -> Result<Response<Self::RunTrialStream>, Status> {
        authorize(&request, "RunTrial")?;
        let run = async {
            let (metadata, _, message) = request.into_parts();
            let req = convert::trial_from_proto(message).map_err(ServiceError::from)?;
            // The agent's side of the trial, a child of the coordinator's trial span (W3C
            // `traceparent` in the metadata); the core's task runs inside it.
            let span = tracing::info_span!(
                "agent.run_trial",
                otel.kind = "server",
                trial = %req.trial.id,
                attempt = req.attempt,
                run = %req.run_id,
            );
            isolab_telemetry::set_parent_from(&span, &metadata);
            async {
                tracing::info!(trial = %req.trial.id, attempt = req.attempt, run = %req.run_id, "RunTrial");
                self.core.run_trial(req).await.map_err(ServiceError::from)
            }
            .instrument(span)
            .await
        };
        let events = run.await.map_err(|e| {
            tracing::warn!("RunTrial refused: {e}");
            Status::from(e)
        })?;
        let stream = ReceiverStream::new(events).map(|e| Ok(convert::event_to_proto(e)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cancel(
        &self,
        request: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::CancelResponse>, Status> {
        authorize(&request, "Cancel")?;
        let id = request.into_inner().trial_id;
        let found = self.core.cancel(&id);
        tracing::info!(trial = %id, found, "Cancel");
        Ok(Response::new(pb::CancelResponse { found }))
    }
}
