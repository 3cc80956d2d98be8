//! The agent over real gRPC on 127.0.0.1:0: capabilities, trials that succeed, fail, time out
//! and are cancelled, refusals, the garbage printer, and that nothing is left after any of them.

mod common;

use std::time::Duration;

use futures::StreamExt;
use isolab_agent::conformance;
use isolab_agent::core::{TrialEvent, TrialState};
use isolab_agent::serve::{LocalAgent, spawn_local};
use isolab_model::plan::Trial;
use isolab_proto::v1 as pb;
use isolab_proto::v1::agent_client::AgentClient;
use isolab_wire::convert::{capabilities_from_proto, event_from_proto, trial_to_proto};
use tonic::transport::Channel;

async fn start(test: &str) -> (LocalAgent, AgentClient<Channel>) {
    start_with(common::config(test)).await
}

async fn start_with(
    config: isolab_agent::config::AgentConfig,
) -> (LocalAgent, AgentClient<Channel>) {
    let agent = spawn_local(config).await.expect("spawn local agent");
    let client = AgentClient::connect(agent.url()).await.expect("connect");
    (agent, client)
}

/// Runs a trial to its end; `cancel_on_first_sample` cancels it over gRPC once a sample arrives.
async fn run(
    client: &mut AgentClient<Channel>,
    trial: &Trial,
    cancel_on_first_sample: bool,
) -> Vec<TrialEvent> {
    let mut stream = client
        .run_trial(trial_to_proto("run-test", trial, 0))
        .await
        .expect("RunTrial")
        .into_inner();
    let mut events = Vec::new();
    let mut cancelled = false;
    while let Some(item) = stream.next().await {
        let event = event_from_proto(item.expect("event")).expect("convertible event");
        if cancel_on_first_sample && !cancelled && matches!(event, TrialEvent::Sample { .. }) {
            // The leak check below must be able to see the trial's processes at all.
            assert!(
                !common::processes(trial, 0).is_empty(),
                "running instances not found"
            );
            let found = client
                .cancel(pb::CancelRequest {
                    trial_id: trial.id.clone(),
                })
                .await
                .expect("Cancel")
                .into_inner()
                .found;
            assert!(found, "a running trial was not found by Cancel");
            cancelled = true;
        }
        events.push(event);
    }
    events
}

/// An agent whose `isolab-workload` is a shell script `name` running `body` (it ignores its
/// arguments); the script's directory lives as long as the returned guard.
async fn start_with_script(
    test: &str,
    name: &str,
    body: &str,
) -> (LocalAgent, AgentClient<Channel>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join(name);
    std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let mut config = common::config(test);
    config.workload_bin = Some(script);
    let (agent, client) = start_with(config).await;
    (agent, client, dir)
}

fn final_status(events: &[TrialEvent]) -> &isolab_agent::core::TrialStatus {
    events
        .iter()
        .rev()
        .find_map(TrialEvent::as_status)
        .expect("a status")
}

fn states(events: &[TrialEvent]) -> Vec<TrialState> {
    events
        .iter()
        .filter_map(TrialEvent::as_status)
        .map(|s| s.state)
        .collect()
}

