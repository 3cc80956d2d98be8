//! Crash leftovers: an `isolab-agent` process running a trial is SIGKILLed, a new one is
//! started with the same state directory and cgroup prefix, and everything the dead one left
//! of the trial is gone once the new one answers (processes, cgroup directories, runtime state,
//! containers, QEMU, network namespaces, scratch mounts and directories) — per backend, and for
//! an agent that is PID 1 of its own pid namespace, so that the new agent has the dead one's pid.
//! Also: nothing is created under `$TMPDIR` by the agent's native and vm trials.
//!
//! Each test starts its own agents (the binary) with its own state directory, cgroup prefix and
//! `$TMPDIR`, and kills only those agents, by pid.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use isolab_agent::conformance;
use isolab_agent::core::TrialEvent;
use isolab_backends::TrialContext;
use isolab_model::pipeline::{Accel, BackendKind, NetworkMode, Platform};
use isolab_model::plan::Trial;
use isolab_model::units::Bytes;
use isolab_proto::v1 as pb;
use isolab_proto::v1::agent_client::AgentClient;
use isolab_wire::convert::{event_from_proto, trial_to_proto};
use tonic::transport::Channel;

/// How long an agent may take to answer after it was started (probes included: a private
/// dockerd, a TCG boot). Only a bound against hanging, not a measurement.
const READY_WITHIN: Duration = Duration::from_secs(300);

/// One agent process the test started; killed when dropped (a failed assertion).
struct Agent {
    /// `isolab-agent` itself, or `unshare` when the agent is PID 1 of a pid namespace; `None`
    /// once waited for.
    child: Option<Child>,
    /// The agent's pid as this process sees it.
    pid: u32,
    url: String,
}

/// The setting shared by an agent and its successor.
struct Setup {
    test: String,
    prefix: String,
    state: tempfile::TempDir,
    tmpdir: tempfile::TempDir,
    pidns: bool,
}

impl Setup {
    fn new(test: &str, pidns: bool) -> Self {
        // Short: a private dockerd's sockets live below it, and containerd takes at most 104
        // bytes (`/tmp/isolab-XXXXXX/containers/ic-docker-<pid>.<ticks>-0/dk/x/containerd/
        // containerd-debug.sock`).
        let state = tempfile::Builder::new()
            .prefix("isolab-")
            .tempdir()
            .expect("state dir");
        let tmpdir = tempfile::Builder::new()
            .prefix("tmpdir-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("TMPDIR");
        Self {
            test: test.to_owned(),
            prefix: format!("ic-{test}"),
            state,
            tmpdir,
            pidns,
        }
    }

    fn free_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }

