//! Deciding a trial's final state and message from what happened.

use crate::core::TrialState;
use isolab_backends::{InstanceExit, LeakReport};

/// Why the run loop stopped before every instance ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interrupt {
    /// A caller (or shutdown) cancelled the trial.
    Cancelled,
    /// Whoever listened to the events went away.
    Abandoned,
    /// The wall-clock deadline passed.
    TimedOut,
}

/// How one instance ended and what it printed.
#[derive(Debug)]
pub(crate) struct InstanceReport {
    /// Index.
    pub(crate) index: u32,
    /// Its exit, if it was seen.
    pub(crate) exit: Option<InstanceExit>,
    /// Samples it printed.
    pub(crate) samples: u64,
    /// The first reason its output was unacceptable.
    pub(crate) bad_output: Option<String>,
    /// Last stderr lines.
    pub(crate) stderr_tail: Vec<String>,
    /// An isolation adversary: its death (OOM kill, non-zero exit, refused fork) is an outcome
    /// recorded as samples, not a failure of the trial.
    pub(crate) adversary: bool,
}

impl InstanceReport {
    /// Why this instance makes the trial fail, if it does. When the trial was interrupted, being
    /// killed is expected and not a failure of its own.
    fn failure(&self, interrupted: bool) -> Option<String> {
        if self.adversary && self.exit.is_some() {
            return None;
        }
        if let Some(bad) = &self.bad_output {
            return Some(bad.clone());
        }
        let tail = if self.stderr_tail.is_empty() {
            String::new()
        } else {
            format!(": {}", self.stderr_tail.join(" | "))
        };
        match &self.exit {
            None if !interrupted => Some(format!("instance {} did not end", self.index)),
            Some(exit) if !exit.success() && !interrupted => {
                Some(format!("instance {} {exit}{tail}", self.index))
            }
            Some(exit) if exit.success() && self.samples == 0 => Some(format!(
                "instance {} exited without printing a sample{tail}",
                self.index
            )),
            _ => None,
        }
    }
}

/// Everything the runner saw of one trial.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Failures not tied to one instance (prepare, start, stop), in order.
    pub(crate) errors: Vec<String>,
    /// Why the run loop was interrupted, if it was.
    pub(crate) interrupt: Option<Interrupt>,
    /// Per-instance reports, in index order.
    pub(crate) instances: Vec<InstanceReport>,
    /// What teardown and the leftover checks found.
    pub(crate) leaks: LeakReport,
    /// The trial's timeout, for the message.
    pub(crate) timeout_text: String,
}

