//! Trial planning: expansion counts and order, instance layout, id stability and uniqueness,
//! the summary, `--only` filters and `--set` overrides.

mod common;

use std::collections::{HashMap, HashSet};

use common::{FULL, HEAD};
use isolab_model::plan::{self, Filter, Role, Trial};
use isolab_model::units::Percent;
use isolab_model::{load_str, load_str_full};
use proptest::prelude::*;

fn trials(text: &str) -> Vec<Trial> {
    plan::plan(&load_str("p.yaml", text).unwrap())
}

fn ids_of(trials: &[Trial], experiment: &str) -> Vec<String> {
    trials
        .iter()
        .filter(|t| t.experiment == experiment)
        .map(|t| t.id.clone())
        .collect()
}

fn assert_unique(trials: &[Trial]) {
    let ids: HashSet<&str> = trials.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids.len(), trials.len(), "duplicate trial ids");
    assert!(
        trials
            .iter()
            .all(|t| t.id.len() == 16 && t.id.chars().all(|c| c.is_ascii_hexdigit()))
    );
}

#[test]
fn expansion_counts() {
    let t = trials(FULL);
    assert_unique(&t);
    let s = plan::summarize(&t);
    // micro 3 platforms × 2 workloads, scale 2 × 3 counts, fair 1, isolation 2 × 1 adversary;
    // each point 1 warm-up + 2 measured.
    assert_eq!(s.per_experiment.get("micro"), Some(&18));
    assert_eq!(s.per_experiment.get("scale"), Some(&18));
    assert_eq!(s.per_experiment.get("fair"), Some(&3));
    assert_eq!(s.per_experiment.get("isolation"), Some(&6));
    assert_eq!(s.per_platform.get("native"), Some(&6));
    assert_eq!(s.per_platform.get("container"), Some(&21));
    assert_eq!(s.per_platform.get("vm"), Some(&18));
    assert_eq!(
        (s.total_trials, s.measured_trials, s.warmup_trials),
        (45, 30, 15)
    );
    // 6 native × (1s + 100ms) + 21 container × (1s + 200ms) + 18 vm × (1s + 2s).
    assert_eq!(s.estimated_duration_ms, 6 * 1100 + 21 * 1200 + 18 * 3000);
    let shown = s.to_string();
    assert!(
        shown.starts_with("trials: 45 (30 measured, 15 warm-up)"),
        "{shown}"
    );
    assert!(
        shown.contains("per experiment: micro 18, scale 18, fair 3, isolation 6"),
        "{shown}"
    );
}

#[test]
fn order_is_experiment_platform_point_then_warmups_first() {
    let t = trials(FULL);
    let head: Vec<(&str, &str, &str, bool, u32)> = t
        .iter()
        .take(7)
        .map(|t| {
            (
                t.experiment.as_str(),
                t.platform.as_str(),
                t.workload.as_str(),
                t.warmup,
                t.repetition,
            )
        })
        .collect();
    assert_eq!(
        head,
        [
            ("micro", "native", "syscall", true, 0),
            ("micro", "native", "syscall", false, 0),
            ("micro", "native", "syscall", false, 1),
            ("micro", "native", "fork_exit", true, 0),
            ("micro", "native", "fork_exit", false, 0),
            ("micro", "native", "fork_exit", false, 1),
            ("micro", "container", "syscall", true, 0),
        ]
    );
    let scale: Vec<usize> = t
        .iter()
        .filter(|t| t.experiment == "scale" && t.platform == "vm" && !t.warmup)
        .map(|t| t.instances.len())
        .collect();
    assert_eq!(scale, [1, 1, 2, 2, 4, 4]);
}

