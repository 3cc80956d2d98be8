//! The shipped pipelines load, validate and plan; the JSON Schema accepts them and rejects
//! what the loader rejects for shape.

mod common;

use std::path::PathBuf;

use isolab_model::{json_schema, load_file, plan};

fn pipeline_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../pipelines");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

fn schema_validator() -> jsonschema::Validator {
    jsonschema::validator_for(&json_schema()).expect("the schema is a valid JSON Schema")
}

fn schema_errors(validator: &jsonschema::Validator, text: &str) -> Vec<String> {
    let instance: serde_json::Value = isolab_model::yaml::from_str(text).unwrap();
    validator
        .iter_errors(&instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn every_shipped_pipeline_is_valid() {
    let files = pipeline_files();
    assert!(
        files.iter().any(|f| f.ends_with("quickstart.yaml")),
        "{files:?}"
    );
    let validator = schema_validator();
    for f in files {
        let p = load_file(&f).unwrap_or_else(|e| panic!("{e}"));
        let trials = plan::plan(&p);
        assert!(!trials.is_empty(), "{}: no trials", f.display());
        let errors = schema_errors(&validator, &std::fs::read_to_string(&f).unwrap());
        assert!(errors.is_empty(), "{}: {errors:?}", f.display());
    }
}

/// `schema/pipeline-v1.json` is what `isolab schema` prints; regenerate it with
/// `cargo run -p isolab-coordinator --bin isolab -- schema > schema/pipeline-v1.json`.
#[test]
fn committed_schema_is_the_generated_one() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schema/pipeline-v1.json");
    let committed =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let generated = serde_json::to_string_pretty(&json_schema()).unwrap() + "\n";
    assert!(
        committed == generated,
        "schema/pipeline-v1.json is stale; regenerate it with `isolab schema > schema/pipeline-v1.json`"
    );
}

#[test]
fn shipped_pipelines_name_the_schema_for_editors() {
    for f in pipeline_files() {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.starts_with("# yaml-language-server: $schema=../schema/pipeline-v1.json\n"),
            "{}: first line must be the yaml-language-server modeline",
            f.display()
        );
    }
}

#[test]
fn quickstart_is_short() {
    let f = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../pipelines/quickstart.yaml");
    let s = plan::summarize(&plan::plan(&load_file(&f).unwrap()));
    // The quick start (native, container and a TCG microVM) must stay under about 3 minutes.
    assert!(s.estimated_duration().as_secs() <= 180, "{s}");
}

#[test]
fn schema_has_id_title_and_top_level_properties() {
    let s = json_schema();
    assert_eq!(s["$id"], isolab_model::schema::SCHEMA_ID);
    assert!(s["title"].as_str().unwrap().contains("isolab"));
    let props = s["properties"].as_object().unwrap();
    for key in [
        "apiVersion",
        "kind",
        "name",
        "defaults",
        "platforms",
        "experiments",
    ] {
        assert!(props.contains_key(key), "{key}");
    }
    assert_eq!(s["properties"]["apiVersion"]["const"], "isolab/v1");
    assert_eq!(s["additionalProperties"], false);
}

#[test]
fn schema_agrees_with_the_loader_on_shape() {
    let v = schema_validator();
    assert_eq!(schema_errors(&v, common::FULL), Vec::<String>::new());
    for (from, to) in [
        ("vcpus: 1", "vcpu: 1"),
        ("repetitions: 2", "repetitions: -1"),
        ("backend: vm", "backend: vmm"),
        ("duration: 1s", "duration: soon"),
        ("duration: 1s", "duration: 10"),
        ("[syscall, fork_exit]", "[syscall, fork_exti]"),
        ("apiVersion: isolab/v1", "apiVersion: isolab/v2"),
        (
            "workloads: [syscall, fork_exit]",
            "workloads: [{ name: mmap, parms: {} }]",
        ),
    ] {
        let text = common::FULL.replacen(from, to, 1);
        assert!(!schema_errors(&v, &text).is_empty(), "schema accepts {to}");
        assert!(
            isolab_model::load_str("p.yaml", &text).is_err(),
            "loader accepts {to}"
        );
    }
}
