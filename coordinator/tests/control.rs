//! The distributed control plane on one machine: a run over mutual TLS, and placement by rack
//! over three in-process agents of which one is lost mid-run (its trials retried elsewhere, every
//! trial exactly once in the Parquet).
//!
//! Runs need root (cgroups) and the `isolab-workload` binary (`ISOLAB_WORKLOAD_BIN` or beside the
//! build); off CI without them the tests are skipped with a printed reason.

mod common;

use common::{can_run, manifest, strings};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow_array::{Array, Int32Array};
use isolab_agent::config::AgentConfig;
use isolab_agent::serve::{LocalAgent, spawn_local, spawn_local_tls};
use isolab_coordinator::client::ClientTls;
use isolab_coordinator::run::{RunOptions, run};
use isolab_model::manifest::{Manifest, TrialState};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A state directory for this test binary's agents, not the production `/var/lib/isolab`.
fn test_state_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("state-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("state dir")
    })
    .path()
    .to_owned()
}

fn agent_config(name: &str, rack: &str) -> AgentConfig {
    AgentConfig {
        hostname: Some(name.to_owned()),
        labels: [("rack".to_owned(), rack.to_owned())].into(),
        cgroup_prefix: format!("isolab-test-control-{name}"),
        state_dir: test_state_dir(),
        ..AgentConfig::default()
    }
}

fn write_pipeline(dir: &Path, placement: &str) -> PathBuf {
    let text = format!(
        "apiVersion: isolab/v1\nkind: Pipeline\nname: control\n\
         defaults: {{ repetitions: 3, warmup: 0, duration: 300ms, retries: 2 }}\n\
         platforms:\n  native: {{ backend: native }}\n\
         experiments:\n  - name: micro\n    analysis: overhead\n    platforms: [native]\n\
         \x20   workloads: [syscall, cpu_spin, mmap]\n{placement}"
    );
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, text).expect("write pipeline");
    path
}

