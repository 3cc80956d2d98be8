//! Helpers shared by the integration tests (included with `mod common;`).

#![allow(dead_code, unreachable_pub)]

use isolab_model::catalog::{self, WorkloadKind};

/// A valid pipeline using every analysis.
pub const FULL: &str = "\
apiVersion: isolab/v1
kind: Pipeline
name: full
defaults: { repetitions: 2, warmup: 1, duration: 1s }
platforms:
  native: { backend: native }
  container: { backend: container, runtime: runc, limits: { memory: 512MiB, pids: 512, cpu_weight: 100 } }
  vm: { backend: vm, vcpus: 1, memory: 256MiB, accel: auto }
experiments:
  - { name: micro, analysis: overhead, platforms: [native, container, vm], workloads: [syscall, fork_exit] }
  - name: scale
    analysis: scaling
    platforms: [container, vm]
    matrix: { instances: [1, 2, 4] }
    workload: cpu_spin
  - name: fair
    analysis: fairness
    platforms: [container]
    groups: [ { name: a, count: 1, weight: 1 }, { name: rest, count: 3, weight: 2 } ]
    workload: cpu_spin
    reservation: { group: a, cpu: 25% }
  - name: isolation
    analysis: isolation
    platforms: [container, vm]
    victim: syscall
    adversaries: [none]
";

/// A small valid pipeline whose experiment list can be extended.
pub const HEAD: &str = "\
apiVersion: isolab/v1
kind: Pipeline
name: demo
platforms:
  native: { backend: native }
  vm: { backend: vm }
experiments:
";

/// The catalog's benchmark names as error messages list them.
pub fn benchmark_list() -> String {
    catalog::WORKLOADS
        .iter()
        .filter(|w| w.kind == WorkloadKind::Benchmark)
        .map(|w| w.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The adversary names (with `none` first) as error messages list them.
pub fn adversary_list() -> String {
    std::iter::once("none")
        .chain(
            catalog::WORKLOADS
                .iter()
                .filter(|w| w.kind == WorkloadKind::Adversary)
                .map(|w| w.name),
        )
        .collect::<Vec<_>>()
        .join(", ")
}

/// Replaces catalog-derived lists by placeholders so that snapshots survive catalog growth.
pub fn stable(text: &str) -> String {
    text.replace(
        &format!("expected one of: {})", benchmark_list()),
        "expected one of: <benchmarks>)",
    )
    .replace(
        &format!("expected one of: {})", adversary_list()),
        "expected one of: <adversaries>)",
    )
}

/// The diagnostics of loading `text` as `p.yaml`, one per line; panics if it loads.
pub fn errors(text: &str) -> String {
    errors_with(text, &[])
}

/// Like [`errors`], with `--set` overrides.
pub fn errors_with(text: &str, overrides: &[&str]) -> String {
    let overrides: Vec<String> = overrides.iter().map(|s| (*s).to_owned()).collect();
    match isolab_model::load_str_full("p.yaml", text, &overrides) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => {
            let lines: Vec<String> = e.diagnostics().iter().map(ToString::to_string).collect();
            // Display and diagnostics() must agree.
            assert_eq!(e.to_string(), lines.join("\n"));
            stable(&lines.join("\n"))
        }
    }
}
