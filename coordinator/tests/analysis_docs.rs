//! `docs/analysis.md` and the README's query, executed: a small native-only pipeline is run,
//! a stray Parquet file (a failed attempt's leftovers, with values 1000× off) is planted beside
//! the trial files, and then every DuckDB query of the docs (through Python's `duckdb`) and every
//! polars script runs in the run directory. The medians must be the report's, untouched by the
//! stray file; `isolab export` is checked in all three formats on the same run.
//!
//! Runs need root (cgroups); off CI without root they are skipped with a printed reason.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{BIN, can_run};

/// Two native platforms (a pivot needs two columns) and a scaling experiment.
const PIPELINE: &str = "apiVersion: isolab/v1
kind: Pipeline
name: analysis-docs
defaults: { repetitions: 3, warmup: 0, duration: 200ms }
platforms:
  native: { backend: native }
  native_b: { backend: native }
experiments:
  - name: micro
    analysis: overhead
    platforms: [native, native_b]
    workloads: [syscall, cpu_spin]
  - name: scale
    analysis: scaling
    platforms: [native]
    workload: cpu_spin
    matrix: { instances: [1, 2] }
    repetitions: 2
";

/// Runs SQL blocks in order on one DuckDB connection; prints `{label: {columns, rows}}`.
const SQL_HARNESS: &str = r#"
import duckdb, json, sys
con = duckdb.connect()
out = {}
for label, sql in json.load(sys.stdin):
    cur = con.execute(sql)
    if cur.description:
        out[label] = {"columns": [d[0] for d in cur.description], "rows": cur.fetchall()}
print(json.dumps(out, default=str))
"#;

/// Writes a copy of one of the run's trial files with every value 1000× as a file the
/// manifest does not list.
const PLANT_STRAY: &str = r#"
import json, pyarrow.compute as pc, pyarrow.parquet as pq
m = json.load(open("manifest.json"))
src = next(t["file"] for t in m["trials"]
           if t["status"] == "ok" and t["file"] and t["platform"] == "native" and t["experiment"] == "micro")
t = pq.read_table(src)
i = t.schema.get_field_index("value")
t = t.set_column(i, t.schema.field(i), pc.multiply(t.column(i), 1000.0))
pq.write_table(t, src.rsplit("/", 1)[0] + "/trial-stray.parquet")
"#;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn isolab(args: &[&str], cwd: &Path) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run isolab");
    assert!(
        out.status.success(),
        "isolab {args:?}: {}",
        text(&out.stderr)
    );
    out
}

fn python(code: &str, cwd: &Path, stdin: &str) -> String {
    use std::io::Write as _;
    // `isolab` on PATH, as after `just install`.
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = std::env::join_paths(std::iter::once(bin_dir.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(code)
        .current_dir(cwd)
        .env("PATH", path)
        // Whole tables, so the test can look for any row.
        .env("POLARS_FMT_MAX_ROWS", "-1")
        .env("POLARS_FMT_MAX_COLS", "-1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python failed on\n{code}\n{}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Fenced blocks of a language: `(label, code)`, the label being the word after the language.
fn blocks(md: &str, lang: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = md.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let mut words = info.split_whitespace();
        let wanted = words.next() == Some(lang);
        let label = words.next().unwrap_or("").to_owned();
        let code: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .collect();
        if wanted {
            out.push((label, code.join("\n") + "\n"));
        }
    }
    out
}

fn rows<'a>(v: &'a serde_json::Value, label: &str) -> &'a Vec<serde_json::Value> {
    v[label]["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no result for {label}: {v}"))
}

fn column(v: &serde_json::Value, label: &str, name: &str) -> usize {
    v[label]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("{label} has no column {name}: {v}"))
}

