//! OpenTelemetry across the gRPC hop: a real run (coordinator → embedded agent over loopback gRPC,
//! in this process) recorded by the SDK's in-memory exporter. The agent's spans of the trial must
//! be children of the coordinator's trial span: same trace id, parent span id matching, carried by
//! the W3C `traceparent` in the RunTrial metadata.
//!
//! Needs root (cgroups) and the `isolab-workload` binary; off CI without them it is skipped with a
//! printed reason.

mod common;

use common::can_run;

use std::collections::HashMap;

use isolab_coordinator::run::{RunOptions, run};
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt as _;

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| match &kv.value {
            Value::String(s) => s.as_str().to_owned(),
            v => v.to_string(),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_spans_are_children_of_the_coordinators_trial_span() {
    if !can_run() {
        return;
    }
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(isolab_telemetry::otel_layer(&provider, "isolab-test")),
    )
    .expect("the only subscriber of this test binary");

    let tmp = tempfile::tempdir().expect("tempdir");
    let pipeline = tmp.path().join("p.yaml");
    std::fs::write(
        &pipeline,
        "apiVersion: isolab/v1\nkind: Pipeline\nname: otel\n\
         defaults: { repetitions: 1, warmup: 0, duration: 200ms }\n\
         platforms:\n  native: { backend: native }\n\
         experiments:\n  - name: micro\n    analysis: overhead\n    platforms: [native]\n\
         \x20   workloads: [syscall]\n",
    )
    .expect("write pipeline");
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let opts = RunOptions {
        pipeline,
        results: tmp.path().join("results"),
        ..RunOptions::default()
    };
    let outcome = run(&opts, rx).await.expect("run");
    assert_eq!((outcome.ok, outcome.failed), (1, 0), "{outcome:?}");
    provider.force_flush().expect("flush");

    let spans = exporter.get_finished_spans().expect("spans");
    let by_id: HashMap<_, _> = spans
        .iter()
        .map(|s| (s.span_context.span_id(), s))
        .collect();
    let one = |pred: &dyn Fn(&SpanData) -> bool, what: &str| -> &SpanData {
        let found: Vec<_> = spans.iter().filter(|s| pred(s)).collect();
        assert_eq!(
            found.len(),
            1,
            "{what}: {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        found[0]
    };
    let run_span = one(
        &|s| s.name == "run" && attr(s, "run_id").is_some(),
        "run span",
    );
    let experiment = one(&|s| s.name == "experiment", "experiment span");
    let coord_trial = one(
        &|s| s.name == "trial" && attr(s, "agent").is_some(),
        "coordinator trial span",
    );
    let agent_rpc = one(&|s| s.name == "agent.run_trial", "agent RunTrial span");
    let agent_trial = one(
        &|s| s.name == "trial" && attr(s, "agent").is_none(),
        "agent trial span",
    );

    // run → experiment → trial on the coordinator.
    assert_eq!(experiment.parent_span_id, run_span.span_context.span_id());
    assert_eq!(
        coord_trial.parent_span_id,
        experiment.span_context.span_id()
    );
    assert_eq!(attr(coord_trial, "state").as_deref(), Some("ok"));

    // Across the gRPC hop: the agent's span is a remote child of the coordinator's trial span.
    let trace = coord_trial.span_context.trace_id();
    assert_eq!(agent_rpc.span_context.trace_id(), trace);
    assert_eq!(agent_rpc.parent_span_id, coord_trial.span_context.span_id());
    assert!(agent_rpc.parent_span_is_remote);
    assert_eq!(
        attr(agent_rpc, "trial"),
        attr(coord_trial, "trial"),
        "same trial on both sides"
    );

    // The runner's trial span and its phases sit under it, in the same trace.
    assert_eq!(agent_trial.parent_span_id, agent_rpc.span_context.span_id());
    for phase in ["prepare", "run", "teardown"] {
        let p = one(&|s| s.name == phase && attr(s, "run_id").is_none(), phase);
        assert_eq!(p.span_context.trace_id(), trace, "{phase}");
        assert_eq!(
            p.parent_span_id,
            agent_trial.span_context.span_id(),
            "{phase}"
        );
    }
    let start = one(&|s| s.name == "start", "start");
    assert_eq!(
        by_id.get(&start.parent_span_id).map(|p| p.name.as_ref()),
        Some("run")
    );
    provider.shutdown().expect("shutdown");
}
