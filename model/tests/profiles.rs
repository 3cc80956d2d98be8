//! `--profile NAME`: profiles from the pipeline's `profiles:` applied before `--set`s.

use isolab_model::{LoadError, load_str_full, load_str_profile};

const PIPELINE: &str = "\
apiVersion: isolab/v1
kind: Pipeline
name: p
defaults: { repetitions: 3, duration: 2s }
platforms:
  native: { backend: native }
experiments:
  - name: micro
    analysis: overhead
    platforms: [native]
    workloads: [syscall]
profiles:
  quick:
    defaults.repetitions: 1
    defaults.duration: 100ms
";

fn messages(e: &LoadError) -> String {
    e.diagnostics()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn profile_applies_before_set() {
    let plain = load_str_full("p.yaml", PIPELINE, &[]).unwrap();
    assert_eq!(plain.pipeline.defaults.repetitions, 3);
    assert_eq!(plain.pipeline.profiles["quick"].len(), 2);

    let quick = load_str_profile("p.yaml", PIPELINE, Some("quick"), &[]).unwrap();
    assert_eq!(quick.pipeline.defaults.repetitions, 1);
    assert_eq!(quick.pipeline.defaults.duration.as_millis_u64(), 100);
    assert!(
        quick
            .text
            .starts_with("# effective pipeline: p.yaml with --profile quick")
    );
    assert_ne!(quick.sha256, plain.sha256);

    let set = ["defaults.repetitions=2".to_owned()];
    let both = load_str_profile("p.yaml", PIPELINE, Some("quick"), &set).unwrap();
    assert_eq!(
        both.pipeline.defaults.repetitions, 2,
        "--set wins over the profile"
    );
    assert_eq!(both.pipeline.defaults.duration.as_millis_u64(), 100);
}

#[test]
fn unknown_profile_lists_known() {
    let e = load_str_profile("p.yaml", PIPELINE, Some("quik"), &[]).unwrap_err();
    let m = messages(&e);
    assert!(m.contains("unknown profile `quik`"), "{m}");
    assert!(m.contains("known profiles: quick"), "{m}");
}

#[test]
fn broken_profiles_are_rejected_even_unused() {
    let bad_key = PIPELINE.replace(
        "defaults.duration: 100ms",
        "experiments.mikro.repetitions: 1",
    );
    let m = messages(&load_str_full("p.yaml", &bad_key, &[]).unwrap_err());
    assert!(m.contains("profile `quick`"), "{m}");
    assert!(m.contains("did you mean `micro`?"), "{m}");
    assert!(m.starts_with("p.yaml:13:3:"), "placed at the profile: {m}");

    let bad_value = PIPELINE.replace("defaults.repetitions: 1", "defaults.repetitions: 0");
    let m = messages(&load_str_full("p.yaml", &bad_value, &[]).unwrap_err());
    assert!(m.contains("profile `quick`"), "{m}");
    assert!(m.contains("repetitions"), "{m}");
}

#[test]
fn soltesz2007_loads_with_and_without_quick() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/soltesz2007.yaml");
    let full = isolab_model::load_file_profile(&path, None, &[]).unwrap_or_else(|e| panic!("{e}"));
    let quick = isolab_model::load_file_profile(&path, Some("quick"), &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let full_trials = isolab_model::plan::plan(&full.pipeline);
    let quick_trials = isolab_model::plan::plan(&quick.pipeline);
    assert!(quick_trials.len() < full_trials.len());
    let max = |t: &[isolab_model::plan::Trial]| t.iter().map(|t| t.instances.len()).max().unwrap();
    assert_eq!(max(&full_trials), 128);
    // fair_reserved: one reserved instance against four (a natural 20%, below its 25%).
    assert!(max(&quick_trials) <= 5);
}
