//! Issue 15 item 5, the coordinator's side: a trial the agent refuses because it is over the
//! agent's host budget (gRPC RESOURCE_EXHAUSTED) is a failed trial with the agent's reason, at
//! once and retried only as the pipeline's `retries` say; not a lost agent, not a hang.
//!
//! Needs root (cgroups) and the `isolab-workload` binary; off CI without them it is skipped with
//! a printed reason.

mod common;

use std::time::Duration;

use common::{can_run, manifest};
use isolab_agent::budget::BudgetConfig;
use isolab_agent::config::AgentConfig;
use isolab_agent::serve::spawn_local;
use isolab_coordinator::run::{RunOptions, run};
use isolab_model::manifest::TrialState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trial_over_the_agents_budget_fails_with_the_agents_reason() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let agent = spawn_local(AgentConfig {
        cgroup_prefix: "isolab-test-coordinator-budget".into(),
        budget: BudgetConfig {
            memory_bytes: Some(64 << 20),
            ..BudgetConfig::default()
        },
        ..AgentConfig::default()
    })
    .await
    .expect("agent");
    let text = "apiVersion: isolab/v1\nkind: Pipeline\nname: budget\n\
        defaults: { repetitions: 1, warmup: 0, duration: 200ms, retries: 1 }\n\
        platforms:\n  native: { backend: native, limits: { memory: 512MiB } }\n\
        experiments:\n  - { name: micro, analysis: overhead, platforms: [native], workloads: [syscall] }\n";
    let pipeline = tmp.path().join("budget.yaml");
    std::fs::write(&pipeline, text).expect("write pipeline");
    let opts = RunOptions {
        pipeline,
        results: tmp.path().join("results"),
        agents: vec![agent.url()],
        ..RunOptions::default()
    };
    let (_tx, rx) = tokio::sync::watch::channel(false);
    // Bounds the test itself: a refusal must end the run, not hang it.
    let outcome = tokio::time::timeout(Duration::from_secs(120), run(&opts, rx))
        .await
        .expect("the run ended")
        .expect("the run itself works");
    assert_eq!((outcome.ok, outcome.failed), (0, 1), "{outcome:?}");
    let m = manifest(&outcome.run_dir);
    let t = &m.trials[0];
    assert_eq!(t.status, TrialState::Failed);
    assert_eq!(
        t.attempts, 2,
        "one retry, as the pipeline says, then failed"
    );
    let reason = t.reason.as_deref().unwrap_or_default();
    for part in [
        "refused the trial (ResourceExhausted)",
        "host budget exceeded: memory limits: the trial asks 512MiB",
        "budget 64MiB",
    ] {
        assert!(reason.contains(part), "{part}: {reason}");
    }
    assert!(!reason.contains("lost contact"), "{reason}");
    agent.shutdown().await;
}