    /// Starts an agent and waits until it answers `Capabilities` (every backend probed, so
    /// every start-up sweep has run).
    async fn start(&self) -> (Agent, AgentClient<Channel>) {
        let port = Self::free_port();
        let agent_bin = env!("CARGO_BIN_EXE_isolab-agent");
        let mut cmd = if self.pidns {
            let mut c = Command::new("unshare");
            c.args(["--pid", "--fork", "--mount-proc", agent_bin]);
            c
        } else {
            Command::new(agent_bin)
        };
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--allow-plaintext")
            .arg("--state-dir")
            .arg(self.state.path())
            .arg("--cgroup-prefix")
            .arg(&self.prefix)
            .arg("--workload-bin")
            .arg(common::workload_bin())
            .env("TMPDIR", self.tmpdir.path())
            .env("ISOLAB_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let child = cmd.spawn().expect("start isolab-agent");
        let pid = if self.pidns {
            agent_in_namespace(child.id())
        } else {
            child.id()
        };
        let url = format!("http://127.0.0.1:{port}");
        let mut agent = Agent {
            child: Some(child),
            pid,
            url,
        };
        let client = agent.connect().await;
        (agent, client)
    }
}

/// The agent started by `unshare --fork` (its only child), found by its parent pid.
fn agent_in_namespace(unshare: u32) -> u32 {
    for _ in 0..500 {
        let children = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
            .unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            return pid.parse().expect("pid");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("unshare {unshare} started no agent");
}

impl Agent {
    async fn connect(&mut self) -> AgentClient<Channel> {
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("the agent exited before answering: {status}");
            }
            if let Ok(mut client) = AgentClient::connect(self.url.clone()).await
                && client
                    .capabilities(pb::CapabilitiesRequest {})
                    .await
                    .is_ok()
            {
                return client;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "agent at {} did not answer",
                self.url
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sends `signal` to the agent and waits for it (with `unshare`, which ends when its only
    /// child, the agent, does).
    fn signal_and_wait(&mut self, signal: nix::sys::signal::Signal) {
        if let Some(mut child) = self.child.take() {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid.cast_signed()), signal)
                .expect("signal the agent");
            let _ = child.wait();
        }
    }

    /// SIGKILL, and wait for the process to be gone.
    fn kill(mut self) {
        self.signal_and_wait(nix::sys::signal::Signal::SIGKILL);
    }

    /// SIGTERM and wait: the agent drains and removes what it made.
    fn stop(mut self) {
        self.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    }
}

/// Runs `trial` to its end; its final status.
async fn run_to_end(
    client: &mut AgentClient<Channel>,
    trial: &Trial,
) -> isolab_agent::core::TrialStatus {
    let mut stream = client
        .run_trial(trial_to_proto("crash", trial, 0))
        .await
        .expect("RunTrial")
        .into_inner();
    let mut last = None;
    while let Some(item) = stream.next().await {
        if let TrialEvent::Status(s) = event_from_proto(item.expect("event")).expect("event") {
            last = Some(s);
        }
    }
    last.expect("a final status")
}

/// A platform with a small memory limit, so that several trials fit in the agent's host
/// budget at once (without one, each instance is charged the agent's ceiling).
fn small(platform: &Platform) -> Platform {
    let mut p = platform.clone();
    if p.backend != BackendKind::Vm {
        p.limits.memory = Some(Bytes(128 << 20));
    }
    p
}

/// A trial of the `idle` workload that runs far longer than the test.
fn long_trial(platform: &Platform, instances: u32) -> Trial {
    conformance::trial(
        &small(platform),
        "idle",
        instances,
        &[],
        Duration::from_secs(1800),
        Duration::from_secs(1900),
    )
}

fn ctx(trial: &Trial) -> TrialContext {
    TrialContext {
        run_id: "crash".into(),
        trial: Arc::new(isolab_wire::TrialSpec::from(trial)),
        attempt: 0,
    }
}

/// Everything that carries the agent directory name `agent` (`<prefix>-<owner>-<n>`) or
/// belongs to one of `trials`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Leftovers {
    processes: Vec<String>,
    cgroups: Vec<PathBuf>,
    state: Vec<PathBuf>,
    mounts: Vec<PathBuf>,
    netns: Vec<String>,
}

impl Leftovers {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

fn leftovers(agent: &str, trials: &[Trial], state: &Path) -> Leftovers {
    let me = std::process::id();
    let mut pids: Vec<u32> = trials
        .iter()
        .flat_map(|t| conformance::processes_of(&ctx(t)))
        .collect();
    // QEMU, a private dockerd and its containerd, LXC monitors: their command lines name the
    // agent's directories.
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if pid != me
            && cmdline.windows(agent.len()).any(|w| w == agent.as_bytes())
            && isolab_host::leaks::process_alive(pid, None).is_some()
        {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids.dedup();
    let processes = pids
        .into_iter()
        .map(|p| {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            format!("{p}: {}", String::from_utf8_lossy(&cmd).replace('\0', " "))
        })
        .collect();
    let mut cgroups = Vec::new();
    find_named(Path::new("/sys/fs/cgroup"), agent, 6, &mut cgroups);
    let mut dirs = Vec::new();
    find_named(state, agent, 3, &mut dirs);
    let mounts = isolab_host::mounts::mounts_under(state)
        .into_iter()
        .filter(|m| m.to_string_lossy().contains(agent))
        .collect();
    let netns = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(agent))
                .collect()
        })
        .unwrap_or_default();
    Leftovers {
        processes,
        cgroups,
        state: dirs,
        mounts,
        netns,
    }
}

/// Directories below `root` (at most `depth` levels) whose name starts with `name`.
fn find_named(root: &Path, name: &str, depth: u32, out: &mut Vec<PathBuf>) {
    if depth == 0 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(t) = e.file_type() else { continue };
        if !t.is_dir() {
            continue;
        }
        if e.file_name().to_string_lossy().starts_with(name) {
            out.push(e.path());
        } else {
            find_named(&e.path(), name, depth - 1, out);
        }
    }
}

/// The agent directory (`<prefix>-<owner>-<n>`) of the one agent with `prefix`: the name of its
/// directory under the state directory's `containers/`, `scratch/` or `vm/`, or of its cgroup.
fn agent_dir_name(prefix: &str, trials: &[Trial]) -> String {
    // Any process of a trial is in the agent's cgroup: its path names the directory.
    for t in trials {
        for pid in conformance::processes_of(&ctx(t)) {
            let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            if let Some(name) = cg
                .split(['/', '\n', ':'])
                .find(|p| p.starts_with(&format!("{prefix}-")))
            {
                return name.to_owned();
            }
        }
    }
    panic!("no process of the trials found in a {prefix}-* cgroup");
}

