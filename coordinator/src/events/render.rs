//! How `isolab watch` prints events: one line per status change (and sample), or JSON lines.

use super::event::{EventKind, RunEvent};

/// Output of `isolab watch`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Render {
    /// Print events as JSON lines.
    pub json: bool,
    /// Include samples.
    pub samples: bool,
}

impl Render {
    /// The line for `ev`, or `None` when it is not shown.
    pub fn line(&self, ev: &RunEvent) -> Option<String> {
        if ev.is_sample() && !self.samples {
            return None;
        }
        if self.json {
            return serde_json::to_string(ev).ok();
        }
        Some(match &ev.kind {
            EventKind::RunStarted {
                pipeline,
                trials,
                to_run,
            } => format!(
                "{} run {} started: pipeline {pipeline}, {to_run} of {trials} trials to run",
                ev.at, ev.run_id
            ),
            EventKind::TrialStatus(s) => {
                let mut l = format!(
                    "{} trial {} {}/{}/{} attempt {}: {}",
                    ev.at,
                    s.trial_id,
                    s.experiment,
                    s.platform,
                    s.workload,
                    s.attempt,
                    s.state.as_str()
                );
                if let Some(h) = s.host.as_ref().or(s.agent.as_ref()) {
                    l.push_str(&format!(" on {h}"));
                }
                if let Some(ms) = s.duration_ms {
                    l.push_str(&format!(" ({ms} ms)"));
                }
                if let Some(r) = &s.reason {
                    l.push_str(&format!(": {r}"));
                }
                l
            }
            EventKind::Sample(s) => {
                let t = s
                    .t_offset_s
                    .map_or_else(|| "summary".to_owned(), |t| format!("t={t:.3}s"));
                format!(
                    "{}   sample {} #{} {} = {} {} ({t})",
                    ev.at, s.trial_id, s.instance, s.metric, s.value, s.unit
                )
            }
            EventKind::RunFinished {
                status,
                ok,
                failed,
                not_run,
            } => format!(
                "{} run {} finished: {}: {ok} ok, {failed} failed, {not_run} not run",
                ev.at,
                ev.run_id,
                serde_json::to_value(status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ),
        })
    }
}
