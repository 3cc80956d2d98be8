//! Why each metric's repetitions stopped where they did, from the manifest's repetition groups
//! (fixed count, `until_stable` target reached, `max_repetitions` hit).

use std::collections::HashMap;

use isolab_model::manifest::{Manifest, StopReason};

/// Stop reasons by trial id.
#[derive(Debug, Default)]
pub(crate) struct StopReasons {
    by_trial: HashMap<String, StopReason>,
    /// For manifests written before repetition groups existed: `fixed` when the pipeline has
    /// no `until_stable` (then every group had its planned repetitions), else unknown.
    fallback: Option<StopReason>,
}

impl StopReasons {
    /// The reasons a manifest records.
    pub(crate) fn new(m: &Manifest) -> Self {
        let by_trial = m
            .repetition_groups
            .iter()
            .filter_map(|g| g.stop_reason.map(|r| (g, r)))
            .flat_map(|(g, r)| g.trials.iter().map(move |t| (t.clone(), r)))
            .collect();
        let fallback = if m.repetition_groups.is_empty() {
            isolab_model::load_str(&m.pipeline_file, &m.pipeline_text)
                .ok()
                .filter(|p| p.defaults.until_stable.is_none())
                .map(|_| StopReason::Fixed)
        } else {
            None
        };
        Self { by_trial, fallback }
    }

    /// The reason of the first of `trials` that has one, else the fallback.
    pub(crate) fn of<'a>(&self, trials: impl IntoIterator<Item = &'a str>) -> Option<StopReason> {
        trials
            .into_iter()
            .find_map(|t| self.by_trial.get(t).copied())
            .or(self.fallback)
    }
}
