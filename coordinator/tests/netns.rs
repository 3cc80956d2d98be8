//! The distributed control plane over a real (virtual) network: three `isolab-agent` processes,
//! each in its own network namespace, and the `isolab` coordinator in a fourth, all joined by
//! veth pairs to a Linux bridge in a hub namespace (10.231.0.1-4/24). The coordinator spreads a
//! pipeline over the agents by rack over mutual TLS; agent `a2` is killed with SIGKILL once it has
//! finished a trial; the run still completes with every planned trial exactly once in the Parquet,
//! the lost agent's trial retried (and recorded as such) on another rack. A plaintext client is
//! refused by the TLS agents.
//!
//! Processes join a namespace with `setns(2)` between fork and exec rather than through
//! `ip netns exec`, which remounts `/sys` for the namespace and so hides `/sys/fs/cgroup` from
//! the agents (they need it); the effect on networking is the same. Everything made here
//! (namespaces, hence their veths and the bridge; processes, by pid; the cgroups of the killed
//! agent) is removed on drop. The host's own network namespace is never touched.
//!
//! Needs root (namespaces, cgroups), `ip` (iproute2), the `isolab-agent` binary beside `isolab`
//! (built by `cargo nextest run --workspace` or `cargo build -p isolab-agent`) and the
//! `isolab-workload` binary (`ISOLAB_WORKLOAD_BIN`). Off CI (`CI` unset) it is skipped with a
//! printed reason when not root, without network namespaces or without the workload binary; on
//! CI it never skips.

mod common;

use common::netlab::{Network, connect_from, in_netns, remove_agent_cgroups, skip_reason};
use common::{BIN, processes_in_agent_cgroups, strings};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use arrow_array::Int32Array;
use isolab_model::manifest::{Manifest, TrialState};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// The /24 the test network uses: agents .1-.3, coordinator .4.
const SUBNET: &str = "10.231.0";
const PORT: u16 = 7411;
const AGENTS: [&str; 3] = ["a1", "a2", "a3"];

/// The `isolab-agent` binary of the same build.
fn agent_bin() -> PathBuf {
    Path::new(BIN).with_file_name("isolab-agent")
}

