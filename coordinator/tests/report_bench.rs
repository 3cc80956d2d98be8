//! The `isolab-bench report` measuring code runs end to end on a tiny generated run: both
//! programs run, agree on every median, and the numbers it prints are filled in. (Speed is
//! the benchmark's business, not a test's.)

use std::process::Command;

use isolab_analyzer::testkit::LoadSpec;
use isolab_coordinator::report_bench::{ReportBenchOptions, run};

fn python_has_duckdb() -> bool {
    Command::new("python3")
        .args(["-c", "import duckdb"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn report_bench_measures_a_tiny_run() {
    if !python_has_duckdb() {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with duckdb is required in CI"
        );
        eprintln!("skipped: python3 has no duckdb");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let opts = ReportBenchOptions {
        rows: 10_000,
        rounds: 2,
        isolab_bin: env!("CARGO_BIN_EXE_isolab").into(),
        python: "python3".into(),
        work_dir: dir.path().to_path_buf(),
    };
    let b = run(&opts).unwrap();
    assert_eq!(b.rows, LoadSpec::with_total_rows("x", 10_000).total_rows());
    assert_eq!(b.files, 50, "2 platforms × 25 repetitions");
    assert!(b.bytes > 0);
    // 2 platforms × 4 summary metrics, every median equal in DuckDB and summary.json.
    assert_eq!(b.groups_compared, 8);
    assert_eq!((b.analyzer_s.len(), b.duckdb_s.len()), (2, 2));
    assert!(b.analyzer_s.iter().chain(&b.duckdb_s).all(|s| *s > 0.0));
    assert!(
        b.analyzer_peak_rss_bytes > 1024 * 1024,
        "a process uses more than 1 MiB"
    );
    assert!(b.ratio().is_finite());
    let text = b.render();
    assert!(
        text.contains("peak memory") && text.contains("≤1.5"),
        "{text}"
    );
    assert!(dir.path().join("report/report.html").is_file());
}
