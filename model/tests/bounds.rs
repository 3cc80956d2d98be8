//! Bounds on parameter values: `dir` stays in the instance's scratch, `host` on the trial's own
//! network, sizes, counts, durations and timeouts under their bounds; each refusal at
//! file:line:col of the offending value.

use isolab_model::{LoadError, load_str};

/// A pipeline running `workload` with `params` (a YAML flow mapping) on a native and a bridged
/// container platform.
fn pipeline(workload: &str, params: &str, extra: &str) -> String {
    format!(
        "apiVersion: isolab/v1
kind: Pipeline
name: bounds
platforms:
  native: {{ backend: native }}
experiments:
  - name: e
    analysis: overhead
    platforms: [native]
    workloads:
      - name: {workload}
        params: {params}
{extra}"
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
fn dir_outside_the_scratch_is_refused_at_its_value() {
    let m = messages(&pipeline("disk", "{ dir: /etc }", ""));
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(
        m[0].starts_with("p.yaml:12:24: experiments[0].workloads[0].params.dir: parameter `dir`: `/etc` is absolute"),
        "{}",
        m[0]
    );
    let m = messages(&pipeline("file_ops", "{ dir: ../../x }", ""));
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(m[0].contains("`../../x` contains `..`"), "{}", m[0]);
    assert!(messages(&pipeline("disk", "{ dir: data }", "")).is_empty());
}

#[test]
fn hosts_off_the_trials_network_are_refused() {
    let m = messages(&pipeline("tcp_rr", "{ host: 8.8.8.8 }", ""));
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(
        m[0].starts_with("p.yaml:12:25: experiments[0].workloads[0].params.host: parameter `host` on platform `native`: `8.8.8.8` is not an address of the trial's own network"),
        "{}",
        m[0]
    );
    assert!(messages(&pipeline("tcp_rr", "{ host: 127.0.0.1 }", "")).is_empty());
}

#[test]
fn sizes_counts_and_durations_over_their_bounds_are_refused() {
    let m = messages(&pipeline("disk", "{ size: 1PiB }", ""));
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(
        m[0].starts_with("p.yaml:12:25: experiments[0].workloads[0].params.size: parameter `size`: `1PiB` is larger than the bound of 16GiB"),
        "{}",
        m[0]
    );
    let m = messages(&pipeline("cpu_spin", "{ threads: 100000 }", ""));
    assert!(m.len() == 1 && m[0].contains("max_threads"), "{m:?}");
    let m = messages(&pipeline(
        "fork_exit",
        "{ duration: 1s }",
        "    timeout: 100h\n",
    ));
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(
        m[0].starts_with(
            "p.yaml:13:14: experiments[0].timeout: 360000s is longer than the bound of 14400s"
        ),
        "{}",
        m[0]
    );
}

#[test]
fn swept_values_are_checked_at_their_position() {
    let text = "apiVersion: isolab/v1
kind: Pipeline
name: bounds
platforms:
  native: { backend: native }
experiments:
  - name: e
    analysis: overhead
    platforms: [native]
    workloads: [disk]
    matrix:
      params:
        size: [1MiB, 1PiB]
";
    let m = messages(text);
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(
        m[0].starts_with("p.yaml:13:22: experiments[0].matrix.params.size[1]: parameter `size`"),
        "{}",
        m[0]
    );
}
