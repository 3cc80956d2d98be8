//! `cpu_spin`: threads doing fixed units of integer hashing, reported as a time series.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::{WorkloadError, report_totals};
use crate::emit::Emitter;
use crate::measure::{Measured, check_stop, to_f64};
use crate::params::Params;

const W: &str = "cpu_spin";

/// Hash rounds in one work unit (a few microseconds on a current core).
const ROUNDS_PER_UNIT: u32 = 4096;

/// Default reporting interval.
const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);

/// One fixed unit of work: a chain of dependent multiply-xorshift rounds.
fn work_unit(seed: u64) -> u64 {
    let mut x = seed;
    for _ in 0..ROUNDS_PER_UNIT {
        x ^= x >> 31;
        x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 29;
    }
    x
}

/// A per-thread unit counter on its own cache line, so threads do not share one.
#[repr(align(64))]
struct Counter(AtomicU64);

/// `cpu_spin`: `units_per_s` every `interval` (with `t_offset_s`), then the summary.
pub(super) fn cpu_spin(params: &Params, em: &mut Emitter<'_>) -> Result<(), WorkloadError> {
    let threads = usize::try_from(params.count("threads", 1)).unwrap_or(1);
    let interval = params.duration("interval", DEFAULT_INTERVAL);
    let total = spin_threads(
        W,
        threads,
        interval,
        params.run_duration(),
        em,
        ("units_per_s", "units/s"),
    )?;
    check_stop()?;
    em.summary("units_per_s", total.ops_per_s(), "units/s", true)?;
    em.summary("total_units", to_f64(total.ops), "units", true)?;
    report_totals(em, &total)?;
    // Last, so that it covers (almost) the whole process: a cross-check of the cgroup's CPU time.
    let cpu_ns = super::cpu_time::process_cpu().as_nanos();
    em.summary(
        "process_cpu_ns",
        to_f64(u64::try_from(cpu_ns).unwrap_or(u64::MAX)),
        "ns",
        false,
    )
}

/// Runs `threads` spinning threads for `duration`, printing the rate as the time series
/// `series` (metric, unit) every `interval`; returns the totals. Stops early, without an error,
/// at SIGINT/SIGTERM: the caller decides what to print before reporting it with `check_stop`.
pub(super) fn spin_threads(
    workload: &'static str,
    threads: usize,
    interval: Duration,
    duration: Duration,
    em: &mut Emitter<'_>,
    series: (&str, &str),
) -> Result<Measured, WorkloadError> {
    let counters: Vec<Counter> = (0..threads).map(|_| Counter(AtomicU64::new(0))).collect();
    let stop = AtomicBool::new(false);
    thread::scope(|scope| {
        let result = (|| {
            for (i, counter) in counters.iter().enumerate() {
                let stop = &stop;
                thread::Builder::new()
                    .name(format!("spin-{i}"))
                    .spawn_scoped(scope, move || spin(counter, stop, i))
                    .map_err(|e| WorkloadError::sys(workload, "spawn thread", e))?;
            }
            sample(&counters, interval, duration, em, series)
        })();
        stop.store(true, Ordering::Relaxed);
        result
    })
}

/// A spinning thread's loop.
fn spin(counter: &Counter, stop: &AtomicBool, index: usize) {
    let mut x = 0x5eed_u64 ^ u64::try_from(index).unwrap_or(0);
    while !stop.load(Ordering::Relaxed) {
        x = black_box(work_unit(x));
        counter.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn units_done(counters: &[Counter]) -> u64 {
    counters.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
}

/// Samples the counters at every interval until `duration` has passed or a stop signal
/// arrived. Each rate is the units done over the time that actually elapsed since the previous
/// sample, so an oversleeping or throttled process shows it. Returns the totals.
fn sample(
    counters: &[Counter],
    interval: Duration,
    duration: Duration,
    em: &mut Emitter<'_>,
    (metric, unit): (&str, &str),
) -> Result<Measured, WorkloadError> {
    let start = Instant::now();
    let end = start + duration;
    let mut next_tick = start + interval;
    let (mut last_t, mut last_units) = (start, 0u64);
    loop {
        let tick = next_tick.min(end);
        thread::sleep(tick.saturating_duration_since(Instant::now()));
        let stopped = check_stop().is_err();
        let now = Instant::now();
        let units = units_done(counters);
        let window = now.duration_since(last_t);
        let last_window = tick >= end || stopped;
        if !last_window || window >= interval / 2 {
            let rate = to_f64(units - last_units) / window.as_secs_f64().max(1e-9);
            em.series(
                metric,
                rate,
                unit,
                true,
                now.duration_since(start).as_secs_f64(),
            )?;
        }
        if last_window {
            return Ok(Measured {
                ops: units,
                elapsed: now.duration_since(start),
            });
        }
        (last_t, last_units) = (now, units);
        while next_tick <= now {
            next_tick += interval;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_unit_is_deterministic_and_mixes() {
        assert_eq!(work_unit(1), work_unit(1));
        assert_ne!(work_unit(1), work_unit(2));
    }
}