#[test]
fn instances_per_analysis() {
    let t = trials(FULL);
    let micro = &t[0];
    assert_eq!(micro.instances.len(), 1);
    assert_eq!(micro.instances[0].role, Role::Peer);
    assert_eq!(
        micro.instances[0]
            .params
            .get("duration")
            .map(ToString::to_string)
            .as_deref(),
        Some("1s")
    );
    assert_eq!(micro.timeout.to_string(), "33s");
    assert!(micro.params.is_empty());

    let fair = t.iter().find(|t| t.experiment == "fair").unwrap();
    type Layout<'a> = (u32, Option<&'a str>, Option<u64>, Option<Percent>);
    let layout: Vec<Layout<'_>> = fair
        .instances
        .iter()
        .map(|i| (i.index, i.group.as_deref(), i.cpu_weight, i.cpu_reservation))
        .collect();
    assert_eq!(
        layout,
        [
            (0, Some("a"), Some(200), Some(Percent(0.25))),
            (1, Some("rest"), Some(200), None),
            (2, Some("rest"), Some(200), None),
            (3, Some("rest"), Some(200), None),
        ]
    );

    let iso = t.iter().find(|t| t.experiment == "isolation").unwrap();
    assert_eq!(iso.adversary.as_deref(), Some("none"));
    assert_eq!(iso.instances.len(), 1);
    assert_eq!(iso.instances[0].role, Role::Victim);
    assert!(
        t.iter()
            .filter(|t| t.experiment != "isolation")
            .all(|t| t.adversary.is_none())
    );
}

#[test]
fn isolation_with_an_adversary_has_two_instances() {
    let Some(adv) = isolab_model::catalog::WORKLOADS
        .iter()
        .find(|w| w.kind == isolab_model::catalog::WorkloadKind::Adversary)
    else {
        println!("skipped: the catalog has no adversary yet");
        return;
    };
    let text = FULL.replace(
        "adversaries: [none]",
        &format!("adversaries: [none, {}]", adv.name),
    );
    let t = trials(&text);
    let with: Vec<&Trial> = t
        .iter()
        .filter(|t| t.adversary.as_deref() == Some(adv.name))
        .collect();
    assert_eq!(with.len(), 6);
    assert_eq!(with[0].instances[1].role, Role::Adversary);
    assert_eq!(with[0].instances[1].workload, adv.name);
    assert_eq!(with[0].instances[1].index, 1);
    assert_unique(&t);
}

