//! [`run_trial`]: one trial from Preparing to its final status.
//!
//! Spans: `trial` (id, attempt, backend) with the phases `prepare`, `run` (holding `start`, the
//! watch loop and the stop) and `teardown` as children.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use isolab_model::plan::Role;
use isolab_model::sample::Sample;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::RunnerOptions;
use super::collect::{self, StdoutSummary};
use super::noise;
use super::outcome::{InstanceReport, Interrupt, Outcome};
use crate::budget::Reservation;
use crate::core::{TrialEvent, TrialState, TrialStatus};
use isolab_backends::InstanceExit;
use isolab_backends::lifecycle::{Lifecycle, Planned, Prepared};
use isolab_backends::{Backend, Leak, LeakReport, TrialContext, process_alive, process_start_time};
use isolab_host::cgroup::CgroupStats;

/// A started instance's main process: pid and start time, to check it is gone at the end.
type ProcessId = (u32, Option<u64>);

/// The span every event and log line of one trial attempt is recorded under.
fn trial_span<B: Backend>(backend: &B, ctx: &TrialContext) -> tracing::Span {
    tracing::info_span!(
        "trial",
        id = %ctx.trial.id,
        attempt = ctx.attempt,
        backend = backend.name(),
        instances = ctx.trial.instances.len()
    )
}

/// Runs one trial on `backend`, sending every event to `events` (the last one is the final
/// status, which is also returned). Cancelling `cancel`, or dropping the receiver of `events`,
/// stops the trial; teardown always runs.
pub async fn run_trial<B: Backend>(
    backend: &B,
    ctx: TrialContext,
    events: mpsc::Sender<TrialEvent>,
    cancel: CancellationToken,
    opts: &RunnerOptions,
) -> TrialStatus {
    let span = trial_span(backend, &ctx);
    run(backend, ctx, None, None, events, cancel, opts)
        .instrument(span)
        .await
}

/// [`run_trial`] with the cgroup plan and instance limits computed at admission (the agent's
/// core), or the reason there are none (reported as the trial's prepare error), and the trial's
/// part of the host budget: given back once the teardown is done, before the final status is
/// sent (a client that starts its next trial on it finds the budget free).
pub async fn run_planned<B: Backend>(
    backend: &B,
    ctx: TrialContext,
    planned: Result<Planned, String>,
    reservation: Reservation,
    events: mpsc::Sender<TrialEvent>,
    cancel: CancellationToken,
    opts: &RunnerOptions,
) -> TrialStatus {
    let span = trial_span(backend, &ctx);
    run(
        backend,
        ctx,
        Some(planned),
        Some(reservation),
        events,
        cancel,
        opts,
    )
    .instrument(span)
    .await
}

