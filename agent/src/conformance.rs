//! The conformance suite every backend's tests run: the same trials, the same expectations.
//!
//! Each `check_*` drives the backend through [`crate::runner::run_trial`] (as the agent does) with
//! a platform the caller gives (so a container test passes its runtime, a VM test its machine)
//! and asserts the outcome and that nothing is left: the final status lists no leak, the
//! leftover scan of the trial's cgroups and of the backend ([`Lifecycle::leftovers`]) is clean,
//! and no process of the trial is alive. The last check relies on a convention every backend
//! follows: each process it starts for a trial has `ISOLAB_TRIAL=<slug>` in its environment
//! ([`TRIAL_ENV`](isolab_backends::TRIAL_ENV)). They panic on failure, like asserts. It lives in
//! the agent (feature `testing`) because it drives the agent's runner; the trial fixtures are
//! `isolab_backends::testing`'s.
//!
//! ```no_run
//! # async fn demo(backend: &isolab_backends::AnyBackend, platform: isolab_model::pipeline::Platform) {
//! isolab_agent::conformance::check_all(backend, &platform).await;
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use isolab_model::pipeline::Platform;
use isolab_model::plan::Trial;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::core::{TrialEvent, TrialState, TrialStatus};
use crate::runner::{RunnerOptions, run_trial};
use isolab_backends::lifecycle::Lifecycle;
use isolab_backends::{Backend, TRIAL_ENV, TrialContext};

pub use isolab_backends::testing::{trial, unique_trial_id};

/// What a trial run produced.
#[derive(Debug)]
pub struct Observed {
    /// The attempt that ran.
    pub ctx: TrialContext,
    /// Every event, in order.
    pub events: Vec<TrialEvent>,
    /// The final status the runner returned.
    pub status: TrialStatus,
}

impl Observed {
    /// States of the status events, in order.
    pub fn states(&self) -> Vec<TrialState> {
        self.events
            .iter()
            .filter_map(TrialEvent::as_status)
            .map(|s| s.state)
            .collect()
    }

    /// Samples of instance `i`: (metric, value).
    pub fn samples(&self, i: u32) -> Vec<(String, f64)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                TrialEvent::Sample { instance, sample } if *instance == i => {
                    Some((sample.metric.clone(), sample.value))
                }
                _ => None,
            })
            .collect()
    }

    /// The final statistics of instance `i`.
    pub fn final_stats(&self, i: u32) -> Option<isolab_host::cgroup::CgroupStats> {
        self.events.iter().rev().find_map(|e| match e {
            TrialEvent::Stats {
                instance,
                stats,
                final_: true,
                ..
            } if *instance == i => Some(*stats),
            _ => None,
        })
    }
}

/// Runs `trial` on `backend`; `cancel_when` is asked about every event and cancels the trial
/// when it returns true.
pub async fn run<B: Backend>(
    backend: &B,
    trial: Trial,
    cancel_when: impl Fn(&TrialEvent) -> bool + Send + 'static,
) -> Observed {
    let ctx = TrialContext {
        run_id: "conformance".into(),
        trial: Arc::new(isolab_wire::TrialSpec::from(&trial)),
        attempt: 0,
    };
    let (tx, mut rx) = mpsc::channel(1024);
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    let consumer = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            if cancel_when(&e) {
                token.cancel();
            }
            events.push(e);
        }
        events
    });
    let opts = RunnerOptions {
        host: "conformance".into(),
        ..RunnerOptions::default()
    };
    let status = run_trial(backend, ctx.clone(), tx, cancel, &opts).await;
    let events = consumer.await.expect("event consumer");
    Observed {
        ctx,
        events,
        status,
    }
}

/// Pids of live processes whose environment names this trial attempt.
pub fn processes_of(ctx: &TrialContext) -> Vec<u32> {
    let needle = format!("{TRIAL_ENV}={}", ctx.slug()).into_bytes();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == needle.as_slice()))
        })
        .filter(|&pid| isolab_backends::process_alive(pid, None).is_some())
        .collect()
}

