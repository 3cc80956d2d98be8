//! Progress output: bars with `indicatif` on a terminal, one plain line per event otherwise.
//!
//! Everything goes to stderr; stdout carries only the run directory so scripts can capture it.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// Reports run progress to the user.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
    estimate: Duration,
    start: Instant,
}

/// Time left: the plan's estimate until the first trial has finished, then the pace so far
/// (elapsed per finished trial × trials left), which includes this machine's real start costs.
pub fn eta(elapsed: Duration, done: u64, total: u64, estimate: Duration) -> Duration {
    let left = total.saturating_sub(done);
    if done == 0 {
        return estimate.saturating_sub(elapsed);
    }
    let per_trial = elapsed / u32::try_from(done).unwrap_or(u32::MAX);
    per_trial.saturating_mul(u32::try_from(left).unwrap_or(u32::MAX))
}

/// `45s`, `3m 05s`, `1h 02m`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

impl Progress {
    /// A reporter for `total` trials that the plan estimates to take `estimate`; a bar with an
    /// ETA when stderr is a terminal and `CI` is not set, plain lines otherwise.
    pub fn new(total: u64, estimate: Duration) -> Self {
        let tty = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        let bar = tty.then(|| {
            let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} ETA {plan_eta} {msg}",
            )
            .map(|s| {
                s.with_key(
                    "plan_eta",
                    move |st: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let left = eta(st.elapsed(), st.pos(), st.len().unwrap_or(0), estimate);
                        let _ = w.write_str(&human(left));
                    },
                )
            });
            b.set_style(style.unwrap_or_else(|_| ProgressStyle::default_bar()));
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        Self {
            bar,
            total,
            done: 0,
            estimate,
            start: Instant::now(),
        }
    }

    /// A trial started.
    pub fn started(&self, label: &str) {
        match &self.bar {
            Some(b) => b.set_message(label.to_owned()),
            None => eprintln!("[{}/{}] {label} …", self.done + 1, self.total),
        }
    }

    /// A trial finished with `status`.
    pub fn finished(&mut self, label: &str, status: &str, elapsed: Duration, detail: Option<&str>) {
        self.done += 1;
        let line = match detail {
            Some(d) => format!("{label}: {status} ({:.1}s): {d}", elapsed.as_secs_f64()),
            None => format!("{label}: {status} ({:.1}s)", elapsed.as_secs_f64()),
        };
        match &self.bar {
            Some(b) => {
                if status != "ok" {
                    b.println(line);
                }
                b.inc(1);
            }
            None => {
                let left = eta(self.start.elapsed(), self.done, self.total, self.estimate);
                eprintln!("[{}/{}] {line}, ETA {}", self.done, self.total, human(left));
            }
        }
    }

    /// More trials were added (adaptive repetitions).
    pub fn add(&mut self, n: u64) {
        self.total += n;
        if let Some(b) = &self.bar {
            b.inc_length(n);
        }
    }

    /// A free-form note.
    pub fn note(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    /// Ends the display.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_starts_from_the_plan_then_follows_the_pace() {
        let s = Duration::from_secs;
        assert_eq!(eta(s(10), 0, 10, s(100)), s(90));
        assert_eq!(eta(s(200), 0, 10, s(100)), Duration::ZERO);
        // 4 trials in 20 s: 5 s each, 6 left.
        assert_eq!(eta(s(20), 4, 10, s(100)), s(30));
        assert_eq!(eta(s(20), 10, 10, s(100)), Duration::ZERO);
        assert_eq!(human(s(185)), "3m 05s");
        assert_eq!(human(s(3720)), "1h 02m");
    }
}
