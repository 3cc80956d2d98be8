//! Issue 15 item 6, the coordinator's side: a RunTrial stream that never ends (a hung agent, a
//! half-open connection the kernel has not noticed) must not hold the run forever. The
//! coordinator gives each stream the trial's timeout plus a margin, then cancels the trial at
//! the agent and reports the attempt as lost.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::Stream;
use isolab_coordinator::client::{Agent, AgentEvent, ClientError};
use isolab_proto::v1 as pb;
use tonic::{Request, Response, Status};

/// An agent that says "preparing" and then nothing, forever; it counts Cancel calls.
#[derive(Clone, Default)]
struct HungAgent {
    cancels: Arc<AtomicU32>,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::TrialEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::agent_server::Agent for HungAgent {
    async fn capabilities(
        &self,
        _request: Request<pb::CapabilitiesRequest>,
    ) -> Result<Response<pb::CapabilitiesResponse>, Status> {
        Ok(Response::new(pb::CapabilitiesResponse::default()))
    }

    type RunTrialStream = EventStream;

    async fn run_trial(
        &self,
        _request: Request<pb::RunTrialRequest>,
    ) -> Result<Response<Self::RunTrialStream>, Status> {
        let first = pb::TrialEvent {
            event: Some(pb::trial_event::Event::Status(pb::TrialStatus {
                state: pb::TrialState::Preparing.into(),
                host: "hung".into(),
                ..pb::TrialStatus::default()
            })),
        };
        let stream = futures::stream::iter([Ok(first)]).chain(futures::stream::pending());
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cancel(
        &self,
        _request: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::CancelResponse>, Status> {
        self.cancels.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(pb::CancelResponse { found: true }))
    }
}

use futures::StreamExt as _;

#[tokio::test]
async fn a_stream_without_a_final_status_ends_after_timeout_plus_margin_and_is_cancelled() {
    let agent = HungAgent::default();
    let cancels = Arc::clone(&agent.cancels);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::agent_server::AgentServer::new(agent))
            .serve_with_incoming(incoming),
    );
    let text = "apiVersion: isolab/v1\nkind: Pipeline\nname: hung\n\
        defaults: { repetitions: 1, warmup: 0, duration: 100ms, timeout: 1s }\n\
        platforms:\n  native: { backend: native }\n\
        experiments:\n  - { name: micro, analysis: overhead, platforms: [native], workloads: [syscall] }\n";
    let pipeline = isolab_model::load::load_str("hung.yaml", text).unwrap();
    let trial = isolab_model::plan::plan(&pipeline).remove(0);
    let client = Agent::connect(&format!("http://{addr}"))
        .await
        .unwrap()
        .with_stream_deadline_margin(Duration::from_millis(500));
    let mut events = Vec::new();
    // Without the deadline this would wait forever: bound the test itself far above 1.5 s.
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        client.run_trial("r", &trial, 1, |e| events.push(e)),
    )
    .await
    .expect("the coordinator waited on a hung stream beyond its deadline");
    match result {
        Err(ClientError::StreamDeadline { trial: t, .. }) => assert_eq!(t, trial.id),
        other => panic!("expected a stream deadline, got {other:?}"),
    }
    assert!(
        matches!(events.first(), Some(AgentEvent::Progress { .. })),
        "the events before the hang were delivered: {events:?}"
    );
    assert_eq!(
        cancels.load(Ordering::SeqCst),
        1,
        "the trial was cancelled at the agent"
    );
    server.abort();
}
