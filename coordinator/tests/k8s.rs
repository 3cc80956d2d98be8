//! The Kubernetes deployment, run: the manifests `kubectl kustomize k8s/overlays/local` renders
//! (after the certificate step of `k8s/README.md`, run as written there) are the source of truth,
//! and each workload's containers are started as real processes, the way the kubelet would start
//! them, on a virtual network: NATS, the coordinator, the agent DaemonSet on three "nodes" in two
//! racks (each its own network namespace, with the node labels an init container reads from a
//! stand-in API server) and the submit Job. The Job's `isolab submit --watch` exits 0, the run's
//! trials were dealt over the racks as the pipeline's `placement` says, on all three agents, and
//! the results volume holds every trial's Parquet.
//!
//! What is taken from the rendered manifests, per container: `command` (an image's entrypoint when
//! absent: `nats-server` for `nats`), `args`, `env` (plain values and the downward API fields
//! `metadata.name`, `metadata.namespace`, `spec.nodeName`, `status.podIP`), `$(VAR)` expanded as the
//! kubelet does, `volumeMounts` with their volumes materialised (Secret and ConfigMap data as files,
//! with the Secret's `defaultMode`; `emptyDir`; persistent volumes; the projected API token), init
//! containers run to completion first, and startup probes (`exec` and `httpGet`) awaited before the
//! next workload starts.
//!
//! What differs from a cluster, and how:
//! - **Mount paths.** A process cannot get its own root file system here, so each mounted volume
//!   is a directory under the test's temp dir, and every occurrence of a `mountPath` in the
//!   container's command, args and env values (a whole path component: `/results`,
//!   `/results/…`, `--tls-dir=/etc/isolab/tls`, inside the init container's script) is replaced
//!   by that directory. `hostPath` volumes (`/sys/fs/cgroup`, `/dev/kvm`, `/dev/net/tun`) are
//!   the host's own and keep their paths.
//! - **Service names.** Each process runs in its pod's network namespace and a private mount
//!   namespace with its own `/etc/hosts` naming the Services (`nats`, `coordinator.isolab.svc`,
//!   …) at their pods' addresses, instead of cluster DNS.
//! - **The API server** is a small HTTPS server (Python) that answers `GET /api/v1/nodes/NAME`
//!   with the node's labels when given the projected token; the kubelet's `KUBERNETES_SERVICE_*`
//!   variables point at it.
//! - **Images and users.** Programs come from this build (`isolab`, `isolab-agent`,
//!   `isolab-health-probe` beside the test's `isolab`) and the host (`nats-server`, `sh`, `curl`,
//!   `jq`); `ISOLAB_WORKLOAD_BIN` stands in for the workload binary the agent image carries
//!   beside `isolab-agent`. Everything runs as root; `securityContext` and resources are not
//!   applied.
//!
//! Everything made (namespaces with their veths and bridge, processes by pid, the agents'
//! cgroups, mount namespaces, which end with their processes) is removed on drop. Needs root,
//! `ip`, `kubectl`, `nats-server`, `curl`, `jq`, `python3` and the binaries above; off CI (`CI`
//! unset) it says why and skips when something is missing, on CI it never skips.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::netlab::{Network, connect_from, in_netns_with_hosts, remove_agent_cgroups};
use common::{BIN, strings};
use isolab_model::manifest::{Manifest, TrialState};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

/// The test network's /24; pods get fixed addresses in it.
const SUBNET: &str = "10.232.0";
/// The nodes: name, `topology.isolab.io/rack`, `topology.kubernetes.io/zone`, address suffix.
const NODES: [(&str, &str, &str, u8); 3] = [
    ("node-a", "r1", "z1", 1),
    ("node-b", "r1", "z1", 2),
    ("node-c", "r2", "z2", 3),
];
const API_SUFFIX: u8 = 250;
const API_PORT: u16 = 6443;
const API_TOKEN: &str = "projected-test-token";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

/// A binary of this build beside `isolab`.
fn built(name: &str) -> PathBuf {
    Path::new(BIN).with_file_name(name)
}

