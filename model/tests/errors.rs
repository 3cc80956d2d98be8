//! Every kind of bad input, with a snapshot of exactly what `isolab validate` prints.

mod common;

use common::{FULL, HEAD, errors, errors_with};
use insta::assert_snapshot;
use isolab_model::{LoadError, load_file, load_str};

/// `FULL` with `from` replaced by `to` (which must occur).
fn edit(from: &str, to: &str) -> String {
    assert!(FULL.contains(from), "`{from}` not in FULL");
    FULL.replacen(from, to, 1)
}

#[test]
fn full_pipeline_is_valid() {
    load_str("p.yaml", FULL).unwrap();
}

#[test]
fn missing_file() {
    let e = load_file("does-not-exist.yaml".as_ref()).unwrap_err();
    assert!(matches!(e, LoadError::Read { .. }));
    assert_snapshot!(e.to_string(), @"does-not-exist.yaml:1:1: cannot read file: no such file or directory (os error 2)");
}

#[test]
fn non_utf8_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.yaml");
    let mut bytes = HEAD.as_bytes().to_vec();
    bytes.extend_from_slice(b"  - { name: caf\xe9, analysis: overhead }\n");
    std::fs::write(&path, bytes).unwrap();
    let e = load_file(&path).unwrap_err();
    let shown = e
        .to_string()
        .replace(&dir.path().display().to_string(), "DIR");
    assert_snapshot!(shown, @"DIR/latin1.yaml:8:16: not valid UTF-8 (invalid byte 0xe9); pipeline files must be UTF-8 text");
}

#[test]
fn empty_file() {
    assert_snapshot!(errors("# nothing here\n"), @"p.yaml:1:1: empty pipeline: expected a mapping with apiVersion, kind, name, platforms and experiments");
}

#[test]
fn malformed_yaml() {
    let text = edit(
        "platforms: [native, container, vm]",
        "platforms: [native, container, vm",
    );
    assert_snapshot!(errors(&text));
}

#[test]
fn bad_indentation() {
    let text = edit(
        "    analysis: scaling\n",
        "    analysis: scaling\n   workload: x\n",
    );
    assert_snapshot!(errors(&text));
}

#[test]
fn duplicate_yaml_key() {
    let text = edit(
        "    workload: cpu_spin\n",
        "    workload: cpu_spin\n    workload: syscall\n",
    );
    let out = errors(&text);
    assert!(out.starts_with("p.yaml:16:5:"), "{out}");
    assert_snapshot!(out);
}

#[test]
fn wrong_type() {
    assert_snapshot!(errors(&edit("repetitions: 2", "repetitions: many")));
    assert_snapshot!(
        "wrong_type_list",
        errors(&edit(
            "workloads: [syscall, fork_exit]",
            "workloads: syscall"
        ))
    );
    assert_snapshot!(
        "wrong_type_param",
        errors(&edit(
            "workloads: [syscall, fork_exit]",
            "workloads: [{ name: mmap, params: { size: [1] } }]"
        ))
    );
}

#[test]
fn unknown_key_top_level() {
    assert_snapshot!(errors(&edit("experiments:", "experiment:")));
}

#[test]
fn unknown_key_in_platform() {
    let out = errors(&edit("vcpus: 1", "vcpu: 1"));
    assert!(out.starts_with("p.yaml:8:22:"), "{out}");
    assert_snapshot!(out);
}

#[test]
fn unknown_key_in_limits() {
    assert_snapshot!(errors(&edit("limits: { memory:", "limits: { memroy:")));
}

#[test]
fn unknown_key_in_experiment() {
    assert_snapshot!(errors(&edit(
        "    workload: cpu_spin\n    reservation",
        "    worklaod: cpu_spin\n    reservation"
    )));
}

#[test]
fn unknown_key_in_workload_spec() {
    let text = edit(
        "workloads: [syscall, fork_exit]",
        "workloads: [syscall, { name: mmap, parms: { size: 4KiB } }]",
    );
    assert_snapshot!(errors(&text));
}

#[test]
fn unknown_enum_value() {
    assert_snapshot!(errors(&edit("backend: vm", "backend: vmm")));
    assert_snapshot!(
        "unknown_analysis",
        errors(&edit("analysis: scaling", "analysis: scalability"))
    );
}

