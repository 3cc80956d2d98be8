//! Execution order of the planned trials: randomized multiple interleaved trials by default.
//!
//! [`super::plan`] lists trials in file order (experiment, platform, matrix point, warm-ups then
//! repetitions), which is the `blocked` order. [`arrange`] turns that list into the order in
//! which trials run. Experiments keep their file order; within an experiment, `random` and
//! `interleaved` run in rounds — the warm-ups of every cell first (one round per warm-up), then
//! round r holds measured repetition r of every cell — and `random` shuffles each round anew.
//!
//! The shuffle is keyed rather than drawn in sequence: a trial's place in its round is the hash of
//! the seed and the trial's content-derived id. So the same seed gives the same order for any
//! subset of the trials (`--only`, `--resume`), and a trial's position never depends on which
//! other trials were filtered out.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::Trial;
use crate::pipeline::{Pipeline, TrialOrder};

/// The round of `trial` in its experiment: warm-up `w` is round `w`, measured repetition `r`
/// is round `warmups + r` (so adaptive repetitions added by `until_stable` continue the count).
pub fn round_of(p: &Pipeline, trial: &Trial) -> u32 {
    if trial.warmup {
        return trial.repetition;
    }
    let warmups = p
        .experiments
        .iter()
        .find(|e| e.name == trial.experiment)
        .and_then(|e| e.warmup)
        .unwrap_or(p.defaults.warmup);
    warmups.saturating_add(trial.repetition)
}

/// The order an experiment's trials run in (`blocked` for an experiment the pipeline lacks).
pub fn order_of(p: &Pipeline, experiment: &str) -> TrialOrder {
    p.experiments
        .iter()
        .find(|e| e.name == experiment)
        .map_or(TrialOrder::Blocked, |e| e.trial_order(p))
}

/// The shuffle key of a trial under `seed`: 64 bits of SHA-256 over the seed and the trial id.
fn shuffle_key(seed: u64, id: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(id.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

/// Puts `trials` (in [`super::plan`]'s file order, or any subset of it in that order) into
/// execution order: experiments in file order, each arranged by its `order` with `seed`.
pub fn arrange(p: &Pipeline, trials: Vec<Trial>, seed: u64) -> Vec<Trial> {
    let experiment_rank: HashMap<&str, usize> = p
        .experiments
        .iter()
        .enumerate()
        .map(|(i, e)| (e.name.as_str(), i))
        .collect();
    let mut keyed: Vec<((usize, u32, u64, usize), Trial)> = trials
        .into_iter()
        .enumerate()
        .map(|(pos, t)| {
            let exp = experiment_rank
                .get(t.experiment.as_str())
                .copied()
                .unwrap_or(usize::MAX);
            let key = match order_of(p, &t.experiment) {
                TrialOrder::Blocked => (exp, 0, 0, pos),
                TrialOrder::Interleaved => (exp, round_of(p, &t), 0, pos),
                TrialOrder::Random => (exp, round_of(p, &t), shuffle_key(seed, &t.id), pos),
            };
            (key, t)
        })
        .collect();
    keyed.sort_by_key(|(k, _)| *k);
    keyed.into_iter().map(|(_, t)| t).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::plan;

    fn pipeline(order: &str) -> Pipeline {
        let text = format!(
            "apiVersion: isolab/v1\nkind: Pipeline\nname: t\n\
             defaults: {{ repetitions: 3, warmup: 1, duration: 1s, order: {order} }}\n\
             platforms:\n  a: {{ backend: native }}\n  b: {{ backend: native }}\n\
             experiments:\n  - {{ name: m, analysis: overhead, platforms: [a, b], workloads: [syscall, cpu_spin] }}\n  \
             - {{ name: n, analysis: overhead, platforms: [a], workloads: [syscall] }}\n"
        );
        crate::load::load_str("t.yaml", &text).expect("valid")
    }

    fn cells(trials: &[Trial]) -> Vec<String> {
        trials
            .iter()
            .map(|t| format!("{}/{}/{}", t.experiment, t.platform, t.workload))
            .collect()
    }

    #[test]
    fn blocked_keeps_file_order() {
        let p = pipeline("blocked");
        let planned = plan(&p);
        assert_eq!(arrange(&p, planned.clone(), 7), planned);
    }

    #[test]
    fn random_runs_rounds_of_every_cell_and_is_a_permutation() {
        let p = pipeline("random");
        let planned = plan(&p);
        let arranged = arrange(&p, planned.clone(), 7);
        assert_eq!(arranged.len(), planned.len());
        let mut a: Vec<_> = arranged.iter().map(|t| t.id.clone()).collect();
        let mut b: Vec<_> = planned.iter().map(|t| t.id.clone()).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b, "same trials");
        // Experiment m: 4 cells × (1 warm-up + 3 repetitions) = 16 trials in 4 rounds of 4.
        let m: Vec<&Trial> = arranged.iter().filter(|t| t.experiment == "m").collect();
        assert_eq!(m.len(), 16);
        for (i, chunk) in m.chunks(4).enumerate() {
            let rounds: Vec<u32> = chunk.iter().map(|t| round_of(&p, t)).collect();
            assert!(
                rounds.iter().all(|r| u64::from(*r) == i as u64),
                "round {i}: {rounds:?}"
            );
            let mut c = cells(&chunk.iter().map(|t| (*t).clone()).collect::<Vec<_>>());
            c.sort();
            c.dedup();
            assert_eq!(c.len(), 4, "every cell once per round");
        }
        assert!(m[..4].iter().all(|t| t.warmup), "warm-ups first");
        // Experiments keep file order.
        let first_n = arranged.iter().position(|t| t.experiment == "n").unwrap();
        assert!(arranged[..first_n].iter().all(|t| t.experiment == "m"));
    }

    #[test]
    fn random_order_depends_on_the_seed_and_only_on_it() {
        let p = pipeline("random");
        let planned = plan(&p);
        let a = arrange(&p, planned.clone(), 1);
        assert_eq!(a, arrange(&p, planned.clone(), 1), "deterministic");
        let differs = (2..10).any(|s| cells(&arrange(&p, planned.clone(), s)) != cells(&a));
        assert!(differs, "another seed, another order");
        // Rounds are shuffled independently: not every round repeats the first round's order.
        let m: Vec<Trial> = a.into_iter().filter(|t| t.experiment == "m").collect();
        let orders: Vec<Vec<String>> = m.chunks(4).map(cells).collect();
        assert!(orders.iter().any(|o| *o != orders[0]), "{orders:?}");
    }

    #[test]
    fn a_subset_keeps_its_relative_order() {
        let p = pipeline("random");
        let planned = plan(&p);
        let full = arrange(&p, planned.clone(), 42);
        // What a resume sees: the trials not yet done, in plan order.
        let rest: Vec<Trial> = planned.into_iter().filter(|t| !t.warmup).collect();
        let resumed = arrange(&p, rest, 42);
        let expected: Vec<Trial> = full.into_iter().filter(|t| !t.warmup).collect();
        assert_eq!(resumed, expected);
    }

    #[test]
    fn interleaved_is_round_robin_in_file_order() {
        let p = pipeline("interleaved");
        let arranged = arrange(&p, plan(&p), 99);
        let m: Vec<Trial> = arranged
            .into_iter()
            .filter(|t| t.experiment == "m")
            .collect();
        let orders: Vec<Vec<String>> = m.chunks(4).map(cells).collect();
        assert!(orders.iter().all(|o| *o == orders[0]));
        assert_eq!(
            orders[0],
            ["m/a/syscall", "m/a/cpu_spin", "m/b/syscall", "m/b/cpu_spin"]
        );
    }
}
