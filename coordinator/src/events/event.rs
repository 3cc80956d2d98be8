//! The events of a run, independent of how they travel (in-process, NATS, gRPC).

use isolab_model::manifest::{RunStatus, TrialRecord, TrialState};
use isolab_model::plan::Trial;
use serde::{Deserialize, Serialize};

/// Prefix of every subject: `isolab.run.<run>…`.
pub const SUBJECT_PREFIX: &str = "isolab.run";

/// One event of a run. Serialized as one JSON object: `run_id`, `at` and the fields of
/// [`EventKind`] with its `kind` tag (see the [module docs](crate::events)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEvent {
    /// The run.
    pub run_id: String,
    /// When it happened, RFC 3339 UTC.
    pub at: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// The run started (or resumed).
    RunStarted {
        /// The pipeline's name.
        pipeline: String,
        /// Trials in the run.
        trials: u32,
        /// Trials this invocation will run (fewer when resuming).
        to_run: u32,
    },
    /// A trial changed state.
    TrialStatus(TrialStatus),
    /// A live sample of a workload.
    Sample(LiveSample),
    /// The run ended.
    RunFinished {
        /// How it ended.
        status: RunStatus,
        /// Trials that finished ok.
        ok: u32,
        /// Trials that failed, timed out or were cancelled.
        failed: u32,
        /// Trials not run.
        not_run: u32,
    },
}

/// A trial's state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialStatus {
    /// The trial id.
    pub trial_id: String,
    /// Its experiment.
    pub experiment: String,
    /// Its platform.
    pub platform: String,
    /// Its workload.
    pub workload: String,
    /// The agent it was sent to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The host that ran it, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Attempt number (1 for the first).
    pub attempt: u32,
    /// The new state.
    pub state: TrialEventState,
    /// Why (failures, retries, cancellations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Wall-clock duration of the attempt in milliseconds (final states).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// States a trial passes through, as events report them: the manifest's states plus `retrying`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialEventState {
    /// Dispatched to an agent.
    Running,
    /// Finished and measured.
    Ok,
    /// Failed.
    Failed,
    /// Hit its deadline.
    TimedOut,
    /// Cancelled.
    Cancelled,
    /// The attempt failed and another one is queued.
    Retrying,
    /// Never ran (interrupted, cancelled or drained run).
    NotRun,
}

impl TrialEventState {
    /// The snake-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
            Self::Retrying => "retrying",
            Self::NotRun => "not_run",
        }
    }

    /// The event state of a manifest state (`pending` has none).
    pub fn from_manifest(s: TrialState) -> Option<Self> {
        Some(match s {
            TrialState::Pending => return None,
            TrialState::Running => Self::Running,
            TrialState::Ok => Self::Ok,
            TrialState::Failed => Self::Failed,
            TrialState::TimedOut => Self::TimedOut,
            TrialState::Cancelled => Self::Cancelled,
            TrialState::NotRun => Self::NotRun,
        })
    }

    /// Whether the trial is over (no further status follows for it in this run).
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Running | Self::Retrying)
    }
}

/// A live sample of one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveSample {
    /// The trial id.
    pub trial_id: String,
    /// Instance index.
    pub instance: u32,
    /// Metric name.
    pub metric: String,
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// Seconds since the workload started; absent for a summary value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t_offset_s: Option<f64>,
}

impl RunEvent {
    /// An event of `run_id` stamped now.
    pub fn now(run_id: &str, kind: EventKind) -> Self {
        Self {
            run_id: run_id.to_owned(),
            at: crate::rundir::now_rfc3339(),
            kind,
        }
    }

    /// A status change of `trial`, stamped now.
    pub fn trial(run_id: &str, trial: &Trial, attempt: u32, state: TrialEventState) -> Self {
        Self::now(
            run_id,
            EventKind::TrialStatus(TrialStatus {
                trial_id: trial.id.clone(),
                experiment: trial.experiment.clone(),
                platform: trial.platform.clone(),
                workload: trial.workload.clone(),
                agent: None,
                host: None,
                attempt,
                state,
                reason: None,
                duration_ms: None,
            }),
        )
    }

    /// A trial of the manifest recorded as not run (with its reason).
    pub fn not_run(run_id: &str, rec: &TrialRecord) -> Self {
        Self::now(
            run_id,
            EventKind::TrialStatus(TrialStatus {
                trial_id: rec.id.clone(),
                experiment: rec.experiment.clone(),
                platform: rec.platform.clone(),
                workload: rec.workload.clone(),
                agent: None,
                host: None,
                attempt: rec.attempts,
                state: TrialEventState::NotRun,
                reason: rec.reason.clone(),
                duration_ms: None,
            }),
        )
    }