#[test]
fn matrix_params_multiply_points() {
    let text = format!(
        "{HEAD}  - {{ name: m, analysis: overhead, platforms: [native], instances: 2, repetitions: 1, \
         workloads: [mmap, {{ name: page_fault, params: {{ iterations: 100 }} }}], \
         matrix: {{ params: {{ size: [4KiB, 1MiB] }} }} }}\n"
    );
    let t = trials(&text);
    assert_unique(&t);
    let points: Vec<(String, String)> = t
        .iter()
        .map(|t| {
            (
                t.workload.clone(),
                t.params
                    .values()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        })
        .collect();
    assert_eq!(
        points,
        [
            ("mmap".to_owned(), "4KiB".to_owned()),
            ("mmap".to_owned(), "1MiB".to_owned()),
            ("page_fault".to_owned(), "100 4KiB".to_owned()),
            ("page_fault".to_owned(), "100 1MiB".to_owned()),
        ]
    );
    assert!(t.iter().all(|t| {
        t.instances.len() == 2
            && t.instances
                .iter()
                .all(|i| i.params.contains_key("duration"))
    }));
}

#[test]
fn ids_are_stable_and_content_derived() {
    let a = trials(FULL);
    let b = trials(FULL);
    assert_eq!(a, b);

    // The pipeline's name and the experiments' order do not enter the ids.
    let renamed = trials(&FULL.replace("name: full", "name: other"));
    assert_eq!(ids_of(&a, "micro"), ids_of(&renamed, "micro"));
    let (head, rest) = FULL.split_once("  - { name: micro").unwrap();
    let reordered = format!(
        "{head}{}  - {{ name: micro{}",
        &rest[rest.find("  - name: scale").unwrap()..],
        &rest[..rest.find("  - name: scale").unwrap()]
    );
    let r = trials(&reordered);
    assert_eq!(
        r[r.len() - 18].experiment,
        "micro",
        "micro moved to the end"
    );
    for e in ["micro", "scale", "fair", "isolation"] {
        assert_eq!(ids_of(&a, e), ids_of(&r, e), "{e}");
    }

    // Adding an experiment leaves the others alone.
    let added = format!(
        "{FULL}  - {{ name: more, analysis: overhead, platforms: [native], workloads: [ctxsw] }}\n"
    );
    let t = trials(&added);
    assert_unique(&t);
    assert_eq!(
        t[..a.len()].iter().map(|t| &t.id).collect::<Vec<_>>(),
        a.iter().map(|t| &t.id).collect::<Vec<_>>()
    );

    // What runs changes the ids: duration, platform settings.
    let longer = trials(&FULL.replace("duration: 1s", "duration: 2s"));
    assert!(a.iter().zip(&longer).all(|(x, y)| x.id != y.id));
    let bigger = trials(&FULL.replace("memory: 256MiB", "memory: 512MiB"));
    let changed: Vec<bool> = a.iter().zip(&bigger).map(|(x, y)| x.id != y.id).collect();
    assert!(
        a.iter()
            .zip(&changed)
            .all(|(t, c)| *c == (t.platform == "vm"))
    );
}

#[test]
fn extra_repetitions() {
    let t = trials(FULL);
    let measured = t.iter().find(|t| !t.warmup && t.repetition == 1).unwrap();
    // Same rule as the planner: rebuilding an existing repetition gives its id back.
    assert_eq!(plan::extra_repetition(measured, 1).id, measured.id);
    let warm = t.iter().find(|t| t.warmup).unwrap();
    let next = plan::extra_repetition(warm, 2);
    assert!(!next.warmup);
    assert_eq!(next.repetition, 2);
    assert!(t.iter().all(|x| x.id != next.id));
    assert_eq!(plan::extra_repetition(measured, 2).id, next.id);
    assert_eq!(plan::trial_id(&next), next.id);
}

#[test]
fn filters() {
    let t = trials(FULL);
    let count = |expr: &str| {
        let f = Filter::parse(expr).unwrap();
        t.iter().filter(|t| f.matches(t)).count()
    };
    assert_eq!(count("experiment=micro,platform=native"), 6);
    assert_eq!(count("backend=vm"), 18);
    assert_eq!(count("workload=cpu_*"), 21);
    assert_eq!(count("adversary=none"), 6);
    assert_eq!(count("adversary=*"), 6);
    assert_eq!(count("platform=native|vm"), 24);
    assert_eq!(count("experiment=*"), t.len());
    assert_eq!(count("experiment=nope"), 0);
    assert_eq!(count("experiment=micro,experiment=scale"), 0);
    assert!(Filter::parse("exp=micro").is_err());
}

#[test]
fn overrides() {
    let sets = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let plain = load_str_full("p.yaml", FULL, &[]).unwrap();
    assert_eq!(plain.text, FULL);
    let l = load_str_full(
        "p.yaml",
        FULL,
        &sets(&[
            "defaults.duration=2s",
            "experiments.micro.repetitions=1",
            "platforms.container.limits.memory=256MiB",
            "experiments.scale.matrix.instances=[8]",
        ]),
    )
    .unwrap();
    assert!(
        l.text
            .starts_with("# effective pipeline: p.yaml with --set defaults.duration=2s"),
        "{}",
        l.text
    );
    assert_ne!(l.sha256, plain.sha256);
    assert_eq!(l.sha256.len(), 64);
    // The effective text is a pipeline that loads to the same thing.
    assert_eq!(load_str("effective.yaml", &l.text).unwrap(), l.pipeline);
    let t = plan::plan(&l.pipeline);
    assert!(t.iter().all(|t| t.duration.to_string() == "2s"));
    let s = plan::summarize(&t);
    assert_eq!(s.per_experiment.get("micro"), Some(&12));
    assert_eq!(s.per_experiment.get("scale"), Some(&6));
    let c = &l.pipeline.platforms["container"];
    assert_eq!(c.limits.memory.map(|m| m.get()), Some(256 << 20));
}

#[test]
fn unvalidated_pipelines_do_not_panic() {
    let mut p = load_str("p.yaml", FULL).unwrap();
    p.experiments[0].platforms.push("missing".into());
    p.experiments[1].workload = None;
    p.experiments[3].victim = None;
    let t = plan::plan(&p);
    assert!(
        t.iter()
            .all(|t| t.experiment != "scale" && t.experiment != "isolation")
    );
}

fn pipeline_text(
    reps: u32,
    warmup: u32,
    workloads: &[&str],
    platforms: usize,
    instances: u32,
) -> String {
    let names = ["native", "vm", "box"];
    let mut text = format!(
        "apiVersion: isolab/v1\nkind: Pipeline\nname: p\ndefaults: {{ repetitions: {reps}, warmup: {warmup} }}\nplatforms:\n  native: {{ backend: native }}\n  vm: {{ backend: vm }}\n  box: {{ backend: container }}\nexperiments:\n"
    );
    text.push_str(&format!(
        "  - {{ name: e, analysis: overhead, instances: {instances}, platforms: [{}], workloads: [{}] }}\n",
        names[..platforms].join(", "),
        workloads.join(", ")
    ));
    text
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn plan_size_and_unique_ids(
        reps in 1u32..5,
        warmup in 0u32..3,
        mask in 1usize..512,
        platforms in 1usize..=3,
        instances in 1u32..4,
    ) {
        let all = ["syscall", "fork_exit", "fork_exec", "ctxsw", "page_fault", "mmap", "file_ops", "mem_bw", "cpu_spin"];
        let chosen: Vec<&str> = all.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, w)| *w).collect();
        let t = trials(&pipeline_text(reps, warmup, &chosen, platforms, instances));
        prop_assert_eq!(t.len(), chosen.len() * platforms * (reps + warmup) as usize);
        let ids: HashSet<&str> = t.iter().map(|t| t.id.as_str()).collect();
        prop_assert_eq!(ids.len(), t.len());
        let mut per: HashMap<&str, usize> = HashMap::new();
        for x in &t { *per.entry(x.platform.as_str()).or_default() += 1; }
        prop_assert!(per.values().all(|&n| n == chosen.len() * (reps + warmup) as usize));
        prop_assert!(t.iter().all(|x| x.instances.len() == instances as usize));
    }

    #[test]
    fn loading_arbitrary_text_never_panics(text in "[a-z:{}\\[\\], \n-]{0,80}") {
        if let Err(e) = load_str("p.yaml", &text) {
            let d = e.diagnostics();
            prop_assert!(!d.is_empty());
            prop_assert!(d.iter().all(|d| d.line >= 1 && d.col >= 1 && !d.message.is_empty()));
        }
    }
}