#[test]
fn missing_field() {
    assert_snapshot!(errors(&edit("name: full\n", "")));
    assert_snapshot!(
        "missing_field_group_count",
        errors(&edit(
            "{ name: a, count: 1, weight: 1 }",
            "{ name: a, weight: 1 }"
        ))
    );
}

#[test]
fn unknown_workload() {
    let out = errors(&edit(
        "workloads: [syscall, fork_exit]",
        "workloads: [sycall, fork_exit]",
    ));
    // The value's position: line 10, column of `sycall`.
    let col = FULL.lines().nth(9).unwrap().find("syscall").unwrap() + 1;
    assert!(out.starts_with(&format!("p.yaml:10:{col}:")), "{out}");
    assert_snapshot!(out);
}

#[test]
fn unknown_workload_lists_the_catalog() {
    let text = edit(
        "workloads: [syscall, fork_exit]",
        "workloads: [sycall, fork_exit]",
    );
    let raw = load_str("p.yaml", &text).unwrap_err().to_string();
    assert!(raw.contains(&common::benchmark_list()), "{raw}");
}

#[test]
fn unknown_platform_reference() {
    let out = errors(&edit(
        "platforms: [container, vm]\n    victim",
        "platforms: [container, vmm]\n    victim",
    ));
    assert!(out.starts_with("p.yaml:24:28:"), "{out}");
    assert_snapshot!(out);
}

#[test]
fn zero_counts() {
    assert_snapshot!(errors(&edit("repetitions: 2", "repetitions: 0")));
    assert_snapshot!(
        "zero_instances",
        errors(&edit("instances: [1, 2, 4]", "instances: [1, 0, 4]"))
    );
    assert_snapshot!(
        "zero_group",
        errors(&edit(
            "{ name: a, count: 1, weight: 1 }",
            "{ name: a, count: 0, weight: 0 }"
        ))
    );
    assert_snapshot!(
        "zero_vm",
        errors(&edit("vcpus: 1, memory: 256MiB", "vcpus: 0, memory: 0"))
    );
    assert_snapshot!(
        "zero_duration",
        errors(&edit("duration: 1s", "duration: 0s"))
    );
}

#[test]
fn negative_count() {
    assert_snapshot!(errors(&edit("pids: 512", "pids: -1")));
    assert_snapshot!(
        "negative_repetitions",
        errors(&edit("repetitions: 2", "repetitions: -3"))
    );
}

#[test]
fn unknown_unit() {
    assert_snapshot!(errors(&edit("duration: 1s", "duration: 10 parsecs")));
    assert_snapshot!(
        "unknown_size_unit",
        errors(&edit("memory: 256MiB", "memory: 12 furlongs"))
    );
    assert_snapshot!(
        "bare_number_duration",
        errors(&edit("duration: 1s", "duration: 10"))
    );
}

#[test]
fn no_experiments_or_platforms() {
    let text = "apiVersion: isolab/v1\nkind: Pipeline\nname: x\nplatforms: {}\nexperiments: []\n";
    assert_snapshot!(errors(text));
}

#[test]
fn duplicate_names() {
    let text = format!(
        "{HEAD}  - {{ name: micro, analysis: overhead, platforms: [native], workloads: [syscall] }}\n  \
         - {{ name: micro, analysis: overhead, platforms: [vm, vm], workloads: [syscall, syscall] }}\n  \
         - {{ name: f, analysis: fairness, platforms: [native], workload: cpu_spin, groups: [{{ name: a, count: 1 }}, {{ name: a, count: 2 }}] }}\n"
    );
    assert_snapshot!(errors(&text));
}

#[test]
fn backend_inapplicable_fields() {
    let text = format!(
        "{HEAD}  - {{ name: micro, analysis: overhead, platforms: [native], workloads: [syscall] }}\n"
    )
    .replace(
        "native: { backend: native }",
        "native: { backend: native, vcpus: 2, runtime: runc, rootfs: host-ro }",
    )
    .replace("vm: { backend: vm }", "vm: { backend: vm, network: host, runtime_args: [--debug], machine: pc }");
    let out = errors(&text);
    assert!(
        out.starts_with("p.yaml:5:30: platforms.native.vcpus:"),
        "{out}"
    );
    assert_snapshot!(out);
}

