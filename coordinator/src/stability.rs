//! Repetition groups and adaptive repetitions (`until_stable`).
//!
//! A repetition group is one (experiment, platform, workload, matrix point): its measured
//! trials differ only in their repetition index. Every group is recorded in the manifest
//! ([`RepetitionGroup`]) with why it has as many repetitions as it has: `fixed` without
//! `until_stable`; with it, once every trial of the group has finished, the 95% bootstrap CI of
//! the median of the primary metric (the analyzer's [`isolab_analyzer::stats`], the same
//! interval the report shows) decides: relative half-width ≤ `rel_ci95` → `ci_within_target`,
//! else one more repetition, until `max_repetitions` → `max_repetitions`.
//!
//! The values the decision uses live in the manifest, so `--resume` carries on where the run
//! stopped, re-queuing added repetitions that had not finished.

use std::collections::{BTreeMap, BTreeSet};

use isolab_analyzer::metrics::is_headline;
use isolab_analyzer::stats;
use isolab_model::Pipeline;
use isolab_model::manifest::{RepetitionGroup, StopReason};
use isolab_model::pipeline::UntilStable;
use isolab_model::plan::{self, Trial};
use isolab_model::results::ResultRow;

/// Fewest values whose bootstrap CI may stop a group: with one or two, the interval of the
/// median says nothing about the spread.
pub const MIN_VALUES_FOR_CI: usize = 3;

/// How a measured trial ended, as far as its group is concerned.
#[derive(Debug, Clone, Copy)]
pub enum Finished<'a> {
    /// Finished with these rows written.
    Ok(&'a [ResultRow]),
    /// Failed or timed out for good (retries exhausted).
    Failed,
    /// Cancelled (interrupt): the group is left undecided.
    Cancelled,
}

/// Tracks the repetition groups of a run (see the module documentation).
#[derive(Debug)]
pub struct Stability {
    rule: Option<UntilStable>,
    /// Trial id → index of its group in the manifest's `repetition_groups`.
    group_of: BTreeMap<String, usize>,
    /// Per group index: measured trials queued or running.
    pending: BTreeMap<usize, u32>,
    /// Groups with a cancelled trial: never extended or decided in this invocation.
    interrupted: BTreeSet<usize>,
}

/// Identifies a group: the id its repetition 0 has (content-derived, so equal for every
/// repetition of the same matrix point).
fn group_key(t: &Trial) -> String {
    plan::extra_repetition(t, 0).id
}

/// Relative half-width of the 95% bootstrap CI of the median; `None` when the median is zero.
pub fn relative_ci95(values: &[f64]) -> Option<f64> {
    let median = stats::median(values)?;
    let ci = stats::bootstrap_median_ci(values)?;
    (median != 0.0).then(|| (ci.high - ci.low) / 2.0 / median.abs())
}

impl Stability {
    /// Records a group in `groups` for every measured trial of `trials` (reusing the groups a
    /// resumed run recorded); `done` says which trial ids already have results. Returns the
    /// tracker and the added repetitions of a resumed run that still have to run.
    pub fn new(
        pipeline: &Pipeline,
        trials: &[Trial],
        groups: &mut Vec<RepetitionGroup>,
        done: &BTreeSet<String>,
    ) -> (Self, Vec<Trial>) {
        let rule = pipeline.defaults.until_stable.clone();
        let mut me = Self {
            rule: rule.clone(),
            group_of: BTreeMap::new(),
            pending: BTreeMap::new(),
            interrupted: BTreeSet::new(),
        };
        let mut by_key: BTreeMap<String, usize> = BTreeMap::new();
        let mut base: BTreeMap<usize, &Trial> = BTreeMap::new();
        for t in trials.iter().filter(|t| !t.warmup) {
            let key = group_key(t);
            let index = *by_key.entry(key).or_insert_with(|| {
                groups
                    .iter()
                    .position(|g| g.trials.contains(&t.id))
                    .unwrap_or_else(|| {
                        groups.push(new_group(t, rule.as_ref()));
                        groups.len() - 1
                    })
            });
            base.entry(index).or_insert(t);
            let g = &mut groups[index];
            if !g.trials.contains(&t.id) {
                g.trials.push(t.id.clone());
            }
            me.group_of.insert(t.id.clone(), index);
            if !done.contains(&t.id) {
                *me.pending.entry(index).or_default() += 1;
            }
        }
        // Repetitions a resumed run had added but not finished: the same content-derived ids.
        let mut resumed = Vec::new();
        for (&index, t) in &base {
            let g = &groups[index];
            for (rep, id) in (0u32..).zip(g.trials.clone()) {
                if me.group_of.contains_key(&id) {
                    continue;
                }
                let extra = plan::extra_repetition(t, rep);
                if extra.id != id {
                    continue;
                }
                me.group_of.insert(id.clone(), index);
                if !done.contains(&id) {
                    *me.pending.entry(index).or_default() += 1;
                    resumed.push(extra);
                }
            }
        }
        (me, resumed)
    }