fn group(name: &str, count: u32, weight: u32) -> isolab_model::pipeline::Group {
    isolab_model::pipeline::Group {
        name: name.into(),
        count,
        weight,
    }
}

#[test]
fn a_reservation_raises_its_groups_weight_only_as_far_as_needed() {
    let groups = [group("a", 1, 1), group("b", 3, 1)];
    // 1 vs 3 equal weights already give `a` 25%: nothing to raise.
    assert_eq!(
        plan::reserved_weight(&groups, &groups[0], Percent(0.25)),
        100
    );
    // 50% needs a's weight to equal the other three together.
    assert_eq!(
        plan::reserved_weight(&groups, &groups[0], Percent(0.5)),
        300
    );
    // A group of two splits the needed weight.
    let groups = [group("a", 2, 1), group("b", 2, 1)];
    assert_eq!(
        plan::reserved_weight(&groups, &groups[0], Percent(0.75)),
        300
    );
    // Alone, a group keeps its weight.
    let alone = [group("a", 4, 2)];
    assert_eq!(plan::reserved_weight(&alone, &alone[0], Percent(0.25)), 200);
}

proptest! {
    /// Under full contention the reserved group's proportional share is at least its reservation,
    /// unless its weight hit the cgroup maximum.
    #[test]
    fn reserved_share_is_met_under_contention(
        count in 1u32..8, weight in 1u32..=100, others in prop::collection::vec((1u32..16, 1u32..=100), 1..4),
        percent in 1u32..99,
    ) {
        let mut groups = vec![group("r", count, weight)];
        for (i, (c, w)) in others.iter().enumerate() {
            groups.push(group(&format!("o{i}"), *c, *w));
        }
        let r = f64::from(percent) / 100.0;
        let w = plan::reserved_weight(&groups, &groups[0], Percent(r));
        prop_assert!(w >= u64::from(weight) * 100);
        let others: u64 = groups[1..].iter().map(|g| u64::from(g.weight) * 100 * u64::from(g.count)).sum();
        let mine = w * u64::from(count);
        #[allow(clippy::cast_precision_loss, reason = "small integers")]
        let share = mine as f64 / (mine + others) as f64;
        prop_assert!(share + 1e-9 >= r || w == plan::MAX_CPU_WEIGHT, "share {share} < {r} with weight {w}");
    }
}