#[test]
fn analysis_keys() {
    let text = format!(
        "{HEAD}  - {{ name: a, analysis: overhead, platforms: [native], workloads: [syscall], groups: [{{ name: g, count: 1 }}], victim: syscall }}\n  \
         - {{ name: b, analysis: scaling, platforms: [native], instances: 2 }}\n  \
         - {{ name: c, analysis: fairness, platforms: [native], workload: cpu_spin }}\n  \
         - {{ name: d, analysis: isolation, platforms: [native], workloads: [syscall] }}\n"
    );
    assert_snapshot!(errors(&text));
}

#[test]
fn header_errors() {
    let text = FULL
        .replace("apiVersion: isolab/v1", "apiVersion: isolab/v2")
        .replace("kind: Pipeline", "kind: Pipelines")
        .replace("name: full", "name: my pipeline");
    assert_snapshot!(errors(&text));
}

#[test]
fn workload_references() {
    let text = format!(
        "{HEAD}  - {{ name: a, analysis: overhead, platforms: [native], workloads: [none, {{ name: mmap, params: {{ sise: 4KiB }} }}] }}\n  \
         - {{ name: b, analysis: isolation, platforms: [native], victim: syscall, adversaries: [none, rowhammer, syscall, none] }}\n  \
         - {{ name: c, analysis: overhead, platforms: [native], workloads: [syscall, mmap], matrix: {{ params: {{ size: [4KiB, 1MiB, 4KiB] }} }} }}\n"
    );
    assert_snapshot!(errors(&text));
}

#[test]
fn fairness_and_stability_rules() {
    let text = FULL
        .replace(
            "defaults: { repetitions: 2, warmup: 1, duration: 1s }",
            "defaults: { repetitions: 5, duration: 1s, timeout: 1s, until_stable: { rel_ci95: 0, max_repetitions: 3 } }",
        )
        .replace("count: 3, weight: 2", "count: 3, weight: 101")
        .replace("{ group: a, cpu: 25% }", "{ group: b, cpu: 150% }")
        .replace("cpu_weight: 100", "cpu_weight: 0, cpuset: 1-0");
    assert_snapshot!(errors(&text));
}

#[test]
fn several_errors_are_all_reported_in_file_order() {
    let text = FULL
        .replace("name: full", "name: ''")
        .replace("vcpus: 1", "vcpus: 0")
        .replace("[syscall, fork_exit]", "[syscall, fork_exti]")
        .replace("instances: [1, 2, 4]", "instances: [1, 1]")
        .replace("victim: syscall", "victim: nothing")
        .replace("{ group: a, cpu: 25% }", "{ group: a, cpu: 0% }");
    let e = load_str("p.yaml", &text).unwrap_err();
    let d = e.diagnostics();
    assert_eq!(d.len(), 6, "{e}");
    assert!(
        d.windows(2)
            .all(|w| (w[0].line, w[0].col) <= (w[1].line, w[1].col)),
        "{e}"
    );
    assert_snapshot!(errors(&text));
}

#[test]
fn override_errors() {
    assert_snapshot!(errors_with(FULL, &["defaults.duration"]), @"p.yaml:1:1: --set defaults.duration: expected KEY=VALUE, e.g. `defaults.duration=1s`");
    assert_snapshot!(
        "override_unknown_experiment",
        errors_with(FULL, &["experiments.mikro.repetitions=2"])
    );
    assert_snapshot!("override_not_a_mapping", errors_with(FULL, &["name.x=1"]));
    assert_snapshot!(
        "override_bad_value",
        errors_with(
            FULL,
            &["defaults.repetitions=0", "experiments.scale.duration=soon"]
        )
    );
    assert_snapshot!(
        "override_semantic",
        errors_with(
            FULL,
            &[
                "experiments.micro.repetitions=0",
                "platforms.native.vcpus=2"
            ]
        )
    );
    assert_snapshot!(
        "override_unknown_key",
        errors_with(FULL, &["defaults.durration=1s"])
    );
}