/// `Some(reason)` when something this test needs is missing and it is not CI.
fn skip_reason() -> Option<String> {
    if let Some(r) = common::netlab::skip_reason() {
        return Some(r);
    }
    if std::env::var_os("CI").is_some() {
        return None;
    }
    for tool in ["kubectl", "nats-server", "curl", "jq", "python3"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("no `{tool}` on PATH (run ./bootstrap)"));
        }
    }
    for b in ["isolab-agent", "isolab-health-probe"] {
        if !built(b).is_file() {
            return Some(format!(
                "no {} (build the workspace: `cargo build --workspace --bins`)",
                built(b).display()
            ));
        }
    }
    None
}

/// The command in a code block of `k8s/README.md` that starts with `prefix` (backslash
/// continuations joined, a trailing `# comment` dropped).
fn readme_command(prefix: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join("k8s/README.md")).expect("k8s/README.md");
    let joined = text.replace("\\\n", " ");
    let mut in_code = false;
    let line = joined
        .lines()
        .find(|l| {
            if l.starts_with("```") {
                in_code = !in_code;
            }
            in_code && l.trim_start().starts_with(prefix)
        })
        .unwrap_or_else(|| panic!("k8s/README.md has no `{prefix}` command in a code block"));
    let line = line.split(" #").next().unwrap_or(line);
    line.split_whitespace().map(str::to_owned).collect()
}

