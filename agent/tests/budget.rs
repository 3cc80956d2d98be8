//! The host-wide budget over real gRPC on 127.0.0.1:0 with native trials (root, real cgroups):
//! a trial beyond it is refused at once with RESOURCE_EXHAUSTED and nothing of it is made; a
//! second trial that does not fit beside a running one is refused and admitted once the first
//! ended (cancelled, failed or timed out); the agent's cgroup directory carries the budget.

mod common;

use std::time::Duration;

use futures::StreamExt;
use isolab_agent::budget::{Ask, BudgetConfig};
use isolab_agent::config::AgentConfig;
use isolab_agent::conformance;
use isolab_agent::core::{AgentCore, TrialEvent, TrialState};
use isolab_agent::serve::serve_core;
use isolab_host::cgroup::{CgroupVersion, Controller};
use isolab_model::pipeline::{Limits, Platform};
use isolab_model::plan::Trial;
use isolab_model::units::Bytes;
use isolab_proto::v1 as pb;
use isolab_proto::v1::agent_client::AgentClient;
use isolab_wire::convert::{event_from_proto, trial_to_proto};
use tokio::sync::oneshot;
use tonic::transport::Channel;

const MIB: u64 = 1 << 20;

/// An agent core served over gRPC, with the core kept for looking at its budget.
struct Served {
    core: AgentCore,
    client: AgentClient<Channel>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), isolab_agent::serve::ServeError>>,
}

impl Served {
    async fn start(test: &str, budget: BudgetConfig) -> Self {
        let config = AgentConfig {
            budget,
            ..common::config(test)
        };
        let core = AgentCore::new(config).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_core(core.clone(), listener, async move {
            let _ = stopped.await;
        }));
        let client = AgentClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        Self {
            core,
            client,
            stop,
            task,
        }
    }

    async fn shutdown(self) {
        let _ = self.stop.send(());
        self.task.await.expect("server task").expect("served");
    }

    /// Trial cgroups under this agent's directory.
    fn trial_cgroups(&self) -> Vec<String> {
        let m = self.core.cgroup_manager().expect("cgroups");
        let dir = self.core.cgroup_dir().expect("agent dir");
        assert!(m.exists(dir), "the agent's directory exists");
        m.list(dir)
    }
}

fn native_with_memory(memory_bytes: u64) -> Platform {
    Platform {
        limits: Limits {
            memory: Some(Bytes(memory_bytes)),
            ..Limits::default()
        },
        ..common::native()
    }
}

fn spin(memory_bytes: u64, duration: Duration, timeout: Duration) -> Trial {
    conformance::trial(
        &native_with_memory(memory_bytes),
        "cpu_spin",
        1,
        &[],
        duration,
        timeout,
    )
}

/// Reads `stream` to its end; the final state and message.
async fn finish(stream: tonic::Streaming<pb::TrialEvent>) -> (TrialState, String) {
    let events: Vec<TrialEvent> = stream
        .map(|e| event_from_proto(e.expect("event")).expect("event"))
        .collect()
        .await;
    let last = events
        .iter()
        .rev()
        .find_map(TrialEvent::as_status)
        .expect("a final status");
    (last.state, last.message.clone())
}

/// Runs `trial` to its end.
async fn run_to_end(client: &mut AgentClient<Channel>, trial: &Trial) -> (TrialState, String) {
    let stream = client
        .run_trial(trial_to_proto("r", trial, 0))
        .await
        .expect("RunTrial admitted")
        .into_inner();
    finish(stream).await
}