#[test]
fn files_with_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.yaml");
    std::fs::write(&path, FULL).unwrap();
    let full = isolab_model::load_file_full(&path, &[]).unwrap();
    assert_eq!(full.text, FULL);
    let p =
        isolab_model::load_with_overrides(&path, &["defaults.repetitions=4".to_owned()]).unwrap();
    assert_eq!(p.defaults.repetitions, 4);
    let e = isolab_model::load_with_overrides(&path, &["defaults.repetitions=0".to_owned()])
        .unwrap_err();
    let shown = e
        .to_string()
        .replace(&dir.path().display().to_string(), "DIR");
    // Placed at the original `repetitions` value.
    assert_snapshot!(shown, @"DIR/p.yaml:4:26: --set defaults.repetitions=0: must be at least 1, got 0");
}

#[test]
fn a_reservation_weights_cannot_express_is_refused() {
    let text = edit(
        "{ name: rest, count: 3, weight: 2 }",
        "{ name: rest, count: 64, weight: 100 }",
    );
    let text = text.replacen(
        "reservation: { group: a, cpu: 25% }",
        "reservation: { group: a, cpu: 99% }",
        1,
    );
    let shown = errors(&text);
    assert!(
        shown.contains("reservation.cpu") || shown.contains("cpu"),
        "{shown}"
    );
    assert!(
        shown.contains("cannot be guaranteed through CPU weights"),
        "{shown}"
    );
    assert!(shown.contains("above 10000"), "{shown}");
}

#[test]
fn vm_guest_memory_the_kernel_cannot_boot_with() {
    // What the agent would otherwise find only when the guest dies in early boot.
    let text = format!(
        "{HEAD}  - {{ name: micro, analysis: overhead, platforms: [vm], workloads: [syscall] }}\n"
    )
    .replace("vm: { backend: vm }", "vm: { backend: vm, memory: 64MiB }");
    let out = errors(&text);
    assert!(out.starts_with("p.yaml:"), "{out}");
    assert!(out.contains("platforms.vm.memory"), "{out}");
    assert!(
        out.contains("64 MiB is below the 80 MiB a guest needs to boot"),
        "{out}"
    );
    let text = text.replace("memory: 64MiB", "memory: 100000KiB");
    assert!(errors(&text).contains("not a whole number of MiB"));
    let text = text.replace("memory: 100000KiB", "memory: 80MiB");
    load_str("p.yaml", &text).unwrap();
}

#[test]
fn baseline_and_order() {
    let ok = edit(
        "workloads: [syscall, fork_exit] }",
        "workloads: [syscall, fork_exit], baseline: container, order: interleaved }",
    );
    let p = load_str("p.yaml", &ok).unwrap();
    assert_eq!(p.experiments[0].baseline_platform(&p), Some("container"));
    assert_eq!(
        p.experiments[0].trial_order(&p),
        isolab_model::pipeline::TrialOrder::Interleaved
    );
    // The default baseline is the first native-backend platform; the default order random.
    let p = load_str("p.yaml", FULL).unwrap();
    assert_eq!(p.experiments[0].baseline_platform(&p), Some("native"));
    assert_eq!(p.experiments[1].baseline_platform(&p), None);
    assert_eq!(
        p.experiments[1].trial_order(&p),
        isolab_model::pipeline::TrialOrder::Random
    );
    assert_snapshot!(
        errors(&edit(
            "workloads: [syscall, fork_exit] }",
            "workloads: [syscall, fork_exit], baseline: containr }",
        )),
        @"p.yaml:10:119: experiments[0].baseline: baseline `containr` is not one of this experiment's platforms (native, container, vm); did you mean `container`?"
    );
    assert_snapshot!(
        errors(&edit(
            "    workload: cpu_spin\n  - name: fair",
            "    workload: cpu_spin\n    baseline: vm\n  - name: fair",
        )),
        @"p.yaml:16:5: experiments[1].baseline: does not apply to scaling experiments (only to overhead)"
    );
    assert_snapshot!(
        errors(&edit("duration: 1s }", "duration: 1s, order: shuffled }")),
        @"p.yaml:4:61: defaults.order: unknown variant `shuffled`, expected one of `random`, `interleaved`, `blocked`"
    );
}
