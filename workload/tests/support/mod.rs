//! Helpers shared by the integration tests: running the binary and reading its samples.

#![allow(dead_code, unreachable_pub)]

pub mod cgroup;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use isolab_model::sample::Sample;

/// The binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_isolab-workload");

/// What one run printed.
#[derive(Debug)]
pub struct Run {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Every stdout line, parsed.
    pub samples: Vec<Sample>,
    /// stderr, as text.
    pub stderr: String,
}

impl Run {
    /// The summary value of `metric` (no `t_offset_s`); panics when absent.
    pub fn summary(&self, metric: &str) -> f64 {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.metric == metric && s.t_offset_s.is_none())
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one summary `{metric}` in {:#?}",
            self.samples
        );
        found[0].value
    }

    /// The time-series samples of `metric`.
    pub fn series(&self, metric: &str) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.metric == metric && s.t_offset_s.is_some())
            .collect()
    }

    /// The sample `metric` (summary), with its unit and direction.
    pub fn sample(&self, metric: &str) -> &Sample {
        self.summary(metric);
        self.samples
            .iter()
            .find(|s| s.metric == metric && s.t_offset_s.is_none())
            .unwrap()
    }
}

/// Runs `program` with `args`; every stdout line must parse as a sample.
pub fn run_program(program: &Path, args: &[&str], configure: impl FnOnce(&mut Command)) -> Run {
    let mut cmd = Command::new(program);
    cmd.args(args);
    configure(&mut cmd);
    let out: Output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    parse_output(args, &out)
}

/// Runs the test binary with `args`.
pub fn run(args: &[&str]) -> Run {
    run_program(Path::new(BIN), args, |_| {})
}

/// Parses an output, failing on any stdout line that is not a sample.
pub fn parse_output(args: &[&str], out: &Output) -> Run {
    let stdout = String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let samples = stdout
        .lines()
        .map(|l| {
            Sample::parse_line(l).unwrap_or_else(|e| {
                panic!("{args:?}: stdout line is not a sample: {e}\nstderr: {stderr}")
            })
        })
        .collect();
    Run {
        code: out.status.code(),
        samples,
        stderr,
    }
}

/// Whether this is a CI run (`CI=true`), where privileged tests must not skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Prints why a test is skipped; in CI a skip is a failure.
pub fn skip(reason: &str) {
    assert!(!in_ci(), "CI=true but {reason}");
    eprintln!("skipping: {reason}");
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Starts the test binary with `args`, stdout and stderr piped.
pub fn spawn(args: &[&str], configure: impl FnOnce(&mut Command)) -> std::process::Child {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    configure(&mut cmd);
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {BIN} {args:?}: {e}"))
}

/// Waits for a child started by [`spawn`] and parses its output.
pub fn finish(args: &[&str], child: std::process::Child) -> Run {
    let out = child.wait_with_output().expect("wait for the workload");
    parse_output(args, &out)
}

/// A directory for one test, removed on drop.
pub struct TestDir {
    /// Its path.
    pub path: PathBuf,
}

impl TestDir {
    /// Creates a fresh directory under the system temp dir.
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "isolab-workload-test-{tag}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self { path }
    }

    /// The `dir=…` param naming this directory: relative to the system temp dir, which is the
    /// workload's scratch (`$TMPDIR`, else `/tmp`) too; `dir` takes no absolute paths.
    pub fn param(&self) -> String {
        let name = self.path.file_name().unwrap().to_string_lossy();
        format!("dir={name}")
    }

    /// The names of its entries.
    pub fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// `u64` to `f64` (exact below 2^53).
pub fn to_f64(n: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let f = n as f64;
    f
}