async fn run<B: Backend>(
    backend: &B,
    ctx: TrialContext,
    planned: Option<Result<Planned, String>>,
    reservation: Option<Reservation>,
    events: mpsc::Sender<TrialEvent>,
    cancel: CancellationToken,
    opts: &RunnerOptions,
) -> TrialStatus {
    let deadline = Instant::now() + ctx.trial.timeout.0;
    let status = |state, message: String, accel: Option<String>, leaks: Vec<String>| TrialStatus {
        state,
        message,
        host: opts.host.clone(),
        accel,
        leaks,
    };
    let _ = events
        .send(TrialEvent::Status(status(
            TrialState::Preparing,
            String::new(),
            None,
            vec![],
        )))
        .await;
    let mut outcome = Outcome {
        timeout_text: ctx.trial.timeout.to_string(),
        ..Outcome::default()
    };
    let mut accel = None;
    let life = Lifecycle(backend);
    let prepared = async {
        match planned {
            None => life.prepare(&ctx).await.map_err(|e| e.to_string()),
            Some(Ok(planned)) => life
                .prepare_planned(&ctx, planned)
                .await
                .map_err(|e| e.to_string()),
            Some(Err(e)) => Err(e),
        }
    };
    match prepared.instrument(tracing::info_span!("prepare")).await {
        Err(e) => {
            outcome.errors.push(format!("prepare: {e}"));
            outcome.leaks = life.leftovers(&ctx);
        }
        Ok(mut prepared) => {
            let ids = {
                let mut loop_ = RunLoop {
                    last_stats: BTreeMap::new(),
                    adversaries: ctx
                        .trial
                        .instances
                        .iter()
                        .filter(|i| i.role == Role::Adversary)
                        .map(|i| i.index)
                        .collect(),
                    life: &life,
                    prepared: &mut prepared,
                    events: &events,
                    opts,
                    outcome: &mut outcome,
                };
                loop_
                    .run(&cancel, deadline, &mut accel)
                    .instrument(tracing::info_span!("run"))
                    .await
            };
            // The teardown's report holds the leftover scan of cgroups and backend.
            let mut leaks = life
                .teardown(prepared)
                .instrument(tracing::info_span!("teardown"))
                .await;
            let mut alive = LeakReport::default();
            for (pid, started) in ids {
                if let Some(comm) = process_alive(pid, started) {
                    alive.push(Leak::Process { pid, comm });
                }
            }
            leaks.merge(alive);
            outcome.leaks = leaks;
        }
    }
    let (state, message) = outcome.verdict();
    match state {
        TrialState::Ok => tracing::info!("trial ended: {message}"),
        _ => tracing::warn!(state = %state, "trial ended: {message}"),
    }
    let last = status(state, message, accel, outcome.leaks.lines());
    // Torn down: the trial's part of the budget is free again.
    drop(reservation);
    let _ = events.send(TrialEvent::Status(last.clone())).await;
    last
}

/// The part of a trial between prepare and teardown.
struct RunLoop<'a, B: Backend> {
    life: &'a Lifecycle<'a, B>,
    prepared: &'a mut Prepared<B::Prepared>,
    events: &'a mpsc::Sender<TrialEvent>,
    opts: &'a RunnerOptions,
    outcome: &'a mut Outcome,
    /// Indices of the isolation adversaries.
    adversaries: BTreeSet<u32>,
    /// Each instance's latest periodic statistics, with their time: the final statistics when
    /// the runtime removed the cgroup as the instance ended (crun and runsc have no
    /// `run --keep`).
    last_stats: BTreeMap<u32, (f64, CgroupStats)>,
}

/// The readers of one instance's output.
struct Readers {
    index: u32,
    stdout: JoinHandle<StdoutSummary>,
    stderr: JoinHandle<Vec<String>>,
}

