//! The coordinator service end to end over loopback: `isolab serve` runs a submitted pipeline
//! (Parquet in its results directory, listed by ListRuns, watched with history), CancelRun stops
//! a long run and a queued one, SIGTERM drains the running trial and records the rest as not run,
//! with `--tls-dir` only clients of the same CA get in, `submit --wait` outlasts a service still
//! starting, and the service answers the standard health check.
//!
//! Needs root (cgroups) and the `isolab-workload` binary; off CI, skipped with a printed reason.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use futures::StreamExt as _;
use isolab_coordinator::client::ClientTls;
use isolab_coordinator::events::{EventKind, TrialEventState};
use isolab_coordinator::service::client::ServiceClient;
use isolab_model::manifest::{RunStatus, TrialState};

const HANG_GUARD: Duration = Duration::from_secs(300);

/// `isolab serve` on a free loopback port (unless `extra` has a `--listen`); its address. Its
/// stderr goes to `dir/serve.log`.
/// 200000 repetitions × instances [64] (once 27 s and 10 GB to expand).
const OVERSIZED: &str = "apiVersion: isolab/v1\nkind: Pipeline\nname: big\nplatforms:\n  native: { backend: native }\nexperiments:\n  - name: scale\n    analysis: scaling\n    platforms: [native]\n    workload: cpu_spin\n    repetitions: 200000\n    matrix:\n      instances: [64]\n";

fn start_serve(dir: &Path, extra: &[&str]) -> (Proc, String) {
    let log = std::fs::File::create(dir.join("serve.log")).expect("log");
    let listen: &[&str] = if extra.contains(&"--listen") {
        &[]
    } else {
        &["--listen", "127.0.0.1:0"]
    };
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(listen)
        .arg("--results")
        .arg(dir.join("results"))
        .args(extra)
        .current_dir(dir)
        .env("ISOLAB_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the listening line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (Proc(child), addr)
}

fn serve_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
}

/// Reads `run_id`'s events until a trial is running.
async fn wait_running(client: &ServiceClient, run_id: &str) {
    let mut events = Box::pin(client.watch(Some(run_id), false).await.expect("watch"));
    while let Some(ev) = events.next().await {
        if let EventKind::TrialStatus(s) = ev.expect("event").kind
            && s.state == TrialEventState::Running
        {
            return;
        }
    }
    panic!("the run ended before a trial ran");
}

