//! Tests against real LXC: root, `lxc-execute`, the static workload binary, this machine's
//! cgroups. They run in CI (`CI=true`), where a missing piece is a failure; elsewhere they are
//! skipped with the reason printed.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use isolab_model::pipeline::{BackendKind, Limits, NetworkMode, Platform, RootfsKind};

use isolab_agent::conformance::{self, Observed};
use isolab_backends::envelope::Ceilings;
use isolab_backends::lifecycle::Lifecycle;
use isolab_backends::lxc::{LxcBackend, LxcConfig};
use isolab_backends::{AgentDir, Backend, TrialContext};
use isolab_host::cgroup::CgroupManager;
use isolab_host::cgroup::Hierarchies;

const CEILINGS: Ceilings = Ceilings {
    pids: 1024,
    memory_bytes: 1 << 30,
};

struct Setup {
    backend: LxcBackend,
    dir: Arc<AgentDir>,
    state: tempfile::TempDir,
}

fn skip_or_fail(test: &str, why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: {why} (CI must have it)"
    );
    eprintln!("skipping {test}: {why}");
}

async fn setup(test: &str) -> Option<Setup> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        skip_or_fail(test, "needs root");
        return None;
    }
    if isolab_host::which::find_binary("lxc-execute").is_none() {
        skip_or_fail(
            test,
            "lxc-execute is not installed (./bootstrap installs lxc)",
        );
        return None;
    }
    let bin = match isolab_host::workload_bin::locate() {
        Ok(b) => b,
        Err(e) => {
            skip_or_fail(test, &e.to_string());
            return None;
        }
    };
    if isolab_backends::rootfs::is_static_elf(&bin) != Some(true) {
        skip_or_fail(
            test,
            &format!(
                "{} is not static: set ISOLAB_WORKLOAD_BIN to `just build-workload`'s",
                bin.display()
            ),
        );
        return None;
    }
    let manager = Arc::new(CgroupManager::detect().expect("cgroups"));
    let (dir, _) =
        AgentDir::claim(manager, &format!("isolab-test-lx-{test}")).expect("claim agent dir");
    let dir = Arc::new(dir);
    let state = tempfile::Builder::new()
        .prefix("isolab-lx-")
        .tempdir()
        .expect("state dir");
    let config = LxcConfig {
        state_dir: state.path().to_owned(),
        ..LxcConfig::default()
    };
    let backend = LxcBackend::new(Ok(Arc::clone(&dir)), Ok(bin), CEILINGS, config);
    let status = backend.probe().await;
    assert!(
        status.available,
        "lxc backend unavailable: {}",
        status.reason
    );
    assert!(
        status.version.starts_with("LXC "),
        "version: {}",
        status.version
    );
    Some(Setup {
        backend,
        dir,
        state,
    })
}

fn platform(limits: Limits) -> Platform {
    Platform {
        backend: BackendKind::Lxc,
        runtime: None,
        runtime_args: vec![],
        rootfs: None,
        network: None,
        limits,
        vcpus: None,
        memory: None,
        accel: None,
        machine: None,
    }
}

