//! Runtimes are names, never paths, and `runtime_args` come from a per-runtime allowlist; each
//! refusal at file:line:col of the offending value.

use isolab_model::{LoadError, load_str};

/// A pipeline with one platform given as a YAML flow mapping.
fn pipeline(platform: &str) -> String {
    format!(
        "apiVersion: isolab/v1
kind: Pipeline
name: runtimes
platforms:
  p: {platform}
experiments:
  - name: e
    analysis: overhead
    platforms: [p]
    workloads: [syscall]
"
    )
}

fn messages(text: &str) -> Vec<String> {
    match load_str("p.yaml", text) {
        Ok(_) => Vec::new(),
        Err(e @ LoadError::Invalid { .. }) => {
            e.diagnostics().iter().map(ToString::to_string).collect()
        }
        Err(e) => panic!("not a validation error: {e}"),
    }
}

#[test]
fn a_runtime_path_is_refused_at_its_value() {
    let m = messages(&pipeline("{ backend: container, runtime: /tmp/x }"));
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(
        m[0].starts_with("p.yaml:5:37: platforms.p.runtime: `/tmp/x` is a path"),
        "{}",
        m[0]
    );
    let m = messages(&pipeline("{ backend: docker, runtime: ./runsc }"));
    assert!(m.len() == 1 && m[0].contains("is a path"), "{m:?}");
    assert!(messages(&pipeline("{ backend: container, runtime: crun }")).is_empty());
    assert!(messages(&pipeline("{ backend: docker, runtime: runsc }")).is_empty());
}

#[test]
fn runtime_args_off_the_allowlist_are_refused_at_their_value() {
    let m = messages(&pipeline(
        "{ backend: container, runtime_args: [--root, /x] }",
    ));
    assert_eq!(m.len(), 2, "{m:?}");
    assert!(
        m[0].starts_with(
            "p.yaml:5:43: platforms.p.runtime_args[0]: `--root` is not allowed for runtime `runc` (allowed: none)"
        ),
        "{}",
        m[0]
    );
    assert!(
        m[1].starts_with("p.yaml:5:51: platforms.p.runtime_args[1]: `/x` is not allowed"),
        "{}",
        m[1]
    );
    let m = messages(&pipeline(
        "{ backend: container, runtime: runsc, runtime_args: [--platform=kvm, --network=host] }",
    ));
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(
        m[0].contains("runtime_args[1]: `--network=host` is not allowed for runtime `runsc` (allowed: --platform=ptrace|systrap|kvm)"),
        "{}",
        m[0]
    );
    assert!(
        messages(&pipeline(
            "{ backend: container, runtime: runsc, runtime_args: [--platform=systrap] }"
        ))
        .is_empty()
    );
}
