//! `file_ops` leaves nothing behind: not with `dir`, not in `$TMPDIR`, not when interrupted;
//! and it falls back when `$TMPDIR` is unusable.

mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{BIN, TestDir, run, run_program};

#[test]
fn dir_param_is_used_and_left_empty() {
    let dir = TestDir::new("dir");
    let dir_arg = dir.param();
    let r = run(&[
        "file_ops",
        "--param",
        "iterations=5",
        "--param",
        "size=1KiB",
        "--param",
        &dir_arg,
    ]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.summary("ops"), 5.0);
    assert!(dir.entries().is_empty(), "left behind: {:?}", dir.entries());
}

#[test]
fn a_dir_outside_the_scratch_is_a_usage_error_naming_it() {
    for bad in ["dir=/etc", "dir=../../x"] {
        let r = run(&["file_ops", "--param", "iterations=1", "--param", bad]);
        assert_eq!(r.code, Some(2), "{bad}: {}", r.stderr);
        assert!(
            r.stderr.contains(&bad[4..]) && r.stderr.contains("relative path without `..`"),
            "{}",
            r.stderr
        );
        assert!(r.samples.is_empty());
    }
}

#[test]
fn tmpdir_is_preferred_and_cleaned() {
    let dir = TestDir::new("tmpdir");
    let r = run_program(
        Path::new(BIN),
        &["file_ops", "--param", "iterations=3"],
        |c| {
            c.env("TMPDIR", &dir.path);
        },
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(dir.entries().is_empty(), "left behind: {:?}", dir.entries());
}

#[test]
fn unusable_tmpdir_falls_back() {
    let cwd = TestDir::new("cwd");
    let r = run_program(
        Path::new(BIN),
        &["file_ops", "--param", "iterations=3"],
        |c| {
            c.env("TMPDIR", "/nonexistent/isolab-tmp")
                .current_dir(&cwd.path);
        },
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.summary("ops"), 3.0);
    assert!(cwd.entries().is_empty(), "left behind: {:?}", cwd.entries());
}

#[test]
fn sigterm_stops_and_cleans_up() {
    let dir = TestDir::new("sigterm");
    let dir_arg = dir.param();
    let args = [
        "file_ops",
        "--param",
        "duration=60s",
        "--param",
        dir_arg.as_str(),
    ];
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the work directory to appear (generous deadline: a busy machine is slow to start).
    let deadline = Instant::now() + Duration::from_secs(30);
    while dir.entries().is_empty() {
        assert!(
            Instant::now() < deadline,
            "file_ops never created its directory"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: signalling the child this test spawned and has not yet reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let mut stdout = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(stdout.is_empty(), "an interrupted run prints no samples");
    assert!(dir.entries().is_empty(), "left behind: {:?}", dir.entries());
}
