//! The network workloads as two processes: `role=server` and `role=client` over loopback (the
//! client may start first: it retries), and between two network namespaces this test creates
//! (a veth pair with 10.x/24 addresses, made inside the namespaces and never in the host's own),
//! deleted afterwards. The namespace test needs root and `ip`; without them it prints why and
//! skips, except under `CI=true`, where it fails.

mod support;

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use support::{Run, finish, is_root, skip, spawn};

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs server and client (the server first, or the client half a second before the server
/// when `client_first`), each through its wrapper command (e.g. `ip netns exec NS`, or none).
fn run_pair(
    workload: &str,
    server_params: &[String],
    client_params: &[String],
    wrap: (&[&str], &[&str]),
    client_first: bool,
) -> (Run, Run) {
    let args = |wrapper: &[&str], role: &str, params: &[String]| -> Vec<String> {
        let mut v: Vec<String> = wrapper.iter().map(|s| (*s).to_owned()).collect();
        if !wrapper.is_empty() {
            v.push(support::BIN.to_owned());
        }
        v.extend([
            workload.to_owned(),
            "--param".into(),
            format!("role={role}"),
        ]);
        for p in params {
            v.extend(["--param".into(), p.clone()]);
        }
        v
    };
    let server_args = args(wrap.0, "server", server_params);
    let client_args = args(wrap.1, "client", client_params);
    let start = |a: &[String]| {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        if wrap.0.is_empty() {
            spawn(&refs, |_| {})
        } else {
            let mut cmd = Command::new(refs[0]);
            cmd.args(&refs[1..])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd.spawn()
                .unwrap_or_else(|e| panic!("cannot start {refs:?}: {e}"))
        }
    };
    let (server, client) = if client_first {
        let client = start(&client_args);
        std::thread::sleep(Duration::from_millis(500));
        (start(&server_args), client)
    } else {
        let server = start(&server_args);
        (server, start(&client_args))
    };
    let client = finish(&["client"], client);
    let server = finish(&["server"], server);
    assert_eq!(client.code, Some(0), "client: {}", client.stderr);
    assert_eq!(server.code, Some(0), "server: {}", server.stderr);
    (server, client)
}

fn loopback_params(port: u16, extra: &[&str]) -> (Vec<String>, Vec<String>) {
    let mut common: Vec<String> = vec![format!("port={port}"), "duration=300ms".into()];
    common.extend(extra.iter().map(|s| (*s).to_owned()));
    let mut server = common.clone();
    server.push("host=127.0.0.1".into());
    (server, common)
}

/// Both sides agree on what crossed the wire.
fn check_stream(server: &Run, client: &Run) {
    let received = server.summary("bytes");
    assert!(received > 0.0, "nothing received");
    assert_eq!(received, client.summary("bytes"), "bytes sent vs received");
    assert!(server.summary("gbit_s") > 0.0 && client.summary("gbit_s") > 0.0);
    assert!(server.summary("receiver_cpu_pct") >= 0.0);
    assert!(server.samples.iter().all(|s| s.metric != "p50_us"));
    // The client is not the receiver: it does not report the receiver's CPU.
    assert!(
        client
            .samples
            .iter()
            .all(|s| s.metric != "receiver_cpu_pct")
    );
}

fn check_rr(server: &Run, client: &Run) {
    let done = client.summary("ops");
    assert!(done >= 1.0);
    assert_eq!(
        server.summary("ops"),
        done,
        "transactions served vs completed"
    );
    assert!(client.summary("p99_us") >= client.summary("p50_us"));
    assert!(client.summary("p50_us") > 0.0);
}

#[test]
fn tcp_stream_between_two_processes() {
    let port = free_port();
    let (s, c) = loopback_params(port, &["connections=2"]);
    let (server, client) = run_pair("tcp_stream", &s, &c, (&[], &[]), false);
    check_stream(&server, &client);
}

#[test]
fn tcp_stream_client_waits_for_a_late_server() {
    let port = free_port();
    let (s, c) = loopback_params(port, &[]);
    let (server, client) = run_pair("tcp_stream", &s, &c, (&[], &[]), true);
    check_stream(&server, &client);
}

#[test]
fn tcp_rr_between_two_processes() {
    let port = free_port();
    let (s, c) = loopback_params(port, &["size=100", "connections=2"]);
    let (server, client) = run_pair("tcp_rr", &s, &c, (&[], &[]), false);
    check_rr(&server, &client);
}

#[test]
fn server_without_a_client_gives_up() {
    let port = free_port();
    let r = support::run(&[
        "tcp_rr",
        "--param",
        "role=server",
        "--param",
        "host=127.0.0.1",
        "--param",
        &format!("port={port}"),
        "--param",
        "duration=100ms",
    ]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("0 of 1 clients"), "{}", r.stderr);
    assert!(r.samples.is_empty());
}

/// Two network namespaces joined by a veth pair; deleted on drop.
struct NetnsPair {
    names: [String; 2],
}

impl NetnsPair {
    const SERVER_IP: &'static str = "10.231.7.1";
    const CLIENT_IP: &'static str = "10.231.7.2";

    fn ip(args: &[&str]) -> Result<(), String> {
        let out = Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| format!("cannot run ip: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn create() -> Result<Self, String> {
        let id = std::process::id();
        let pair = Self {
            names: [format!("iwl-{id}-srv"), format!("iwl-{id}-cli")],
        };
        let [a, b] = &pair.names;
        Self::ip(&["netns", "add", a])?;
        Self::ip(&["netns", "add", b])?;
        // Made inside the first namespace with its peer in the second: the host's own
        // namespace never sees either end.
        Self::ip(&[
            "-n", a, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", b,
        ])?;
        for (ns, dev, addr) in [(a, "veth0", Self::SERVER_IP), (b, "veth1", Self::CLIENT_IP)] {
            Self::ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            Self::ip(&["-n", ns, "link", "set", dev, "up"])?;
            Self::ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }

    fn exec(&self, i: usize) -> [&str; 4] {
        ["ip", "netns", "exec", self.names[i].as_str()]
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = Self::ip(&["netns", "del", ns]);
        }
    }
}

#[test]
fn network_pair_between_two_namespaces() {
    if !is_root() {
        skip("creating network namespaces needs root");
        return;
    }
    let pair = match NetnsPair::create() {
        Ok(p) => p,
        Err(reason) => {
            skip(&reason);
            return;
        }
    };
    let server_params = |extra: &str| {
        vec![
            format!("host={}", NetnsPair::SERVER_IP),
            "duration=300ms".to_owned(),
            extra.to_owned(),
        ]
    };
    let (wrap_s, wrap_c) = (pair.exec(0), pair.exec(1));
    let (server, client) = run_pair(
        "tcp_stream",
        &server_params("connections=1"),
        &server_params("connections=1"),
        (&wrap_s, &wrap_c),
        false,
    );
    check_stream(&server, &client);
    let (server, client) = run_pair(
        "tcp_rr",
        &server_params("size=1"),
        &server_params("size=1"),
        (&wrap_s, &wrap_c),
        false,
    );
    check_rr(&server, &client);
    let names = pair.names.clone();
    drop(pair);
    for ns in &names {
        let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
        assert!(
            !String::from_utf8_lossy(&listed.stdout).contains(ns.as_str()),
            "namespace {ns} left behind"
        );
    }
}

#[test]
fn loopback_role_brings_lo_up_in_a_fresh_namespace() {
    if !is_root() {
        skip("a new network namespace needs root");
        return;
    }
    // `unshare -n` gives the workload a network namespace whose `lo` is down, like a VM whose
    // /init configured no network.
    let out = Command::new("unshare")
        .args(["-n", support::BIN, "tcp_rr", "--param", "duration=100ms"])
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            skip(&format!("cannot run unshare: {e}"));
            return;
        }
    };
    let r = support::parse_output(&["tcp_rr"], &out);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stderr.contains("loopback interface up"), "{}", r.stderr);
    assert!(r.summary("ops") >= 1.0);
}