    /// Takes note that measured trial `t` ended; returns a further repetition of its group when
    /// `until_stable` asks for one (the caller queues it and records it in the manifest) and
    /// `extend` allows it (not after an interrupt).
    pub fn finished(
        &mut self,
        t: &Trial,
        how: Finished<'_>,
        groups: &mut [RepetitionGroup],
        extend: bool,
    ) -> Option<Trial> {
        let index = *self.group_of.get(&t.id)?;
        let g = groups.get_mut(index)?;
        if let Some(p) = self.pending.get_mut(&index) {
            *p = p.saturating_sub(1);
        }
        match how {
            Finished::Ok(rows) => {
                if let Some((metric, value)) = primary_value(rows, g.metric.as_deref()) {
                    g.metric.get_or_insert(metric);
                    g.values.push(value);
                }
            }
            Finished::Failed => {}
            Finished::Cancelled => {
                self.interrupted.insert(index);
            }
        }
        if self.pending.get(&index).copied().unwrap_or(0) > 0
            || self.interrupted.contains(&index)
            || g.stop_reason.is_some()
        {
            return None;
        }
        let rule = self.rule.as_ref()?;
        g.rel_ci95 = (g.values.len() >= MIN_VALUES_FOR_CI)
            .then(|| relative_ci95(&g.values))
            .flatten();
        let reached = u32::try_from(g.trials.len()).unwrap_or(u32::MAX) >= rule.max_repetitions;
        let reason = if g.values.is_empty() {
            Some(StopReason::NoValues)
        } else if g.rel_ci95.is_some_and(|r| r <= rule.rel_ci95) {
            Some(StopReason::CiWithinTarget)
        } else if reached {
            Some(StopReason::MaxRepetitions)
        } else {
            None
        };
        if reason.is_some() || !extend {
            g.stop_reason = reason;
            return None;
        }
        let rep = u32::try_from(g.trials.len()).unwrap_or(u32::MAX);
        let extra = plan::extra_repetition(t, rep);
        g.trials.push(extra.id.clone());
        self.group_of.insert(extra.id.clone(), index);
        *self.pending.entry(index).or_default() += 1;
        Some(extra)
    }
}

fn new_group(t: &Trial, rule: Option<&UntilStable>) -> RepetitionGroup {
    RepetitionGroup {
        experiment: t.experiment.clone(),
        platform: t.platform.clone(),
        workload: t.workload.clone(),
        adversary: t.adversary.clone(),
        n_instances: u32::try_from(t.instances.len()).unwrap_or(u32::MAX),
        params: serde_json::to_string(&t.params).unwrap_or_else(|_| "{}".into()),
        trials: Vec::new(),
        stop_reason: rule.is_none().then_some(StopReason::Fixed),
        target_rel_ci95: rule.map(|u| u.rel_ci95),
        max_repetitions: rule.map(|u| u.max_repetitions),
        metric: None,
        values: Vec::new(),
        rel_ci95: None,
    }
}