    /// Sets agent, host, reason and duration of a trial status (no-op on other kinds).
    #[must_use]
    pub fn with_details(
        mut self,
        agent: Option<&str>,
        host: Option<&str>,
        reason: Option<&str>,
        duration_ms: Option<u64>,
    ) -> Self {
        if let EventKind::TrialStatus(s) = &mut self.kind {
            s.agent = agent.filter(|a| !a.is_empty()).map(str::to_owned);
            s.host = host.filter(|h| !h.is_empty()).map(str::to_owned);
            s.reason = reason.map(str::to_owned);
            s.duration_ms = duration_ms;
        }
        self
    }

    /// The subject this event is published on (see the [module docs](crate::events)).
    pub fn subject(&self) -> String {
        let run = subject_token(&self.run_id);
        match &self.kind {
            EventKind::RunStarted { .. } | EventKind::RunFinished { .. } => {
                format!("{SUBJECT_PREFIX}.{run}.status")
            }
            EventKind::TrialStatus(s) => format!(
                "{SUBJECT_PREFIX}.{run}.trial.{}.status",
                subject_token(&s.trial_id)
            ),
            EventKind::Sample(s) => format!(
                "{SUBJECT_PREFIX}.{run}.trial.{}.samples",
                subject_token(&s.trial_id)
            ),
        }
    }

    /// Whether this is the run's last event.
    pub fn is_run_finished(&self) -> bool {
        matches!(self.kind, EventKind::RunFinished { .. })
    }

    /// Whether this is a sample (the rest are status events).
    pub fn is_sample(&self) -> bool {
        matches!(self.kind, EventKind::Sample(_))
    }
}

/// `id` as one subject token: `.`, `*`, `>` and whitespace become `_`.
pub fn subject_token(id: &str) -> String {
    id.chars()
        .map(|c| {
            if matches!(c, '.' | '*' | '>') || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// Every subject of one run: `isolab.run.<run>.>`.
pub fn run_filter(run_id: &str) -> String {
    format!("{SUBJECT_PREFIX}.{}.>", subject_token(run_id))
}

/// Run-level subjects of every run: `isolab.run.*.status`.
pub const RUN_STATUS_FILTER: &str = "isolab.run.*.status";

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> RunEvent {
        RunEvent {
            run_id: "q-1".into(),
            at: "2026-01-01T00:00:00Z".into(),
            kind: EventKind::TrialStatus(TrialStatus {
                trial_id: "ab12".into(),
                experiment: "micro".into(),
                platform: "native".into(),
                workload: "syscall".into(),
                agent: Some("http://127.0.0.1:7411".into()),
                host: Some("h1".into()),
                attempt: 2,
                state: TrialEventState::Retrying,
                reason: Some("lost".into()),
                duration_ms: Some(12),
            }),
        }
    }

    #[test]
    fn json_is_flat_with_a_kind_tag_and_round_trips() {
        let e = status();
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], "trial_status");
        assert_eq!(v["run_id"], "q-1");
        assert_eq!(v["state"], "retrying");
        assert_eq!(v["attempt"], 2);
        let back: RunEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        let fin = RunEvent::now(
            "q-1",
            EventKind::RunFinished {
                status: RunStatus::Interrupted,
                ok: 1,
                failed: 0,
                not_run: 2,
            },
        );
        let v = serde_json::to_value(&fin).unwrap();
        assert_eq!(
            (v["kind"].as_str(), v["status"].as_str()),
            (Some("run_finished"), Some("interrupted"))
        );
    }

    #[test]
    fn subjects_follow_the_documented_layout() {
        let mut e = status();
        assert_eq!(e.subject(), "isolab.run.q-1.trial.ab12.status");
        e.run_id = "my.run *x".into();
        assert_eq!(e.subject(), "isolab.run.my_run__x.trial.ab12.status");
        let s = RunEvent::now(
            "r",
            EventKind::Sample(LiveSample {
                trial_id: "t".into(),
                instance: 0,
                metric: "m".into(),
                value: 1.0,
                unit: "ns".into(),
                t_offset_s: None,
            }),
        );
        assert_eq!(s.subject(), "isolab.run.r.trial.t.samples");
        assert_eq!(run_filter("a.b"), "isolab.run.a_b.>");
    }
}