/// Asserts the trial left nothing: no leak reported, a clean leftover scan, no live process.
pub fn assert_clean<B: Backend>(backend: &B, o: &Observed) {
    assert!(
        o.status.leaks.is_empty(),
        "trial reported leaks: {:?}",
        o.status.leaks
    );
    let left = Lifecycle(backend).leftovers(&o.ctx);
    assert!(
        left.is_clean(),
        "leftovers after the trial: {:?}",
        left.lines()
    );
    let procs = processes_of(&o.ctx);
    assert!(
        procs.is_empty(),
        "processes of {} still alive: {procs:?}",
        o.ctx.slug()
    );
}

fn assert_lifecycle(o: &Observed, last: TrialState) {
    let states = o.states();
    assert_eq!(
        states.first(),
        Some(&TrialState::Preparing),
        "first status: {states:?}"
    );
    assert_eq!(
        states.last(),
        Some(&last),
        "final status {:?}: {}",
        o.status.state,
        o.status.message
    );
    assert_eq!(
        o.status.state, last,
        "returned status: {}",
        o.status.message
    );
}

/// One instance of `syscall` for 200 ms: Ok, plausible samples, final statistics.
pub async fn check_one_syscall<B: Backend>(backend: &B, platform: &Platform) -> Observed {
    let t = trial(
        platform,
        "syscall",
        1,
        &[],
        Duration::from_millis(200),
        Duration::from_secs(60),
    );
    let o = run(backend, t, |_| false).await;
    assert_lifecycle(&o, TrialState::Ok);
    assert!(o.states().contains(&TrialState::Running));
    let samples = o.samples(0);
    let ns = samples
        .iter()
        .find(|(m, _)| m == "ns_per_call")
        .map(|(_, v)| *v);
    assert!(
        ns.is_some_and(|v| v > 0.0 && v < 1e7),
        "ns_per_call: {ns:?} in {samples:?}"
    );
    assert!(o.final_stats(0).is_some(), "no final statistics");
    assert_clean(backend, &o);
    o
}

/// Three concurrent `cpu_spin` instances: each reports samples and used CPU.
pub async fn check_concurrent_cpu_spin<B: Backend>(backend: &B, platform: &Platform) -> Observed {
    let t = trial(
        platform,
        "cpu_spin",
        3,
        &[],
        Duration::from_millis(500),
        Duration::from_secs(60),
    );
    let o = run(backend, t, |_| false).await;
    assert_lifecycle(&o, TrialState::Ok);
    for i in 0..3 {
        let samples = o.samples(i);
        assert!(
            samples.iter().any(|(m, v)| m == "units_per_s" && *v > 0.0),
            "instance {i}: no positive units_per_s in {samples:?}"
        );
        let stats = o
            .final_stats(i)
            .unwrap_or_else(|| panic!("instance {i}: no final stats"));
        assert!(
            stats.cpu_usage_ns > 0,
            "instance {i} used no CPU: {stats:?}"
        );
    }
    assert_clean(backend, &o);
    o
}

/// A workload that refuses its parameters (exit 2): Failed, with the exit code and the reason.
pub async fn check_failing_workload<B: Backend>(backend: &B, platform: &Platform) -> Observed {
    let t = trial(
        platform,
        "syscall",
        1,
        &[("bogus", "1")],
        Duration::from_millis(200),
        Duration::from_secs(60),
    );
    let o = run(backend, t, |_| false).await;
    assert_lifecycle(&o, TrialState::Failed);
    let msg = &o.status.message;
    assert!(
        msg.contains("code 2") && msg.contains("bogus"),
        "failure message: {msg}"
    );
    assert_clean(backend, &o);
    o
}

/// A 10 s workload under a 1 s deadline: TimedOut, and killed.
pub async fn check_deadline<B: Backend>(backend: &B, platform: &Platform) -> Observed {
    let t = trial(
        platform,
        "cpu_spin",
        1,
        &[],
        Duration::from_secs(10),
        Duration::from_secs(1),
    );
    let o = run(backend, t, |_| false).await;
    assert_lifecycle(&o, TrialState::TimedOut);
    assert!(
        o.status.message.contains("deadline"),
        "message: {}",
        o.status.message
    );
    assert_clean(backend, &o);
    o
}

/// A 10 s workload cancelled once it reports its first sample: Cancelled, and killed.
pub async fn check_cancel<B: Backend>(backend: &B, platform: &Platform) -> Observed {
    let t = trial(
        platform,
        "cpu_spin",
        2,
        &[],
        Duration::from_secs(10),
        Duration::from_secs(60),
    );
    let o = run(backend, t, |e| matches!(e, TrialEvent::Sample { .. })).await;
    assert_lifecycle(&o, TrialState::Cancelled);
    assert_clean(backend, &o);
    o
}

