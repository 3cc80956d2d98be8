//! End-to-end tests of the `isolab` command: exit codes, a real run through the embedded agent,
//! the Parquet contract read back with arrow-rs, DuckDB and pyarrow, reports, failures and resume.
//!
//! Runs need root (cgroups); off CI without root they are skipped with a printed reason.

mod common;

use common::{BIN, column};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow_array::{Array, Float64Array, RecordBatch, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn isolab(args: &[&str], cwd: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run isolab")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root && std::env::var_os("CI").is_none() {
        eprintln!("skipping: needs root for cgroups (CI runs it as root)");
        return false;
    }
    true
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

const QUICK: &[&str] = &[
    "--set",
    "defaults.duration=200ms",
    "--set",
    "defaults.repetitions=1",
    "--set",
    "defaults.warmup=0",
];

/// Runs the quick-start pipeline shortened; returns the run directory.
fn quick_run(results: &Path, extra: &[&str]) -> (Output, Option<PathBuf>) {
    let pipeline = workspace().join("pipelines/quickstart.yaml");
    let mut args = vec![
        "run",
        pipeline.to_str().unwrap(),
        "--results",
        results.to_str().unwrap(),
    ];
    args.extend_from_slice(QUICK);
    args.extend_from_slice(extra);
    let out = isolab(&args, results);
    let dir = text(&out.stdout).lines().last().map(PathBuf::from);
    (out, dir)
}

fn read_all(run_dir: &Path) -> Vec<RecordBatch> {
    let mut files = Vec::new();
    let mut stack = vec![run_dir.join("samples")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("trial-") && name.ends_with(".parquet"),
            "stray file {}",
            f.display()
        );
        let b = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap()).unwrap();
        assert_eq!(
            b.schema().fields(),
            isolab_model::results::schema().fields(),
            "schema of {}",
            f.display()
        );
        assert_eq!(
            b.schema()
                .metadata()
                .get("isolab.schema_version")
                .map(String::as_str),
            Some(isolab_model::results::SCHEMA_VERSION)
        );
        out.extend(b.build().unwrap().map(Result::unwrap));
    }
    out
}

fn summary_values(batches: &[RecordBatch], metric: &str) -> Vec<(String, f64)> {
    let mut v = Vec::new();
    for b in batches {
        let m = column::<StringArray>(b, "metric");
        let w = column::<StringArray>(b, "workload");
        let val = column::<Float64Array>(b, "value");
        let t = column::<Float64Array>(b, "t_offset_s");
        for i in 0..b.num_rows() {
            if m.value(i) == metric && t.is_null(i) {
                v.push((w.value(i).to_owned(), val.value(i)));
            }
        }
    }
    v
}

