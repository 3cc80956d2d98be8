//! The adversaries, run natively but only inside the safety envelope a test builds for them:
//! `fork_bomb` in a cgroup with `pids.max` 64, `memory_bomb` in one with a 64 MiB memory limit
//! (both made under this test's own cgroup and removed afterwards, needing root), `disk_bomb`
//! with a `limit` in a temp dir (and, as root, on a small tmpfs until it is full), `cpu_hog` for
//! 200 ms, `net_flood` at a UDP socket this test reads.
//!
//! Without root the cgroup tests print why and skip, except under `CI=true`, where they fail.

mod support;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use isolab_model::catalog::{WORKLOADS, WorkloadKind};
use support::cgroup::TestCgroup;
use support::{Run, TestDir, finish, is_root, run, skip, spawn};

const MIB: f64 = 1024.0 * 1024.0;

/// The adversaries tested here; a test checks the catalog has no other.
const TESTED: &[&str] = &[
    "fork_bomb",
    "memory_bomb",
    "disk_bomb",
    "cpu_hog",
    "net_flood",
];

#[test]
fn every_adversary_is_tested() {
    for w in WORKLOADS
        .iter()
        .filter(|w| w.kind == WorkloadKind::Adversary)
    {
        assert!(
            TESTED.contains(&w.name),
            "adversary `{}` has no test",
            w.name
        );
    }
}