/// A workload outside the catalog: prepare refuses it and nothing is made.
pub async fn check_unknown_workload<B: Backend>(backend: &B, platform: &Platform) -> Observed {
    let t = trial(
        platform,
        "rm_rf",
        1,
        &[],
        Duration::from_millis(100),
        Duration::from_secs(10),
    );
    let o = run(backend, t, |_| false).await;
    assert_lifecycle(&o, TrialState::Failed);
    assert!(
        o.status.message.contains("unknown workload"),
        "message: {}",
        o.status.message
    );
    assert!(
        !o.states().contains(&TrialState::Running),
        "an unknown workload was started"
    );
    assert_clean(backend, &o);
    o
}

/// A fork bomb under `pids` on `platform` is refused at the limit (pids limit hits counted) and
/// reports what it reached.
pub async fn check_fork_bomb<B: Backend>(backend: &B, platform: &Platform, pids: u64) -> Observed {
    let mut p = platform.clone();
    p.limits.pids = Some(pids);
    let secs = Duration::from_secs_f64;
    let o = run(
        backend,
        trial(&p, "fork_bomb", 1, &[], secs(1.0), secs(60.0)),
        |_| false,
    )
    .await;
    let stats = o.final_stats(0).expect("final stats");
    assert!(
        stats.pids_limit_hits >= 1,
        "fork bomb not refused: {stats:?}; {}",
        o.status.message
    );
    assert!(
        !o.samples(0).is_empty(),
        "the bomb reports what it reached: {}",
        o.status.message
    );
    o
}

/// A memory bomb under `limit_bytes` on `platform` is OOM-killed (counted and named in the
/// message), its peak at most the limit.
pub async fn check_memory_bomb<B: Backend>(
    backend: &B,
    platform: &Platform,
    limit_bytes: u64,
) -> Observed {
    let mut p = platform.clone();
    p.limits.memory = Some(isolab_model::units::Bytes(limit_bytes));
    let secs = Duration::from_secs_f64;
    let o = run(
        backend,
        trial(&p, "memory_bomb", 1, &[], secs(5.0), secs(60.0)),
        |_| false,
    )
    .await;
    let stats = o.final_stats(0).expect("final stats");
    assert!(
        stats.oom_kills >= 1,
        "no OOM kill counted: {stats:?}; {}",
        o.status.message
    );
    assert!(
        o.status.message.contains("out of memory"),
        "message: {}",
        o.status.message
    );
    assert!(
        stats.memory_peak_bytes <= limit_bytes,
        "peak above the limit: {stats:?}"
    );
    o
}

/// A fork bomb (pids 128) and a memory bomb (64 MiB) on `platform` are each contained
/// ([`check_fork_bomb`], [`check_memory_bomb`], both limits set), then a plain trial runs clean;
/// `leftovers` checks each trial's teardown (the backend's own look at what may remain).
pub async fn check_bombs_contained<B: Backend>(
    backend: &B,
    platform: &Platform,
    leftovers: impl Fn(&Observed),
) {
    let mut p = platform.clone();
    p.limits.pids = Some(128);
    p.limits.memory = Some(isolab_model::units::Bytes(64 << 20));
    leftovers(&check_fork_bomb(backend, &p, 128).await);
    leftovers(&check_memory_bomb(backend, &p, 64 << 20).await);
    let secs = Duration::from_secs_f64;
    let o = run(
        backend,
        trial(&p, "syscall", 1, &[], secs(0.2), secs(60.0)),
        |_| false,
    )
    .await;
    assert_eq!(o.status.state, TrialState::Ok, "{}", o.status.message);
    leftovers(&o);
}

/// Every check, one after the other.
pub async fn check_all<B: Backend>(backend: &B, platform: &Platform) {
    check_one_syscall(backend, platform).await;
    check_concurrent_cpu_spin(backend, platform).await;
    check_failing_workload(backend, platform).await;
    check_deadline(backend, platform).await;
    check_cancel(backend, platform).await;
    check_unknown_workload(backend, platform).await;
}