fn assert_nothing_left(test: &str, trial: &Trial) {
    let procs = common::processes(trial, 0);
    assert!(
        procs.is_empty(),
        "processes of trial {} still alive: {procs:?}",
        trial.id
    );
    let cgroups = common::trial_cgroups(&format!("isolab-test-{test}"));
    assert!(cgroups.is_empty(), "trial cgroups left: {cgroups:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_report_native_and_the_catalog() {
    if !common::privileged("capabilities_report_native_and_the_catalog") {
        return;
    }
    let mut config = common::config("caps");
    config.labels.insert("rack".into(), "r1".into());
    let (agent, mut client) = start_with(config).await;
    let caps = client
        .capabilities(pb::CapabilitiesRequest {})
        .await
        .expect("Capabilities")
        .into_inner();
    let caps = capabilities_from_proto(caps).expect("convertible");
    let native = caps.backend("native").expect("native reported");
    assert!(native.available, "native unavailable: {}", native.reason);
    for name in ["container", "vm"] {
        let b = caps
            .backend(name)
            .unwrap_or_else(|| panic!("{name} not reported"));
        assert!(
            b.available || !b.reason.is_empty(),
            "{name} unavailable without a reason"
        );
    }
    assert!(caps.workloads.iter().any(|w| w == "syscall"));
    assert_eq!(caps.labels.get("rack").map(String::as_str), Some("r1"));
    assert!(
        caps.host.cores > 0 && caps.host.memory_bytes > 0,
        "{:?}",
        caps.host
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syscall_streams_preparing_running_samples_stats_ok() {
    if !common::privileged("syscall") {
        return;
    }
    let (agent, mut client) = start("syscall").await;
    let trial = conformance::trial(
        &common::native(),
        "syscall",
        1,
        &[],
        Duration::from_millis(200),
        Duration::from_secs(60),
    );
    let events = run(&mut client, &trial, false).await;
    assert_eq!(
        states(&events),
        vec![TrialState::Preparing, TrialState::Running, TrialState::Ok],
        "{}",
        final_status(&events).message
    );
    let ns: Vec<f64> = events
        .iter()
        .filter_map(|e| match e {
            TrialEvent::Sample {
                instance: 0,
                sample,
            } if sample.metric == "ns_per_call" => Some(sample.value),
            _ => None,
        })
        .collect();
    assert!(
        !ns.is_empty() && ns.iter().all(|v| *v > 0.0 && *v < 1e7),
        "ns_per_call samples: {ns:?}"
    );
    let final_stats = events.iter().any(|e| {
        matches!(
            e,
            TrialEvent::Stats {
                instance: 0,
                final_: true,
                ..
            }
        )
    });
    assert!(final_stats, "no final statistics");
    assert!(!final_status(&events).host.is_empty());
    assert_nothing_left("syscall", &trial);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_cpu_spin_instances_all_report() {
    if !common::privileged("cpu_spin") {
        return;
    }
    let (agent, mut client) = start("cpuspin").await;
    let trial = conformance::trial(
        &common::native(),
        "cpu_spin",
        3,
        &[],
        Duration::from_millis(500),
        Duration::from_secs(60),
    );
    let events = run(&mut client, &trial, false).await;
    assert_eq!(
        final_status(&events).state,
        TrialState::Ok,
        "{}",
        final_status(&events).message
    );
    for i in 0..3 {
        let n = events
            .iter()
            .filter(|e| matches!(e, TrialEvent::Sample { instance, .. } if *instance == i))
            .count();
        assert!(n > 0, "instance {i} reported no sample");
        let cpu = events.iter().rev().find_map(|e| match e {
            TrialEvent::Stats {
                instance,
                stats,
                final_: true,
                ..
            } if *instance == i => Some(stats.cpu_user_ns + stats.cpu_system_ns),
            _ => None,
        });
        assert!(
            cpu.is_some_and(|ns| ns > 0),
            "instance {i}: final CPU time {cpu:?}"
        );
    }
    assert_nothing_left("cpuspin", &trial);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_run_ends_cancelled_and_kills() {
    if !common::privileged("cancel") {
        return;
    }
    let (agent, mut client) = start("cancel").await;
    let trial = conformance::trial(
        &common::native(),
        "cpu_spin",
        1,
        &[],
        Duration::from_secs(10),
        Duration::from_secs(60),
    );
    let events = run(&mut client, &trial, true).await;
    let last = final_status(&events);
    assert_eq!(last.state, TrialState::Cancelled, "{}", last.message);
    assert_nothing_left("cancel", &trial);
    let again = client
        .cancel(pb::CancelRequest {
            trial_id: trial.id.clone(),
        })
        .await
        .expect("Cancel");
    assert!(!again.into_inner().found, "an ended trial was still found");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_hit_ends_timed_out_and_kills() {
    if !common::privileged("deadline") {
        return;
    }
    let (agent, mut client) = start("deadline").await;
    let trial = conformance::trial(
        &common::native(),
        "cpu_spin",
        1,
        &[],
        Duration::from_secs(10),
        Duration::from_secs(1),
    );
    let events = run(&mut client, &trial, false).await;
    let last = final_status(&events);
    assert_eq!(last.state, TrialState::TimedOut, "{}", last.message);
    assert_nothing_left("deadline", &trial);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_workload_and_duplicate_ids_are_refused() {
    if !common::privileged("refusals") {
        return;
    }
    let (agent, mut client) = start("refusals").await;
    let bad = conformance::trial(
        &common::native(),
        "rm",
        1,
        &[],
        Duration::from_millis(100),
        Duration::from_secs(10),
    );
    let err = client
        .run_trial(trial_to_proto("r", &bad, 0))
        .await
        .expect_err("an unknown workload must be refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("unknown workload `rm`"),
        "{}",
        err.message()
    );

    let long = conformance::trial(
        &common::native(),
        "cpu_spin",
        1,
        &[],
        Duration::from_secs(10),
        Duration::from_secs(60),
    );
    let first = client
        .run_trial(trial_to_proto("r", &long, 0))
        .await
        .expect("first RunTrial")
        .into_inner();
    let err = client
        .run_trial(trial_to_proto("r", &long, 1))
        .await
        .expect_err("a second run of the same id");
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{}", err.message());
    assert!(
        client
            .cancel(pb::CancelRequest {
                trial_id: long.id.clone()
            })
            .await
            .expect("Cancel")
            .into_inner()
            .found
    );
    let events: Vec<_> = first
        .map(|e| event_from_proto(e.expect("event")).expect("event"))
        .collect()
        .await;
    assert_eq!(final_status(&events).state, TrialState::Cancelled);
    assert_nothing_left("refusals", &long);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_workload_fails_with_reason_and_the_server_goes_on() {
    if !common::privileged("failing") {
        return;
    }
    let (agent, mut client) = start("failing").await;
    let trial = conformance::trial(
        &common::native(),
        "syscall",
        1,
        &[("bogus", "1")],
        Duration::from_millis(200),
        Duration::from_secs(60),
    );
    let events = run(&mut client, &trial, false).await;
    let last = final_status(&events);
    assert_eq!(last.state, TrialState::Failed);
    assert!(
        last.message.contains("exited with code 2") && last.message.contains("bogus"),
        "{}",
        last.message
    );
    assert_nothing_left("failing", &trial);
    // Still serving.
    let ok = conformance::trial(
        &common::native(),
        "syscall",
        1,
        &[],
        Duration::from_millis(100),
        Duration::from_secs(60),
    );
    let events = run(&mut client, &ok, false).await;
    assert_eq!(
        final_status(&events).state,
        TrialState::Ok,
        "{}",
        final_status(&events).message
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_printing_garbage_fails_the_trial() {
    if !common::privileged("garbage") {
        return;
    }
    let (agent, mut client, _dir) = start_with_script(
        "garbage",
        "garbage-printer",
        "echo hello\necho '{\"metric\":\"x\",\"value\":1,\"unit\":\"u\",\"higher_is_better\":true}'",
    )
    .await;
    let trial = conformance::trial(
        &common::native(),
        "syscall",
        1,
        &[],
        Duration::from_millis(100),
        Duration::from_secs(60),
    );
    let events = run(&mut client, &trial, false).await;
    let last = final_status(&events);
    assert_eq!(last.state, TrialState::Failed);
    assert!(
        last.message
            .contains("instance 0 printed a line that is not a sample")
            && last.message.contains("hello"),
        "{}",
        last.message
    );
    // The run went on: the valid line after the garbage still arrived.
    assert!(
        events
            .iter()
            .any(|e| matches!(e, TrialEvent::Sample { .. })),
        "the sample after the garbage was lost"
    );
    assert_nothing_left("garbage", &trial);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_running_trials_and_kills_them() {
    if !common::privileged("shutdown") {
        return;
    }
    let (agent, mut client) = start("shutdown").await;
    let trial = conformance::trial(
        &common::native(),
        "cpu_spin",
        2,
        &[],
        Duration::from_secs(30),
        Duration::from_secs(60),
    );
    let mut stream = common::open_until_first_sample(&mut client, "r", &trial).await;
    let shutdown = tokio::spawn(agent.shutdown());
    let mut last = None;
    while let Some(Ok(event)) = stream.next().await {
        if let TrialEvent::Status(s) = event_from_proto(event).expect("event") {
            last = Some(s);
        }
    }
    let last = last.expect("a final status before the stream ended");
    assert_eq!(last.state, TrialState::Cancelled, "{}", last.message);
    shutdown.await.expect("shutdown task");
    assert_nothing_left("shutdown", &trial);
}

/// Issue 15 item 6: a client that stops reading (a paused coordinator, a half-open connection)
/// must not hold up the trial's deadline. A workload floods samples; the client reads until the
/// trial runs, then reads nothing for longer than the trial's timeout. The instances must be
/// gone by then although nobody read; the final status says the trial timed out and that events
/// were dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_does_not_hold_up_the_deadline() {
    if !common::privileged("slowclient") {
        return;
    }
    let (agent, _, _dir) = start_with_script(
        "slowclient",
        "sample-flood",
        "while :; do echo '{\"metric\":\"x\",\"value\":1,\"unit\":\"u\",\"higher_is_better\":true}'; done",
    )
    .await;
    // A 2 KiB receive window: what this client leaves unread stays within h2's budget for
    // buffered small DATA frames (25,600 bytes of framing overhead, h2 0.4.20). With the default
    // window the client's own h2 may close the connection (GOAWAY ENHANCE_YOUR_CALM,
    // `too_many_data_frames`) before the final status can be read; the agent's side is the same.
    let channel = tonic::transport::Endpoint::from_shared(agent.url())
        .expect("endpoint")
        .initial_stream_window_size(2048)
        .initial_connection_window_size(2048)
        .connect()
        .await
        .expect("connect");
    let mut client = AgentClient::new(channel);
    let trial = conformance::trial(
        &common::native(),
        "syscall",
        1,
        &[],
        Duration::from_secs(60),
        Duration::from_secs(2),
    );
    let mut stream = common::open_until_first_sample(&mut client, "r", &trial).await;
    // Read nothing for three times the timeout; the agent's buffers fill within milliseconds.
    let mut alive = common::processes(&trial, 0);
    for _ in 0..60 {
        if alive.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        alive = common::processes(&trial, 0);
    }
    assert!(
        alive.is_empty(),
        "the trial's processes outlived its 2 s timeout while the client did not read: {alive:?}"
    );
    let mut last = None;
    while let Some(Ok(event)) = stream.next().await {
        if let TrialEvent::Status(s) = event_from_proto(event).expect("event") {
            last = Some(s);
        }
    }
    let last = last.expect("a final status");
    assert_eq!(last.state, TrialState::TimedOut, "{}", last.message);
    assert!(last.message.contains("dropped"), "{}", last.message);
    assert_nothing_left("slowclient", &trial);
    agent.shutdown().await;
}