/// ListRuns once no run is `running`: the service records a run's outcome right after the
/// run's last event, so a watcher may see the event a moment before.
async fn settled_runs(client: &ServiceClient) -> Vec<isolab_proto::v1::RunSummary> {
    for _ in 0..600 {
        let runs = client.list().await.expect("list");
        if runs.iter().all(|r| r.state != "running") {
            return runs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("a run stayed `running` after its last event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_run_completes_with_parquet_in_the_results_dir_and_is_listed() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_serve, addr) = start_serve(tmp.path(), &["--allow-plaintext"]);
    let pipeline = write_pipeline(tmp.path(), "svc", "syscall, cpu_spin", 1, "300ms");

    // An invalid pipeline is refused with its diagnostic.
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: isolab/v1\nkind: Pipeline\nname: bad\nplatforms: {}\nexperimentz: []\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["submit", bad.to_str().unwrap(), "--server", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:") && err.contains("experimentz"),
        "{err}"
    );
    // So is a plan too large to expand (200000 repetitions × instances [64]), quickly.
    let big = tmp.path().join("big.yaml");
    std::fs::write(&big, OVERSIZED).unwrap();
    let out = Command::new(BIN)
        .args(["submit", big.to_str().unwrap(), "--server", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("experiments[0].repetitions: the plan would have 200000 trials"),
        "{err}"
    );

    let mut sub = spawn_isolab(
        &[
            "submit",
            pipeline.to_str().unwrap(),
            "--server",
            &addr,
            "--watch",
            "--json",
            "--samples",
        ],
        tmp.path(),
    );
    let lines = stdout_lines(&mut sub);
    let status = sub.wait_exit(HANG_GUARD).expect("submit --watch exits");
    assert!(
        status.success(),
        "{}\n{}",
        stderr_text(&mut sub),
        serve_log(tmp.path())
    );
    let run_id = lines[0].clone();
    let events = json_events(&lines[1..]);
    let run_dir = tmp.path().join("results").join(&run_id);
    let m = manifest(&run_dir);
    assert_eq!(m.status, RunStatus::Ok);
    assert_eq!(m.trials.len(), 2);
    for t in &m.trials {
        assert_eq!(t.status, TrialState::Ok, "{t:?}");
        let file = run_dir.join(t.file.as_deref().expect("file"));
        assert!(
            file.is_file() && file.starts_with(tmp.path().join("results")),
            "{}",
            file.display()
        );
        let samples = events
            .iter()
            .filter(|e| e["kind"] == "sample" && e["trial_id"] == t.id.as_str())
            .count();
        assert!(samples > 0, "no live samples of {}", t.id);
    }
    assert_eq!(events.last().unwrap()["kind"], "run_finished");

    let client = ServiceClient::connect(&addr, None).await.unwrap();
    let runs = settled_runs(&client).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        (runs[0].run_id.as_str(), runs[0].state.as_str(), runs[0].ok),
        (run_id.as_str(), "ok", 2)
    );
    assert_eq!(Path::new(&runs[0].run_dir), run_dir);

    // A late watcher through the service gets the history and ends with the run.
    let out = Command::new(BIN)
        .args(["watch", "--server", &addr, &run_id])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines()
            .filter(|l| l.contains(" trial ") && l.contains(": ok"))
            .count(),
        2,
        "{text}"
    );
    assert!(
        text.lines().last().unwrap().contains("finished: ok"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_run_stops_a_long_run_and_a_queued_one() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_serve, addr) = start_serve(tmp.path(), &["--allow-plaintext"]);
    let long = write_pipeline(tmp.path(), "long", "cpu_spin", 3, "60s");
    let submit = |file: &Path| {
        let out = Command::new(BIN)
            .args(["submit", file.to_str().unwrap(), "--server", &addr])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let first = submit(&long);
    let second = submit(&long);
    let client = ServiceClient::connect(&addr, None).await.unwrap();
    wait_running(&client, &first).await;

    assert_eq!(client.cancel(&second).await.unwrap(), "cancelled");
    let mut events = Box::pin(client.watch(Some(&first), false).await.unwrap());
    assert_eq!(client.cancel(&first).await.unwrap(), "running");
    let mut finished = None;
    while let Some(ev) = events.next().await {
        if let EventKind::RunFinished { status, ok, .. } = ev.unwrap().kind {
            finished = Some((status, ok));
        }
    }
    assert_eq!(finished, Some((RunStatus::Interrupted, 0)));

    let m = manifest(&tmp.path().join("results").join(&first));
    assert_eq!(m.status, RunStatus::Interrupted);
    let states: Vec<TrialState> = m.trials.iter().map(|t| t.status).collect();
    assert_eq!(
        states
            .iter()
            .filter(|s| **s == TrialState::Cancelled)
            .count(),
        1,
        "{states:?}"
    );
    assert_eq!(
        states.iter().filter(|s| **s == TrialState::NotRun).count(),
        2,
        "{states:?}"
    );
    let runs = settled_runs(&client).await;
    let state = |id: &str| {
        runs.iter()
            .find(|r| r.run_id == id)
            .map(|r| r.state.clone())
    };
    assert_eq!(state(&first).as_deref(), Some("interrupted"));
    assert_eq!(state(&second).as_deref(), Some("cancelled"));
    assert!(
        !tmp.path().join("results").join(&second).exists(),
        "a cancelled queued run never starts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_running_trial_and_records_the_rest_as_not_run() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (mut serve, addr) =
        start_serve(tmp.path(), &["--allow-plaintext", "--drain-timeout", "5m"]);
    let pipeline = write_pipeline(tmp.path(), "drain", "cpu_spin", 4, "2s");
    let out = Command::new(BIN)
        .args(["submit", pipeline.to_str().unwrap(), "--server", &addr])
        .output()
        .unwrap();
    assert!(out.status.success());
    let run_id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let client = ServiceClient::connect(&addr, None).await.unwrap();
    wait_running(&client, &run_id).await;

    // SAFETY: kill has no memory preconditions; the pid is our own child's.
    assert_eq!(unsafe { libc::kill(serve.pid(), libc::SIGTERM) }, 0);
    let status = serve
        .wait_exit(HANG_GUARD)
        .expect("serve exits after the drain");
    assert!(status.success(), "{}", serve_log(tmp.path()));
    let m = manifest(&tmp.path().join("results").join(&run_id));
    assert_eq!(m.status, RunStatus::Interrupted, "{:?}", m.trials);
    let ok: Vec<_> = m
        .trials
        .iter()
        .filter(|t| t.status == TrialState::Ok)
        .collect();
    let not_run: Vec<_> = m
        .trials
        .iter()
        .filter(|t| t.status == TrialState::NotRun)
        .collect();
    // The trial running at SIGTERM finished (drained); the ones never dispatched did not run.
    assert!(!ok.is_empty() && !not_run.is_empty(), "{:?}", m.trials);
    assert_eq!(ok.len() + not_run.len(), m.trials.len(), "{:?}", m.trials);
    assert!(
        ok.iter().all(|t| t.file.is_some()),
        "drained trials wrote their Parquet"
    );
    for t in not_run {
        assert!(
            t.reason.as_deref().is_some_and(|r| r.contains("drained")),
            "{t:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_tls_admits_only_clients_of_its_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    let foreign = tmp.path().join("foreign");
    isolab_tls::init_dev_pki(&pki, &[], &[]).unwrap();
    isolab_tls::init_dev_pki(&foreign, &[], &[]).unwrap();
    let (_serve, addr) = start_serve(tmp.path(), &["--tls-dir", pki.to_str().unwrap()]);
    let client_of = |dir: &Path| ClientTls {
        dir: dir.to_path_buf(),
        identity: isolab_tls::layout::CLIENT.to_owned(),
        domain: None,
    };
    let ok = ServiceClient::connect(&addr, Some(&client_of(&pki)))
        .await
        .unwrap();
    assert!(ok.list().await.unwrap().is_empty());
    let refused = async |c: Result<ServiceClient, _>| match c {
        Err(_) => true,
        Ok(c) => c.list().await.is_err(),
    };
    assert!(
        refused(ServiceClient::connect(&addr, None).await).await,
        "plaintext client admitted"
    );
    assert!(
        refused(ServiceClient::connect(&addr, Some(&client_of(&foreign))).await).await,
        "client of a foreign CA admitted"
    );
    // Identities of the CA beyond `client`: the coordinator's may watch and list but not submit
    // or cancel; the probes' `health` may call nothing but the health service.
    let as_identity = |identity: &str| ClientTls {
        identity: identity.to_owned(),
        ..client_of(&pki)
    };
    let coordinator = ServiceClient::connect(&addr, Some(&as_identity("coordinator")))
        .await
        .unwrap();
    assert!(coordinator.list().await.is_ok());
    let e = coordinator.cancel("nope").await.unwrap_err().to_string();
    assert!(
        e.contains("CancelRun: identity `coordinator` may not call this; allowed: client"),
        "{e}"
    );
    let health = ServiceClient::connect(&addr, Some(&as_identity("health")))
        .await
        .unwrap();
    let e = health.list().await.unwrap_err().to_string();
    assert!(e.contains("identity `health` may not call this"), "{e}");
}

/// `isolab submit --wait` keeps trying while the service starts (the Kubernetes Job starts beside
/// a coordinator that is not up yet); without it, an unreachable service is an error at once. The
/// service answers the standard health check (the manifests' probes call it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_waits_for_a_starting_service_which_answers_health_checks() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(tmp.path(), "late", "syscall", 1, "200ms");
    let addr = format!("127.0.0.1:{}", free_port());

    let out = Command::new(BIN)
        .args(["submit", pipeline.to_str().unwrap(), "--server", &addr])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "no service, no --wait: an error"
    );

    let mut sub = spawn_isolab(
        &[
            "submit",
            pipeline.to_str().unwrap(),
            "--server",
            &addr,
            "--wait",
            "2m",
            "--watch",
        ],
        tmp.path(),
    );
    // Still trying after two refused connections.
    assert!(
        sub.wait_exit(Duration::from_millis(2500)).is_none(),
        "{}",
        stderr_text(&mut sub)
    );
    let (_serve, served) = start_serve(tmp.path(), &["--listen", &addr, "--allow-plaintext"]);
    assert_eq!(served, addr);
    let status = sub.wait_exit(HANG_GUARD).expect("submit --watch exits");
    let err = stderr_text(&mut sub);
    assert!(status.success(), "{err}\n{}", serve_log(tmp.path()));
    assert!(err.contains("retrying"), "{err}");

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect");
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}
