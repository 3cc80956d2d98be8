//! Measurements for `just bench` (called by `isolab-bench`): what the agent adds to a
//! container's life, and how many idle containers this host keeps alive at once.
//!
//! - [`start_times`]: container start → first sample → gone, alternately (a) one `idle` trial
//!   through the runner and this backend (prepare with bundle and rootfs, start, samples,
//!   statistics, stop, teardown, leak check) and (b) a bare `<runtime> run` of the identical
//!   bundle (the same `config.json` and rootfs, prepared once by the backend), spawn to exit.
//!   The ratio of their medians is the agent's overhead on a container (goal ≤ 1.10).
//! - [`max_alive`]: trials of `n` idle containers, each with its own cgroups and limits, for `n`
//!   in growing steps up to a bound; a step succeeds when every container printed its first
//!   sample, then the trial is cancelled and torn down (leak check included). Stops at the
//!   first failure (goal ≥ 1,000).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use isolab_model::pipeline::{BackendKind, Limits, Platform};
use isolab_model::units::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::timed;
use crate::conformance;
use crate::core::{TrialEvent, TrialState};
use isolab_backends::TrialContext;
use isolab_backends::container::ContainerBackend;
use isolab_backends::lifecycle::Lifecycle;

/// The workload every measurement here runs: it prints `awake` at once and then sleeps.
const IDLE: &str = "idle";
/// Rounds of each side run first and not counted (caches, the runtime binary's pages, the
/// spawner and blocking threads), as hyperfine's `--warmup`.
const WARMUP_ROUNDS: u32 = 3;
/// How long one measured container may take before it counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Memory limit of each idle container in [`max_alive`] (its own cgroup limit).
const IDLE_MEMORY: Bytes = Bytes(64 << 20);
/// Pids limit of each idle container in [`max_alive`].
const IDLE_PIDS: u64 = 16;

/// A container platform on `runtime` with `limits`, no network, the minimal rootfs.
pub fn platform(runtime: &str, limits: Limits) -> Platform {
    Platform {
        backend: BackendKind::Container,
        runtime: Some(runtime.to_owned()),
        runtime_args: Vec::new(),
        rootfs: None,
        network: None,
        limits,
        vcpus: None,
        memory: None,
        accel: None,
        machine: None,
    }
}

/// Start → first sample → gone of one container, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StartTimes {
    /// Through the agent: to the first sample.
    pub agent_first_ms: Vec<f64>,
    /// Through the agent: until the runner returned (teardown and leak check included).
    pub agent_gone_ms: Vec<f64>,
    /// Bare runtime: spawn to the first sample line.
    pub bare_first_ms: Vec<f64>,
    /// Bare runtime: spawn until `<runtime> run` exited.
    pub bare_gone_ms: Vec<f64>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `rounds` alternating rounds of one container through the agent and one bare `run` of the
/// identical bundle, on `platform`, after [`WARMUP_ROUNDS`] not counted.
pub async fn start_times(
    backend: &ContainerBackend,
    platform: &Platform,
    rounds: u32,
) -> Result<StartTimes, String> {
    let bare_trial = conformance::trial(
        platform,
        IDLE,
        1,
        &[],
        Duration::from_millis(1),
        START_TIMEOUT,
    );
    let ctx = TrialContext {
        run_id: "bench".into(),
        trial: Arc::new(isolab_wire::TrialSpec::from(&bare_trial)),
        attempt: 0,
    };
    let prepared = Lifecycle(backend)
        .prepare(&ctx)
        .await
        .map_err(|e| e.to_string())?;
    let result = async {
        let bundle = prepared
            .backend
            .bundles()
            .into_iter()
            .next()
            .ok_or("no bundle was prepared")?;
        let mut times = StartTimes::default();
        for round in 0..WARMUP_ROUNDS + rounds {
            let measured = round >= WARMUP_ROUNDS;
            // Alternate which goes first, so drift hits both alike.
            for agent_turn in [round % 2 == 0, round % 2 != 0] {
                if agent_turn {
                    let (first, gone) = through_agent(backend, platform).await?;
                    if measured {
                        times.agent_first_ms.push(ms(first));
                        times.agent_gone_ms.push(ms(gone));
                    }
                } else {
                    let (first, gone) = bare(&prepared.backend, &bundle, round).await?;
                    if measured {
                        times.bare_first_ms.push(ms(first));
                        times.bare_gone_ms.push(ms(gone));
                    }
                }
            }
        }
        Ok(times)
    }
    .await;
    let leaks = Lifecycle(backend).teardown(prepared).await;
    match result {
        Ok(_) if !leaks.is_clean() => Err(format!("bare containers left: {leaks:?}")),
        other => other,
    }
}

/// One `idle` trial through the runner: (first sample, gone).
async fn through_agent(
    backend: &ContainerBackend,
    platform: &Platform,
) -> Result<(Duration, Duration), String> {
    let trial = conformance::trial(
        platform,
        IDLE,
        1,
        &[],
        Duration::from_millis(1),
        START_TIMEOUT,
    );
    let t = timed(backend, trial, |_| false).await;
    match (t.status.state, t.first_sample) {
        (TrialState::Ok, Some(first)) => Ok((first, t.total)),
        _ => Err(format!("container trial: {}", t.failure())),
    }
}