impl Outcome {
    /// The final state and its message.
    pub(crate) fn verdict(&self) -> (TrialState, String) {
        let interrupted = self.interrupt.is_some();
        let mut reasons: Vec<String> = self.errors.clone();
        reasons.extend(self.instances.iter().filter_map(|i| i.failure(interrupted)));
        if !self.leaks.is_clean() {
            let mut msg = format!(
                "left behind after teardown: {}",
                self.leaks.lines().join("; ")
            );
            if !reasons.is_empty() {
                msg.push_str("; also: ");
                msg.push_str(&reasons.join("; "));
            }
            return (TrialState::Failed, msg);
        }
        let samples: u64 = self.instances.iter().map(|i| i.samples).sum();
        match self.interrupt {
            Some(Interrupt::Cancelled) => (TrialState::Cancelled, "cancelled".into()),
            Some(Interrupt::Abandoned) => (
                TrialState::Cancelled,
                "cancelled: the event stream was closed".into(),
            ),
            Some(Interrupt::TimedOut) => {
                let running: Vec<String> = self
                    .instances
                    .iter()
                    .filter(|i| !matches!(i.exit, Some(InstanceExit::Exited(_))))
                    .map(|i| i.index.to_string())
                    .collect();
                let mut msg = format!("deadline of {} hit", self.timeout_text);
                if !running.is_empty() {
                    msg.push_str(&format!("; killed instance(s) {}", running.join(", ")));
                }
                (TrialState::TimedOut, msg)
            }
            None if !reasons.is_empty() => (TrialState::Failed, reasons.join("; ")),
            None => (
                TrialState::Ok,
                format!("{} instance(s), {samples} sample(s)", self.instances.len()),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use isolab_backends::Leak;

    fn report(index: u32, exit: InstanceExit, samples: u64) -> InstanceReport {
        InstanceReport {
            index,
            exit: Some(exit),
            samples,
            bad_output: None,
            stderr_tail: vec![],
            adversary: false,
        }
    }

    #[test]
    fn clean_run_is_ok() {
        let o = Outcome {
            instances: vec![report(0, InstanceExit::Exited(0), 3)],
            ..Outcome::default()
        };
        assert_eq!(o.verdict().0, TrialState::Ok);
    }

    #[test]
    fn non_zero_exit_fails_with_code_and_stderr() {
        let mut r = report(1, InstanceExit::Exited(2), 0);
        r.stderr_tail = vec!["unknown param `bogus`".into()];
        let o = Outcome {
            instances: vec![r],
            ..Outcome::default()
        };
        let (state, msg) = o.verdict();
        assert_eq!(state, TrialState::Failed);
        assert_eq!(msg, "instance 1 exited with code 2: unknown param `bogus`");
    }

    #[test]
    fn killed_instances_are_not_failures_when_interrupted() {
        let o = Outcome {
            interrupt: Some(Interrupt::TimedOut),
            instances: vec![report(0, InstanceExit::Signaled(9), 0)],
            timeout_text: "1s".into(),
            ..Outcome::default()
        };
        assert_eq!(
            o.verdict(),
            (
                TrialState::TimedOut,
                "deadline of 1s hit; killed instance(s) 0".into()
            )
        );
        let o = Outcome {
            interrupt: Some(Interrupt::Cancelled),
            ..o
        };
        assert_eq!(o.verdict().0, TrialState::Cancelled);
    }

    #[test]
    fn a_leak_fails_even_a_cancelled_trial() {
        let mut leaks = LeakReport::default();
        leaks.push(Leak::Cgroup {
            path: "x/t-a0".into(),
        });
        let o = Outcome {
            interrupt: Some(Interrupt::Cancelled),
            leaks,
            ..Outcome::default()
        };
        let (state, msg) = o.verdict();
        assert_eq!(state, TrialState::Failed);
        assert!(msg.contains("cgroup x/t-a0 still exists"), "{msg}");
    }

    #[test]
    fn silence_is_a_failure() {
        let o = Outcome {
            instances: vec![report(0, InstanceExit::Exited(0), 0)],
            ..Outcome::default()
        };
        assert_eq!(o.verdict().1, "instance 0 exited without printing a sample");
    }

    #[test]
    fn an_adversary_death_is_an_outcome_not_a_failure() {
        let mut killed = report(1, InstanceExit::Signaled(9), 0);
        killed.adversary = true;
        let o = Outcome {
            instances: vec![report(0, InstanceExit::Exited(0), 3), killed],
            ..Outcome::default()
        };
        assert_eq!(o.verdict().0, TrialState::Ok);

        let mut lost = report(1, InstanceExit::Exited(0), 0);
        lost.adversary = true;
        lost.exit = None;
        let o = Outcome {
            instances: vec![report(0, InstanceExit::Exited(0), 3), lost],
            ..Outcome::default()
        };
        assert_eq!(
            o.verdict().0,
            TrialState::Failed,
            "an adversary must still end"
        );

        let victim = report(0, InstanceExit::Signaled(9), 0);
        let o = Outcome {
            instances: vec![victim],
            ..Outcome::default()
        };
        assert_eq!(
            o.verdict().0,
            TrialState::Failed,
            "a victim's death is a failure"
        );
    }

    #[test]
    fn adversary_exit_as_samples() {
        use super::super::drive::adversary_samples;
        let s = adversary_samples(Some(&InstanceExit::Signaled(9)));
        let got: Vec<(&str, f64)> = s.iter().map(|s| (s.metric.as_str(), s.value)).collect();
        assert_eq!(
            got,
            [("adversary_exit_code", 137.0), ("adversary_killed", 1.0)]
        );
        let s = adversary_samples(Some(&InstanceExit::Exited(3)));
        assert_eq!(s[0].value, 3.0);
        assert_eq!(s[1].value, 0.0);
        assert!(adversary_samples(None).is_empty());
    }
}