/// The primary metric of a trial's rows and its value: `metric` if given, else the first
/// headline summary value the workload printed; the mean over the instances of the same
/// workload reporting it (as the report computes a repetition's value).
fn primary_value(rows: &[ResultRow], metric: Option<&str>) -> Option<(String, f64)> {
    let summary = |r: &&ResultRow| r.t_offset_s.is_none() && is_headline(&r.metric);
    let first = rows
        .iter()
        .filter(summary)
        .find(|r| metric.is_none_or(|m| r.metric == m))?;
    let (sum, n) = rows
        .iter()
        .filter(summary)
        .filter(|r| r.metric == first.metric && r.workload == first.workload)
        .fold((0.0, 0u32), |(s, n), r| (s + r.value, n + 1));
    Some((first.metric.clone(), sum / f64::from(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIPELINE: &str = "apiVersion: isolab/v1\nkind: Pipeline\nname: t\n\
        defaults: { repetitions: 3, warmup: 0, duration: 1s, until_stable: { rel_ci95: 0.02, max_repetitions: 8 } }\n\
        platforms:\n  native: { backend: native }\n\
        experiments:\n  - { name: micro, analysis: overhead, platforms: [native], workloads: [syscall, fork_exit] }\n";

    fn pipeline(text: &str) -> Pipeline {
        isolab_model::load_str("t.yaml", text).expect("valid pipeline")
    }

    fn row(t: &Trial, metric: &str, value: f64, instance: i32) -> ResultRow {
        ResultRow {
            run_id: "r".into(),
            experiment: t.experiment.clone(),
            analysis: t.analysis.as_str().into(),
            trial_id: t.id.clone(),
            attempt: 1,
            repetition: i32::try_from(t.repetition).unwrap(),
            platform: t.platform.clone(),
            backend: "native".into(),
            accel: None,
            host: "h".into(),
            instance,
            role: "peer".into(),
            group: None,
            n_instances: 1,
            workload: t.workload.clone(),
            adversary: None,
            params: "{}".into(),
            metric: metric.into(),
            value,
            unit: "ns".into(),
            higher_is_better: false,
            t_offset_s: None,
            status: "ok".into(),
        }
    }

    /// Runs every group to its end: `value(workload, repetition)` is the primary metric of
    /// each trial. Returns the groups and the trials run, in order.
    fn simulate(
        p: &Pipeline,
        value: impl Fn(&str, u32) -> Option<f64>,
    ) -> (Vec<RepetitionGroup>, Vec<Trial>) {
        let trials = plan::plan(p);
        let mut groups = Vec::new();
        let (mut s, resumed) = Stability::new(p, &trials, &mut groups, &BTreeSet::new());
        assert!(resumed.is_empty());
        let mut queue: std::collections::VecDeque<Trial> = trials.into();
        let mut ran = Vec::new();
        while let Some(t) = queue.pop_front() {
            let rows = value(&t.workload, t.repetition)
                .map(|v| {
                    vec![
                        row(&t, "ops", 1e6, 0),
                        row(&t, "ns_per_call", v, 0),
                        row(&t, "cpu_usage_ns", 5.0, 0),
                    ]
                })
                .unwrap_or_default();
            let how = if rows.is_empty() {
                Finished::Failed
            } else {
                Finished::Ok(&rows)
            };
            if let Some(extra) = s.finished(&t, how, &mut groups, true) {
                queue.push_back(extra);
            }
            ran.push(t);
        }
        (groups, ran)
    }

    #[test]
    fn tight_group_stops_at_target_noisy_group_at_max() {
        let p = pipeline(PIPELINE);
        // syscall: ±0.1% around 100; fork_exit: alternating 50 and 150.
        let (groups, ran) = simulate(&p, |w, rep| {
            Some(match w {
                "syscall" => 100.0 + 0.1 * f64::from(rep % 3) - 0.1,
                _ => {
                    if rep % 2 == 0 {
                        50.0
                    } else {
                        150.0
                    }
                }
            })
        });
        assert_eq!(groups.len(), 2);
        let sys = groups.iter().find(|g| g.workload == "syscall").unwrap();
        assert_eq!(sys.stop_reason, Some(StopReason::CiWithinTarget));
        assert_eq!(sys.trials.len(), 3, "the planned repetitions suffice");
        assert_eq!(sys.metric.as_deref(), Some("ns_per_call"));
        assert!(sys.rel_ci95.unwrap() <= 0.02);
        let fork = groups.iter().find(|g| g.workload == "fork_exit").unwrap();
        assert_eq!(fork.stop_reason, Some(StopReason::MaxRepetitions));
        assert_eq!(fork.trials.len(), 8);
        assert_eq!(fork.values.len(), 8);
        assert!(fork.rel_ci95.unwrap() > 0.02);
        // Added repetitions carry the next indices and the planner's ids.
        let reps: Vec<u32> = ran
            .iter()
            .filter(|t| t.workload == "fork_exit")
            .map(|t| t.repetition)
            .collect();
        assert_eq!(reps, (0..8).collect::<Vec<_>>());
        let ids: Vec<&String> = ran
            .iter()
            .filter(|t| t.workload == "fork_exit")
            .map(|t| &t.id)
            .collect();
        assert_eq!(ids, fork.trials.iter().collect::<Vec<_>>());
    }

    #[test]
    fn noise_that_settles_stops_before_max() {
        let p = pipeline(PIPELINE);
        // Wild for the first three repetitions, then steady: more repetitions narrow the CI.
        let (groups, _) = simulate(&p, |_, rep| {
            Some(match rep {
                0 => 80.0,
                1 => 120.0,
                2 => 100.5,
                _ => 100.0,
            })
        });
        for g in &groups {
            assert_eq!(g.stop_reason, Some(StopReason::CiWithinTarget), "{g:?}");
            assert!(g.trials.len() > 3 && g.trials.len() < 8, "{g:?}");
        }
    }

    #[test]
    fn fixed_repetitions_and_failures() {
        let fixed = PIPELINE.replace(", until_stable: { rel_ci95: 0.02, max_repetitions: 8 }", "");
        let (groups, ran) = simulate(&pipeline(&fixed), |_, _| Some(1.0));
        assert_eq!(ran.len(), 6);
        assert!(
            groups
                .iter()
                .all(|g| g.stop_reason == Some(StopReason::Fixed) && g.trials.len() == 3)
        );
        // Every repetition failing: no CI, no endless retrying.
        let (groups, ran) = simulate(&pipeline(PIPELINE), |_, _| None);
        assert_eq!(ran.len(), 6);
        assert!(
            groups
                .iter()
                .all(|g| g.stop_reason == Some(StopReason::NoValues))
        );
    }

    #[test]
    fn resume_requeues_unfinished_added_repetitions() {
        let p = pipeline(PIPELINE);
        let trials = plan::plan(&p);
        let mut groups = Vec::new();
        let (mut s, _) = Stability::new(&p, &trials, &mut groups, &BTreeSet::new());
        let noisy = [50.0, 150.0, 60.0];
        let mut extra = None;
        for t in trials.iter().filter(|t| t.workload == "syscall") {
            let rows = vec![row(t, "ns_per_call", noisy[t.repetition as usize], 0)];
            extra = s.finished(t, Finished::Ok(&rows), &mut groups, true);
        }
        let extra = extra.expect("a noisy group asks for a fourth repetition");
        assert_eq!(extra.repetition, 3);
        // The run stops here; a resume finds the first three done and re-queues the fourth.
        let done: BTreeSet<String> = trials
            .iter()
            .filter(|t| t.workload == "syscall")
            .map(|t| t.id.clone())
            .collect();
        let (_, resumed) = Stability::new(&p, &trials, &mut groups, &done);
        assert_eq!(resumed.len(), 1);
        assert_eq!(resumed[0].id, extra.id);
        assert_eq!(groups.len(), 2, "groups are reused, not duplicated");
    }

    #[test]
    fn relative_ci_of_agreeing_values_is_small() {
        assert!(relative_ci95(&[100.0, 100.1, 99.9, 100.0]).unwrap() < 0.01);
        assert!(relative_ci95(&[100.0, 150.0, 60.0, 120.0]).unwrap() > 0.1);
        assert_eq!(relative_ci95(&[0.0, 0.0, 0.0]), None);
    }
}
