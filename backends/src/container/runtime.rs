//! Driving an OCI runtime binary (`runc`, `crun`, `youki`, `runsc`, or another the operator
//! configured), always one of the agent's [`super::runtimes::RuntimeTable`], never a path a
//! client gave.
//!
//! Every call passes `--root <dir>`, a state directory of this agent alone, so the agent never
//! sees or touches containers it did not create; the platform's allowlisted `runtime_args`
//! (e.g. `--platform=ptrace` for runsc) and the operator's arguments follow it as global flags. Instances run with `run --keep` (where the runtime supports
//! it, see [`super::flavor`]) in the foreground and no terminal: the runtime gives its stdout and stderr to the workload (our pipes, so stdout holds
//! only sample lines), waits for it and exits with its status (128 + signal when it was killed);
//! `--keep` leaves the stopped container and its cgroups for the final statistics until
//! [`Runtime::delete`]. Housekeeping commands (`kill`, `delete --force`, `state`, `list`) block
//! with a timeout; call them from blocking tasks.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::last_lines;
// `PATH` for the runtime (and for finding it): the agent may run with a short `PATH`.
use isolab_host::which::SEARCH_PATH;

/// How long a housekeeping command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong with a runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime is not one of the agent's.
    #[error("{0}")]
    NotConfigured(#[from] super::runtimes::RuntimeTableError),
    /// A default runtime that is not installed.
    #[error("runtime `{name}` not found ({where_})")]
    NotFound {
        /// The name.
        name: String,
        /// Where it was looked for.
        where_: String,
    },
    /// The binary could not be started.
    #[error("cannot run {}: {source}", program.display())]
    Spawn {
        /// The binary.
        program: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A command did not finish in time (it was killed).
    #[error("`{name} {op}` did not finish within {timeout_ms} ms")]
    Timeout {
        /// The runtime.
        name: String,
        /// The subcommand.
        op: String,
        /// The limit.
        timeout_ms: u128,
    },
    /// A command failed.
    #[error("`{name} {op}` failed ({status}): {stderr}")]
    Failed {
        /// The runtime.
        name: String,
        /// The subcommand.
        op: String,
        /// Its exit status.
        status: String,
        /// The last lines it wrote to stderr.
        stderr: String,
    },
    /// A command's output was not what the runtime documents.
    #[error("`{name} {op}` printed something unexpected: {what}")]
    Output {
        /// The runtime.
        name: String,
        /// The subcommand.
        op: String,
        /// What was wrong.
        what: String,
    },
}

/// A container as `state` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ContainerState {
    /// The container id.
    pub id: String,
    /// `creating`, `created`, `running`, `stopped` (or `paused`).
    pub status: String,
    /// Host pid of the container's process 1 (0 once stopped).
    #[serde(default)]
    pub pid: u32,
}

/// One OCI runtime with this agent's state root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    name: String,
    program: PathBuf,
    global_args: Vec<String>,
    root: PathBuf,
    /// Whether `run` accepts `--keep` (see [`super::flavor::keeps`]).
    keep: bool,
    /// Whether a container's whole state is `<root>/<id>/state.json` (runc; see
    /// [`Runtime::remove_stopped`]).
    state_dirs: bool,
}

/// The part of runc's `state.json` that says whether the container still runs.
#[derive(Debug, serde::Deserialize)]
struct RuncState {
    init_process_pid: u32,
    init_process_start: u64,
}

impl Runtime {
    /// Runtime `name` of the agent's table, binary `program` (from the table, absolute),
    /// global arguments `runtime_args` (checked already); `root` the state directory passed as
    /// `--root`.
    pub fn new(name: &str, program: PathBuf, runtime_args: &[String], root: PathBuf) -> Self {
        Self {
            name: name.to_owned(),
            keep: super::flavor::keeps(&program),
            state_dirs: program.file_name().is_some_and(|n| n == "runc"),
            program,
            global_args: runtime_args.to_vec(),
            root,
        }
    }

    /// Whether instances run with `run --keep` (the runtime supports it).
    pub fn keeps(&self) -> bool {
        self.keep
    }

    /// The same runtime, told whether its `run` supports `--keep`.
    pub fn with_keep(mut self, keep: bool) -> Self {
        self.keep = keep;
        self
    }

    /// The name as configured.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The binary.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The state root (`--root`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The global part of every command line: `--root <root> <runtime_args…>`.
    pub fn global_args(&self) -> Vec<String> {
        let mut args = vec![
            "--root".to_owned(),
            self.root.to_string_lossy().into_owned(),
        ];
        args.extend(self.global_args.iter().cloned());
        args
    }

