//! Agents announcing themselves on NATS and a coordinator discovering them: a real `nats-server`
//! started by the test on a free loopback port (killed by pid when the test ends). Two agents
//! announce, one stops and drops out of the live set after missed heartbeats; a run with
//! `--discover` places its trials on the announced agents.
//!
//! Off CI, a missing `nats-server` (or, for the run, root and the workload binary) skips the test
//! with a printed reason.

mod common;

use common::can_run;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use isolab_agent::announce::{self, Heartbeat};
use isolab_agent::config::AgentConfig;
use isolab_agent::serve::spawn_local;
use isolab_coordinator::discover::Discovery;
use isolab_coordinator::run::{RunOptions, run};
use isolab_model::manifest::{Manifest, TrialState};
use stop_guard::CancelOnDrop;

/// A `nats-server` child on a loopback port, killed (by pid) and reaped on drop.
struct NatsServer {
    child: Child,
    url: String,
    _store: tempfile::TempDir,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nats_server_bin() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("nats-server"))
            .find(|p| p.is_file())
    })
}

/// Starts `nats-server -js` on a free loopback port; `None` (skip) off CI when it is missing.
fn start_nats() -> Option<NatsServer> {
    let Some(bin) = nats_server_bin() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "nats-server is missing (./bootstrap installs it)"
        );
        eprintln!("skipping: no nats-server in PATH (./bootstrap installs it)");
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let store = tempfile::tempdir().expect("store dir");
    let child = Command::new(bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server");
    let server = NatsServer {
        child,
        url: format!("nats://127.0.0.1:{port}"),
        _store: store,
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "nats-server did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(server)
}

/// A stop signal for announcers that fires when dropped.
mod stop_guard {
    use tokio::sync::watch;

    /// Resolves its futures once cancelled or dropped.
    pub(crate) struct CancelOnDrop(pub(crate) watch::Sender<bool>);

    impl CancelOnDrop {
        pub(crate) fn new() -> Self {
            Self(watch::channel(false).0)
        }

        pub(crate) fn stopped(&self) -> impl std::future::Future<Output = ()> + use<> {
            let mut rx = self.0.subscribe();
            async move {
                let _ = rx.wait_for(|v| *v).await;
            }
        }
    }

    impl Drop for CancelOnDrop {
        fn drop(&mut self) {
            let _ = self.0.send(true);
        }
    }
}

fn heartbeat(name: &str, address: &str, rack: &str, interval: Duration) -> Heartbeat {
    Heartbeat {
        name: name.to_owned(),
        address: address.to_owned(),
        labels: [("rack".to_owned(), rack.to_owned())].into(),
        platforms: vec!["native".to_owned()],
        version: env!("CARGO_PKG_VERSION").to_owned(),
        interval_ms: u64::try_from(interval.as_millis()).unwrap(),
    }
}

/// Starts announcing `hb` on `url`; the announcer stops when the returned guard is dropped.
async fn announce(url: &str, hb: Heartbeat) -> (CancelOnDrop, tokio::task::JoinHandle<()>) {
    let client = announce::connect(url, &hb.name).await.expect("connect");
    let stop = CancelOnDrop::new();
    let interval = Duration::from_millis(hb.interval_ms);
    let task = tokio::spawn({
        let stopped = stop.stopped();
        async move {
            announce::announce(client, hb, interval, stopped)
                .await
                .expect("announce");
        }
    });
    (stop, task)
}

fn names(live: &[Heartbeat]) -> BTreeSet<String> {
    live.iter().map(|h| h.name.clone()).collect()
}

/// Polls `discovery` until `want` holds (a liveness bound, not a timing assertion).
async fn wait_for(discovery: &Discovery, what: &str, want: impl Fn(&BTreeSet<String>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let live = names(&discovery.live());
        if want(&live) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: live set stayed {live:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_set_drops_an_agent_after_missed_heartbeats() {
    let Some(nats) = start_nats() else { return };
    let interval = Duration::from_millis(200);
    let discovery = Discovery::start(&nats.url, 3).await.expect("discovery");
    let (stop_a, task_a) = announce(
        &nats.url,
        heartbeat("agent-a", "http://127.0.0.1:1", "r1", interval),
    )
    .await;
    let (stop_b, task_b) = announce(
        &nats.url,
        heartbeat("agent-b", "http://127.0.0.1:2", "r2", interval),
    )
    .await;
    wait_for(&discovery, "both announce", |l| {
        l.contains("agent-a") && l.contains("agent-b")
    })
    .await;
    let b = discovery
        .live()
        .into_iter()
        .find(|h| h.name == "agent-b")
        .expect("agent-b live");
    assert_eq!(b.labels["rack"], "r2");
    assert_eq!(b.address, "http://127.0.0.1:2");

    // agent-b stops announcing: it leaves the live set, agent-a stays.
    drop(stop_b);
    task_b.await.expect("announcer b ended");
    wait_for(&discovery, "agent-b dropped", |l| !l.contains("agent-b")).await;
    assert_eq!(
        names(&discovery.live()),
        BTreeSet::from(["agent-a".to_owned()])
    );
    drop(stop_a);
    task_a.await.expect("announcer a ended");
}

fn write_pipeline(dir: &Path) -> PathBuf {
    let path = dir.join("pipeline.yaml");
    std::fs::write(
        &path,
        "apiVersion: isolab/v1\nkind: Pipeline\nname: discover\n\
         defaults: { repetitions: 2, warmup: 0, duration: 200ms }\n\
         platforms:\n  native: { backend: native }\n\
         experiments:\n  - name: micro\n    analysis: overhead\n    platforms: [native]\n\
         \x20   workloads: [syscall, cpu_spin]\n    placement: { spread_by: rack }\n",
    )
    .expect("write pipeline");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_discover_uses_the_announced_agents() {
    if !can_run() {
        return;
    }
    let Some(nats) = start_nats() else { return };
    let interval = Duration::from_millis(300);
    let mut agents = Vec::new();
    let mut announcers = Vec::new();
    // The agents' state directory (not the production /var/lib/isolab); dropped after them.
    let state = tempfile::tempdir().expect("state dir");
    for (name, rack) in [("disc-a", "r1"), ("disc-b", "r2")] {
        let agent = spawn_local(AgentConfig {
            hostname: Some(name.to_owned()),
            labels: [("rack".to_owned(), rack.to_owned())].into(),
            cgroup_prefix: format!("isolab-test-discover-{name}"),
            state_dir: state.path().to_owned(),
            ..AgentConfig::default()
        })
        .await
        .expect("agent");
        announcers.push(announce(&nats.url, heartbeat(name, &agent.url(), rack, interval)).await);
        agents.push(agent);
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let opts = RunOptions {
        pipeline: write_pipeline(tmp.path()),
        results: tmp.path().join("results"),
        discover: Some(nats.url.clone()),
        ..RunOptions::default()
    };
    let outcome = run(&opts, rx).await.expect("run");
    assert_eq!((outcome.ok, outcome.failed, outcome.not_run), (4, 0, 0));
    let manifest: Manifest = serde_json::from_str(
        &std::fs::read_to_string(outcome.run_dir.join("manifest.json")).expect("manifest"),
    )
    .expect("manifest json");
    let hosts: BTreeSet<String> = manifest
        .trials
        .iter()
        .inspect(|t| assert_eq!(t.status, TrialState::Ok, "{}", t.id))
        .filter_map(|t| t.host.clone())
        .collect();
    assert_eq!(
        hosts,
        BTreeSet::from(["disc-a".to_owned(), "disc-b".to_owned()]),
        "spread by rack over both announced agents"
    );
    drop(announcers);
    for a in agents {
        a.shutdown().await;
    }
}