#[test]
fn validate_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let good = workspace().join("pipelines/quickstart.yaml");
    let out = isolab(&["validate", good.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: isolab/v1\nkind: Pipeline\nname: x\nplatforms:\n  native: { backend: native }\nexperiments:\n  - { name: m, analysis: overhead, platforms: [native], workloads: [sycall] }\n").unwrap();
    let out = isolab(&["validate", bad.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("bad.yaml:7:"), "position missing: {err}");
    assert!(err.contains("sycall"), "{err}");

    let out = isolab(&["validate"], dir.path());
    assert_eq!(out.status.code(), Some(2), "usage error");
    let out = isolab(&["frobnicate"], dir.path());
    assert_eq!(out.status.code(), Some(2), "usage error");
}

#[test]
fn run_with_invalid_pipeline_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: isolab/v1\nkind: Pipeline\nname: x\nplatforms: {}\nexperiments: []\n",
    )
    .unwrap();
    let results = dir.path().join("results");
    let out = isolab(
        &[
            "run",
            bad.to_str().unwrap(),
            "--results",
            results.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("bad.yaml:"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !results.exists(),
        "no run directory may be created for an invalid pipeline"
    );
    let missing = isolab(
        &["run", "nope.yaml", "--results", results.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("nope.yaml"),
        "{}",
        text(&missing.stderr)
    );
    assert!(!results.exists());
}

#[test]
fn plan_and_schema() {
    let dir = tempfile::tempdir().unwrap();
    let good = workspace().join("pipelines/quickstart.yaml");
    let out = isolab(&["plan", good.to_str().unwrap(), "--json"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let trials = v["trials"].as_array().unwrap();
    // 9 workloads × (1 warm-up + 5 measured) on every platform of the quick start.
    let platforms = isolab_model::load_file(&good).unwrap().experiments[0]
        .platforms
        .len();
    assert_eq!(trials.len(), 54 * platforms);
    // Every platform resolved, defaults applied (a container names its runtime).
    let resolved = v["platforms"].as_object().unwrap();
    assert_eq!(resolved.len(), platforms, "{resolved:?}");
    for (name, p) in resolved {
        assert!(p["backend"].is_string(), "{name}: {p}");
        if p["backend"] == "container" {
            assert!(p["runtime"].is_string(), "{name}: {p}");
        }
    }
    // A seed drawn now is shown with the order; the same seed gives the same plan.
    let seed = v["order"]["seed"].as_u64().expect("seed");
    assert_eq!(v["order"]["seed_from"], "drawn now");
    assert_eq!(v["order"]["experiments"]["micro"], "random");
    let again = isolab(
        &[
            "plan",
            good.to_str().unwrap(),
            "--json",
            "--seed",
            &seed.to_string(),
        ],
        dir.path(),
    );
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(
        again["trials"], v["trials"],
        "plans are deterministic given the seed"
    );
    assert_eq!(again["order"]["seed_from"], "--seed");
    // Round 0 holds the warm-up of every cell, then one repetition of every cell per round.
    let rounds: Vec<u64> = v["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_u64().unwrap())
        .collect();
    let cells = 9 * platforms;
    for (i, r) in rounds.iter().enumerate() {
        assert_eq!(*r, (i / cells) as u64, "trial {i}");
    }
    let out = isolab(&["plan", good.to_str().unwrap(), "--seed", "5"], dir.path());
    let shown = text(&out.stdout);
    assert!(
        shown.starts_with("order: micro: random (seed 5, --seed)"),
        "{shown}"
    );
    let out = isolab(&["schema"], dir.path());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(schema["properties"]["experiments"].is_object(), "{schema}");
}

#[test]
fn quickstart_run_reads_back_with_arrow_duckdb_and_pyarrow() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The native platform only: the container backend has its own end-to-end tests.
    let (out, run_dir) = quick_run(dir.path(), &["--only", "platform=native"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let run_dir = run_dir.expect("run directory printed");
    assert!(run_dir.join("manifest.json").is_file());
    let envs: Vec<_> = std::fs::read_dir(run_dir.join("env")).unwrap().collect();
    assert_eq!(envs.len(), 1, "one env/<host>.json");

    // arrow-rs: schema (checked in read_all) and a plausible value for every micro metric.
    let batches = read_all(&run_dir);
    let expect: &[(&str, &str, f64, f64)] = &[
        ("syscall", "ns_per_call", 1.0, 100_000.0),
        ("fork_exit", "us_per_process", 1.0, 1_000_000.0),
        ("fork_exec", "us_per_process", 1.0, 1_000_000.0),
        ("ctxsw", "us_per_switch", 0.01, 100_000.0),
        ("page_fault", "ns_per_fault", 1.0, 1_000_000.0),
        ("mmap", "us_per_op", 0.001, 100_000.0),
        ("file_ops", "us_per_file", 0.1, 1_000_000.0),
        ("mem_bw", "copy_gb_s", 0.01, 10_000.0),
        ("cpu_spin", "units_per_s", 1.0, 1e15),
    ];
    for (w, m, lo, hi) in expect {
        let vals: Vec<f64> = summary_values(&batches, m)
            .into_iter()
            .filter(|(x, _)| x == w)
            .map(|(_, v)| v)
            .collect();
        assert!(!vals.is_empty(), "no {m} for {w}");
        for v in vals {
            assert!(v > *lo && v < *hi, "{w} {m} = {v} outside ({lo}, {hi})");
        }
    }

    // DuckDB and pyarrow through Python: column names and types of the contract.
    let script = format!(
        r#"
import duckdb, pyarrow.dataset as ds, json, sys
glob = "{dir}/samples/**/*.parquet"
con = duckdb.connect()
cols = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{{glob}}', hive_partitioning=false)").fetchall()
types = {{c[0]: c[1] for c in cols}}
rows = con.execute(f"SELECT workload, median(value) FROM read_parquet('{{glob}}') WHERE t_offset_s IS NULL AND metric IN ('ns_per_call','us_per_process') GROUP BY 1 ORDER BY 1").fetchall()
hive = con.execute(f"SELECT DISTINCT experiment, platform FROM read_parquet('{{glob}}', hive_partitioning=true)").fetchall()
t = ds.dataset("{dir}/samples", format="parquet", partitioning="hive").to_table()
print(json.dumps({{"types": types, "rows": rows, "hive": hive, "pa_rows": t.num_rows, "pa_cols": t.schema.names}}))
"#,
        dir = run_dir.display()
    );
    let py = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python3");
    assert!(py.status.success(), "python: {}", text(&py.stderr));
    let v: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    let types = &v["types"];
    for (col, ty) in [
        ("run_id", "VARCHAR"),
        ("repetition", "INTEGER"),
        ("instance", "INTEGER"),
        ("value", "DOUBLE"),
        ("higher_is_better", "BOOLEAN"),
        ("t_offset_s", "DOUBLE"),
        ("params", "VARCHAR"),
        ("status", "VARCHAR"),
    ] {
        assert_eq!(types[col], ty, "duckdb type of {col}: {types}");
    }
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "syscall, fork_exit, fork_exec: {rows:?}");
    assert!(rows.iter().all(|r| r[1].as_f64().unwrap() > 0.0));
    assert_eq!(v["hive"], serde_json::json!([["micro", "native"]]));
    assert!(v["pa_rows"].as_u64().unwrap() > 0);

    // The report.
    let rep = isolab(&["report", run_dir.to_str().unwrap()], dir.path());
    assert_eq!(rep.status.code(), Some(0), "{}", text(&rep.stderr));
    let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(md.contains("syscall") && md.contains("ns_per_call"), "{md}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    assert!(summary.is_object());
}

#[test]
fn garbage_printing_workload_fails_its_trial_and_the_run_goes_on_then_resume() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let real = isolab_host::workload_bin::locate().expect("workload binary");
    // A wrapper that prints garbage for `mmap` and defers to the real binary otherwise.
    let wrapper = dir.path().join("isolab-workload");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nif [ \"$1\" = mmap ] && [ ! -e {flag} ]; then echo 'this is not json'; exit 0; fi\nexec {real} \"$@\"\n",
            flag = dir.path().join("fixed").display(), real = real.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();

    let pipeline = workspace().join("pipelines/quickstart.yaml");
    let results = dir.path().join("results");
    let mut args = vec![
        "run",
        pipeline.to_str().unwrap(),
        "--results",
        results.to_str().unwrap(),
        "--only",
        "experiment=micro,platform=native",
    ];
    args.extend_from_slice(QUICK);
    let out = Command::new(BIN)
        .args(&args)
        .env("ISOLAB_WORKLOAD_BIN", &wrapper)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "a failed trial makes exit 3: {}",
        text(&out.stderr)
    );
    let run_dir = PathBuf::from(text(&out.stdout).trim());
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("manifest.json")).unwrap())
            .unwrap();
    let trials = manifest["trials"].as_array().unwrap();
    let failed: Vec<_> = trials.iter().filter(|t| t["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "only mmap fails: {trials:?}");
    assert_eq!(failed[0]["workload"], "mmap");
    let reason = failed[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("not json") || reason.contains("not a sample"),
        "{reason}"
    );
    assert!(
        trials.iter().filter(|t| t["status"] == "ok").count() >= 8,
        "the run went on"
    );
    assert_eq!(manifest["status"], "failed");

    // Fix the workload and resume: only the failed trial runs again.
    std::fs::write(dir.path().join("fixed"), "").unwrap();
    let run_id = run_dir.file_name().unwrap().to_str().unwrap().to_owned();
    let mut args2 = args.clone();
    args2.extend_from_slice(&["--resume", &run_id]);
    let out = Command::new(BIN)
        .args(&args2)
        .env("ISOLAB_WORKLOAD_BIN", &wrapper)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("1 of 9 trials left"),
        "{}",
        text(&out.stderr)
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["status"], "ok");
    assert!(
        read_all(&run_dir)
            .iter()
            .map(RecordBatch::num_rows)
            .sum::<usize>()
            > 0
    );
}

#[test]
fn compare_flags_a_planted_regression() {
    use isolab_analyzer::testkit::{RunSpec, write_synthetic_run};
    let dir = tempfile::tempdir().unwrap();
    let mk = |name: &str, ns: f64| {
        let mut spec = RunSpec::new(name, "cmp");
        spec.experiment("micro", "overhead", &[("native", "native")])
            .summary_metric(
                "native",
                "syscall",
                "ns_per_call",
                "ns",
                false,
                &[ns, ns * 1.001, ns * 0.999, ns, ns * 1.002],
            );
        write_synthetic_run(&dir.path().join(name), &spec).unwrap();
        dir.path().join(name)
    };
    let a = mk("a", 100.0);
    let b = mk("b", 120.0);
    let same = isolab(
        &[
            "compare",
            a.to_str().unwrap(),
            a.to_str().unwrap(),
            "--fail-on-regression",
        ],
        dir.path(),
    );
    assert_eq!(same.status.code(), Some(0), "{}", text(&same.stderr));
    let worse = isolab(
        &[
            "compare",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--fail-on-regression",
        ],
        dir.path(),
    );
    assert_eq!(
        worse.status.code(),
        Some(4),
        "{}{}",
        text(&worse.stdout),
        text(&worse.stderr)
    );
    assert!(
        text(&worse.stdout).contains("ns_per_call"),
        "{}",
        text(&worse.stdout)
    );
    // A 20% change below a 25% threshold does not count.
    let (a_str, b_str) = (a.to_str().unwrap(), b.to_str().unwrap());
    let args = |threshold: &'static str| {
        [
            "compare",
            a_str,
            b_str,
            "--fail-on-regression",
            "--threshold",
            threshold,
        ]
    };
    let above = isolab(&args("25%"), dir.path());
    assert_eq!(above.status.code(), Some(0), "{}", text(&above.stderr));
    let bad = isolab(&args("lots"), dir.path());
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("--threshold") && text(&bad.stderr).contains("percentage"),
        "{}",
        text(&bad.stderr)
    );
}

/// A pipeline of the native platform's `syscall` with `until_stable`.
fn stable_pipeline(dir: &Path, name: &str, rel_ci95: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: isolab/v1\nkind: Pipeline\nname: {name}\n\
             defaults: {{ repetitions: 3, warmup: 0, duration: 100ms, \
             until_stable: {{ rel_ci95: {rel_ci95}, max_repetitions: 5 }} }}\n\
             platforms:\n  native: {{ backend: native }}\n  other: {{ backend: native }}\n\
             experiments:\n  - {{ name: micro, analysis: overhead, platforms: [native, other], \
             workloads: [syscall, fork_exit] }}\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn until_stable_adds_repetitions_and_reports_why_they_stopped() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    // (target, expected repetitions, stop reason in the manifest, in report.md). A target of
    // 1e-9 cannot be met by timings (the CI of distinct values is never that narrow), so the
    // group runs to max_repetitions; a target of 100% is met by the planned three.
    for (name, target, reps, reason, shown) in [
        ("tight", "0.000000001", 5, "max_repetitions", "5 (max)"),
        ("loose", "1", 3, "ci_within_target", "3 (CI met)"),
    ] {
        let pipeline = stable_pipeline(dir.path(), name, target);
        let out = isolab(
            &[
                "run",
                pipeline.to_str().unwrap(),
                "--results",
                results.to_str().unwrap(),
                "--only",
                "platform=native,workload=syscall",
            ],
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
        let run_dir = PathBuf::from(text(&out.stdout).lines().last().unwrap());
        let manifest: isolab_model::manifest::Manifest =
            serde_json::from_str(&std::fs::read_to_string(run_dir.join("manifest.json")).unwrap())
                .unwrap();
        assert_eq!(manifest.repetition_groups.len(), 1, "--only left one group");
        let g = &manifest.repetition_groups[0];
        assert_eq!(
            (g.platform.as_str(), g.workload.as_str()),
            ("native", "syscall")
        );
        assert_eq!(g.stop_reason.map(|r| r.as_str()), Some(reason), "{g:?}");
        assert_eq!(g.trials.len(), reps);
        assert_eq!(g.values.len(), reps);
        assert_eq!(g.metric.as_deref(), Some("ns_per_call"));
        let mut repetitions: Vec<u32> = manifest
            .trials
            .iter()
            .filter(|t| t.status == isolab_model::manifest::TrialState::Ok)
            .map(|t| t.repetition)
            .collect();
        repetitions.sort_unstable();
        assert_eq!(
            repetitions,
            (0..u32::try_from(reps).unwrap()).collect::<Vec<_>>()
        );
        let rep = isolab(&["report", run_dir.to_str().unwrap()], dir.path());
        assert_eq!(rep.status.code(), Some(0), "{}", text(&rep.stderr));
        let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
        assert!(md.contains(&format!("| native | {shown} |")), "{md}");
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
                .unwrap();
        let p = &summary["experiments"]["micro"]["metrics"]["syscall/ns_per_call"]["platforms"]["native"];
        assert_eq!(p["stop_reason"], reason, "{p}");
        assert_eq!(p["n"], reps);
    }
}

/// 200000 repetitions × instances [64] (once 27 s and 10 GB in `plan`) is refused by validation.
const OVERSIZED: &str = "apiVersion: isolab/v1\nkind: Pipeline\nname: big\nplatforms:\n  native: { backend: native }\nexperiments:\n  - name: scale\n    analysis: scaling\n    platforms: [native]\n    workload: cpu_spin\n    repetitions: 200000\n    matrix:\n      instances: [64]\n";

#[test]
fn an_oversized_plan_is_refused_by_validate_plan_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, OVERSIZED).unwrap();
    let results = dir.path().join("results");
    for args in [
        vec!["validate", big.to_str().unwrap()],
        vec!["plan", big.to_str().unwrap()],
        vec![
            "run",
            big.to_str().unwrap(),
            "--results",
            results.to_str().unwrap(),
        ],
    ] {
        let out = isolab(&args, dir.path());
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("big.yaml:11:5: experiments[0].repetitions: the plan would have 200000 trials, more than the limit of 100000"),
            "{args:?}: {err}"
        );
    }
    assert!(!results.exists());
}

#[test]
fn resume_of_a_run_that_is_running_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = workspace().join("pipelines/quickstart.yaml");
    let run = dir.path().join("results/r1");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("manifest.json"), "{}").unwrap();
    // The test plays the running `isolab run`: it holds the lock and wrote its pid.
    let lock = std::fs::File::create(run.join(".lock")).unwrap();
    lock.try_lock().unwrap();
    std::fs::write(run.join(".lock"), format!("{}\n", std::process::id())).unwrap();
    let resume = || {
        isolab(
            &[
                "run",
                pipeline.to_str().unwrap(),
                "--results",
                dir.path().join("results").to_str().unwrap(),
                "--resume",
                "r1",
            ],
            dir.path(),
        )
    };
    let out = resume();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "run r1 is already running (pid {})",
            std::process::id()
        )),
        "{err}"
    );
    // Once the holder is gone the lock is free: the same command gets past it (and fails on the
    // manifest, which is not a real one).
    drop(lock);
    let err = text(&resume().stderr);
    assert!(!err.contains("already running"), "{err}");
    assert!(err.contains("manifest"), "{err}");
}