    /// The command that runs a container in the foreground: `run [--keep] --bundle <dir> <id>`
    /// (`--keep` when the runtime supports it), stdin from `/dev/null`, stdout and stderr
    /// piped, a clean environment, and SIGKILL when the agent dies (`PR_SET_PDEATHSIG`; start it
    /// with [`crate::spawner::spawn`] so that this tracks the agent process). The
    /// container's own processes outlive a killed runtime (they are reparented); the agent's
    /// next start kills them with the dead agent's cgroup directory and deletes its runtime
    /// state (see `stale`).
    pub fn run_command(&self, bundle: &Path, id: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(self.global_args()).arg("run");
        if self.keep {
            cmd.arg("--keep");
        }
        cmd.arg("--bundle")
            .arg(bundle)
            .arg(id)
            .env_clear()
            .env("PATH", SEARCH_PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: runs in the child between fork and exec; prctl with plain integers is
        // async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// `<runtime> --version`, first line (`runc version 1.1.5` → `runc 1.1.5`).
    pub fn version(&self, timeout: Duration) -> Result<String, RuntimeError> {
        let mut cmd = Command::new(&self.program);
        cmd.arg("--version");
        let out = self.output(cmd, "--version", timeout)?;
        let first = out.lines().next().unwrap_or("").trim();
        if first.is_empty() {
            return Err(self.unexpected("--version", "no output".into()));
        }
        Ok(first.replacen(" version ", " ", 1))
    }

    /// Sends `signal` (`KILL`, `TERM`) to the container's process 1.
    pub fn kill(&self, id: &str, signal: &str) -> Result<(), RuntimeError> {
        self.output(self.command(&["kill", id, signal]), "kill", COMMAND_TIMEOUT)
            .map(drop)
    }

    /// `delete --force`: kills what still runs and removes the container's state and cgroups.
    /// A container that does not exist is fine.
    pub fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        match self.output(
            self.command(&["delete", "--force", id]),
            "delete",
            COMMAND_TIMEOUT,
        ) {
            Ok(_) => Ok(()),
            Err(RuntimeError::Failed { stderr, .. }) if says_missing(&stderr) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The container's state, `None` when the runtime does not know it.
    pub fn state(&self, id: &str) -> Result<Option<ContainerState>, RuntimeError> {
        match self.output(self.command(&["state", id]), "state", COMMAND_TIMEOUT) {
            Ok(json) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|e| self.unexpected("state", format!("{e}: {json}"))),
            Err(RuntimeError::Failed { stderr, .. }) if says_missing(&stderr) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Names in the state root starting with `prefix`: whatever the runtime still keeps of
    /// containers whose ids start so (every runtime keeps its state under `--root`, named by
    /// container id). Read from the directory, without running the runtime.
    pub fn state_entries(&self, prefix: &str) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut names: Vec<String> = dir
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(prefix))
            .collect();
        names.sort();
        names
    }

    /// Removes a container whose process has ended without running the runtime: for runc,
    /// whose whole state is `<root>/<id>/state.json`, that is what `runc delete` does for a
    /// stopped container built from our own bundles (cgroupfs driver, no hooks, no Intel RDT),
    /// apart from the cgroups, which the caller removes in every hierarchy anyway. Each runc
    /// process costs about 9 ms here, a third of a short container's whole life; this keeps
    /// them out of every trial's teardown. Returns `false` (nothing done) for other runtimes,
    /// for a state that cannot be read, and while the container's init still exists: then
    /// [`Runtime::delete`] it.
    pub fn remove_stopped(&self, id: &str) -> bool {
        if !self.state_dirs || id.is_empty() || id.contains('/') || id.starts_with('.') {
            return false;
        }
        let dir = self.root.join(id);
        let Some(state) = std::fs::read(dir.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<RuncState>(&b).ok())
        else {
            return false;
        };
        if state.init_process_pid > 0
            && crate::process_alive(state.init_process_pid, Some(state.init_process_start))
                .is_some()
        {
            return false;
        }
        std::fs::remove_dir_all(&dir).is_ok()
    }

    /// Ids of every container under this root.
    pub fn list(&self) -> Result<Vec<String>, RuntimeError> {
        if !self.root.exists() {
            return Ok(Vec::new());
        }
        let out = self.output(self.command(&["list", "--quiet"]), "list", COMMAND_TIMEOUT)?;
        Ok(out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(self.global_args()).args(args);
        cmd
    }

    fn unexpected(&self, op: &str, what: String) -> RuntimeError {
        RuntimeError::Output {
            name: self.name.clone(),
            op: op.to_owned(),
            what,
        }
    }

    /// Runs `cmd` with a clean environment, returns stdout; non-zero exit is [`RuntimeError::Failed`].
    fn output(
        &self,
        mut cmd: Command,
        op: &str,
        timeout: Duration,
    ) -> Result<String, RuntimeError> {
        cmd.env_clear()
            .env("PATH", SEARCH_PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| RuntimeError::Spawn {
            program: self.program.clone(),
            source,
        })?;
        // Read both pipes on threads so a chatty command cannot block on a full pipe.
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let out_t = std::thread::spawn(move || read_all(stdout.as_mut()));
        let err_t = std::thread::spawn(move || read_all(stderr.as_mut()));
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Ok(None) | Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(RuntimeError::Timeout {
                        name: self.name.clone(),
                        op: op.to_owned(),
                        timeout_ms: timeout.as_millis(),
                    });
                }
            }
        };
        let out = out_t.join().unwrap_or_default();
        let err = err_t.join().unwrap_or_default();
        if status.success() {
            Ok(out)
        } else {
            Err(RuntimeError::Failed {
                name: self.name.clone(),
                op: op.to_owned(),
                status: status.to_string(),
                stderr: last_lines(&err, 5),
            })
        }
    }
}

