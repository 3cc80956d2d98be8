//! Tests on the real kernel (root, writable cgroupfs). They skip with a printed reason when
//! that is unavailable, unless `CI` is set, where they must run. Every cgroup they make sits
//! under a unique top directory below our own cgroup, and a drop guard kills and removes it.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::*;

const KILL_TIMEOUT: Duration = Duration::from_secs(30);

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn skip_or_panic(test: &str, why: &str) {
    assert!(!in_ci(), "{test}: CI is set but {why}");
    eprintln!("skipping {test}: {why}");
}

/// Our top test cgroup and the manager, or `None` (test skipped).
fn setup(test: &str) -> Option<Guard> {
    setup_with(test, &|_| true)
}

/// As [`setup`], with only the cgroup mounts that `keep` accepts (to hide a controller).
fn setup_with(test: &str, keep: &dyn Fn(&str) -> bool) -> Option<Guard> {
    // /proc/self belongs to our effective uid.
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root {
        skip_or_panic(test, "not root");
        return None;
    }
    let tables = std::fs::read_to_string("/proc/self/mountinfo").and_then(|mounts| {
        let mounts: String = mounts
            .lines()
            .filter(|l| keep(l))
            .map(|l| format!("{l}\n"))
            .collect();
        Ok((mounts, std::fs::read_to_string("/proc/self/cgroup")?))
    });
    let detected = match tables {
        Ok((mounts, own)) => CgroupManager::from_tables(&mounts, &own),
        Err(e) => Err(CgroupError::Detect {
            reason: e.to_string(),
        }),
    };
    let m = match detected {
        Ok(m) => m,
        Err(e) => {
            skip_or_panic(test, &format!("no cgroupfs: {e}"));
            return None;
        }
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let top = format!("isolab-test-{}-{nanos}-{test}", std::process::id());
    match m.create(&top) {
        Ok(cg) => Some(Guard {
            m,
            top: cg,
            children: Vec::new(),
        }),
        Err(e) => {
            skip_or_panic(test, &format!("cgroupfs not writable: {e}"));
            None
        }
    }
}

/// Kills and removes the test's cgroups (and its direct children) whatever happens.
struct Guard {
    m: CgroupManager,
    top: AnyCgroup,
    children: Vec<Child>,
}

impl Guard {
    fn top_rel(&self) -> String {
        self.top.rel_path().to_owned()
    }

    /// Spawns `cmd` so that it joins `cg` before exec.
    fn spawn_in(&mut self, cg: &AnyCgroup, mut cmd: Command) -> u32 {
        let target = cg.join_target().unwrap();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: `join_current` only calls open, write and close, which are async-signal-safe.
        unsafe { cmd.pre_exec(move || target.join_current()) };
        let child = cmd.spawn().unwrap();
        let pid = child.id();
        self.children.push(child);
        pid
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(killed) = self.top.kill_all(KILL_TIMEOUT) {
            reap(&killed);
        }
        for c in &mut self.children {
            // Ours by construction; already dead in the normal case.
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Err(e) = self.top.remove() {
            eprintln!("cleanup of {}: {e}", self.top.rel_path());
        }
    }
}

/// Reaps the given pids where they are (or, once their parent is gone, become) our children;
/// bounded.
fn reap(pids: &[u32]) {
    let start = Instant::now();
    // A killed orphan is reparented to us shortly after it leaves the cgroup.
    let not_yet_ours = Duration::from_millis(300);
    let mut left: Vec<i32> = pids.iter().filter_map(|p| i32::try_from(*p).ok()).collect();
    while !left.is_empty() && start.elapsed() < Duration::from_secs(5) {
        left.retain(
            |&p| match waitpid(Pid::from_raw(p), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => true,
                Err(nix::errno::Errno::ECHILD) => start.elapsed() < not_yet_ours,
                _ => false,
            },
        );
        thread::sleep(Duration::from_millis(10));
    }
}

fn read_limit_file(cg: &AnyCgroup, v1_controller: Controller, file: &str) -> String {
    let dir = match cg {
        AnyCgroup::V1(c) => c.dir(v1_controller).unwrap().to_owned(),
        AnyCgroup::V2(c) => c.dir().to_owned(),
    };
    std::fs::read_to_string(dir.join(file))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn real_child_joins_before_exec_is_counted_limited_killed_and_removed() {
    let Some(mut g) = setup("sleep") else {
        return;
    };
    let rel = format!("{}/trial/inst-0", g.top_rel());
    let cg = g.m.create(&rel).unwrap();
    cg.apply(&CgroupLimits {
        pids_max: Some(20),
        memory_bytes: Some(64 << 20),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(read_limit_file(&cg, Controller::Pids, "pids.max"), "20");

    let mut cmd = Command::new("sleep");
    cmd.arg("30");
    let pid = g.spawn_in(&cg, cmd);
    let pids = cg.pids().unwrap();
    assert!(pids.contains(&pid), "{pid} not in {pids:?}");
    assert!(
        !pids.contains(&std::process::id()),
        "the test process joined"
    );
    // The parent level sees it too (recursive).
    assert!(g.top.pids().unwrap().contains(&pid));

    let stats = cg.stats().unwrap();
    assert!(stats.memory_current_bytes > 0, "{stats:?}");
    assert!(stats.pids_current >= 1, "{stats:?}");

    let killed = cg.kill_all(KILL_TIMEOUT).unwrap();
    assert_eq!(killed, [pid]);
    let status = g.children.pop().unwrap().wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(cg.pids().unwrap().is_empty());

    let top = g.top_rel();
    g.top.remove().unwrap();
    assert!(!g.m.exists(&rel));
    assert!(!g.m.exists(&top));
    assert!(!g.m.list("").contains(&top));
    for own in g.m.own_dirs() {
        assert!(own.is_dir(), "own cgroup {} vanished", own.display());
    }
}

#[test]
fn real_fork_bomb_is_contained_by_pids_max_and_killed_completely() {
    if let Some(g) = setup("bomb") {
        fork_bomb(g);
    }
}

#[test]
fn real_fork_bomb_is_killed_completely_without_a_freezer() {
    let no_freezer = |line: &str| {
        !line
            .split(' ')
            .next_back()
            .is_some_and(|o| o.contains("freezer"))
    };
    if let Some(g) = setup_with("bomb-nofreeze", &no_freezer) {
        let AnyCgroup::V1(top) = &g.top else {
            return; // v2: cgroup.kill or cgroup.freeze is built in.
        };
        assert!(top.dir(Controller::Freezer).is_none());
        fork_bomb(g);
    }
}

/// A recursive bash fork bomb under pids.max = 50: it must stay at the ceiling and die entirely.
fn fork_bomb(mut g: Guard) {
    // Orphans of the bomb come to us instead of a PID 1 that may not reap.
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let rel = format!("{}/bomb", g.top_rel());
    let cg = g.m.create(&rel).unwrap();
    cg.apply(&CgroupLimits {
        pids_max: Some(50),
        memory_bytes: Some(256 << 20),
        ..Default::default()
    })
    .unwrap();
    let mut cmd = Command::new("bash");
    cmd.args(["-c", "f() { f & f; }; f"]);
    g.spawn_in(&cg, cmd);

    // Wait (bounded) until the kernel has refused a fork: the bomb is at its ceiling.
    let until = Instant::now() + Duration::from_secs(60);
    while cg.stats().unwrap().pids_limit_hits == 0 {
        assert!(Instant::now() < until, "bomb never hit pids.max");
        thread::sleep(Duration::from_millis(20));
    }
    let running = cg.pids().unwrap();
    assert!(
        !running.is_empty() && running.len() <= 50,
        "{}",
        running.len()
    );

    let killed = cg.kill_all(KILL_TIMEOUT).unwrap();
    eprintln!(
        "bomb: {} tasks at the ceiling, {} killed",
        running.len(),
        killed.len()
    );
    assert!(
        killed.len() >= running.len(),
        "{} < {}",
        killed.len(),
        running.len()
    );
    assert!(cg.pids().unwrap().is_empty());
    let status = g.children.pop().unwrap().wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    reap(&killed);

    let top = g.top_rel();
    g.top.remove().unwrap();
    assert!(!g.m.exists(&top));
}
