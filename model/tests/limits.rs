//! Limits on pipeline size and plan size: refused before anything big is read or expanded.

mod common;

use isolab_model::validate::{MAX_INSTANCE_STARTS, MAX_TRIALS};
use isolab_model::{LoadError, load_file, load_str};

/// A scaling pipeline with the given repetitions and instance counts.
fn scaling(repetitions: u64, instances: &str) -> String {
    format!(
        "apiVersion: isolab/v1
kind: Pipeline
name: big
platforms:
  native: {{ backend: native }}
experiments:
  - name: scale
    analysis: scaling
    platforms: [native]
    workload: cpu_spin
    repetitions: {repetitions}
    matrix:
      instances: {instances}
"
    )
}

fn messages(e: &LoadError) -> Vec<String> {
    e.diagnostics().iter().map(ToString::to_string).collect()
}

#[test]
fn the_27_second_plan_is_refused_at_repetitions() {
    // 200000 repetitions × [64]: 200000 trials and 12.8 M instance starts. Before the limit this
    // expanded for 27 s in 10 GB; now validation refuses it arithmetically.
    let e = load_str("p.yaml", &scaling(200_000, "[64]")).unwrap_err();
    let m = messages(&e);
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(
        m[0].starts_with("p.yaml:11:5: experiments[0].repetitions: the plan would have 200000 trials, more than the limit of 100000"),
        "{}",
        m[0]
    );
}

#[test]
fn instance_starts_are_limited_at_the_matrix() {
    // 1 repetition × 2 points: 2 trials, but 500000 + 1000000 = 1.5 M instance starts; the
    // matrix is the larger factor.
    let e = load_str("p.yaml", &scaling(1, "[500000, 1000000]")).unwrap_err();
    let m = messages(&e);
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(
        m[0].starts_with("p.yaml:12:5: experiments[0].matrix: the plan would start 1500000 instances, more than the limit of 1000000"),
        "{}",
        m[0]
    );
}

#[test]
fn a_wide_matrix_is_blamed_on_the_matrix() {
    // 2 repetitions × 50001 instance counts: the matrix is the larger factor.
    let counts: Vec<String> = (1..=MAX_TRIALS / 2 + 1).map(|n| n.to_string()).collect();
    let text = scaling(2, &format!("[{}]", counts.join(", ")));
    let e = load_str("p.yaml", &text).unwrap_err();
    let m = messages(&e);
    assert_eq!(m.len(), 1);
    assert!(
        m[0].starts_with("p.yaml:12:5: experiments[0].matrix: the plan would have 100002 trials"),
        "{}",
        m[0]
    );
}

#[test]
fn saturating_counts_do_not_overflow() {
    let e = load_str(
        "p.yaml",
        &scaling(u64::from(u32::MAX), "[4294967295, 4294967295]"),
    )
    .unwrap_err();
    assert!(messages(&e)[0].contains("experiments[0].repetitions: the plan would have"));
}

#[test]
fn plans_at_the_limits_are_accepted() {
    let at_trials = scaling(MAX_TRIALS, "[1]");
    let p = load_str("p.yaml", &at_trials).unwrap();
    let s = isolab_model::validate::size(&p.experiments[0], &p);
    assert_eq!(s.trials, MAX_TRIALS);
    let at_starts = scaling(MAX_INSTANCE_STARTS / 1000, "[1000]");
    load_str("p.yaml", &at_starts).unwrap();
}

#[test]
fn size_matches_the_expansion() {
    let text = "apiVersion: isolab/v1
kind: Pipeline
name: small
defaults: { warmup: 1 }
platforms:
  a: { backend: native }
  b: { backend: native }
experiments:
  - { name: o, analysis: overhead, platforms: [a, b], workloads: [syscall, fork_exit], instances: 3, repetitions: 2, matrix: { params: { iterations: [1, 2, 3] } } }
  - { name: s, analysis: scaling, platforms: [a], workload: cpu_spin, repetitions: 2, matrix: { instances: [1, 4] } }
  - { name: i, analysis: isolation, platforms: [b], victim: syscall, adversaries: [none, cpu_hog, fork_bomb], repetitions: 3 }
";
    for text in [text, common::FULL] {
        check_size_against_plan(text);
    }
}

fn check_size_against_plan(text: &str) {
    let p = load_str("p.yaml", text).unwrap();
    let trials = isolab_model::plan::plan(&p);
    for e in &p.experiments {
        let mine: Vec<_> = trials.iter().filter(|t| t.experiment == e.name).collect();
        let s = isolab_model::validate::size(e, &p);
        assert_eq!(s.trials, mine.len() as u64, "{}", e.name);
        let starts: usize = mine.iter().map(|t| t.instances.len()).sum();
        assert_eq!(s.instance_starts, starts as u64, "{}", e.name);
    }
}

#[test]
fn a_file_over_one_mib_is_refused_naming_file_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    let mut text = scaling(1, "[1]");
    text.push_str(&format!("# {}\n", "x".repeat(1024 * 1024)));
    std::fs::write(&path, &text).unwrap();
    let e = load_file(&path).unwrap_err();
    assert!(matches!(e, LoadError::TooLarge { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "{}:1:1: pipeline is {} bytes, more than the limit of 1048576 bytes (1 MiB); split it into several pipelines",
            path.display(),
            text.len()
        )
    );
    assert!(matches!(
        load_str("p.yaml", &text),
        Err(LoadError::TooLarge { .. })
    ));
}