/// Copies `from` to `to`, leaving out `*.pem` (a developer's real certificates stay where they are).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_tree(&e.path(), &target);
        } else if e.path().extension().is_none_or(|x| x != "pem") {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

/// Runs `argv` (with `isolab` meaning this build's) in `cwd`; its stdout.
fn run_ok(argv: &[String], cwd: &Path) -> String {
    let program = if argv[0] == "isolab" { BIN } else { &argv[0] };
    let out = Command::new(program)
        .args(&argv[1..])
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The README's certificate step, then `kubectl kustomize k8s/overlays/local`, in a copy of `k8s/`.
fn render(root: &Path) -> Vec<Value> {
    copy_tree(&repo_root().join("k8s"), &root.join("k8s"));
    run_ok(&readme_command("isolab certs init"), root);
    let yaml = run_ok(
        &readme_command("kubectl kustomize k8s/overlays/local"),
        root,
    );
    serde_saphyr::from_multiple(&yaml).expect("rendered YAML")
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered manifests"))
}

fn seq(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("expected a string, got {other:?}"),
    }
}

/// `$(VAR)` replaced by `env`'s value as the kubelet does (`$$` is a literal `$`; an unknown
/// variable stays as written).
fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some(v) = env.get(&inner[..end])
        {
            out.push_str(v);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Every `mountPath` in `s` that is a whole path (at a word boundary, followed by `/` or the
/// end of the path) replaced by its directory, in one pass (longest mount path first).
fn rewrite(s: &str, mounts: &[(String, PathBuf)]) -> String {
    let path_char = |c: char| c.is_ascii_alphanumeric() || "._-/".contains(c);
    let mut out = String::new();
    let mut i = 0;
    while i < s.len() {
        let at_start = s[..i].chars().next_back().is_none_or(|c| !path_char(c));
        let hit = at_start
            .then(|| {
                mounts.iter().find(|(m, _)| {
                    s[i..].starts_with(m.as_str())
                        && s[i + m.len()..]
                            .chars()
                            .next()
                            .is_none_or(|c| c == '/' || !path_char(c))
                })
            })
            .flatten();
        if let Some((m, dir)) = hit {
            out.push_str(&dir.to_string_lossy());
            i += m.len();
        } else {
            let c = s[i..].chars().next().expect("char");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// One pod: its network namespace, address, node, spec and directory.
struct Pod {
    name: String,
    ns: String,
    ip: String,
    node: String,
    spec: Value,
    dir: PathBuf,
    /// Claim name → directory of a StatefulSet's `volumeClaimTemplates`.
    claims: BTreeMap<String, PathBuf>,
}

/// Everything the pods share: the rendered manifests, the PVC and hosts files, the stand-in API.
struct Cluster<'a> {
    docs: &'a [Value],
    root: PathBuf,
    hosts: PathBuf,
    api_ca: PathBuf,
    /// Processes started, by pod/container.
    procs: Vec<(String, Child)>,
    /// Agent pids (their cgroups are removed after them).
    agent_pids: Vec<u32>,
}

impl Cluster<'_> {
    fn doc_data(&self, kind: &str, name: &str) -> BTreeMap<String, Vec<u8>> {
        let d = find(self.docs, kind, name);
        let mut out = BTreeMap::new();
        if let Some(m) = d["data"].as_object() {
            for (k, v) in m {
                let v = text(v);
                let bytes = if kind == "Secret" {
                    base64::engine::general_purpose::STANDARD
                        .decode(v.split_whitespace().collect::<String>())
                        .expect("base64 Secret data")
                } else {
                    v.into_bytes()
                };
                out.insert(k.clone(), bytes);
            }
        }
        out
    }

    /// The directory holding volume `name` of `pod`, filled from its source.
    fn volume(&self, pod: &Pod, name: &str) -> PathBuf {
        if let Some(dir) = pod.claims.get(name) {
            std::fs::create_dir_all(dir).expect("claim dir");
            return dir.clone();
        }
        let v = seq(&pod.spec["volumes"])
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("{}: no volume {name}", pod.name));
        let dir = pod.dir.join("volumes").join(name);
        std::fs::create_dir_all(&dir).expect("volume dir");
        let write = |file: &str, bytes: &[u8], mode: Option<u64>| {
            let p = dir.join(file);
            std::fs::write(&p, bytes).expect("volume file");
            if let Some(mode) = mode {
                let mode = u32::try_from(mode).expect("mode");
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
            }
        };
        if let Some(hp) = v["hostPath"]["path"].as_str() {
            return PathBuf::from(hp);
        } else if !v["secret"].is_null() {
            let mode = v["secret"]["defaultMode"].as_u64();
            for (k, bytes) in self.doc_data("Secret", &text(&v["secret"]["secretName"])) {
                write(&k, &bytes, mode);
            }
        } else if !v["configMap"].is_null() {
            for (k, bytes) in self.doc_data("ConfigMap", &text(&v["configMap"]["name"])) {
                write(&k, &bytes, None);
            }
        } else if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() {
            let _ = find(self.docs, "PersistentVolumeClaim", claim);
            let dir = self.root.join("pvc").join(claim);
            std::fs::create_dir_all(&dir).expect("pvc dir");
            return dir;
        } else if !v["projected"].is_null() {
            for s in seq(&v["projected"]["sources"]) {
                if let Some(path) = s["serviceAccountToken"]["path"].as_str() {
                    write(path, API_TOKEN.as_bytes(), None);
                } else if s["configMap"]["name"] == "kube-root-ca.crt" {
                    let ca = std::fs::read(&self.api_ca).expect("API CA");
                    for item in seq(&s["configMap"]["items"]) {
                        write(&text(&item["path"]), &ca, None);
                    }
                } else {
                    panic!("{}: projected source {s:?} not materialised", pod.name);
                }
            }
        } else if v["emptyDir"].is_null() {
            panic!(
                "{}: volume {v:?} of a kind this test does not materialise",
                pod.name
            );
        }
        dir
    }

    /// Container `c` of `pod` as a command: argv, env and mounts as described in the module doc.
    fn command(&self, pod: &Pod, c: &Value) -> Command {
        let mut env = BTreeMap::new();
        for e in seq(&c["env"]) {
            let value = if let Some(field) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                match field {
                    "metadata.name" => pod.name.clone(),
                    "metadata.namespace" => "isolab".to_owned(),
                    "spec.nodeName" => pod.node.clone(),
                    "status.podIP" => pod.ip.clone(),
                    other => panic!("{}: downward API field {other} not materialised", pod.name),
                }
            } else {
                expand(&text(&e["value"]), &env)
            };
            env.insert(text(&e["name"]), value);
        }
        let mut mounts: Vec<(String, PathBuf)> = seq(&c["volumeMounts"])
            .iter()
            .map(|m| (text(&m["mountPath"]), self.volume(pod, &text(&m["name"]))))
            .filter(|(path, dir)| Path::new(path) != dir)
            .collect();
        mounts.sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));
        let mut argv: Vec<String> = seq(&c["command"]).iter().map(text).collect();
        if argv.is_empty() {
            // The image's entrypoint.
            let image = text(&c["image"]);
            assert!(
                image.starts_with("nats:"),
                "no command and no known entrypoint: {image}"
            );
            argv.push("nats-server".to_owned());
        }
        argv.extend(seq(&c["args"]).iter().map(text));
        let argv: Vec<String> = argv
            .iter()
            .map(|a| rewrite(&expand(a, &env), &mounts))
            .collect();
        let program = match argv[0].as_str() {
            "isolab" => PathBuf::from(BIN),
            p if !p.contains('/') && built(p).is_file() => built(p),
            p => PathBuf::from(p),
        };
        let mut cmd = in_netns_with_hosts(&pod.ns, &self.hosts, program);
        cmd.args(&argv[1..]).env_clear();
        let bin_dir = Path::new(BIN)
            .parent()
            .expect("bin dir")
            .display()
            .to_string();
        cmd.env(
            "PATH",
            format!("{bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        )
        .env("HOSTNAME", &pod.name)
        .env("KUBERNETES_SERVICE_HOST", format!("{SUBNET}.{API_SUFFIX}"))
        .env("KUBERNETES_SERVICE_PORT", API_PORT.to_string());
        if let Some(w) = std::env::var_os("ISOLAB_WORKLOAD_BIN") {
            cmd.env("ISOLAB_WORKLOAD_BIN", w);
        }
        for (k, v) in &env {
            cmd.env(k, rewrite(v, &mounts));
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    fn log(&self, pod: &Pod, container: &str) -> PathBuf {
        pod.dir.join(format!("{container}.log"))
    }

    /// Starts container `c` of `pod`, logging to `<pod dir>/<container>.log`.
    fn start(&mut self, pod: &Pod, c: &Value) -> usize {
        let name = text(&c["name"]);
        let log = File::create(self.log(pod, &name)).expect("log");
        let child = self
            .command(pod, c)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}/{name}: {e}", pod.name));
        self.procs.push((format!("{}/{name}", pod.name), child));
        self.procs.len() - 1
    }

    /// Runs the init containers, starts the containers and waits for their startup probes.
    fn run_pod(&mut self, pod: &Pod) -> Vec<usize> {
        std::fs::create_dir_all(&pod.dir).expect("pod dir");
        for c in seq(&pod.spec["initContainers"]) {
            let i = self.start(pod, c);
            let status = wait_exit(&mut self.procs[i].1, Duration::from_secs(60));
            let log = read(&self.log(pod, &text(&c["name"])));
            assert!(
                status.is_some_and(|s| s.success()),
                "init container {}: {status:?}: {log}",
                self.procs[i].0
            );
        }
        let started: Vec<usize> = seq(&pod.spec["containers"])
            .iter()
            .map(|c| self.start(pod, c))
            .collect();
        for (c, &i) in seq(&pod.spec["containers"]).iter().zip(&started) {
            let probe = &c["startupProbe"];
            if probe.is_null() {
                continue;
            }
            let end = Instant::now() + Duration::from_secs(120);
            while !self.probe(pod, c, probe) {
                if let Some(s) = self.procs[i].1.try_wait().expect("try_wait") {
                    panic!(
                        "{} exited ({s}): {}",
                        self.procs[i].0,
                        read(&self.log(pod, &text(&c["name"])))
                    );
                }
                assert!(
                    Instant::now() < end,
                    "{} never passed its startup probe ({}): {}",
                    self.procs[i].0,
                    read(&pod.dir.join(format!("{}.probe.log", text(&c["name"])))),
                    read(&self.log(pod, &text(&c["name"])))
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        started
    }

    /// One attempt of `probe` (`exec` or `httpGet`) on container `c`.
    fn probe(&self, pod: &Pod, c: &Value, probe: &Value) -> bool {
        if !probe["exec"].is_null() {
            let mut exec = c.clone();
            exec["command"] = probe["exec"]["command"].clone();
            exec["args"] = Value::Null;
            let log = File::create(pod.dir.join(format!("{}.probe.log", text(&c["name"]))))
                .expect("probe log");
            return self
                .command(pod, &exec)
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .status()
                .is_ok_and(|s| s.success());
        }
        let get = &probe["httpGet"];
        assert!(
            !get.is_null(),
            "{}: probe {probe:?} not run by this test",
            pod.name
        );
        let port = match &get["port"] {
            Value::Number(n) => n.as_u64().expect("port"),
            name => seq(&c["ports"])
                .iter()
                .find(|p| p["name"] == *name)
                .and_then(|p| p["containerPort"].as_u64())
                .unwrap_or_else(|| panic!("{}: no port {name:?}", pod.name)),
        };
        let addr: SocketAddr = format!("{}:{port}", pod.ip).parse().expect("address");
        let Ok(mut conn) = connect_from(&pod.ns, addr) else {
            return false;
        };
        let request = format!(
            "GET {} HTTP/1.0\r\nHost: {}\r\n\r\n",
            text(&get["path"]),
            pod.ip
        );
        let mut answer = String::new();
        conn.write_all(request.as_bytes()).is_ok()
            && conn.read_to_string(&mut answer).is_ok()
            && answer.starts_with("HTTP/1.")
            && answer.split_whitespace().nth(1) == Some("200")
    }
}

impl Drop for Cluster<'_> {
    fn drop(&mut self) {
        // SIGTERM first (the agents remove their cgroups, the coordinator drains), then SIGKILL.
        for (_, c) in &self.procs {
            if let Ok(pid) = i32::try_from(c.id()) {
                // SAFETY: kill has no memory preconditions; the pid is our child (reaped below).
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
        let end = Instant::now() + Duration::from_secs(20);
        for (_, c) in &mut self.procs {
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

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits for `child` to exit, at most `limit` (a guard against hangs, not a timing assertion).
fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
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

/// The stand-in API server: `GET /api/v1/nodes/NAME` with the bearer token → the Node's labels.
const API_SERVER: &str = r#"
import http.server, json, ssl, sys
nodes, token = json.loads(sys.argv[1]), sys.argv[2]
class Api(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        if self.headers.get("Authorization") != "Bearer " + token:
            self.send_response(401); self.end_headers(); return
        if not self.path.startswith("/api/v1/nodes/") or name not in nodes:
            self.send_response(404); self.end_headers(); return
        body = json.dumps({"apiVersion": "v1", "kind": "Node",
                           "metadata": {"name": name, "labels": nodes[name]}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer((sys.argv[3], int(sys.argv[4])), Api)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[5], sys.argv[6])
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

/// Trial id → how many Parquet files under `run_dir/samples` hold rows of it.
fn parquet_trials(run_dir: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let mut stack = vec![run_dir.join("samples")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).expect("read samples") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&p).expect("open"))
                .expect("parquet")
                .build()
                .expect("reader");
            let mut ids = BTreeSet::new();
            for batch in reader {
                let batch = batch.expect("batch");
                ids.extend(strings(
                    batch.column_by_name("trial_id").expect("trial_id").as_ref(),
                ));
            }
            for id in ids {
                *out.entry(id).or_default() += 1;
            }
        }
    }
    out
}

#[test]
fn the_rendered_manifests_run_a_pipeline_over_three_agents_in_two_racks() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().to_path_buf();
    let docs = render(&root);

    // The network: one namespace per pod, and the stand-in API server.
    let pods = [
        ("nats-0", 10u8),
        ("coordinator", 11),
        ("submit", 12),
        ("api", API_SUFFIX),
    ];
    let mut members: Vec<(String, String)> = pods
        .iter()
        .map(|(n, i)| ((*n).to_owned(), format!("{SUBNET}.{i}/24")))
        .collect();
    members.extend(
        NODES
            .iter()
            .map(|(n, _, _, i)| ((*n).to_owned(), format!("{SUBNET}.{i}/24"))),
    );
    let plan: Vec<(&str, &str)> = members
        .iter()
        .map(|(n, a)| (n.as_str(), a.as_str()))
        .collect();
    let network = match Network::build(&plan) {
        Ok(n) => n,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipping: cannot build the test network: {e}");
            return;
        }
        Err(e) => panic!("cannot build the test network: {e}"),
    };
    let hosts = root.join("hosts");
    std::fs::write(
        &hosts,
        format!(
            "127.0.0.1 localhost\n\
             {SUBNET}.10 nats nats.isolab.svc nats.isolab.svc.cluster.local\n\
             {SUBNET}.11 coordinator coordinator.isolab.svc coordinator.isolab.svc.cluster.local\n"
        ),
    )
    .expect("hosts");

    // The API server's certificate: its own CA, the name being its address.
    let api_pki = root.join("api-pki");
    let api_ip = format!("{SUBNET}.{API_SUFFIX}");
    run_ok(
        &[
            "isolab",
            "certs",
            "init",
            "--dir",
            &api_pki.to_string_lossy(),
            "--san",
            &api_ip,
        ]
        .map(str::to_owned),
        &root,
    );
    let mut cluster = Cluster {
        docs: &docs,
        root: root.clone(),
        hosts,
        api_ca: api_pki.join("ca.pem"),
        procs: Vec::new(),
        agent_pids: Vec::new(),
    };
    let labels: serde_json::Map<String, serde_json::Value> = NODES
        .iter()
        .map(|(n, rack, zone, _)| {
            let l = serde_json::json!({
                "topology.isolab.io/rack": rack,
                "topology.kubernetes.io/zone": zone,
                "kubernetes.io/hostname": n,
            });
            ((*n).to_owned(), l)
        })
        .collect();
    let api = in_netns_with_hosts(&network.ns("api"), &cluster.hosts, "python3")
        .args([
            "-c",
            API_SERVER,
            &serde_json::Value::Object(labels).to_string(),
            API_TOKEN,
        ])
        .arg(&api_ip)
        .arg(API_PORT.to_string())
        .arg(api_pki.join("coordinator.pem"))
        .arg(api_pki.join("coordinator-key.pem"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(root.join("api.log")).expect("log"))
        .spawn()
        .expect("spawn the API server");
    cluster.procs.push(("api".to_owned(), api));
    let api_addr: SocketAddr = format!("{api_ip}:{API_PORT}").parse().expect("addr");
    let end = Instant::now() + Duration::from_secs(30);
    while connect_from(&network.ns("api"), api_addr).is_err() {
        assert!(
            Instant::now() < end,
            "API server: {}",
            read(&root.join("api.log"))
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let pod = |name: &str, ns: &str, suffix: u8, node: &str, spec: &Value| Pod {
        name: name.to_owned(),
        ns: network.ns(ns),
        ip: format!("{SUBNET}.{suffix}"),
        node: node.to_owned(),
        spec: spec.clone(),
        dir: root.join("pods").join(name),
        claims: BTreeMap::new(),
    };

    // NATS (StatefulSet: its claim templates become directories), then the coordinator.
    let nats = find(&docs, "StatefulSet", "nats");
    let mut nats_pod = pod(
        "nats-0",
        "nats-0",
        10,
        "node-a",
        &nats["spec"]["template"]["spec"],
    );
    for t in seq(&nats["spec"]["volumeClaimTemplates"]) {
        let claim = text(&t["metadata"]["name"]);
        nats_pod.claims.insert(
            claim.clone(),
            root.join("pvc").join(format!("{claim}-nats-0")),
        );
    }
    cluster.run_pod(&nats_pod);
    let coordinator = find(&docs, "Deployment", "isolab-coordinator");
    let coordinator_pod = pod(
        "isolab-coordinator-0",
        "coordinator",
        11,
        "node-a",
        &coordinator["spec"]["template"]["spec"],
    );
    cluster.run_pod(&coordinator_pod);

    // The agent DaemonSet: one pod per node.
    let ds = &find(&docs, "DaemonSet", "isolab-agent")["spec"]["template"]["spec"];
    let mut agent_pods = Vec::new();
    for (node, _, _, suffix) in NODES {
        let p = pod(&format!("isolab-agent-{node}"), node, suffix, node, ds);
        let started = cluster.run_pod(&p);
        for i in started {
            cluster.agent_pids.push(cluster.procs[i].1.id());
        }
        agent_pods.push(p);
    }
    for p in &agent_pods {
        let labels = read(&p.dir.join("volumes/node-labels/labels"));
        assert!(
            labels.contains("rack=r"),
            "{}: labels written by the init container: {labels}",
            p.name
        );
    }

    // The submit Job: `isolab submit … --watch` exits 0 once the run finished ok.
    let job = find(&docs, "Job", "isolab-submit");
    let job_pod = pod(
        "isolab-submit-0",
        "submit",
        12,
        "node-b",
        &job["spec"]["template"]["spec"],
    );
    let submit = cluster.run_pod(&job_pod)[0];
    let status = wait_exit(&mut cluster.procs[submit].1, Duration::from_secs(300));
    let coordinator_log = read(&cluster.log(&coordinator_pod, "coordinator"));
    let job_log = read(&cluster.log(&job_pod, "submit"));
    assert!(
        status.is_some_and(|s| s.success()),
        "submit Job: {status:?}\n{job_log}\ncoordinator:\n{coordinator_log}"
    );

    // The run: every planned trial ok, dealt over the racks in plan order, on all three agents.
    let pipeline = job_pod.dir.join("volumes/pipelines/racks.yaml");
    let planned = run_ok(
        &[
            "isolab".to_owned(),
            "plan".to_owned(),
            "--json".to_owned(),
            pipeline.display().to_string(),
        ],
        &root,
    );
    let planned: serde_json::Value = serde_json::from_str(&planned).expect("plan json");
    let planned: Vec<String> = planned["trials"]
        .as_array()
        .expect("trials")
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_owned())
        .collect();
    let results = root.join("pvc/isolab-results");
    let runs: Vec<PathBuf> = std::fs::read_dir(&results)
        .expect("results volume")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    assert_eq!(runs.len(), 1, "one run in the results volume: {runs:?}");
    let manifest: Manifest =
        serde_json::from_str(&read(&runs[0].join("manifest.json"))).expect("manifest");
    let host_of: BTreeMap<&str, &str> = manifest
        .trials
        .iter()
        .map(|t| {
            assert_eq!(t.status, TrialState::Ok, "{}: {:?}", t.id, t.reason);
            (t.id.as_str(), t.host.as_deref().unwrap_or("?"))
        })
        .collect();
    assert_eq!(
        host_of.keys().copied().collect::<BTreeSet<_>>(),
        planned.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        "the manifest holds the planned trials"
    );
    // `spread_by: rack`: the n-th trial goes to rack n mod 2 (racks sorted), and within a rack
    // round-robin over its agents (sorted by name, as discovery lists them).
    let racks: Vec<&str> = ["r1", "r2"].to_vec();
    let mut turn = [0usize; 2];
    let mut expected = Vec::new();
    // Placement deals trials in execution order (the run's seeded, interleaved order), which the
    // manifest's trial list is.
    let order: Vec<&str> = manifest.trials.iter().map(|t| t.id.as_str()).collect();
    for n in 0..order.len() {
        let g = n % racks.len();
        let members: Vec<&str> = NODES
            .iter()
            .filter(|x| x.1 == racks[g])
            .map(|x| x.0)
            .collect();
        expected.push(members[turn[g] % members.len()]);
        turn[g] += 1;
    }
    let actual: Vec<&str> = order.iter().map(|id| host_of[id]).collect();
    assert_eq!(
        actual, expected,
        "trials placed by rack (execution order: {order:?})"
    );
    assert_eq!(
        actual.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from(["node-a", "node-b", "node-c"]),
        "all three agents ran trials"
    );
    // Every trial's Parquet, once.
    let in_parquet = parquet_trials(&runs[0]);
    for id in &planned {
        assert_eq!(
            in_parquet.get(id),
            Some(&1),
            "trial {id} in one Parquet file: {in_parquet:?}"
        );
    }
    assert_eq!(
        in_parquet.len(),
        planned.len(),
        "nothing but the planned trials: {in_parquet:?}"
    );
    eprintln!(
        "{} trials over {:?}; the Job said:\n{job_log}",
        planned.len(),
        actual
    );
    drop(cluster);
    drop(network);
}