/// A cgroup for the test, or `None` (skipped) when this is not possible here.
fn cgroup(tag: &str, limits: &[support::cgroup::Limit<'_>]) -> Option<TestCgroup> {
    if !is_root() {
        skip("creating cgroups needs root");
        return None;
    }
    match TestCgroup::create(tag, limits) {
        Ok(cg) => Some(cg),
        Err(reason) => {
            skip(&reason);
            None
        }
    }
}

/// The time series of `metric`: values in order, with increasing offsets.
fn series(r: &Run, metric: &str) -> Vec<f64> {
    let s = r.series(metric);
    let offsets: Vec<f64> = s.iter().map(|x| x.t_offset_s.unwrap()).collect();
    assert!(
        offsets.windows(2).all(|w| w[0] <= w[1]),
        "{metric}: offsets not increasing: {offsets:?}"
    );
    s.iter().map(|x| x.value).collect()
}

const PIDS_MAX: &str = "64";

#[test]
fn fork_bomb_is_refused_by_a_pids_limit_and_ends_by_itself() {
    let Some(cg) = cgroup("fork", &[("pids", "pids.max", "pids.max", PIDS_MAX)]) else {
        return;
    };
    let args = ["fork_bomb", "--param", "duration=1s"];
    let child = spawn(&args, |c| cg.enter(c));
    let r = finish(&args, child);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let forks = r.summary("forks");
    // The bomb itself counts against the limit.
    assert!((1.0..=63.0).contains(&forks), "forks = {forks}");
    assert!(
        r.summary("refused") >= 1.0,
        "never refused: {:#?}",
        r.samples
    );
    assert_eq!(r.summary("ops"), forks);
    assert!(r.summary("elapsed_s") >= 0.99);
    let made = series(&r, "forks");
    assert!(made.windows(2).all(|w| w[0] <= w[1]), "{made:?}");
    assert_eq!(made.last().copied(), Some(forks));
    // Every child is gone once the bomb has exited.
    assert!(cg.pids().is_empty(), "left: {:?}", cg.pids());
}

#[test]
fn fork_bomb_stops_cleanly_on_sigterm() {
    let Some(cg) = cgroup("fork-term", &[("pids", "pids.max", "pids.max", PIDS_MAX)]) else {
        return;
    };
    let args = ["fork_bomb", "--param", "duration=60s"];
    let child = spawn(&args, |c| cg.enter(c));
    let pid = i32::try_from(child.id()).unwrap();
    // Wait until it has filled the cgroup, then ask it to stop.
    for _ in 0..500 {
        if cg.pids().len() >= 32 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: kill on a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let r = finish(&args, child);
    assert_eq!(r.code, Some(1), "interrupted is exit 1: {}", r.stderr);
    assert!(r.stderr.contains("SIGTERM"), "{}", r.stderr);
    assert!(r.summary("forks") >= 32.0, "{}", r.summary("forks"));
    assert!(r.summary("elapsed_s") < 60.0);
    for _ in 0..100 {
        if cg.pids().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(cg.pids().is_empty(), "children left: {:?}", cg.pids());
}

#[test]
fn memory_bomb_is_stopped_by_a_memory_limit() {
    let limit = "67108864"; // 64 MiB
    let Some(cg) = cgroup(
        "memory",
        &[("memory", "memory.limit_in_bytes", "memory.max", limit)],
    ) else {
        return;
    };
    let args = ["memory_bomb", "--param", "duration=10s"];
    let child = spawn(&args, |c| cg.enter(c));
    let r = finish(&args, child);
    let reached = series(&r, "bytes_reached");
    assert!(
        reached.first().is_some_and(|b| *b >= 16.0 * MIB),
        "no step reported before the end: {:#?}\n{}",
        r.samples,
        r.stderr
    );
    let last = *reached.last().unwrap();
    assert!(
        last < 64.0 * MIB,
        "reached {last} bytes past a 64 MiB limit"
    );
    assert!(reached.windows(2).all(|w| w[1] - w[0] == 16.0 * MIB));
    match r.code {
        // OOM-killed: no summary, the series is the record.
        None => assert!(r.series("bytes_reached").len() == reached.len()),
        // Refused by mmap: it says so and holds until the end.
        Some(0) => assert_eq!(r.summary("refused"), 1.0),
        other => panic!("unexpected end {other:?}: {}", r.stderr),
    }
}

#[test]
fn memory_bomb_with_a_limit_holds_and_ends() {
    // A `limit` keeps this one bounded, but it still runs only in a memory cgroup.
    let Some(cg) = cgroup(
        "memory-limit",
        &[("memory", "memory.limit_in_bytes", "memory.max", "134217728")],
    ) else {
        return;
    };
    let args = [
        "memory_bomb",
        "--param",
        "duration=300ms",
        "--param",
        "step=8MiB",
        "--param",
        "limit=32MiB",
    ];
    let r = finish(&args, spawn(&args, |c| cg.enter(c)));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(
        series(&r, "bytes_reached"),
        [8.0, 16.0, 24.0, 32.0].map(|m| m * MIB)
    );
    assert_eq!(r.summary("bytes_reached"), 32.0 * MIB);
    assert_eq!(r.summary("refused"), 0.0);
    assert_eq!(r.summary("ops"), 4.0);
    assert!(r.summary("elapsed_s") >= 0.299);
}

#[test]
fn disk_bomb_stops_at_its_limit_and_removes_its_file() {
    let dir = TestDir::new("disk-bomb");
    let dir_param = dir.param();
    let r = run(&[
        "disk_bomb",
        "--param",
        "duration=5s",
        "--param",
        "limit=32MiB",
        "--param",
        &dir_param,
    ]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.summary("bytes_written"), 32.0 * MIB);
    assert_eq!(r.summary("full"), 0.0);
    assert_eq!(r.summary("ops"), 8.0, "8 steps of 4 MiB");
    let written = series(&r, "bytes_written");
    assert_eq!(written.len(), 8);
    assert_eq!(written.last().copied(), Some(32.0 * MIB));
    // It holds its file until the duration ends.
    assert!(r.summary("elapsed_s") >= 4.99);
    assert!(dir.entries().is_empty(), "left behind: {:?}", dir.entries());
}

#[test]
fn disk_bomb_fills_a_small_filesystem() {
    if !is_root() {
        skip("mounting a tmpfs needs root");
        return;
    }
    let dir = TestDir::new("disk-bomb-full");
    let mount = Mount::tmpfs(&dir.path, "8m");
    let r = run(&[
        "disk_bomb",
        "--param",
        "duration=300ms",
        "--param",
        "step=1MiB",
        "--param",
        &dir.param(),
    ]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.summary("full"), 1.0);
    let written = r.summary("bytes_written");
    assert!(
        (6.0 * MIB..=8.0 * MIB).contains(&written),
        "wrote {written} bytes into an 8 MiB tmpfs"
    );
    assert!(dir.entries().is_empty(), "left behind: {:?}", dir.entries());
    drop(mount);
}

/// A filesystem mounted for one test, unmounted on drop.
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(at: &std::path::Path, size: &str) -> Self {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount tmpfs at {}", at.display());
        Self(at.to_owned())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn cpu_hog_spins_on_every_thread() {
    let r = run(&[
        "cpu_hog",
        "--param",
        "duration=200ms",
        "--param",
        "threads=2",
    ]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let rates = series(&r, "spins_per_s");
    assert!(
        !rates.is_empty() && rates.iter().all(|v| *v >= 0.0),
        "{rates:?}"
    );
    let total = r.summary("spins_per_s") * r.summary("elapsed_s");
    assert!((total - r.summary("ops")).abs() <= 1e-6 * total.max(1.0));
    assert!(r.summary("ops") >= 1.0);
    assert_eq!(r.sample("spins_per_s").unit, "spins/s");
}

#[test]
fn cpu_hog_defaults_to_every_cpu() {
    let r = run(&["cpu_hog", "--param", "duration=150ms"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.summary("ops") >= 1.0);
}

#[test]
fn net_flood_reaches_the_given_target_only() {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let port = socket.local_addr().unwrap().port();
    let received = Arc::new(AtomicU64::new(0));
    let wrong_size = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (received, wrong_size, done) = (received.clone(), wrong_size.clone(), done.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !done.load(Ordering::Relaxed) {
                if let Ok((n, _)) = socket.recv_from(&mut buf) {
                    received.fetch_add(1, Ordering::Relaxed);
                    if n != 512 {
                        wrong_size.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let r = run(&[
        "net_flood",
        "--param",
        "duration=200ms",
        "--param",
        "host=127.0.0.1",
        "--param",
        &format!("port={port}"),
        "--param",
        "size=512",
    ]);
    done.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let got = received.load(Ordering::Relaxed);
    assert!(got > 0, "nothing arrived");
    assert_eq!(wrong_size.load(Ordering::Relaxed), 0);
    let sent = r.summary("ops");
    assert!(
        sent >= 1.0 && sent >= support::to_f64(got),
        "sent {sent}, got {got}"
    );
    let mb = r.summary("mb_per_s") * r.summary("elapsed_s") * 1e6;
    assert!((mb - sent * 512.0).abs() <= 1e-6 * mb);
    assert!(!series(&r, "packets_per_s").is_empty());
}
