//! Progress output: bars with `indicatif` on a terminal, one plain line per event otherwise.
//!
//! Everything goes to stderr; stdout carries only the run directory so scripts can capture it.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Reports run progress to the user.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
}

impl Progress {
    /// A reporter for `total` trials; a bar when stderr is a terminal and `CI` is not set.
    pub fn new(total: u64) -> Self {
        let tty = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        let bar = tty.then(|| {
            let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        Self {
            bar,
            total,
            done: 0,
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
            None => eprintln!("[{}/{}] {line}", self.done, self.total),
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