/// Whether a runtime's error text says the container does not exist.
fn says_missing(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    s.contains("does not exist") || s.contains("not exist") || s.contains("not found")
}

fn read_all(r: Option<&mut impl Read>) -> String {
    let mut buf = Vec::new();
    if let Some(r) = r {
        let _ = r.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {

    #[test]
    fn stopped_runc_state_is_removed_by_hand_a_running_one_is_not() {
        let root = tempfile::tempdir().unwrap();
        let rt = Runtime {
            name: "runc".into(),
            program: "/usr/sbin/runc".into(),
            global_args: Vec::new(),
            root: root.path().to_owned(),
            keep: true,
            state_dirs: true,
        };
        let state = |id: &str, pid: u32, start: u64| {
            let dir = root.path().join(id);
            std::fs::create_dir_all(&dir).unwrap();
            let json =
                format!(r#"{{"id":"{id}","init_process_pid":{pid},"init_process_start":{start}}}"#);
            std::fs::write(dir.join("state.json"), json).unwrap();
        };
        // Stopped: an init that has ended (a pid number reused since would not match the start).
        let mut ended = std::process::Command::new("true").spawn().unwrap();
        let ended_pid = ended.id();
        ended.wait().unwrap();
        state("t-i0", ended_pid, 1);
        // Running: this test's own process.
        let me = std::process::id();
        state("t-i1", me, crate::process_start_time(me).unwrap());
        // Unreadable state: left to the runtime.
        std::fs::create_dir_all(root.path().join("t-i2")).unwrap();
        std::fs::create_dir_all(root.path().join("other-i0")).unwrap();

        assert_eq!(rt.state_entries("t-i"), vec!["t-i0", "t-i1", "t-i2"]);
        assert!(rt.remove_stopped("t-i0"));
        assert!(!root.path().join("t-i0").exists());
        assert!(
            !rt.remove_stopped("t-i1"),
            "a running container is the runtime's to delete"
        );
        assert!(!rt.remove_stopped("t-i2"));
        assert!(!rt.remove_stopped("../t-i1"));
        assert_eq!(rt.state_entries("t-i"), vec!["t-i1", "t-i2"]);

        let other = Runtime {
            state_dirs: false,
            ..rt.clone()
        };
        state("t-i3", ended_pid, 1);
        assert!(
            !other.remove_stopped("t-i3"),
            "only runc's state layout is known"
        );
        assert!(root.path().join("t-i3").exists());
        let gone = Runtime {
            root: root.path().join("missing"),
            ..rt
        };
        assert!(gone.state_entries("t-i").is_empty());
    }

    use super::*;

    #[test]
    fn command_lines_carry_root_and_runtime_args() {
        let rt = Runtime::new(
            "sh",
            "/bin/sh".into(),
            &["--platform=ptrace".into()],
            "/state/rt".into(),
        )
        .with_keep(true);
        assert_eq!(
            rt.global_args(),
            ["--root", "/state/rt", "--platform=ptrace"]
        );
        let cmd = rt.run_command(Path::new("/b"), "id1");
        let args: Vec<String> = cmd
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--root",
                "/state/rt",
                "--platform=ptrace",
                "run",
                "--keep",
                "--bundle",
                "/b",
                "id1"
            ]
        );
        let cmd = rt.with_keep(false).run_command(Path::new("/b"), "id1");
        assert!(!cmd.as_std().get_args().any(|a| a == "--keep"));
    }

    #[test]
    fn failures_and_timeouts_are_reported() {
        // `sh` as a stand-in runtime: `sh --root … list --quiet` fails with a message.
        let tmp = tempfile::tempdir().unwrap();
        let rt = Runtime::new("sh", "/bin/sh".into(), &[], tmp.path().to_owned());
        let e = rt.list().unwrap_err();
        assert!(matches!(e, RuntimeError::Failed { .. }), "{e}");
        let mut cmd = Command::new("/bin/sleep");
        cmd.arg("5");
        let e = rt
            .output(cmd, "sleep", Duration::from_millis(50))
            .unwrap_err();
        assert!(matches!(e, RuntimeError::Timeout { .. }), "{e}");
    }
}