async fn cancel(client: &mut AgentClient<Channel>, trial: &Trial) {
    let found = client
        .cancel(pb::CancelRequest {
            trial_id: trial.id.clone(),
        })
        .await
        .expect("Cancel")
        .into_inner()
        .found;
    assert!(found, "the running trial was found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trial_over_the_memory_budget_is_refused_and_nothing_is_made() {
    if !common::privileged("budget_over") {
        return;
    }
    let budget = BudgetConfig {
        memory_bytes: Some(256 * MIB),
        ..BudgetConfig::default()
    };
    let mut s = Served::start("budget-over", budget).await;
    let trial = spin(
        512 * MIB,
        Duration::from_millis(200),
        Duration::from_secs(30),
    );
    let err = s
        .client
        .run_trial(trial_to_proto("r", &trial, 0))
        .await
        .expect_err("a trial above the budget must be refused");
    assert_eq!(
        err.code(),
        tonic::Code::ResourceExhausted,
        "{}",
        err.message()
    );
    for part in [
        "memory limits",
        "asks 512MiB",
        "0 in use",
        "budget 256MiB",
        "--budget-memory",
        "never fit",
    ] {
        assert!(err.message().contains(part), "{part}: {}", err.message());
    }
    assert!(s.trial_cgroups().is_empty(), "{:?}", s.trial_cgroups());
    assert!(
        common::processes(&trial, 0).is_empty(),
        "no process of the trial"
    );
    let scratch = std::env::temp_dir()
        .join("isolab-scratch")
        .join(s.core.cgroup_dir().expect("dir"))
        .join(format!("{}-a0", trial.id));
    assert!(!scratch.exists(), "{} was made", scratch.display());
    assert_eq!(s.core.budget_in_use(), Ask::default());
    let text = s.core.metrics().encode();
    assert!(
        text.contains("isolab_agent_trials_finished_total{status=\"refused\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("isolab_agent_budget{resource=\"memory_bytes\"} 268435456"),
        "{text}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_trial_that_does_not_fit_is_refused_until_the_first_ends() {
    if !common::privileged("budget_two") {
        return;
    }
    let budget = BudgetConfig {
        memory_bytes: Some(GIB_1),
        ..BudgetConfig::default()
    };
    let mut s = Served::start("budget-two", budget).await;
    let second = spin(
        512 * MIB,
        Duration::from_millis(200),
        Duration::from_secs(60),
    );
    let first = spin(768 * MIB, Duration::from_secs(60), Duration::from_secs(120));
    let stream = common::open_until_first_sample(&mut s.client, "r", &first).await;
    assert_eq!(s.core.budget_in_use().memory_bytes, 768 * MIB);
    let text = s.core.metrics().encode();
    assert!(
        text.contains("isolab_agent_memory_limits_committed_bytes 805306368"),
        "the committed memory is the instances' limits: {text}"
    );
    let err = s
        .client
        .run_trial(trial_to_proto("r", &second, 0))
        .await
        .expect_err("768MiB + 512MiB is over the 1GiB budget");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(
        err.message().contains("asks 512MiB, 768MiB in use") && !err.message().contains("never"),
        "{}",
        err.message()
    );
    cancel(&mut s.client, &first).await;
    let (state, message) = finish(stream).await;
    assert_eq!(state, TrialState::Cancelled, "{message}");
    // Given back before the final status was sent: the same trial is admitted at once.
    assert_eq!(s.core.budget_in_use(), Ask::default());
    let (state, message) = run_to_end(&mut s.client, &second).await;
    assert_eq!(state, TrialState::Ok, "{message}");
    // A trial that fails, and one that times out, give their part back too.
    let failing = conformance::trial(
        &native_with_memory(768 * MIB),
        "cpu_spin",
        1,
        &[("bogus", "1")],
        Duration::from_secs(60),
        Duration::from_secs(120),
    );
    let timing_out = spin(768 * MIB, Duration::from_secs(60), Duration::from_secs(1));
    for (trial, ends) in [
        (&failing, TrialState::Failed),
        (&timing_out, TrialState::TimedOut),
    ] {
        let (state, message) = run_to_end(&mut s.client, trial).await;
        assert_eq!(state, ends, "{message}");
        assert_eq!(s.core.budget_in_use(), Ask::default(), "after {ends:?}");
        let (state, message) = run_to_end(&mut s.client, &second).await;
        assert_eq!(state, TrialState::Ok, "after {ends:?}: {message}");
    }
    assert!(s.trial_cgroups().is_empty(), "{:?}", s.trial_cgroups());
    s.shutdown().await;
}

const GIB_1: u64 = 1 << 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trials_in_flight_are_capped() {
    if !common::privileged("budget_trials") {
        return;
    }
    let budget = BudgetConfig {
        max_trials: 1,
        ..BudgetConfig::default()
    };
    let mut s = Served::start("budget-trials", budget).await;
    let first = spin(64 * MIB, Duration::from_secs(60), Duration::from_secs(120));
    let stream = common::open_until_first_sample(&mut s.client, "r", &first).await;
    let other = spin(
        64 * MIB,
        Duration::from_millis(100),
        Duration::from_secs(60),
    );
    let err = s
        .client
        .run_trial(trial_to_proto("r", &other, 0))
        .await
        .expect_err("one trial at a time");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(
        err.message().contains("trials") && err.message().contains("--max-trials"),
        "{}",
        err.message()
    );
    cancel(&mut s.client, &first).await;
    assert_eq!(finish(stream).await.0, TrialState::Cancelled);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_cgroup_carries_the_budget_on_the_real_hierarchy() {
    if !common::privileged("budget_dir") {
        return;
    }
    let budget = BudgetConfig {
        memory_bytes: Some(3 * GIB_1),
        pids: Some(5000),
        ..BudgetConfig::default()
    };
    let config = AgentConfig {
        budget,
        ..common::config("budget-dir")
    };
    let core = AgentCore::new(config).await;
    let m = core.cgroup_manager().expect("cgroups");
    let dir = core.cgroup_dir().expect("agent dir");
    let read = |c: Controller, file: &str| {
        let path = m
            .own_dir(c)
            .expect("controller mounted")
            .join(dir)
            .join(file);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_owned()
    };
    let (memory_file, own_memory) = match m.version() {
        CgroupVersion::V1 => ("memory.limit_in_bytes", "3221225472"),
        CgroupVersion::V2 => ("memory.max", "3221225472"),
    };
    assert_eq!(read(Controller::Memory, memory_file), own_memory);
    assert_eq!(read(Controller::Pids, "pids.max"), "5000");
    let b = core.budget();
    assert_eq!((b.memory_bytes, b.pids), (3 * GIB_1, 5000));
    let caps = core.capabilities().await;
    let reported = caps.budget.expect("capabilities carry the budget");
    assert_eq!(
        (reported.memory_bytes, reported.pids, reported.max_trials),
        (3 * GIB_1, 5000, 16)
    );
    core.shutdown(Duration::from_secs(5)).await;
}
