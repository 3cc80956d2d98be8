//! Helpers shared by the coordinator's integration tests: skip rules, a small native pipeline,
//! child processes killed on drop, a `nats-server -js` on a free loopback port, what a killed
//! agent left in the cgroup tree, and the strings of a Parquet column; [`netlab`]: virtual
//! networks of namespaces.

#![allow(dead_code, unreachable_pub)]

pub mod netlab;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow_array::{Array, StringArray};

pub const BIN: &str = env!("CARGO_BIN_EXE_isolab");

/// Whether runs can go here (root for cgroups, the workload binary); off CI a printed skip.
pub fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ci = std::env::var_os("CI").is_some();
    if !root && !ci {
        eprintln!("skipping: needs root for cgroups (CI runs it as root)");
        return false;
    }
    if isolab_host::workload_bin::locate().is_err() && !ci {
        eprintln!("skipping: no isolab-workload binary (set ISOLAB_WORKLOAD_BIN)");
        return false;
    }
    true
}

/// Whether runs needing root and `tools` (found on `PATH`) can go here; off CI a printed skip.
/// CI always runs them (./bootstrap installs the tools).
pub fn can_run_with_tools(tools: &[&str]) -> bool {
    if std::env::var_os("CI").is_some() {
        return true;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: needs root (CI runs it as root)");
        return false;
    }
    for tool in tools {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !found {
            eprintln!("skipping: {tool} is not installed (CI has it: ./bootstrap)");
            return false;
        }
    }
    true
}

/// A small native-only pipeline: `workloads` × `repetitions`, each measuring `duration`.
pub fn write_pipeline(
    dir: &Path,
    name: &str,
    workloads: &str,
    repetitions: u32,
    duration: &str,
) -> PathBuf {
    let text = format!(
        "apiVersion: isolab/v1\nkind: Pipeline\nname: {name}\n\
         defaults: {{ repetitions: {repetitions}, warmup: 0, duration: {duration} }}\n\
         platforms:\n  native: {{ backend: native }}\n\
         experiments:\n  - name: micro\n    analysis: overhead\n    platforms: [native]\n\
         \x20   workloads: [{workloads}]\n"
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).expect("write pipeline");
    path
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A child process killed (by its pid) and reaped on drop.
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> i32 {
        i32::try_from(self.0.id()).expect("pid")
    }

    /// Waits up to `limit` for the exit (a guard against hangs, not a timing assertion).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(s) = self.0.try_wait().expect("try_wait") {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `nats-server -js` on a free loopback port with its store in a temp dir.
pub struct Nats {
    pub url: String,
    _proc: Proc,
    _store: tempfile::TempDir,
}

/// Starts `nats-server`, or `None` (off CI, with a printed reason) when it is not installed.
pub fn start_nats() -> Option<Nats> {
    let found = Command::new("nats-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "nats-server is missing on CI (./bootstrap installs it)"
        );
        eprintln!("skipping: nats-server is not installed (./bootstrap installs it)");
        return None;
    }
    let store = tempfile::tempdir().expect("store dir");
    let port = free_port();
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server");
    let proc = Proc(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let end = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < end, "nats-server did not start on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Nats {
        url: format!("nats://{addr}"),
        _proc: proc,
        _store: store,
    })
}

/// Spawns `isolab ARGS` with stdout piped.
pub fn spawn_isolab(args: &[&str], cwd: &Path) -> Proc {
    Proc(
        Command::new(BIN)
            .args(args)
            .current_dir(cwd)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn isolab"),
    )
}

/// Reads stdout lines of `p` until it exits; returns them.
pub fn stdout_lines(p: &mut Proc) -> Vec<String> {
    let out = p.0.stdout.take().expect("stdout piped");
    BufReader::new(out).lines().map_while(Result::ok).collect()
}

/// The stderr of `p` (after it exited).
pub fn stderr_text(p: &mut Proc) -> String {
    let mut s = String::new();
    if let Some(mut e) = p.0.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut s);
    }
    s
}

/// JSON events among `lines`.
pub fn json_events(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The manifest of a run directory.
pub fn manifest(run_dir: &Path) -> isolab_model::manifest::Manifest {
    let text = std::fs::read_to_string(run_dir.join("manifest.json")).expect("manifest");
    serde_json::from_str(&text).expect("manifest json")
}

/// Cgroup directories `isolab-agent-<pid>-*` anywhere under /sys/fs/cgroup (bounded depth).
pub fn agent_cgroup_dirs(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("isolab-agent-{pid}-");
    let mut out = Vec::new();
    let mut stack = vec![(PathBuf::from("/sys/fs/cgroup"), 0)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if !p.is_dir() || p.is_symlink() {
                continue;
            }
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                out.push(p);
            } else if depth < 8 {
                stack.push((p, depth + 1));
            }
        }
    }
    out
}

/// Pids of processes in a cgroup of the agent that lived in process `pid`.
pub fn processes_in_agent_cgroups(pid: u32) -> Vec<u32> {
    let marker = format!("/isolab-agent-{pid}-");
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{p}/cgroup"))
            && text.contains(&marker)
        {
            out.push(p);
        }
    }
    out
}

/// Column `name` of `batch` as its concrete array type (panics, naming it, when absent or typed
/// otherwise).
pub fn column<'a, T: Array + 'static>(batch: &'a arrow_array::RecordBatch, name: &str) -> &'a T {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_any()
        .downcast_ref::<T>()
        .unwrap_or_else(|| panic!("column {name} is not a {}", std::any::type_name::<T>()))
}

/// The values of a string or dictionary-of-string column.
pub fn strings(col: &dyn Array) -> Vec<String> {
    if let Some(s) = col.as_any().downcast_ref::<StringArray>() {
        return (0..s.len()).map(|i| s.value(i).to_owned()).collect();
    }
    let dict = col
        .as_any()
        .downcast_ref::<arrow_array::DictionaryArray<arrow_array::types::Int32Type>>()
        .expect("trial_id is a string or dictionary column");
    let values = dict
        .values()
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("dictionary of strings");
    dict.keys()
        .iter()
        .map(|k| {
            values
                .value(usize::try_from(k.expect("key")).expect("index"))
                .to_owned()
        })
        .collect()
}

/// Runs `isolab report RUN_DIR` (which must succeed) and returns its `summary.json`.
pub fn report_summary(run_dir: &Path) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(["report", run_dir.to_str().expect("utf-8 path")])
        .output()
        .expect("run isolab report");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(run_dir.join("summary.json")).expect("summary.json");
    serde_json::from_str(&text).expect("summary json")
}