/// One bare `<runtime> run --bundle <bundle> <id>` (no `--keep`: the runtime removes the
/// container when it ends): (first sample line, exit).
async fn bare(
    prepared: &isolab_backends::container::ContainerPrepared,
    bundle: &Path,
    round: u32,
) -> Result<(Duration, Duration), String> {
    let runtime = prepared.runtime();
    let mut cmd = tokio::process::Command::new(runtime.program());
    cmd.args(runtime.global_args())
        .arg("run")
        .arg("--bundle")
        .arg(bundle)
        .arg(prepared.spare_id(round))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", runtime.program().display()))?;
    let (out, mut err) = (child.stdout.take(), child.stderr.take());
    let work = async {
        let mut first = None;
        if let Some(out) = out {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(_)) = lines.next_line().await {
                first.get_or_insert_with(|| started.elapsed());
            }
        }
        let mut e = String::new();
        if let Some(s) = err.as_mut() {
            let _ = s.read_to_string(&mut e).await;
        }
        (first, child.wait().await, e)
    };
    let (first, status, stderr) = tokio::time::timeout(START_TIMEOUT, work)
        .await
        .map_err(|_| "bare container did not end in time".to_owned())?;
    let gone = started.elapsed();
    match (first, status) {
        (Some(first), Ok(s)) if s.success() => Ok((first, gone)),
        (_, s) => Err(format!(
            "bare container failed ({s:?}): {}",
            isolab_backends::last_lines(&stderr, 3)
        )),
    }
}

/// One step of [`max_alive`].
#[derive(Debug, Clone, PartialEq)]
pub struct AliveStep {
    /// Containers asked for.
    pub n: u32,
    /// Whether all of them printed their first sample (and the trial ended clean).
    pub ok: bool,
    /// From the call until the last container's first sample, in seconds.
    pub all_awake_s: f64,
    /// Mean cgroup memory per container while all were alive, in KiB.
    pub memory_per_container_kib: f64,
    /// Why the step failed (empty when it did not).
    pub error: String,
}

/// The steps of [`max_alive`] up to `bound`: 128, 256, 512, … (or just `bound` when smaller).
pub fn alive_steps(bound: u32) -> Vec<u32> {
    let mut steps = Vec::new();
    let mut n = 128u32.min(bound.max(1));
    while n <= bound {
        steps.push(n);
        match n.checked_mul(2) {
            Some(next) => n = next,
            None => break,
        }
    }
    if steps.last().is_some_and(|&l| l < bound) {
        steps.push(bound);
    }
    steps
}

/// Trials of `n` idle containers (memory and pids limits of their own) for each of
/// [`alive_steps`]`(bound)`, stopping at the first that fails. Every trial is torn down
/// (and leak-checked by the runner) before the next.
pub async fn max_alive(backend: &ContainerBackend, runtime: &str, bound: u32) -> Vec<AliveStep> {
    let limits = Limits {
        memory: Some(IDLE_MEMORY),
        pids: Some(IDLE_PIDS),
        ..Limits::default()
    };
    let platform = platform(runtime, limits);
    let mut steps = Vec::new();
    for n in alive_steps(bound) {
        let step = alive_step(backend, &platform, n).await;
        let ok = step.ok;
        steps.push(step);
        if !ok {
            break;
        }
    }
    steps
}

async fn alive_step(backend: &ContainerBackend, platform: &Platform, n: u32) -> AliveStep {
    // Long enough to outlive any start; the trial is cancelled once all are awake.
    let timeout = START_TIMEOUT + Duration::from_millis(100) * n;
    let trial = conformance::trial(platform, IDLE, n, &[], timeout * 2, timeout);
    let mut awake = std::collections::BTreeSet::new();
    let target = usize::try_from(n).unwrap_or(usize::MAX);
    let started = Instant::now();
    let all_awake = Arc::new(std::sync::Mutex::new(None));
    let seen = Arc::clone(&all_awake);
    // Instances with a statistics reading since all were awake: the trial is cancelled once
    // every instance has one, so the memory below is never missing (at 8 instances all wake
    // within one statistics interval; on a loaded host none had a reading yet).
    let mut measured = std::collections::BTreeSet::new();
    let t = timed(backend, trial, move |e| {
        match e {
            TrialEvent::Sample { instance, .. } if awake.len() < target => {
                awake.insert(*instance);
                if awake.len() == target {
                    *seen
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some(started.elapsed());
                }
            }
            TrialEvent::Stats {
                instance,
                final_: false,
                ..
            } if awake.len() == target => {
                measured.insert(*instance);
            }
            _ => {}
        }
        measured.len() == target
    })
    .await;
    let all_awake = *all_awake
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // The last statistics each instance had before the cancel.
    let mut memory: BTreeMap<u32, u64> = BTreeMap::new();
    for e in &t.events {
        if let TrialEvent::Stats {
            instance,
            stats,
            final_: false,
            ..
        } = e
        {
            memory.insert(*instance, stats.memory_current_bytes);
        }
    }
    let mean_kib = if memory.is_empty() {
        f64::NAN
    } else {
        memory.values().map(|&b| b as f64).sum::<f64>() / memory.len() as f64 / 1024.0
    };
    let clean = t.status.leaks.is_empty();
    let (ok, error) = match (all_awake, t.status.state) {
        (Some(_), TrialState::Cancelled) if clean => (true, String::new()),
        (Some(_), _) => (false, format!("all started, but: {}", t.failure())),
        (None, _) => (false, t.failure()),
    };
    AliveStep {
        n,
        ok,
        all_awake_s: all_awake.map_or(f64::NAN, |d| d.as_secs_f64()),
        memory_per_container_kib: mean_kib,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_double_from_128_and_end_at_the_bound() {
        assert_eq!(alive_steps(1024), [128, 256, 512, 1024]);
        assert_eq!(alive_steps(1500), [128, 256, 512, 1024, 1500]);
        assert_eq!(alive_steps(8), [8]);
        assert_eq!(alive_steps(0), Vec::<u32>::new());
    }
}
