//! Tests against a fake cgroupfs in a temp dir: the test writes the control files the kernel
//! would create, the code under test writes limits, the test reads back exact contents.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use super::factory::{parse_mounts, parse_proc_cgroup};
use super::*;

/// `/proc/self/cgroup` of this machine's shell.
const PROC_CGROUP_V1: &str = "9:name=systemd:/\n8:pids:/\n7:blkio:/\n6:freezer:/\n5:devices:/\n\
    4:memory:/process_api/abc\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n";

/// This machine's cgroup mounts (`/proc/self/mountinfo`).
const MOUNTINFO_V1: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

fn put(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn get(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The files a v1 kernel makes in a new cgroup of `controller` (every group sharing `dir`).
fn v1_kernel_files(dir: &Path, controllers: &str) {
    put(&dir.join("cgroup.procs"), "");
    for c in controllers.split(',') {
        let files: &[(&str, &str)] = match c {
            "memory" => &[
                ("memory.limit_in_bytes", "9223372036854771712\n"),
                ("memory.memsw.limit_in_bytes", "9223372036854771712\n"),
                ("memory.usage_in_bytes", "0\n"),
            ],
            "cpu" => &[
                ("cpu.shares", "1024\n"),
                ("cpu.cfs_period_us", "100000\n"),
                ("cpu.cfs_quota_us", "-1\n"),
            ],
            "pids" => &[("pids.max", "max\n"), ("pids.current", "0\n")],
            "blkio" => &[
                ("blkio.weight", "500\n"),
                ("blkio.throttle.read_bps_device", ""),
                ("blkio.throttle.write_bps_device", ""),
            ],
            "freezer" => &[("freezer.state", "THAWED\n")],
            _ => &[],
        };
        for (f, v) in files {
            if !dir.join(f).exists() {
                put(&dir.join(f), v);
            }
        }
    }
}

/// A v1 cgroupfs laid out like this machine; `dirs` names the hierarchy directories.
fn fake_v1(dirs: &[&str]) -> (TempDir, CgroupManager) {
    let tmp = tempfile::tempdir().unwrap();
    for d in dirs {
        let own = if d.split(',').any(|c| c == "memory") {
            tmp.path().join(d).join("process_api/abc")
        } else {
            tmp.path().join(d)
        };
        fs::create_dir_all(&own).unwrap();
        v1_kernel_files(&own, d);
        if d.split(',').any(|c| c == "cpuset") {
            put(&own.join("cpuset.cpus"), "0-1\n");
            put(&own.join("cpuset.mems"), "0\n");
        }
    }
    let m = CgroupManager::with_root(tmp.path(), CgroupVersion::V1, PROC_CGROUP_V1).unwrap();
    (tmp, m)
}

const V1_SEPARATE: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "freezer", "devices", "systemd",
    "unified",
];

/// Creates `rel` and gives every level the kernel's files.
fn create_v1(tmp: &TempDir, m: &CgroupManager, rel: &str) -> V1Cgroup {
    let AnyCgroup::V1(cg) = m.create(rel).unwrap() else {
        panic!("v1 manager made a v2 cgroup")
    };
    for (_, dir) in &cg.dirs_for_test() {
        let name = dir
            .strip_prefix(tmp.path())
            .unwrap()
            .components()
            .next()
            .unwrap();
        v1_kernel_files(dir, &name.as_os_str().to_string_lossy());
    }
    cg
}

impl V1Cgroup {
    fn dirs_for_test(&self) -> Vec<(Controller, PathBuf)> {
        Controller::V1
            .iter()
            .filter_map(|c| self.dir(*c).map(|d| (*c, d.to_owned())))
            .collect()
    }
}

#[test]
fn v1_creates_under_own_cgroup_in_every_controller() {
    let (tmp, m) = fake_v1(V1_SEPARATE);
    assert_eq!(m.version(), CgroupVersion::V1);
    assert_eq!(m.controllers(), Controller::V1.to_vec());
    let cg = m.create("isolab-1/trial-2/inst-0").unwrap();
    assert_eq!(cg.rel_path(), "isolab-1/trial-2/inst-0");
    let root = tmp.path();
    let mut want: Vec<PathBuf> = ["cpu", "cpuacct", "cpuset", "pids", "blkio", "freezer"]
        .iter()
        .map(|c| root.join(c).join("isolab-1/trial-2/inst-0/cgroup.procs"))
        .collect();
    want.push(root.join("memory/process_api/abc/isolab-1/trial-2/inst-0/cgroup.procs"));
    let mut got = cg.procs_files();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    for f in &got {
        assert!(f.parent().unwrap().is_dir(), "{} missing", f.display());
    }
    // Controllers we do not use are left alone.
    assert!(!root.join("devices/isolab-1").exists());
    assert!(!root.join("systemd/isolab-1").exists());
    assert!(!root.join("unified/isolab-1").exists());
    assert!(m.exists("isolab-1/trial-2"));
    assert_eq!(m.list("isolab-1"), ["trial-2"]);
}

#[test]
fn v1_joined_and_symlinked_hierarchies_share_one_directory() {
    let (tmp, m) = fake_v1(&["cpu,cpuacct", "memory", "pids"]);
    std::os::unix::fs::symlink(tmp.path().join("cpu,cpuacct"), tmp.path().join("cpu")).unwrap();
    let m2 = CgroupManager::with_root(tmp.path(), CgroupVersion::V1, PROC_CGROUP_V1).unwrap();
    for m in [&m, &m2] {
        let cg = m.create("a").unwrap();
        let AnyCgroup::V1(v1) = &cg else { panic!() };
        assert_eq!(v1.dir(Controller::Cpu), v1.dir(Controller::Cpuacct));
        assert_eq!(cg.procs_files().len(), 3, "{:?}", cg.procs_files());
        assert!(v1.dir(Controller::Freezer).is_none());
    }
}

#[test]
fn v1_apply_writes_exact_values() {
    let (tmp, m) = fake_v1(V1_SEPARATE);
    let cg = create_v1(&tmp, &m, "t/i");
    let limits = CgroupLimits {
        memory_bytes: Some(256 << 20),
        pids_max: Some(50),
        cpu_weight: Some(50),
        cpu_quota: Some(0.5),
        cpu_period_us: None,
        cpuset_cpus: Some("1".into()),
        io_weight: Some(5000),
        io_bps: Some((1 << 20, vec![(8, 0)])),
    };
    cg.apply(&limits).unwrap();
    let mem = cg.dir(Controller::Memory).unwrap();
    assert_eq!(get(&mem.join("memory.limit_in_bytes")), "268435456");
    assert_eq!(get(&mem.join("memory.memsw.limit_in_bytes")), "268435456");
    let pids = cg.dir(Controller::Pids).unwrap();
    assert_eq!(get(&pids.join("pids.max")), "50");
    let cpu = cg.dir(Controller::Cpu).unwrap();
    assert_eq!(get(&cpu.join("cpu.shares")), "512");
    assert_eq!(get(&cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(get(&cpu.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(
        get(&cg.dir(Controller::Cpuset).unwrap().join("cpuset.cpus")),
        "1"
    );
    let blkio = cg.dir(Controller::Blkio).unwrap();
    assert_eq!(get(&blkio.join("blkio.weight")), "1000");
    assert_eq!(
        get(&blkio.join("blkio.throttle.read_bps_device")),
        "8:0 1048576"
    );
    assert_eq!(
        get(&blkio.join("blkio.throttle.write_bps_device")),
        "8:0 1048576"
    );

    // Tiny weights clamp to the v1 floors; an explicit period is used.
    cg.apply(&CgroupLimits {
        cpu_weight: Some(1),
        io_weight: Some(1),
        cpu_quota: Some(2.0),
        cpu_period_us: Some(50_000),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(get(&cpu.join("cpu.shares")), "10");
    assert_eq!(get(&blkio.join("blkio.weight")), "10");
    assert_eq!(get(&cpu.join("cpu.cfs_period_us")), "50000");
    assert_eq!(get(&cpu.join("cpu.cfs_quota_us")), "100000");
}

#[test]
fn v1_missing_control_file_is_an_error_naming_it() {
    let (tmp, m) = fake_v1(V1_SEPARATE);
    let cg = create_v1(&tmp, &m, "t");
    fs::remove_file(cg.dir(Controller::Cpu).unwrap().join("cpu.cfs_quota_us")).unwrap();
    let err = cg
        .apply(&CgroupLimits {
            cpu_quota: Some(1.0),
            ..Default::default()
        })
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("cpu.cfs_quota_us not present"), "{msg}");
    assert!(msg.contains("CONFIG_CFS_BANDWIDTH"), "{msg}");

    // A controller that is not mounted at all.
    let (tmp, m) = fake_v1(&["cpu", "memory"]);
    let cg = create_v1(&tmp, &m, "t");
    let err = cg
        .apply(&CgroupLimits {
            pids_max: Some(5),
            ..Default::default()
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::ControllerUnavailable {
                file: "pids.max",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn v1_memory_without_swap_accounting_and_io_weight_without_scheduler() {
    let (tmp, m) = fake_v1(V1_SEPARATE);
    let cg = create_v1(&tmp, &m, "t");
    let mem = cg.dir(Controller::Memory).unwrap();
    fs::remove_file(mem.join("memory.memsw.limit_in_bytes")).unwrap();
    let blkio = cg.dir(Controller::Blkio).unwrap();
    fs::remove_file(blkio.join("blkio.weight")).unwrap();
    cg.apply(&CgroupLimits {
        memory_bytes: Some(4096),
        io_weight: Some(100),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(get(&mem.join("memory.limit_in_bytes")), "4096");
    assert!(!mem.join("memory.memsw.limit_in_bytes").exists());
    assert!(!blkio.join("blkio.weight").exists());
}

#[test]
fn v1_cpuset_is_copied_into_each_new_level_only() {
    let (tmp, m) = fake_v1(V1_SEPARATE);
    let own = tmp.path().join("cpuset");
    m.create("a/b").unwrap();
    for level in ["a", "a/b"] {
        assert_eq!(get(&own.join(level).join("cpuset.cpus")), "0-1");
        assert_eq!(get(&own.join(level).join("cpuset.mems")), "0");
    }
    // An existing level keeps its own value; the new level below copies it.
    put(&own.join("a/cpuset.cpus"), "1\n");
    m.create("a/c").unwrap();
    assert_eq!(get(&own.join("a/cpuset.cpus")), "1\n");
    assert_eq!(get(&own.join("a/c/cpuset.cpus")), "1");
}

#[test]
fn v1_failed_create_leaves_nothing_behind() {
    let (tmp, m) = fake_v1(V1_SEPARATE);
    m.create("keep").unwrap();
    fs::remove_file(tmp.path().join("cpuset/cpuset.mems")).unwrap();
    fs::remove_file(tmp.path().join("cpuset/keep/cpuset.mems")).unwrap();
    let err = m.create("a/b").unwrap_err();
    assert!(err.to_string().contains("cpuset.mems"), "{err}");
    assert!(!m.exists("a"));
    // A level that existed before is kept; only what this call made goes.
    assert!(m.create("keep/x/y").is_err());
    assert!(m.exists("keep"));
    assert!(!m.exists("keep/x"));
}

#[test]
fn v1_stats_from_fixture_files() {
    let (tmp, m) = fake_v1(V1_SEPARATE);
    let cg = create_v1(&tmp, &m, "t");
    let d = |c| cg.dir(c).unwrap().to_owned();
    put(
        &d(Controller::Cpuacct).join("cpuacct.stat"),
        "user 150\nsystem 25\n",
    );
    put(
        &d(Controller::Cpuacct).join("cpuacct.usage"),
        "1234567890\n",
    );
    let mem = d(Controller::Memory);
    put(&mem.join("memory.usage_in_bytes"), "1048576\n");
    put(&mem.join("memory.max_usage_in_bytes"), "2097152\n");
    put(&mem.join("memory.failcnt"), "7\n");
    put(
        &mem.join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    );
    put(&d(Controller::Pids).join("pids.current"), "3\n");
    put(&d(Controller::Pids).join("pids.events"), "max 11\n");
    put(
        &d(Controller::Blkio).join("blkio.throttle.io_service_bytes"),
        "8:0 Read 4096\n8:0 Write 8192\n8:0 Total 12288\nTotal 12288\n",
    );
    let s = cg.stats().unwrap();
    assert_eq!(
        s,
        CgroupStats {
            cpu_user_ns: 1_500_000_000,
            cpu_system_ns: 250_000_000,
            cpu_usage_ns: 1_234_567_890,
            memory_current_bytes: 1_048_576,
            memory_peak_bytes: 2_097_152,
            memory_limit_hits: 7,
            oom_events: 2,
            oom_kills: 2,
            pids_current: 3,
            pids_limit_hits: 11,
            io_read_bytes: 4096,
            io_write_bytes: 8192,
        }
    );
    // The recursive variant wins when present; old kernels without `oom_kill` report `under_oom`.
    put(
        &d(Controller::Blkio).join("blkio.throttle.io_service_bytes_recursive"),
        "8:0 Read 1\n8:0 Write 2\n",
    );
    put(
        &mem.join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 1\n",
    );
    let s = cg.stats().unwrap();
    assert_eq!((s.io_read_bytes, s.io_write_bytes), (1, 2));
    assert_eq!((s.oom_events, s.oom_kills), (1, 0));
    // A garbled number is an error naming the file.
    put(&mem.join("memory.failcnt"), "lots\n");
    let err = cg.stats().unwrap_err().to_string();
    assert!(err.contains("memory.failcnt"), "{err}");
}

#[test]
fn v1_pids_are_recursive_and_remove_is_depth_first_and_idempotent() {
    let (tmp, m) = fake_v1(V1_SEPARATE);
    create_v1(&tmp, &m, "a/b/c");
    create_v1(&tmp, &m, "a/d");
    let a = m.open("a").unwrap();
    let AnyCgroup::V1(v1a) = &a else { panic!() };
    let mem = v1a.dir(Controller::Memory).unwrap();
    put(&mem.join("cgroup.procs"), "10\n12\n");
    put(&mem.join("b/c/cgroup.procs"), "12\n11\n");
    put(
        &v1a.dir(Controller::Pids).unwrap().join("d/cgroup.procs"),
        "9\n",
    );
    assert_eq!(a.pids().unwrap(), [9, 10, 11, 12]);

    assert_eq!(m.list(""), ["a"]);
    a.remove().unwrap();
    assert!(!m.exists("a"));
    assert!(!m.exists("a/b/c"));
    assert!(m.list("").is_empty());
    for own in m.own_dirs() {
        assert!(own.is_dir(), "own cgroup {} removed", own.display());
    }
    a.remove().unwrap();
    assert!(matches!(a.stats(), Err(CgroupError::Gone { .. })));
}

#[test]
fn paths_that_escape_our_cgroup_are_refused() {
    let (_tmp, m) = fake_v1(V1_SEPARATE);
    for rel in ["", "../x", "/x", "a/../../x"] {
        assert!(
            matches!(m.create(rel), Err(CgroupError::InvalidPath { .. })),
            "{rel}"
        );
        assert!(m.open(rel).is_err(), "{rel}");
    }
    assert!(!m.exists(".."));
    assert!(m.list("..").is_empty());
    assert!(m.exists(""));
}

#[test]
fn v1_kill_all_freezes_signals_and_thaws() {
    let (tmp, m) = fake_v1(V1_SEPARATE);
    let cg = create_v1(&tmp, &m, "k");
    let state = cg.dir(Controller::Freezer).unwrap().join("freezer.state");
    // Empty: nothing to kill, so nothing is frozen either.
    put(&state, "untouched");
    assert_eq!(
        cg.kill_all(Duration::from_secs(1)).unwrap(),
        Vec::<u32>::new()
    );
    assert_eq!(get(&state), "untouched");

    // A fake cgroup.procs never empties: the child is killed, the call times out naming it.
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    put(
        &cg.dir(Controller::Pids).unwrap().join("cgroup.procs"),
        &format!("{}\n", child.id()),
    );
    let err = cg.kill_all(Duration::from_millis(100)).unwrap_err();
    let CgroupError::KillTimeout { pids, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(pids, &[child.id()]);
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    assert_eq!(get(&state), "THAWED");
}

/// A v2 cgroupfs whose own cgroup is `/agent` with the given delegated controllers.
fn fake_v2(subtree: &str) -> (TempDir, CgroupManager, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let own = tmp.path().join("agent");
    put(
        &own.join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    );
    put(&own.join("cgroup.subtree_control"), subtree);
    put(&own.join("cgroup.procs"), "1\n");
    let m = CgroupManager::with_root(tmp.path(), CgroupVersion::V2, "0::/agent\n").unwrap();
    (tmp, m, own)
}

fn v2_kernel_files(dir: &Path) {
    for (f, v) in [
        ("cgroup.procs", ""),
        ("cgroup.freeze", "0\n"),
        ("cpu.weight", "100\n"),
        ("cpu.max", "max 100000\n"),
        ("cpuset.cpus", "\n"),
        ("memory.max", "max\n"),
        ("memory.swap.max", "max\n"),
        ("pids.max", "max\n"),
        ("io.weight", "default 100\n"),
        ("io.max", ""),
    ] {
        put(&dir.join(f), v);
    }
}

#[test]
fn v2_create_enables_controllers_in_intermediate_levels_only() {
    let (_tmp, m, own) = fake_v2("cpu io memory pids\n");
    assert_eq!(m.version(), CgroupVersion::V2);
    assert_eq!(
        m.controllers(),
        [
            Controller::Cpu,
            Controller::Io,
            Controller::Memory,
            Controller::Pids
        ]
    );
    let cg = m.create("isolab-1/trial/inst").unwrap();
    assert_eq!(
        cg.procs_files(),
        [own.join("isolab-1/trial/inst/cgroup.procs")]
    );
    for level in ["isolab-1", "isolab-1/trial"] {
        assert_eq!(
            get(&own.join(level).join("cgroup.subtree_control")),
            "+cpu +io +memory +pids"
        );
    }
    assert!(
        !own.join("isolab-1/trial/inst/cgroup.subtree_control")
            .exists()
    );
    // Our own cgroup is never written.
    assert_eq!(
        get(&own.join("cgroup.subtree_control")),
        "cpu io memory pids\n"
    );

    // A level that already has a controller gets only the missing ones, and only those it has.
    put(&own.join("isolab-1/x/cgroup.controllers"), "cpu memory\n");
    put(&own.join("isolab-1/x/cgroup.subtree_control"), "memory\n");
    m.create("isolab-1/x/y").unwrap();
    assert_eq!(get(&own.join("isolab-1/x/cgroup.subtree_control")), "+cpu");
}

#[test]
fn v2_apply_writes_exact_values() {
    let (_tmp, m, own) = fake_v2("cpu io memory pids cpuset\n");
    let cg = m.create("t").unwrap();
    let dir = own.join("t");
    v2_kernel_files(&dir);
    cg.apply(&CgroupLimits {
        memory_bytes: Some(64 << 20),
        pids_max: Some(100),
        cpu_weight: Some(250),
        cpu_quota: Some(1.5),
        cpu_period_us: Some(20_000),
        cpuset_cpus: Some("0-1".into()),
        io_weight: Some(500),
        io_bps: Some((1000, vec![(259, 0)])),
    })
    .unwrap();
    assert_eq!(get(&dir.join("memory.max")), "67108864");
    assert_eq!(get(&dir.join("memory.swap.max")), "0");
    assert_eq!(get(&dir.join("pids.max")), "100");
    assert_eq!(get(&dir.join("cpu.weight")), "250");
    assert_eq!(get(&dir.join("cpu.max")), "30000 20000");
    assert_eq!(get(&dir.join("cpuset.cpus")), "0-1");
    assert_eq!(get(&dir.join("io.weight")), "default 500");
    assert_eq!(get(&dir.join("io.max")), "259:0 rbps=1000 wbps=1000");
}

#[test]
fn v2_missing_control_file_names_file_and_subtree_control() {
    let (_tmp, m, _own) = fake_v2("cpu\n");
    let cg = m.create("t").unwrap();
    let err = cg
        .apply(&CgroupLimits {
            memory_bytes: Some(1 << 20),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("memory.max not present"), "{err}");
    assert!(err.contains("cgroup.subtree_control"), "{err}");
}

#[test]
fn v2_stats_from_fixture_files() {
    let (_tmp, m, own) = fake_v2("cpu io memory pids\n");
    let cg = m.create("t").unwrap();
    let dir = own.join("t");
    put(
        &dir.join("cpu.stat"),
        "usage_usec 3000\nuser_usec 2000\nsystem_usec 1000\nnr_periods 0\n",
    );
    put(&dir.join("memory.current"), "8192\n");
    put(&dir.join("memory.peak"), "16384\n");
    put(
        &dir.join("memory.events"),
        "low 0\nhigh 0\nmax 4\noom 2\noom_kill 1\noom_group_kill 0\n",
    );
    put(&dir.join("pids.current"), "5\n");
    put(&dir.join("pids.events"), "max 6\n");
    put(
        &dir.join("io.stat"),
        "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n8:16 rbytes=1 wbytes=2\n",
    );
    assert_eq!(
        cg.stats().unwrap(),
        CgroupStats {
            cpu_user_ns: 2_000_000,
            cpu_system_ns: 1_000_000,
            cpu_usage_ns: 3_000_000,
            memory_current_bytes: 8192,
            memory_peak_bytes: 16384,
            memory_limit_hits: 4,
            oom_events: 2,
            oom_kills: 1,
            pids_current: 5,
            pids_limit_hits: 6,
            io_read_bytes: 101,
            io_write_bytes: 202,
        }
    );
}

#[test]
fn v2_kill_uses_cgroup_kill_when_present_and_remove_nests() {
    let (_tmp, m, own) = fake_v2("cpu io memory pids\n");
    let cg = m.create("t/i").unwrap();
    let dir = own.join("t/i");
    put(&dir.join("cgroup.kill"), "");
    assert!(cg.kill_all(Duration::from_secs(1)).unwrap().is_empty());
    assert_eq!(
        get(&dir.join("cgroup.kill")),
        "",
        "written with nothing to kill"
    );
    put(&dir.join("cgroup.procs"), "999999999\n");
    let err = cg.kill_all(Duration::from_millis(50)).unwrap_err();
    assert!(matches!(err, CgroupError::KillTimeout { .. }), "{err}");
    assert_eq!(get(&dir.join("cgroup.kill")), "1");

    m.open("t").unwrap().remove().unwrap();
    assert!(!m.exists("t"));
    assert!(own.join("cgroup.procs").exists());
}

#[test]
fn tables_of_this_machine_give_v1_nested_under_own_memory_cgroup() {
    let m = CgroupManager::from_tables(MOUNTINFO_V1, PROC_CGROUP_V1).unwrap();
    assert_eq!(m.version(), CgroupVersion::V1);
    let AnyCgroup::V1(cg) = m.open("x").unwrap() else {
        panic!()
    };
    assert_eq!(
        cg.dir(Controller::Memory),
        Some(Path::new("/sys/fs/cgroup/memory/process_api/abc/x"))
    );
    assert_eq!(
        cg.dir(Controller::Cpu),
        Some(Path::new("/sys/fs/cgroup/cpu/x"))
    );
    assert_eq!(
        cg.dir(Controller::Cpuacct),
        Some(Path::new("/sys/fs/cgroup/cpuacct/x"))
    );
    assert_eq!(cg.procs_files().len(), 7);
}

#[test]
fn tables_pure_v2_joined_v1_and_namespaced_roots() {
    let v2 = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
    let m = CgroupManager::from_tables(v2, "0::/user.slice/agent.scope\n").unwrap();
    assert_eq!(m.version(), CgroupVersion::V2);
    assert_eq!(
        m.own_dirs(),
        [PathBuf::from("/sys/fs/cgroup/user.slice/agent.scope")]
    );

    // `cpu,cpuacct` joined, mounted from a sub-root (cgroup namespace / bind mount), with a
    // space escaped in the mount point.
    let joined = "1 0 0:1 /kube/pod /mnt/cg\\040x/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                  2 0 0:2 /kube/pod /mnt/cg\\040x/memory rw - cgroup cgroup rw,memory\n";
    let m = CgroupManager::from_tables(joined, "3:cpu,cpuacct:/kube/pod/c\n2:memory:/kube/pod\n")
        .unwrap();
    let AnyCgroup::V1(cg) = m.open("t").unwrap() else {
        panic!()
    };
    assert_eq!(
        cg.dir(Controller::Cpu),
        Some(Path::new("/mnt/cg x/cpu,cpuacct/c/t"))
    );
    assert_eq!(cg.dir(Controller::Cpu), cg.dir(Controller::Cpuacct));
    assert_eq!(
        cg.dir(Controller::Memory),
        Some(Path::new("/mnt/cg x/memory/t"))
    );
    assert_eq!(cg.procs_files().len(), 2);

    // /proc/mounts format works too; no cgroup at all is an error.
    let mounts = "cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,memory 0 0\n";
    assert_eq!(parse_mounts(mounts).len(), 1);
    assert!(CgroupManager::from_tables("proc /proc proc rw 0 0\n", "").is_err());
    assert_eq!(
        parse_proc_cgroup(PROC_CGROUP_V1)["memory"],
        "/process_api/abc"
    );
    assert_eq!(parse_proc_cgroup(PROC_CGROUP_V1)[""], "/");
}