/// (trial id, attempt) of every Parquet row under `run_dir/samples`.
fn parquet_trials(run_dir: &Path) -> BTreeMap<String, BTreeSet<i32>> {
    let mut out: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    let mut stack = vec![run_dir.join("samples")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).expect("read samples") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let file = std::fs::File::open(&p).expect("open parquet");
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .expect("parquet")
                .build()
                .expect("reader");
            for batch in reader {
                let batch = batch.expect("batch");
                let ids = batch.column_by_name("trial_id").expect("trial_id");
                let ids = strings(ids.as_ref());
                let att = batch.column_by_name("attempt").expect("attempt");
                let att = att
                    .as_any()
                    .downcast_ref::<Int32Array>()
                    .expect("attempt is int32");
                for (i, id) in ids.iter().enumerate() {
                    out.entry(id.clone()).or_default().insert(att.value(i));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_over_mutual_tls() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = tmp.path().join("pki");
    isolab_tls::init_dev_pki(&pki, &["t1".to_owned()], &[]).expect("pki");
    let tls = isolab_tls::server_tls(&pki, "agent-t1").expect("server tls");
    let agent = spawn_local_tls(agent_config("tls-host", "r1"), Some(tls))
        .await
        .expect("agent");
    let opts = RunOptions {
        pipeline: write_pipeline(tmp.path(), ""),
        results: tmp.path().join("results"),
        agents: vec![agent.url()],
        overrides: vec!["defaults.repetitions=1".into()],
        tls: Some(ClientTls::coordinator(&pki).with_domain(Some("t1".into()))),
        ..RunOptions::default()
    };
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let outcome = run(&opts, rx).await.expect("run over mTLS");
    assert_eq!((outcome.failed, outcome.not_run), (0, 0), "{outcome:?}");
    assert_eq!(outcome.ok, 3);
    let m = manifest(&outcome.run_dir);
    assert!(
        m.trials
            .iter()
            .all(|t| t.host.as_deref() == Some("tls-host")),
        "{:?}",
        m.trials
    );
    agent.shutdown().await;
}

/// The coordinator checks the identity of the agent it dials: the name it expects (inventory
/// `tls_domain`, `--tls-domain`, or the name a discovered agent announced) must be in the agent's
/// own certificate, so an agent presenting another agent's certificate is refused, and a
/// certificate of the CA that is not the coordinator's cannot run trials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_refuses_an_agent_with_another_agents_certificate() {
    use isolab_coordinator::client::Agent;
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = tmp.path().join("pki");
    isolab_tls::init_dev_pki(&pki, &["t1".to_owned(), "t2".to_owned()], &[]).expect("pki");
    // The agent at this address holds t1's certificate.
    let tls = isolab_tls::server_tls(&pki, "agent-t1").expect("server tls");
    let agent = spawn_local_tls(
        AgentConfig {
            workload_bin: Some("/nonexistent/isolab-workload".into()),
            ..agent_config("ident", "r1")
        },
        Some(tls),
    )
    .await
    .expect("agent");
    let url = agent.url();
    let expecting = |name: &str| ClientTls::coordinator(&pki).or_domain(Some(name.to_owned()));
    // Refused in the handshake (at connect, or at the first call of a lazy channel).
    let refused = match Agent::connect_with(&url, Some(&expecting("t2"))).await {
        Err(e) => e.to_string(),
        Ok(a) => a
            .cancel("nope")
            .await
            .expect_err("an agent with t1's certificate was accepted as t2")
            .to_string(),
    };
    assert!(refused.contains(&url), "{refused}");
    // The inventory's (or --tls-domain's) name wins over an announced one.
    let inventory_first = ClientTls::coordinator(&pki)
        .with_domain(Some("t1".into()))
        .or_domain(Some("t2".into()));
    let ok = Agent::connect_with(&url, Some(&inventory_first))
        .await
        .expect("t1 as t1");
    ok.cancel("nope")
        .await
        .expect("the coordinator may call the agent");
    // The operator's client certificate is of the same CA but may not call the agent.
    let as_client = ClientTls {
        identity: isolab_tls::layout::CLIENT.to_owned(),
        ..expecting("t1")
    };
    let c = Agent::connect_with(&url, Some(&as_client))
        .await
        .expect("handshake");
    let e = c
        .cancel("nope")
        .await
        .expect_err("a client certificate cancelled");
    assert!(
        e.to_string()
            .contains("Cancel: identity `client` may not call this; allowed: coordinator"),
        "{e}"
    );
    agent.shutdown().await;
}

/// A TCP relay in front of an agent; aborting it drops every connection, like a dead host.
struct Relay {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

async fn relay(to: std::net::SocketAddr) -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            conns.spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Relay { addr, task }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spread_by_rack_survives_a_lost_agent() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let mut agents: Vec<LocalAgent> = Vec::new();
    let mut relays = Vec::new();
    let mut inventory = String::from("agents:\n");
    for rack in ["r1", "r2", "r3"] {
        let a = spawn_local(agent_config(&format!("host-{rack}"), rack))
            .await
            .expect("agent");
        let r = relay(a.addr).await;
        inventory.push_str(&format!(
            "  - address: http://{}\n    labels: {{ rack: {rack}, zone: z }}\n",
            r.addr
        ));
        agents.push(a);
        relays.push(r);
    }
    let inv = tmp.path().join("hosts.yaml");
    std::fs::write(&inv, inventory).expect("inventory");
    let results = tmp.path().join("results");
    let opts = RunOptions {
        pipeline: write_pipeline(tmp.path(), "    placement: { spread_by: rack }\n"),
        results: results.clone(),
        inventory: Some(inv),
        ..RunOptions::default()
    };
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(async move { run(&opts, rx).await });

    // Lose r2 once it finished one trial (so its rack is in the results and trials remain on it).
    let victim = relays.remove(1);
    let mut waited = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
        assert!(waited < 1200, "r2 never finished a trial");
        let Some(run_dir) = std::fs::read_dir(&results)
            .ok()
            .and_then(|mut d| d.next())
            .map(|e| e.expect("entry").path())
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(run_dir.join("manifest.json")) else {
            continue;
        };
        let Ok(m) = serde_json::from_str::<Manifest>(&text) else {
            continue;
        };
        if m.trials
            .iter()
            .any(|t| t.host.as_deref() == Some("host-r2") && t.status == TrialState::Ok)
        {
            break;
        }
    }
    victim.task.abort();

    let outcome = handle.await.expect("run task").expect("run");
    assert_eq!((outcome.failed, outcome.not_run), (0, 0), "{outcome:?}");
    let m = manifest(&outcome.run_dir);
    assert_eq!(m.trials.len(), 9);
    let hosts: BTreeSet<&str> = m.trials.iter().filter_map(|t| t.host.as_deref()).collect();
    assert_eq!(
        hosts,
        BTreeSet::from(["host-r1", "host-r2", "host-r3"]),
        "all three racks used"
    );
    let retried: Vec<_> = m.trials.iter().filter(|t| t.attempts > 1).collect();
    assert!(
        !retried.is_empty(),
        "a trial of the lost agent was retried: {:?}",
        m.trials
    );
    assert!(
        retried.iter().all(|t| t.host.as_deref() != Some("host-r2")),
        "{retried:?}"
    );

    let in_parquet = parquet_trials(&outcome.run_dir);
    let ids: BTreeSet<&str> = m.trials.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(
        in_parquet
            .keys()
            .map(String::as_str)
            .collect::<BTreeSet<_>>(),
        ids,
        "every trial in the Parquet"
    );
    for t in &m.trials {
        let attempts = &in_parquet[&t.id];
        assert_eq!(
            attempts.len(),
            1,
            "trial {} written once: {attempts:?}",
            t.id
        );
        assert_eq!(
            attempts.iter().next().copied(),
            i32::try_from(t.attempts).ok(),
            "attempt recorded for {}",
            t.id
        );
    }
    for r in relays {
        r.task.abort();
    }
    for a in agents {
        a.shutdown().await;
    }
}