fn assert_nothing_left(s: &Setup, o: &Observed) {
    conformance::assert_clean(&s.backend, o);
    let rel = s.dir.rel(&o.ctx.slug());
    let left = Hierarchies::detect().expect("hierarchies").existing(&rel);
    assert!(
        left.is_empty(),
        "cgroups left (lxc.pivot included): {left:?}"
    );
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lxc_backend_passes_the_conformance_suite() {
    let Some(s) = setup("conformance").await else {
        return;
    };
    conformance::check_all(&s.backend, &platform(Limits::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bombs_are_contained_and_the_next_trial_runs_clean() {
    let Some(s) = setup("bombs").await else {
        return;
    };
    conformance::check_bombs_contained(&s.backend, &platform(Limits::default()), |o| {
        assert_nothing_left(&s, o);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_ro_root_runs_and_the_backend_leaves_no_lock_or_state() {
    let Some(s) = setup("hostro").await else {
        return;
    };
    let mut p = platform(Limits::default());
    p.rootfs = Some(RootfsKind::HostRo);
    let o = conformance::check_one_syscall(&s.backend, &p).await;
    assert_nothing_left(&s, &o);
    let Setup {
        backend,
        dir,
        state,
    } = s;
    let name = dir.name().to_owned();
    let lock = isolab_backends::lxc::lock_dir(&state.path().join(&name).join("lxc/path"));
    drop(backend);
    drop(dir);
    assert!(!lock.exists(), "lock directory {} left", lock.display());
    assert!(!state.path().join(&name).exists(), "lxc state left");
    let left = Hierarchies::detect().expect("hierarchies").existing(&name);
    assert!(left.is_empty(), "the agent's cgroup is left in: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_instances_run_in_their_trial_namespaces() {
    let Some(s) = setup("bridge").await else {
        return;
    };
    let mut p = platform(Limits::default());
    p.network = Some(NetworkMode::Bridge);
    let t = conformance::trial(
        &p,
        "tcp_rr",
        2,
        &[("role", "server"), ("port", "7002")],
        secs(2.0),
        secs(60.0),
    );
    let ctx = TrialContext {
        run_id: "r".into(),
        trial: Arc::new(isolab_wire::TrialSpec::from(&t)),
        attempt: 0,
    };
    let mut prepared = Lifecycle(&s.backend).prepare(&ctx).await.expect("prepare");
    let net = prepared.backend.network().expect("bridge network").clone();
    let launch = Lifecycle(&s.backend)
        .start(&mut prepared)
        .await
        .expect("start");
    let (a, b) = (net.instances[0].clone(), net.instances[1].clone());
    let target = SocketAddr::new(a.addr.into(), 7002);
    let client = std::thread::spawn(move || {
        let file = std::fs::File::open(b.path()).expect("open netns");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let until = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match TcpStream::connect_timeout(&target, Duration::from_millis(500)) {
                Ok(_) => return Ok(()),
                Err(_) if std::time::Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    });
    let reached = tokio::task::spawn_blocking(move || client.join().expect("client thread"))
        .await
        .expect("join");
    assert!(
        reached.is_ok(),
        "instance 1's namespace could not reach instance 0's server: {reached:?}"
    );
    drop(launch);
    Lifecycle(&s.backend).stop(&prepared).await.expect("stop");
    let leaks = Lifecycle(&s.backend).teardown(prepared).await;
    assert!(leaks.is_clean(), "{:?}", leaks.lines());
    let _ = &s.state;
}

/// LXC runs with the hardening it ships: `common.conf`'s seccomp profile (`Seccomp: 2`) and its
/// capability drops (the workload's effective set is the host's bounding set without them), read
/// from the host in `/proc/<pid>/status` of the running workload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_run_with_lxcs_default_seccomp_profile_and_capability_drops() {
    use isolab_agent::confinement::{Confinement, mask, observe};
    let Some(s) = setup("hardening").await else {
        return;
    };
    let shipped = isolab_backends::lxc::hardening::LxcHardening::read(std::path::Path::new(
        isolab_backends::lxc::hardening::COMMON_CONF,
    ))
    .expect("LXC's common.conf");
    let drops: Vec<&str> = shipped.cap_drop.iter().map(String::as_str).collect();
    let dropped = mask(&drops).expect("capability names LXC knows");
    assert_ne!(dropped, 0, "common.conf drops capabilities: {shipped:?}");
    let host = Confinement::of(std::process::id()).expect("own status");
    for c in observe(&s.backend, &platform(Limits::default())).await {
        assert_eq!(c.seccomp, 2, "no seccomp filter on the workload: {c:?}");
        assert_eq!(
            c.cap_eff,
            host.cap_bnd & !dropped,
            "CapEff {:#x}, expected the host's {:#x} without {drops:?}",
            c.cap_eff,
            host.cap_bnd
        );
    }
}
