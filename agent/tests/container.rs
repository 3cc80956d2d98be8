//! Tests against the real runtime: root, runc, the static workload binary, this machine's
//! cgroups. They run in CI (`CI=true`), where a missing piece is a failure; elsewhere they are
//! skipped with the reason printed.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use isolab_model::pipeline::{BackendKind, Limits, NetworkMode, Platform, RootfsKind};
use isolab_model::units::Bytes;

use isolab_agent::conformance::{self, Observed};
use isolab_agent::core::TrialState;
use isolab_backends::container::{
    ContainerBackend, ContainerConfig, DEFAULT_RUNTIMES, RuntimeTable,
};
use isolab_backends::envelope::Ceilings;
use isolab_backends::lifecycle::Lifecycle;
use isolab_backends::{AgentDir, Backend, TrialContext};
use isolab_host::cgroup::CgroupManager;
use isolab_host::cgroup::Hierarchies;

/// The probe's tests against fake and real runtimes.
#[path = "container/probe.rs"]
mod probe;

const CEILINGS: Ceilings = Ceilings {
    pids: 1024,
    memory_bytes: 1 << 30,
};

/// A backend on real cgroups with its own agent directory and state directory.
pub(crate) struct Setup {
    pub(crate) backend: ContainerBackend,
    pub(crate) dir: Arc<AgentDir>,
    pub(crate) state: tempfile::TempDir,
}

/// The runtime table of `runtimes`: `NAME=/abs/path` as given, a bare name as found on `PATH`
/// (left out when not installed).
pub(crate) fn table(runtimes: &[&str]) -> RuntimeTable {
    let flags: Vec<String> = runtimes
        .iter()
        .filter_map(|r| {
            if r.contains('=') {
                return Some((*r).to_owned());
            }
            let path = isolab_host::which::find_binary(r)?;
            Some(format!("{r}={}", std::path::absolute(path).ok()?.display()))
        })
        .collect();
    RuntimeTable::from_flags(&flags, &[]).expect("runtime table")
}

/// Everything a real test needs, or `None` (outside CI) with the reason printed.
pub(crate) fn setup(test: &str, runtimes: &[&str]) -> Option<Setup> {
    setup_table(test, || table(runtimes))
}

/// [`setup`] with the runtime table `runtimes` makes (once the test is known to run here).
pub(crate) fn setup_table(test: &str, runtimes: impl FnOnce() -> RuntimeTable) -> Option<Setup> {
    let ci = std::env::var_os("CI").is_some();
    let missing = |why: String| {
        assert!(!ci, "{test}: {why} (CI must have it)");
        eprintln!("skipping {test}: {why}");
        None
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return missing("needs root".into());
    }
    if isolab_host::which::find_binary("runc").is_none() {
        return missing("runc is not installed".into());
    }
    let bin = match isolab_host::workload_bin::locate() {
        Ok(b) => b,
        Err(e) => return missing(e.to_string()),
    };
    if isolab_backends::rootfs::is_static_elf(&bin) != Some(true) {
        return missing(format!(
            "{} is not static: set ISOLAB_WORKLOAD_BIN to `just build-workload`'s",
            bin.display()
        ));
    }
    let manager = Arc::new(CgroupManager::detect().expect("cgroups"));
    let (dir, _) =
        AgentDir::claim(manager, &format!("isolab-test-ct-{test}")).expect("claim agent dir");
    let dir = Arc::new(dir);
    let state = tempfile::Builder::new()
        .prefix("isolab-ct-")
        .tempdir()
        .expect("state dir");
    let config = ContainerConfig {
        state_dir: state.path().to_owned(),
        runtimes: runtimes(),
        ..ContainerConfig::default()
    };
    let backend = ContainerBackend::new(Ok(Arc::clone(&dir)), Ok(bin), CEILINGS, config);
    Some(Setup {
        backend,
        dir,
        state,
    })
}