/// Runs one trial per platform on an agent, SIGKILLs it, starts another with the same state
/// directory and prefix, and checks that what the first one left is gone.
async fn crash_and_restart(test: &str, pidns: bool, platforms: &[Platform]) {
    if !common::privileged(test) {
        return;
    }
    let setup = Setup::new(test, pidns);
    let (agent, mut client) = setup.start().await;
    let trials: Vec<Trial> = platforms.iter().map(|p| long_trial(p, 2)).collect();
    let mut streams = Vec::new();
    for t in &trials {
        streams.push(common::open_until_first_sample(&mut client, "crash", t).await);
    }
    let name = agent_dir_name(&setup.prefix, &trials);
    assert!(
        leftovers(&name, &trials, setup.state.path())
            .processes
            .iter()
            .any(|p| !p.is_empty()),
        "the running trials are visible"
    );
    agent.kill();
    drop(streams);
    let before = leftovers(&name, &trials, setup.state.path());
    eprintln!("{test}: left by the killed agent {name}: {before:#?}");
    assert!(!before.is_empty(), "the killed agent left nothing to sweep");

    let (second, mut client) = setup.start().await;
    let after = leftovers(&name, &trials, setup.state.path());
    assert!(
        after.is_empty(),
        "{test}: the new agent did not sweep what {name} left: {after:#?}"
    );
    // The new agent runs trials of the same platforms to their end.
    for p in platforms {
        let t = conformance::trial(
            &small(p),
            "idle",
            1,
            &[],
            Duration::from_secs(1),
            Duration::from_secs(120),
        );
        let status = run_to_end(&mut client, &t).await;
        assert_eq!(
            status.state,
            isolab_agent::core::TrialState::Ok,
            "{test}: {}",
            status.message
        );
    }
    second.stop();
    let in_tmp: Vec<_> = std::fs::read_dir(setup.tmpdir.path())
        .expect("TMPDIR")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        in_tmp.is_empty(),
        "{}: created under $TMPDIR: {in_tmp:?}",
        setup.test
    );
}

/// The binary refuses a world-writable or symlinked state directory, naming it, before it
/// makes anything.
#[test]
fn the_binary_refuses_an_unsafe_state_dir() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().expect("tmp");
    let open = tmp.path().join("open");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&open, &link).expect("symlink");
    for (dir, expected) in [
        (&open, "lets group or others write; expected 0700"),
        (&link, "is a symbolic link"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_isolab-agent"))
            .arg("--state-dir")
            .arg(dir)
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("run isolab-agent");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("state directory {}", dir.display()))
                && stderr.contains(expected),
            "stderr: {stderr}"
        );
        assert_eq!(
            std::fs::read_dir(&open).expect("read").count(),
            0,
            "something was made in a refused state directory"
        );
    }
}

fn platform(backend: BackendKind) -> Platform {
    Platform {
        backend,
        ..common::native()
    }
}

fn runc() -> Platform {
    Platform {
        runtime: Some("runc".into()),
        network: Some(NetworkMode::Bridge),
        ..platform(BackendKind::Container)
    }
}

fn vm() -> Platform {
    Platform {
        vcpus: Some(1),
        memory: Some(Bytes(128 << 20)),
        accel: Some(Accel::Tcg),
        ..platform(BackendKind::Vm)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agents_native_trial_is_swept() {
    crash_and_restart("native", false, &[common::native()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agents_runc_trial_is_swept() {
    crash_and_restart("runc", false, &[runc()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agents_docker_trial_is_swept() {
    crash_and_restart(
        "docker",
        false,
        &[Platform {
            network: Some(NetworkMode::Bridge),
            ..platform(BackendKind::Docker)
        }],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agents_lxc_trial_is_swept() {
    crash_and_restart("lxc", false, &[platform(BackendKind::Lxc)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agents_vm_trial_is_swept() {
    crash_and_restart("vm", false, &[vm()]).await;
}

/// The agent as PID 1 of its own pid namespace, as in a container: its successor has the same
/// pid, and must still take what the dead one left for a dead agent's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restarted_with_the_same_pid_sweeps_its_predecessor() {
    crash_and_restart("pid1", true, &[common::native(), runc()]).await;
}