fn on_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// The network and processes of one test run; all removed (processes by pid) on drop.
struct Lab {
    /// Agent processes by name (taken out when killed on purpose).
    agents: BTreeMap<String, Child>,
    /// Pids of every agent started (for their cgroups).
    agent_pids: Vec<u32>,
    /// Other processes (the coordinator).
    others: Vec<Child>,
    /// Dropped after the processes (fields drop after `Drop::drop`).
    _network: Network,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.others {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Agents get SIGTERM so they remove their cgroups, SIGKILL if they linger.
        for c in self.agents.values() {
            if let Ok(pid) = i32::try_from(c.id()) {
                // SAFETY: kill has no memory preconditions; the pid is our unreaped child.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
        let end = Instant::now() + Duration::from_secs(20);
        for c in self.agents.values_mut() {
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for pid in &self.agent_pids {
            remove_agent_cgroups(*pid);
        }
    }
}

fn write_pipeline(dir: &Path) -> PathBuf {
    let text = "apiVersion: isolab/v1\nkind: Pipeline\nname: netns\n\
         defaults: { repetitions: 4, warmup: 0, duration: 1s, retries: 2 }\n\
         platforms:\n  native: { backend: native }\n\
         experiments:\n  - name: micro\n    analysis: overhead\n    platforms: [native]\n\
         \x20   workloads: [syscall, cpu_spin, mmap]\n\
         \x20   placement: { spread_by: rack }\n";
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, text).expect("write pipeline");
    path
}

/// Trial ids of `isolab plan --json`.
fn planned_trials(pipeline: &Path) -> BTreeSet<String> {
    let out = Command::new(BIN)
        .arg("plan")
        .arg("--json")
        .arg(pipeline)
        .output()
        .expect("isolab plan");
    assert!(
        out.status.success(),
        "plan: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("plan json");
    plan["trials"]
        .as_array()
        .expect("trials array")
        .iter()
        .map(|t| t["id"].as_str().expect("trial id").to_owned())
        .collect()
}

fn read_manifest(run_dir: &Path) -> Option<Manifest> {
    let text = std::fs::read_to_string(run_dir.join("manifest.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// The one run directory under `results`, once there is one.
fn run_dir(results: &Path) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(results)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    (dirs.len() == 1).then(|| dirs.remove(0))
}

/// Trial id → the attempts its Parquet rows carry, and how many files hold it.
fn parquet_trials(run_dir: &Path) -> BTreeMap<String, (BTreeSet<i32>, usize)> {
    let mut out: BTreeMap<String, (BTreeSet<i32>, usize)> = BTreeMap::new();
    let mut stack = vec![run_dir.join("samples")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).expect("read samples") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            assert!(
                p.extension().is_some_and(|x| x == "parquet"),
                "stray file {}",
                p.display()
            );
            let file = File::open(&p).expect("open parquet");
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .expect("parquet")
                .build()
                .expect("reader");
            let mut in_file = BTreeSet::new();
            for batch in reader {
                let batch = batch.expect("batch");
                let ids = strings(batch.column_by_name("trial_id").expect("trial_id").as_ref());
                let att = batch.column_by_name("attempt").expect("attempt");
                let att = att
                    .as_any()
                    .downcast_ref::<Int32Array>()
                    .expect("attempt is int32");
                for (i, id) in ids.into_iter().enumerate() {
                    out.entry(id.clone()).or_default().0.insert(att.value(i));
                    in_file.insert(id);
                }
            }
            for id in in_file {
                out.entry(id).or_default().1 += 1;
            }
        }
    }
    out
}

/// Waits for `child` to exit, at most `limit` (a guard against hangs, not a timing assertion).
fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return Some(s);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn agents_in_network_namespaces_spread_by_rack_survive_a_killed_agent() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    let agent_bin = agent_bin();
    assert!(
        agent_bin.is_file(),
        "no agent binary at {} (build the workspace: `cargo nextest run --workspace` or \
         `cargo build -p isolab-agent`)",
        agent_bin.display()
    );
    let tmp = tempfile::tempdir().expect("tmp");
    let mut members: Vec<&str> = AGENTS.to_vec();
    members.push("co");
    let addrs: Vec<String> = (1..=members.len())
        .map(|i| format!("{SUBNET}.{i}/24"))
        .collect();
    let plan: Vec<(&str, &str)> = members
        .iter()
        .copied()
        .zip(addrs.iter().map(String::as_str))
        .collect();
    let network = match Network::build(&plan) {
        Ok(n) => n,
        Err(e) if !on_ci() => {
            eprintln!("skipping: cannot build the test network: {e}");
            return;
        }
        Err(e) => panic!("cannot build the test network: {e}"),
    };
    let nses: Vec<String> = members.iter().map(|m| network.ns(m)).collect();
    let mut lab = Lab {
        agents: BTreeMap::new(),
        agent_pids: Vec::new(),
        others: Vec::new(),
        _network: network,
    };
    let coord_ns = nses[3].clone();
    let agent_addr =
        |i: usize| -> SocketAddr { format!("{SUBNET}.{}:{PORT}", i + 1).parse().expect("addr") };

    // PKI: the coordinator uses the whole directory; each agent gets one with only its identity.
    let pki = tmp.path().join("pki");
    let mut certs = Command::new(BIN);
    certs.args(["certs", "init", "--dir"]).arg(&pki);
    for a in AGENTS {
        certs.args(["--agent", a]);
    }
    let out = certs.output().expect("isolab certs init");
    assert!(
        out.status.success(),
        "certs init: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Agents, one per namespace, labelled by rack.
    let mut inventory = String::from("agents:\n");
    for (i, a) in AGENTS.iter().enumerate() {
        let dir = tmp.path().join(format!("tls-{a}"));
        std::fs::create_dir(&dir).expect("agent tls dir");
        for f in [
            "ca.pem".to_owned(),
            format!("agent-{a}.pem"),
            format!("agent-{a}-key.pem"),
        ] {
            std::fs::copy(pki.join(&f), dir.join(&f)).expect("copy certificate");
        }
        let rack = format!("r{}", i + 1);
        let log = File::create(tmp.path().join(format!("agent-{a}.log"))).expect("log");
        let child = in_netns(&nses[i], &agent_bin)
            .arg("--listen")
            .arg(agent_addr(i).to_string())
            .arg("--tls-dir")
            .arg(&dir)
            .args(["--labels", &format!("rack={rack}"), "--hostname", a])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn isolab-agent");
        lab.agent_pids.push(child.id());
        lab.agents.insert((*a).to_owned(), child);
        inventory.push_str(&format!(
            "  - address: https://{}\n    labels: {{ rack: {rack} }}\n    tls_domain: {a}\n",
            agent_addr(i)
        ));
    }

    // Each agent listens, reached from the coordinator's namespace across the bridge.
    for (i, a) in AGENTS.iter().enumerate() {
        let end = Instant::now() + Duration::from_secs(120);
        loop {
            if connect_from(&coord_ns, agent_addr(i)).is_ok() {
                break;
            }
            let child = lab.agents.get_mut(*a).expect("agent");
            if let Some(s) = child.try_wait().expect("try_wait") {
                panic!(
                    "agent {a} exited ({s}): {}",
                    log_of(&tmp.path().join(format!("agent-{a}.log")))
                );
            }
            assert!(Instant::now() < end, "agent {a} never listened");
            std::thread::sleep(Duration::from_millis(100));
        }
        // The child is the agent itself (no wrapper process between): its pid is what we kill.
        let pid = lab.agents[*a].id();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).expect("comm");
        assert_eq!(comm.trim(), "isolab-agent", "pid {pid} is the agent itself");
    }

    let inv = tmp.path().join("hosts.yaml");
    std::fs::write(&inv, &inventory).expect("inventory");
    let pipeline = write_pipeline(tmp.path());
    let planned = planned_trials(&pipeline);
    assert_eq!(planned.len(), 12);

    // A plaintext coordinator is refused by a TLS agent.
    let plain_results = tmp.path().join("plain");
    let mut plain = in_netns(&coord_ns, BIN)
        .arg("run")
        .arg(&pipeline)
        .arg("--agent")
        .arg(format!("http://{}", agent_addr(0)))
        .args([
            "--set",
            "defaults.retries=0",
            "--set",
            "defaults.repetitions=1",
        ])
        .args(["--only", "workload=syscall"])
        .arg("--results")
        .arg(&plain_results)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(tmp.path().join("plain.log")).expect("log"))
        .spawn()
        .expect("spawn plaintext isolab run");
    let status = wait_exit(&mut plain, Duration::from_secs(120));
    if status.is_none() {
        let _ = plain.kill();
        let _ = plain.wait();
    }
    let plain_log = log_of(&tmp.path().join("plain.log"));
    assert!(
        status.is_some_and(|s| !s.success()),
        "a plaintext run against a TLS agent must fail ({status:?}): {plain_log}"
    );

    eprintln!(
        "plaintext run refused: {}",
        plain_log.lines().last().unwrap_or_default()
    );

    // The run over mutual TLS, spread by rack.
    let results = tmp.path().join("results");
    let coord_log = tmp.path().join("coordinator.log");
    let coordinator = in_netns(&coord_ns, BIN)
        .arg("run")
        .arg(&pipeline)
        .arg("--inventory")
        .arg(&inv)
        .arg("--tls-dir")
        .arg(&pki)
        .arg("--results")
        .arg(&results)
        .stdin(Stdio::null())
        .stdout(File::create(tmp.path().join("coordinator.out")).expect("out"))
        .stderr(File::create(&coord_log).expect("log"))
        .spawn()
        .expect("spawn isolab run");
    lab.others.push(coordinator);

    // Kill a2 (SIGKILL, by pid) once it finished a trial, so its rack is in the results and
    // trials of it remain.
    let end = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(m) = run_dir(&results).and_then(|d| read_manifest(&d))
            && m.trials
                .iter()
                .any(|t| t.host.as_deref() == Some("a2") && t.status == TrialState::Ok)
        {
            break;
        }
        if let Some(s) = lab.others[0].try_wait().expect("try_wait") {
            panic!(
                "the coordinator ended ({s}) before a2 finished a trial: {}",
                log_of(&coord_log)
            );
        }
        assert!(
            Instant::now() < end,
            "a2 never finished a trial: {}",
            log_of(&coord_log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut victim = lab.agents.remove("a2").expect("a2");
    victim.kill().expect("SIGKILL a2");
    victim.wait().expect("reap a2");
    let a2_pid = victim.id();

    let status = wait_exit(&mut lab.others[0], Duration::from_secs(600));
    let log = log_of(&coord_log);
    assert!(
        status.is_some_and(|s| s.success()),
        "coordinator: {status:?}: {log}"
    );

    // Nothing the killed agent started outlives it (the workloads die with their agent).
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let orphans = processes_in_agent_cgroups(a2_pid);
        if orphans.is_empty() {
            break;
        }
        assert!(
            Instant::now() < end,
            "workloads of the killed agent still running: {orphans:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let run = run_dir(&results).expect("run directory");
    let m = read_manifest(&run).expect("manifest");
    let ids: BTreeSet<String> = m.trials.iter().map(|t| t.id.clone()).collect();
    assert_eq!(ids, planned, "the manifest holds the planned trials");
    assert_eq!(
        m.trials.len(),
        planned.len(),
        "no trial twice in the manifest"
    );
    for t in &m.trials {
        assert_eq!(t.status, TrialState::Ok, "{}: {:?}", t.id, t.reason);
    }
    let hosts: BTreeSet<&str> = m.trials.iter().filter_map(|t| t.host.as_deref()).collect();
    assert_eq!(
        hosts,
        BTreeSet::from(["a1", "a2", "a3"]),
        "trials spread over the three racks: {:?}",
        m.trials
    );
    let retried: Vec<_> = m.trials.iter().filter(|t| t.attempts >= 2).collect();
    assert!(
        !retried.is_empty(),
        "a trial of the killed agent was retried: {:?}\n{log}",
        m.trials
    );
    assert!(
        retried.iter().all(|t| t.host.as_deref() != Some("a2")),
        "retries ran elsewhere: {retried:?}"
    );

    for t in &retried {
        eprintln!(
            "retried: trial {} ({} attempts), last on {:?}",
            t.id, t.attempts, t.host
        );
    }

    // Every planned trial exactly once in the Parquet, with the attempt that produced it.
    let in_parquet = parquet_trials(&run);
    assert_eq!(
        in_parquet.keys().cloned().collect::<BTreeSet<_>>(),
        planned,
        "every planned trial in the Parquet, nothing else"
    );
    for t in &m.trials {
        let (attempts, files) = &in_parquet[&t.id];
        assert_eq!(*files, 1, "trial {} in one file", t.id);
        assert_eq!(
            attempts.iter().copied().collect::<Vec<_>>(),
            vec![i32::try_from(t.attempts).expect("attempts")],
            "trial {} written once, by its last attempt",
            t.id
        );
    }
}