pub(crate) fn platform(limits: Limits) -> Platform {
    Platform {
        backend: BackendKind::Container,
        runtime: Some("runc".into()),
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

async fn available(s: &Setup) {
    let status = s.backend.probe().await;
    assert!(
        status.available,
        "container backend unavailable: {}",
        status.reason
    );
    assert!(
        status.version.starts_with("runc"),
        "version: {}",
        status.version
    );
}

/// Nothing of the trial anywhere: the suite's checks plus every hierarchy looked at directly.
pub(crate) fn assert_nothing_left(s: &Setup, o: &Observed) {
    conformance::assert_clean(&s.backend, o);
    let rel = s.dir.rel(&o.ctx.slug());
    let hierarchies = Hierarchies::detect().expect("hierarchies");
    assert!(
        hierarchies.existing(&rel).is_empty(),
        "cgroups left: {:?}",
        hierarchies.existing(&rel)
    );
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_backend_passes_the_conformance_suite() {
    let Some(s) = setup("conformance", &["runc"]) else {
        return;
    };
    available(&s).await;
    conformance::check_all(&s.backend, &platform(Limits::default())).await;
}

/// The runtime a trial names is the operator's: `--runtime oci=<runc's absolute path>` with an
/// operator argument (`--runtime-arg oci=--log-format=json`, which runc takes globally) runs the
/// whole suite under the name `oci`; the binary is the table's, and its arguments reach every
/// call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_runtime_name_passes_the_conformance_suite() {
    let Some(s) = setup_table("conformance-named", || {
        let runc = isolab_host::which::find_binary("runc").expect("runc");
        let runc = std::path::absolute(runc).expect("absolute");
        RuntimeTable::from_flags(
            &[format!("oci={}", runc.display())],
            &["oci=--log-format=json".into()],
        )
        .expect("table")
    }) else {
        return;
    };
    let summary = s.backend.probe().await;
    assert!(summary.available, "{}", summary.reason);
    let statuses = s.backend.runtime_statuses();
    assert!(
        statuses
            .iter()
            .any(|st| st.name == "container/oci" && st.available),
        "{statuses:?}"
    );
    let mut p = platform(Limits::default());
    p.runtime = Some("oci".into());
    let rt = s
        .backend
        .runtime_named("oci", &[], NetworkMode::None)
        .expect("the configured runtime");
    assert_eq!(
        rt.global_args()[2..],
        ["--log-format=json".to_owned()],
        "the operator's argument follows --root"
    );
    conformance::check_all(&s.backend, &p).await;
}

/// gVisor removes the container's cgroup as it ends (no `run --keep`): the final statistics are
/// its last periodic reading, so the whole suite (final statistics included) passes for it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runsc_containers_pass_the_conformance_suite() {
    let Some(s) = setup("conformance-runsc", &["runc", "runsc"]) else {
        return;
    };
    if isolab_host::which::find_binary("runsc").is_none() {
        assert!(std::env::var_os("CI").is_none(), "CI must have runsc");
        eprintln!("skipping: runsc is not installed");
        return;
    }
    let mut p = platform(Limits::default());
    p.runtime = Some("runsc".into());
    conformance::check_all(&s.backend, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_oom_kills_and_the_next_trial_runs_clean() {
    let Some(s) = setup("oom", &["runc"]) else {
        return;
    };
    available(&s).await;
    let p = platform(Limits {
        memory: Some(Bytes(64 << 20)),
        ..Limits::default()
    });
    let t = conformance::trial(
        &p,
        "page_fault",
        1,
        &[("size", "256MiB")],
        secs(2.0),
        secs(60.0),
    );
    let o = conformance::run(&s.backend, t, |_| false).await;
    assert_eq!(o.status.state, TrialState::Failed, "{}", o.status.message);
    assert!(
        o.status.message.contains("out of memory"),
        "message: {}",
        o.status.message
    );
    let stats = o.final_stats(0).expect("final stats");
    assert!(stats.oom_kills >= 1, "no OOM kill counted: {stats:?}");
    assert!(
        stats.memory_peak_bytes <= 64 << 20,
        "peak above the limit: {stats:?}"
    );
    assert_nothing_left(&s, &o);

    let t = conformance::trial(&p, "syscall", 1, &[], secs(0.2), secs(60.0));
    let o = conformance::run(&s.backend, t, |_| false).await;
    assert_eq!(o.status.state, TrialState::Ok, "{}", o.status.message);
    assert_nothing_left(&s, &o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pids_limit_refuses_threads_past_it() {
    let Some(s) = setup("pids", &["runc"]) else {
        return;
    };
    available(&s).await;
    let p = platform(Limits {
        pids: Some(4),
        ..Limits::default()
    });
    let t = conformance::trial(
        &p,
        "cpu_spin",
        1,
        &[("threads", "32")],
        secs(0.5),
        secs(60.0),
    );
    let o = conformance::run(&s.backend, t, |_| false).await;
    assert_eq!(
        o.status.state,
        TrialState::Failed,
        "32 threads under pids 4: {}",
        o.status.message
    );
    let stats = o.final_stats(0).expect("final stats");
    assert!(
        stats.pids_limit_hits >= 1,
        "no refused fork counted: {stats:?}"
    );
    assert_nothing_left(&s, &o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bomb_is_stopped_at_the_pids_limit() {
    let Some(s) = setup("forkbomb", &["runc"]) else {
        return;
    };
    if !knows("fork_bomb") {
        return;
    }
    available(&s).await;
    let o = conformance::check_fork_bomb(&s.backend, &platform(Limits::default()), 256).await;
    assert_nothing_left(&s, &o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_containers_all_produce_samples_and_leave_nothing() {
    let Some(s) = setup("many", &["runc"]) else {
        return;
    };
    available(&s).await;
    for (n, workload) in [(16, "syscall"), (64, "cpu_spin")] {
        let t = conformance::trial(
            &platform(Limits::default()),
            workload,
            n,
            &[],
            secs(1.0),
            secs(120.0),
        );
        let o = conformance::run(&s.backend, t, |_| false).await;
        assert_eq!(
            o.status.state,
            TrialState::Ok,
            "{n} × {workload}: {}",
            o.status.message
        );
        for i in 0..n {
            assert!(
                !o.samples(i).is_empty(),
                "{n} × {workload}: instance {i} printed no sample"
            );
            assert!(
                o.final_stats(i).is_some(),
                "{n} × {workload}: instance {i} has no final stats"
            );
        }
        assert_nothing_left(&s, &o);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_ro_rootfs_and_host_network_run() {
    let Some(s) = setup("hostro", &["runc"]) else {
        return;
    };
    available(&s).await;
    let mut p = platform(Limits::default());
    p.rootfs = Some(RootfsKind::HostRo);
    let o = conformance::check_one_syscall(&s.backend, &p).await;
    assert_nothing_left(&s, &o);
    p.rootfs = None;
    p.network = Some(NetworkMode::Host);
    let o = conformance::check_one_syscall(&s.backend, &p).await;
    assert_nothing_left(&s, &o);
}

/// Accepts one connection in network namespace `ns` and echoes what it reads, from a thread
/// that has joined that namespace (the agent's own test helper: traffic stays inside
/// namespaces the backend made).
fn in_netns<T: Send + 'static>(
    ns: PathBuf,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        let file = std::fs::File::open(&ns).expect("open netns");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_instances_reach_each_other_and_the_network_is_removed() {
    let Some(s) = setup("bridge", &["runc"]) else {
        return;
    };
    available(&s).await;
    let mut p = platform(Limits::default());
    p.network = Some(NetworkMode::Bridge);

    let t = conformance::trial(&p, "syscall", 2, &[], secs(0.2), secs(60.0));
    let ctx = TrialContext {
        run_id: "r".into(),
        trial: Arc::new(isolab_wire::TrialSpec::from(&t)),
        attempt: 0,
    };
    let prepared = Lifecycle(&s.backend).prepare(&ctx).await.expect("prepare");
    let net = prepared.backend.network().expect("bridge network").clone();
    assert_eq!(net.instances.len(), 2);
    let (a, b) = (net.instances[0].clone(), net.instances[1].clone());
    let addr = SocketAddr::new(a.addr.into(), 7001);
    let server = in_netns(a.path(), move || {
        let listener = TcpListener::bind(addr).expect("bind in instance 0's namespace");
        let (mut conn, peer) = listener.accept().expect("accept");
        let mut buf = [0u8; 5];
        std::io::Read::read_exact(&mut conn, &mut buf).expect("read");
        std::io::Write::write_all(&mut conn, &buf).expect("echo");
        peer.ip()
    });
    let client = in_netns(b.path(), move || {
        let mut conn = (0..100)
            .find_map(|_| {
                TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                    .inspect_err(|_| std::thread::sleep(Duration::from_millis(20)))
                    .ok()
            })
            .expect("connect across the bridge");
        std::io::Write::write_all(&mut conn, b"hello").expect("send");
        let mut buf = [0u8; 5];
        std::io::Read::read_exact(&mut conn, &mut buf).expect("read echo");
        buf
    });
    assert_eq!(&client.join().expect("client"), b"hello");
    assert_eq!(
        server.join().expect("server"),
        std::net::IpAddr::from(b.addr),
        "peer is instance 1"
    );
    // The address exists only inside the trial's namespaces, not in the host's own.
    let err = TcpListener::bind(addr).expect_err("instance address bindable in the host namespace");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrNotAvailable, "{err}");
    let report = Lifecycle(&s.backend).teardown(prepared).await;
    assert!(report.is_clean(), "{:?}", report.lines());
    assert!(
        isolab_host::netns::existing(&net.trial_ns).is_empty(),
        "namespaces left"
    );

    // And whole trials run on the bridge.
    let o = conformance::check_one_syscall(&s.backend, &p).await;
    assert_nothing_left(&s, &o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_of_running_containers_removes_everything_everywhere() {
    let Some(s) = setup("teardown", &["runc"]) else {
        return;
    };
    available(&s).await;
    let t = conformance::trial(
        &platform(Limits::default()),
        "cpu_spin",
        3,
        &[],
        secs(30.0),
        secs(60.0),
    );
    let ctx = TrialContext {
        run_id: "r".into(),
        trial: Arc::new(isolab_wire::TrialSpec::from(&t)),
        attempt: 0,
    };
    let mut prepared = Lifecycle(&s.backend).prepare(&ctx).await.expect("prepare");
    let bundles = prepared.backend.bundles();
    let launch = Lifecycle(&s.backend)
        .start(&mut prepared)
        .await
        .expect("start");
    // Wait until each container is up (it has printed a sample), then tear down without stop.
    let mut handles = launch.instances;
    for h in &mut handles {
        let first = futures::StreamExt::next(&mut h.stdout).await;
        assert!(
            first.is_some_and(|l| l.is_ok()),
            "instance {} printed nothing",
            h.index
        );
    }
    let hierarchies = Hierarchies::detect().expect("hierarchies");
    let rel = s.dir.rel(&ctx.slug());
    assert!(
        !hierarchies.existing(&rel).is_empty(),
        "the runtime made the cgroups"
    );
    let report = Lifecycle(&s.backend).teardown(prepared).await;
    assert!(report.is_clean(), "{:?}", report.lines());
    for h in handles {
        let exit = h.exit.await;
        assert!(
            !exit.success(),
            "killed instance {} ended with {exit}",
            h.index
        );
    }
    assert!(Lifecycle(&s.backend).leftovers(&ctx).is_clean());
    assert!(hierarchies.existing(&rel).is_empty());
    assert!(bundles.iter().all(|b| !b.exists()), "bundles left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_runtime_is_unavailable_not_a_failed_run() {
    let Some(s) = setup("missing", &["runc"]) else {
        return;
    };
    available(&s).await;
    let statuses = s.backend.runtime_statuses();
    // The usual runtimes not in the table are reported, unavailable, with the reason.
    for name in DEFAULT_RUNTIMES.iter().filter(|n| **n != "runc") {
        let st = statuses
            .iter()
            .find(|st| st.name == format!("container/{name}"))
            .unwrap_or_else(|| panic!("no status for {name}: {statuses:?}"));
        assert!(!st.available);
        assert!(
            st.reason.contains("not installed")
                || st
                    .reason
                    .contains("is not configured on this agent (known: runc)"),
            "reason: {}",
            st.reason
        );
    }
    assert!(
        statuses
            .iter()
            .any(|st| st.name == "container/runc" && st.available)
    );
    let mut p = platform(Limits::default());
    p.runtime = Some("isolab-no-such-runtime".into());
    let t = conformance::trial(&p, "syscall", 1, &[], secs(0.2), secs(60.0));
    let o = conformance::run(&s.backend, t, |_| false).await;
    assert_eq!(o.status.state, TrialState::Failed);
    assert!(
        o.status.message.contains("unavailable")
            && o.status.message.contains(
                "runtime `isolab-no-such-runtime` is not configured on this agent (known: runc)"
            ),
        "message: {}",
        o.status.message
    );
    assert!(!o.states().contains(&TrialState::Running));
    assert_nothing_left(&s, &o);
}

/// Whether the workload binary under test knows `workload` (newer workloads land separately).
fn knows(workload: &str) -> bool {
    let bin = isolab_host::workload_bin::locate().expect("workload");
    let list = std::process::Command::new(&bin)
        .arg("--list")
        .output()
        .expect("--list");
    let known = String::from_utf8_lossy(&list.stdout)
        .lines()
        .any(|l| l.starts_with(&format!("{workload} ")));
    if !known {
        eprintln!("skipping: {} has no {workload} yet", bin.display());
    }
    known
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_between_two_containers_on_the_bridge() {
    let Some(s) = setup("tcp", &["runc"]) else {
        return;
    };
    if !knows("tcp_rr") {
        return;
    }
    available(&s).await;
    let mut p = platform(Limits::default());
    p.network = Some(NetworkMode::Bridge);
    let mut t = conformance::trial(&p, "tcp_rr", 2, &[], secs(0.5), secs(60.0));
    let ctx = TrialContext {
        run_id: "r".into(),
        trial: Arc::new(isolab_wire::TrialSpec::from(&t)),
        attempt: 0,
    };
    let prefix = format!("{}-{}", s.dir.name(), ctx.slug());
    let server = isolab_host::netns::instance_addr(isolab_host::netns::subnet_octet(&prefix), 0)
        .expect("addr");
    let param = |k: &str, v: &str| {
        (
            k.to_owned(),
            isolab_model::pipeline::ParamValue::Str(v.to_owned()),
        )
    };
    t.instances[0].params = [param("role", "server"), param("host", "0.0.0.0")]
        .into_iter()
        .collect();
    t.instances[1].params = [param("role", "client"), param("host", &server.to_string())]
        .into_iter()
        .collect();
    let o = conformance::run(&s.backend, t, |_| false).await;
    assert_eq!(o.status.state, TrialState::Ok, "{}", o.status.message);
    for i in 0..2 {
        assert!(!o.samples(i).is_empty(), "instance {i} measured nothing");
    }
    assert_nothing_left(&s, &o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_is_oom_killed_at_128_mib() {
    let Some(s) = setup("membomb", &["runc"]) else {
        return;
    };
    if !knows("memory_bomb") {
        return;
    }
    available(&s).await;
    let o =
        conformance::check_memory_bomb(&s.backend, &platform(Limits::default()), 128 << 20).await;
    assert_nothing_left(&s, &o);
}

/// runc runs with the bundle's hardening: isolab's seccomp filter (`Seccomp: 2`) and no
/// capabilities at all (`runc spec`'s default keeps `audit_write`, `kill`, `net_bind_service`
/// and installs no filter; the bundle is stricter on both), read from the host in
/// `/proc/<pid>/status` of the running workload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runc_instances_run_with_the_bundles_filter_and_no_capabilities() {
    let Some(s) = setup("hardening", &["runc"]) else {
        return;
    };
    available(&s).await;
    let seen = isolab_agent::confinement::observe(&s.backend, &platform(Limits::default())).await;
    for c in seen {
        assert_eq!(c.seccomp, 2, "no seccomp filter on the workload: {c:?}");
        assert_eq!(c.cap_eff, 0, "capabilities left: {c:?}");
    }
}

/// gVisor runs with its defaults: the workload is not a host process; what runs on the host is
/// the sandbox, which confines itself with its own seccomp filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runsc_sandboxes_run_under_gvisors_own_filter() {
    let Some(s) = setup("hardening-runsc", &["runc", "runsc"]) else {
        return;
    };
    if isolab_host::which::find_binary("runsc").is_none() {
        assert!(std::env::var_os("CI").is_none(), "CI must have runsc");
        eprintln!("skipping: runsc is not installed");
        return;
    }
    let mut p = platform(Limits::default());
    p.runtime = Some("runsc".into());
    let seen = isolab_agent::confinement::observe_commands(&s.backend, &p, |argv0| {
        argv0.ends_with(b"runsc-sandbox")
    })
    .await;
    for c in seen {
        assert_eq!(c.seccomp, 2, "the sandbox runs without its filter: {c:?}");
    }
}
