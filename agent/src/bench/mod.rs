//! Measurements for `just bench` (`isolab-bench`) that span backends: a timed trial through the
//! runner ([`timed`]), and the platform [`spectrum`]. Backend-specific ones: [`container`] (runc
//! start-up, prepare vs. start) and [`vm`] (boot, TCG vs. KVM). Nothing here asserts a speed: the caller prints
//! ratios measured side by side.

pub mod container;
pub mod spectrum;
pub mod vm;

use std::sync::Arc;
use std::time::{Duration, Instant};

use isolab_model::plan::Trial;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::core::{TrialEvent, TrialStatus};
use crate::runner::{RunnerOptions, run_trial};
use isolab_backends::{Backend, TrialContext};

/// What one timed trial produced.
#[derive(Debug)]
pub struct Timed {
    /// From the call to the first sample event (any instance), if one came.
    pub first_sample: Option<Duration>,
    /// From the call until the runner returned (teardown and leak check included).
    pub total: Duration,
    /// The runner's final status.
    pub status: TrialStatus,
    /// Every event, in order.
    pub events: Vec<TrialEvent>,
}

impl Timed {
    /// The first summary value (no time offset) of `metric` from any instance.
    pub fn summary(&self, metric: &str) -> Option<f64> {
        self.events.iter().find_map(|e| match e {
            TrialEvent::Sample { sample, .. }
                if sample.metric == metric && sample.t_offset_s.is_none() =>
            {
                Some(sample.value)
            }
            _ => None,
        })
    }

    /// The message of a trial that did not end Ok, with its leaks.
    pub fn failure(&self) -> String {
        let mut m = format!("{}: {}", self.status.state, self.status.message);
        if !self.status.leaks.is_empty() {
            m.push_str(&format!(" (left behind: {})", self.status.leaks.join("; ")));
        }
        m
    }
}

/// Runs `trial` on `backend` through the runner, timing the first sample and the end;
/// `cancel_when` is asked about every event and cancels the trial when it returns true.
pub async fn timed<B: Backend>(
    backend: &B,
    trial: Trial,
    cancel_when: impl FnMut(&TrialEvent) -> bool + Send + 'static,
) -> Timed {
    let ctx = TrialContext {
        run_id: "bench".into(),
        trial: Arc::new(isolab_wire::TrialSpec::from(&trial)),
        attempt: 0,
    };
    let (tx, mut rx) = mpsc::channel(4096);
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    let started = Instant::now();
    let mut cancel_when = cancel_when;
    let consumer = tokio::spawn(async move {
        let (mut events, mut first) = (Vec::new(), None);
        while let Some(e) = rx.recv().await {
            if first.is_none() && matches!(e, TrialEvent::Sample { .. }) {
                first = Some(started.elapsed());
            }
            if cancel_when(&e) {
                token.cancel();
            }
            events.push(e);
        }
        (events, first)
    });
    let opts = RunnerOptions {
        host: "bench".into(),
        ..RunnerOptions::default()
    };
    let status = run_trial(backend, ctx, tx, cancel, &opts).await;
    let total = started.elapsed();
    let (events, first_sample) = consumer.await.unwrap_or_default();
    Timed {
        first_sample,
        total,
        status,
        events,
    }
}

/// The median of `values` (NaN when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