impl<B: Backend> RunLoop<'_, B> {
    /// Starts, watches and stops the instances; returns their main processes.
    async fn run(
        &mut self,
        cancel: &CancellationToken,
        deadline: Instant,
        accel: &mut Option<String>,
    ) -> Vec<ProcessId> {
        if let Some(why) = self.interrupted(cancel, deadline) {
            self.outcome.interrupt = Some(why);
            return Vec::new();
        }
        let launch = match self
            .life
            .start(self.prepared)
            .instrument(tracing::info_span!("start"))
            .await
        {
            Ok(launch) => launch,
            Err(e) => {
                self.outcome.errors.push(format!("start: {e}"));
                self.stop().await;
                return Vec::new();
            }
        };
        let started = Instant::now();
        let cpu_at_start = noise::CpuSnapshot::now();
        accel.clone_from(&launch.accel);
        let ids: Vec<ProcessId> = launch
            .instances
            .iter()
            .filter_map(|h| h.pid.map(|pid| (pid, process_start_time(pid))))
            .collect();
        let n = launch.instances.len();
        let running = TrialStatus {
            state: TrialState::Running,
            message: format!("{n} instance(s) started"),
            host: self.opts.host.clone(),
            accel: launch.accel.clone(),
            leaks: vec![],
        };
        let _ = self.events.send(TrialEvent::Status(running)).await;

        let mut reports = BTreeMap::new();
        let mut readers = Vec::with_capacity(n);
        let mut exits = FuturesUnordered::new();
        for h in launch.instances {
            let index = h.index;
            readers.push(Readers {
                index,
                stdout: tokio::spawn(collect::stdout(index, h.stdout, self.events.clone())),
                stderr: tokio::spawn(collect::stderr(index, h.stderr, self.events.clone())),
            });
            let exit = h.exit;
            exits.push(async move { (index, exit.await) });
            reports.insert(
                index,
                InstanceReport {
                    index,
                    exit: None,
                    samples: 0,
                    bad_output: None,
                    stderr_tail: vec![],
                    adversary: self.adversaries.contains(&index),
                },
            );
        }
        // The first reading one interval in: at once it would only find zeros (or no cgroup yet,
        // while the runtime makes it), and take CPU from the instances that are starting.
        let mut tick = tokio::time::interval_at(
            Instant::now() + self.opts.stats_interval,
            self.opts.stats_interval,
        );
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        while !exits.is_empty() {
            tokio::select! {
                biased;
                () = cancel.cancelled() => { self.outcome.interrupt = Some(Interrupt::Cancelled); break }
                () = tokio::time::sleep_until(deadline) => { self.outcome.interrupt = Some(Interrupt::TimedOut); break }
                () = self.events.closed() => { self.outcome.interrupt = Some(Interrupt::Abandoned); break }
                Some((index, exit)) = exits.next() => {
                    tracing::debug!(instance = index, "instance {exit}");
                    if let Some(r) = reports.get_mut(&index) { r.exit = Some(exit) }
                }
                _ = tick.tick() => {
                    let live: Vec<u32> = reports.values().filter(|r| r.exit.is_none()).map(|r| r.index).collect();
                    self.send_stats(&live, started, false).await;
                }
            }
        }
        let cpu_at_end = noise::CpuSnapshot::now();
        let span = started.elapsed();
        // Instances that ended on their own (or by the kernel), before the agent stopped anything.
        let ended_alone: BTreeSet<u32> = reports
            .values()
            .filter(|r| r.exit.is_some())
            .map(|r| r.index)
            .collect();
        // Kill whatever still runs: everything when interrupted, stragglers otherwise.
        self.stop().await;
        let kill_deadline = Instant::now() + self.opts.kill_wait;
        while let Ok(Some((index, exit))) =
            tokio::time::timeout_at(kill_deadline, exits.next()).await
        {
            if let Some(r) = reports.get_mut(&index) {
                r.exit = Some(exit);
            }
        }
        self.drain(readers, &mut reports).await;
        // An adversary the agent had to stop has no outcome of its own to report.
        for r in reports
            .values_mut()
            .filter(|r| r.adversary && ended_alone.contains(&r.index))
        {
            for sample in adversary_samples(r.exit.as_ref()) {
                r.samples += 1;
                let _ = self
                    .events
                    .send(TrialEvent::Sample {
                        instance: r.index,
                        sample,
                    })
                    .await;
            }
        }
        let all: Vec<u32> = reports.keys().copied().collect();
        let trial_cpu_ns = self.send_stats(&all, started, true).await;
        if let (Some(a), Some(b)) = (cpu_at_start, cpu_at_end)
            && let Some(n) = noise::noise(a, b, span, trial_cpu_ns)
        {
            let _ = self.events.send(TrialEvent::Noise(n)).await;
        }
        self.outcome.instances = reports.into_values().collect();
        ids
    }

    fn interrupted(&self, cancel: &CancellationToken, deadline: Instant) -> Option<Interrupt> {
        if cancel.is_cancelled() {
            Some(Interrupt::Cancelled)
        } else if self.events.is_closed() {
            Some(Interrupt::Abandoned)
        } else if Instant::now() >= deadline {
            Some(Interrupt::TimedOut)
        } else {
            None
        }
    }

    async fn stop(&mut self) {
        if let Err(e) = self.life.stop(self.prepared).await {
            self.outcome.errors.push(format!("stop: {e}"));
        }
    }

    /// Waits (bounded) for every reader to reach the end of its stream.
    async fn drain(&mut self, readers: Vec<Readers>, reports: &mut BTreeMap<u32, InstanceReport>) {
        let deadline = Instant::now() + self.opts.drain_wait;
        for mut r in readers {
            let Some(report) = reports.get_mut(&r.index) else {
                continue;
            };
            match tokio::time::timeout_at(deadline, &mut r.stdout).await {
                Ok(Ok(summary)) => {
                    report.samples = summary.samples;
                    report.bad_output = summary.bad;
                }
                Ok(Err(e)) => {
                    report.bad_output = Some(format!("instance {}: stdout reader: {e}", r.index))
                }
                Err(_) => {
                    r.stdout.abort();
                    report.bad_output = Some(format!(
                        "instance {}: stdout stayed open after the instance ended",
                        r.index
                    ));
                }
            }
            match tokio::time::timeout_at(deadline, &mut r.stderr).await {
                Ok(Ok(tail)) => report.stderr_tail = tail,
                Ok(Err(_)) | Err(_) => r.stderr.abort(),
            }
        }
    }

    /// Sends one statistics event per instance; for the final statistics, returns the CPU time
    /// of all `indices` together (`None` when one could not be read).
    ///
    /// A final reading must be a real one: an instance that ran used some CPU, so a reading of
    /// zero CPU time (a cgroup the runtime recreated or reset as the instance ended, seen with
    /// runsc) is no reading. Then, as when the cgroup is gone, the last periodic reading that saw
    /// CPU time stands in; without one the instance has no final statistics: a missing sample,
    /// never a silent zero.
    async fn send_stats(&mut self, indices: &[u32], started: Instant, final_: bool) -> Option<u64> {
        let t_offset_s = started.elapsed().as_secs_f64();
        let mut cpu_total = Some(0u64);
        for &instance in indices {
            let reading = self
                .life
                .stats(self.prepared, instance)
                .map_err(|e| e.to_string())
                .and_then(|stats| {
                    if final_ && stats.cpu_usage_ns == 0 {
                        Err(format!("the reading shows no CPU time at all: {stats:?}"))
                    } else {
                        Ok(stats)
                    }
                });
            let (t_offset_s, stats) = match reading {
                Ok(stats) => {
                    if !final_ && stats.cpu_usage_ns > 0 {
                        self.last_stats.insert(instance, (t_offset_s, stats));
                    }
                    (t_offset_s, stats)
                }
                Err(e) if final_ => match self.last_stats.remove(&instance) {
                    Some((t, stats)) => {
                        tracing::info!(
                            instance,
                            "final statistics are the reading at {t:.2} s: {e}"
                        );
                        (t, stats)
                    }
                    None => {
                        tracing::warn!(instance, "no final statistics: {e}");
                        cpu_total = None;
                        continue;
                    }
                },
                Err(e) => {
                    tracing::debug!(instance, "statistics: {e}");
                    continue;
                }
            };
            cpu_total = cpu_total.map(|c| c.saturating_add(stats.cpu_usage_ns));
            let ev = TrialEvent::Stats {
                instance,
                t_offset_s,
                stats,
                final_,
            };
            let _ = self.events.send(ev).await;
        }
        cpu_total
    }
}

/// How an adversary ended, as samples: `adversary_exit_code` (128 + signal when killed) and
/// `adversary_killed` (1 when a signal ended it, e.g. the OOM killer's SIGKILL).
pub(crate) fn adversary_samples(exit: Option<&InstanceExit>) -> Vec<Sample> {
    let (code, killed) = match exit {
        Some(InstanceExit::Exited(c)) => (*c, 0.0),
        Some(InstanceExit::Signaled(sig)) => (128 + sig, 1.0),
        Some(InstanceExit::Lost(_)) | None => return Vec::new(),
    };
    let sample = |metric: &str, value: f64| Sample {
        metric: metric.to_owned(),
        value,
        unit: "count".to_owned(),
        higher_is_better: false,
        t_offset_s: None,
    };
    vec![
        sample("adversary_exit_code", f64::from(code)),
        sample("adversary_killed", killed),
    ]
}
