//! The adversaries' clock: the end of the run and the ticks of their time series.

use std::time::{Duration, Instant};

use crate::measure::check_stop;

/// How often adversaries report progress.
pub(super) const TICK: Duration = Duration::from_millis(100);

/// Start, end and the next report of one adversary run.
#[derive(Debug)]
pub(super) struct Clock {
    start: Instant,
    end: Instant,
    next_tick: Instant,
}

impl Clock {
    /// A run of `duration` starting now.
    pub(super) fn new(duration: Duration) -> Self {
        let start = Instant::now();
        Self {
            start,
            end: start + duration,
            next_tick: start + TICK,
        }
    }

    /// Whether the duration has passed or a stop signal arrived.
    pub(super) fn done(&self) -> bool {
        check_stop().is_err() || Instant::now() >= self.end
    }

    /// Seconds since the start.
    pub(super) fn t_offset_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Time since the start.
    pub(super) fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// When the run ends.
    pub(super) fn end(&self) -> Instant {
        self.end
    }

    /// `Some(t_offset_s)` once per [`TICK`].
    pub(super) fn tick(&mut self) -> Option<f64> {
        let now = Instant::now();
        if now < self.next_tick {
            return None;
        }
        while self.next_tick <= now {
            self.next_tick += TICK;
        }
        Some(now.duration_since(self.start).as_secs_f64())
    }

    /// Sleeps up to `most`, never past the end.
    pub(super) fn nap(&self, most: Duration) {
        let left = self.end.saturating_duration_since(Instant::now());
        std::thread::sleep(most.min(left));
    }

    /// Sleeps until the run ends (waking every tick to notice a stop signal).
    pub(super) fn idle_until_end(&self) {
        while !self.done() {
            self.nap(TICK);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_and_ends() {
        let mut c = Clock::new(Duration::from_millis(250));
        assert!(!c.done());
        assert_eq!(c.tick(), None);
        c.nap(Duration::from_millis(120));
        assert!(c.tick().is_some_and(|t| t >= 0.1));
        assert_eq!(c.tick(), None);
        c.idle_until_end();
        assert!(c.done());
        assert!(c.elapsed() >= Duration::from_millis(250));
    }
}