#[test]
fn the_analysis_docs_and_the_readme_query_run_on_a_real_run_and_skip_stray_files() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("analysis-docs.yaml");
    std::fs::write(&pipeline, PIPELINE).unwrap();
    let results = dir.path().join("results");
    let out = isolab(
        &[
            "run",
            pipeline.to_str().unwrap(),
            "--results",
            results.to_str().unwrap(),
        ],
        dir.path(),
    );
    let run_dir = PathBuf::from(
        text(&out.stdout)
            .lines()
            .last()
            .expect("run directory")
            .trim(),
    );
    let run = run_dir.to_str().unwrap();

    // `isolab export`: JSON (the reference medians), Parquet to a pipe, the trials as CSV.
    let json = isolab(&["export", run, "--format", "json"], dir.path());
    let summary: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
    let median = |experiment: &str, platform: &str, workload: &str, metric: &str| {
        summary
            .iter()
            .find(|r| {
                r["experiment"] == experiment
                    && r["platform"] == platform
                    && r["workload"] == workload
                    && r["metric"] == metric
            })
            .unwrap_or_else(|| panic!("no {experiment}/{platform}/{workload}/{metric}"))["median"]
            .as_f64()
            .unwrap()
    };
    let syscall = median("micro", "native", "syscall", "ns_per_call");
    assert!(syscall > 0.0);
    let pq = isolab(&["export", run, "--format", "parquet"], dir.path());
    assert!(pq.stdout.starts_with(b"PAR1") && pq.stdout.ends_with(b"PAR1"));
    // A reader that went away (`| head`): the export ends quietly, no panic, no error.
    let mut child = Command::new(BIN)
        .args(["export", run, "--format", "csv"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let closed = child.wait_with_output().unwrap();
    assert!(closed.stderr.is_empty(), "{}", text(&closed.stderr));
    let trials_csv = dir.path().join("trials.csv");
    isolab(
        &[
            "export",
            run,
            "--table",
            "trials",
            "--format",
            "csv",
            "--out",
            trials_csv.to_str().unwrap(),
        ],
        dir.path(),
    );
    let trials = std::fs::read_to_string(&trials_csv).unwrap();
    assert!(trials.starts_with("trial_id,experiment,platform,"));
    assert_eq!(trials.lines().count(), 1 + 2 * 2 * 3 + 2 * 2, "{trials}");
    assert_eq!(
        trials.lines().filter(|l| l.contains(",ok,")).count(),
        16,
        "{trials}"
    );

    python(PLANT_STRAY, &run_dir, "");
    assert!(
        run_dir
            .join("samples/experiment=micro/platform=native/trial-stray.parquet")
            .is_file()
    );

    // Every SQL block of the docs, then the README's, on one connection.
    let docs = std::fs::read_to_string(workspace().join("docs/analysis.md")).unwrap();
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let mut sql = blocks(&docs, "sql");
    let labels: Vec<&str> = sql.iter().map(|b| b.0.as_str()).collect();
    assert_eq!(labels, ["setup", "medians", "pivot", "scaling", "failed"]);
    let readme_sql: Vec<_> = blocks(&readme, "sql")
        .into_iter()
        .map(|(_, code)| ("readme".to_owned(), code))
        .collect();
    assert_eq!(readme_sql.len(), 1, "the README shows one DuckDB query");
    sql.extend(readme_sql);
    let v: serde_json::Value = serde_json::from_str(&python(
        SQL_HARNESS,
        &run_dir,
        &serde_json::to_string(&sql).unwrap(),
    ))
    .unwrap();

    // The medians table: the report's medians, not moved by the stray file.
    let (p, w, m, med) = (
        column(&v, "medians", "platform"),
        column(&v, "medians", "workload"),
        column(&v, "medians", "metric"),
        column(&v, "medians", "median"),
    );
    let found = rows(&v, "medians")
        .iter()
        .find(|r| r[p] == "native" && r[w] == "syscall" && r[m] == "ns_per_call")
        .expect("syscall on native");
    let got = found[med].as_f64().unwrap();
    assert!(
        (got - syscall).abs() <= 1e-9 * syscall,
        "docs {got} vs report {syscall}"
    );
    // The pivot: a column per platform.
    for platform in ["native", "native_b"] {
        column(&v, "pivot", platform);
    }
    assert!(
        rows(&v, "pivot")
            .iter()
            .any(|r| r[0] == "syscall/ns_per_call")
    );
    // The scaling curve: N = 1 and 2, two repetitions each.
    let n = column(&v, "scaling", "n_instances");
    let ns: Vec<i64> = rows(&v, "scaling")
        .iter()
        .filter(|r| r[w] == "cpu_spin" && r[m] == "units_per_s")
        .map(|r| r[n].as_i64().unwrap())
        .collect();
    assert_eq!(ns, [1, 2], "{v}");
    assert!(rows(&v, "failed").is_empty(), "every trial finished ok");
    // The README's query: the same medians, the stray file not read.
    let (rp, rw, rm) = (
        column(&v, "readme", "platform"),
        column(&v, "readme", "workload"),
        column(&v, "readme", "metric"),
    );
    let r = rows(&v, "readme")
        .iter()
        .find(|r| r[rp] == "native" && r[rw] == "syscall" && r[rm] == "ns_per_call")
        .expect("syscall in the README's query");
    let readme_median = r.as_array().unwrap().last().unwrap().as_f64().unwrap();
    assert!(
        (readme_median - syscall).abs() <= 1e-9 * syscall,
        "README {readme_median} vs {syscall}"
    );

    // Every polars script.
    let py = blocks(&docs, "python");
    let labels: Vec<&str> = py.iter().map(|b| b.0.as_str()).collect();
    assert_eq!(labels, ["samples", "pivot", "scaling", "export"]);
    for (label, code) in &py {
        let out = python(code, &run_dir, "");
        let expect: &[&str] = match label.as_str() {
            "samples" => &["ns_per_call", "native_b"],
            "pivot" => &["native_b", "syscall/ns_per_call"],
            "scaling" => &["units_per_s", "scale"],
            _ => &["ratio_to_baseline", "native_b"],
        };
        for e in expect {
            assert!(out.contains(e), "{label}: {e} not in\n{out}");
        }
    }

    // The analyzer too reads only the listed files: the stray file changes nothing.
    let again = isolab(&["export", run, "--format", "json"], dir.path());
    assert_eq!(again.stdout, json.stdout);
}
