//! A private `dockerd` that the agent (or a test) starts, owns and stops.
//!
//! It runs with everything under one directory of its own (`data/`, `exec/`, `docker.sock`,
//! `daemon.json`, `dockerd.log`) and touches nothing of the host's network: `--bridge=none`, no
//! iptables, no IP forwarding or masquerading, no userland proxy. It uses the cgroupfs driver, so
//! a container's relative `cgroup_parent` nests under the cgroup of the daemon, which is the
//! agent's own cgroup, since the agent started it. Its configuration file is our own `{}` (or
//! one that registers the installed extra runtimes), never `/etc/docker/daemon.json`.
//!
//! It gets `SIGTERM` when the thread that started it ends (`PR_SET_PDEATHSIG`), so start it
//! from an async task (a runtime worker thread), not from a blocking-pool thread. [`stop`]
//! (also on drop) sends `SIGTERM`, waits, then `SIGKILL`s the daemon, kills the `containerd`
//! and shims that it started for this directory if they outlived it, detaches any mount left
//! below the directory and removes it.
//!
//! [`stop`]: PrivateDaemon::stop

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::process_alive;
use isolab_host::mounts::{detach, mounts_under};
// `PATH` finds `dockerd`, and the daemon finds `containerd` and `runc` on it.
use isolab_host::which::{SEARCH_PATH, find_binary as find};

/// Extra OCI runtimes registered with a private daemon when installed, with their arguments:
/// gVisor on `ptrace` (works everywhere, also nested) with its own network stack off (containers
/// start with network `none`; runsc refuses the namespace Docker gives it otherwise). youki and
/// crun are left out: on cgroup v1 youki resolves a relative cgroup path from the hierarchy's
/// root (outside the agent's cgroup), and crun refuses hybrid hierarchies.
const EXTRA_RUNTIMES: &[(&str, &[&str])] = &[("runsc", &["--platform=ptrace", "--network=none"])];

/// What went wrong starting or stopping a private daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// `dockerd` is not installed.
    #[error("dockerd not found (`{name}`); ./bootstrap installs docker.io")]
    NotInstalled {
        /// The name or path looked for.
        name: String,
    },
    /// A file or directory of the daemon could not be made or removed.
    #[error("private dockerd: {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The daemon exited before it answered.
    #[error("private dockerd exited during start-up ({status}): {log}")]
    Exited {
        /// Its exit status.
        status: String,
        /// The last lines of its log.
        log: String,
    },
    /// The daemon did not answer in time (it was stopped).
    #[error("private dockerd did not answer on {} within {timeout_ms} ms: {log}", socket.display())]
    Timeout {
        /// Its socket.
        socket: PathBuf,
        /// The limit.
        timeout_ms: u128,
        /// The last lines of its log.
        log: String,
    },
    /// A socket of the daemon would not fit in a Unix socket address.
    #[error(
        "private dockerd: socket path {} is {len} bytes, over the {max} containerd allows; use a shorter --state-dir or --cgroup-prefix",
        path.display()
    )]
    SocketPath {
        /// The longest socket path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Processes of the daemon outlived `SIGKILL`.
    #[error("private dockerd processes still alive after SIGKILL: {pids:?}")]
    Survived {
        /// Their pids.
        pids: Vec<u32>,
    },
}

/// A `dockerd` this process started. Stopped on drop.
#[derive(Debug)]
pub struct PrivateDaemon {
    dir: PathBuf,
    socket: PathBuf,
    pid: u32,
    child: Mutex<Option<Child>>,
}

impl PrivateDaemon {
    /// Starts `dockerd` (a name on `PATH` or a path) with all its state in `dir` (made if
    /// missing; it must not be used by another daemon) and waits until it answers a ping,
    /// at most `timeout`.
    pub async fn start(dockerd: &str, dir: &Path, timeout: Duration) -> Result<Self, DaemonError> {
        let program = find(dockerd).ok_or_else(|| DaemonError::NotInstalled {
            name: dockerd.to_owned(),
        })?;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| DaemonError::Io { path, source }
        };
        check_socket_path(dir)?;
        for sub in ["data", EXEC] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(io(&d))?;
        }
        let config = dir.join("daemon.json");
        std::fs::write(&config, daemon_json()).map_err(io(&config))?;
        let log_path = dir.join("dockerd.log");
        let log = std::fs::File::create(&log_path).map_err(io(&log_path))?;
        let log_err = log.try_clone().map_err(io(&log_path))?;
        let socket = dir.join("docker.sock");
        let mut cmd = Command::new(&program);
        cmd.args(daemon_args(dir))
            .env_clear()
            .env("PATH", SEARCH_PATH)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        // SAFETY: runs in the child between fork and exec; prctl with integer arguments is
        // async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(io(&program))?;
        let pid = child.id();
        tracing::info!(pid, dir = %dir.display(), "started a private dockerd");
        let daemon = Self {
            dir: dir.to_owned(),
            socket,
            pid,
            child: Mutex::new(Some(child)),
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = daemon.exited() {
                let log = daemon.log_tail();
                let _ = daemon.stop(Duration::from_secs(1));
                return Err(DaemonError::Exited { status, log });
            }
            if daemon.socket.exists() && super::engine::ping(&daemon.socket).await.is_ok() {
                return Ok(daemon);
            }
            if Instant::now() >= deadline {
                let log = daemon.log_tail();
                let _ = daemon.stop(Duration::from_secs(5));
                return Err(DaemonError::Timeout {
                    socket: daemon.socket.clone(),
                    timeout_ms: timeout.as_millis(),
                    log,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its Engine API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.join("dockerd.log")) {
            let _ = f.read_to_string(&mut text);
        }
        crate::last_lines(&text, 3)
    }

    /// The daemon's exit status if it has ended.
    fn exited(&self) -> Option<String> {
        let mut guard = self
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let child = guard.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("wait failed: {e}")),
        }
    }

    /// Stops the daemon (`SIGTERM`, then `SIGKILL` after `grace`), kills what it started for
    /// this directory if it outlived it, detaches mounts left below the directory and removes
    /// it. Blocks; idempotent.
    pub fn stop(&self, grace: Duration) -> Result<(), DaemonError> {
        let child = self
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(mut child) = child {
            signal(self.pid, libc::SIGTERM);
            if !wait_child(&mut child, grace) {
                tracing::warn!(
                    pid = self.pid,
                    "private dockerd ignored SIGTERM; killing it"
                );
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let stragglers = self.stragglers();
        for &pid in &stragglers {
            signal(pid, libc::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline
            && stragglers.iter().any(|&p| process_alive(p, None).is_some())
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let alive: Vec<u32> = stragglers
            .into_iter()
            .filter(|&p| process_alive(p, None).is_some())
            .collect();
        if !alive.is_empty() {
            return Err(DaemonError::Survived { pids: alive });
        }
        for mount in mounts_under(&self.dir) {
            detach(&mount);
        }
        if self.dir.exists() && mounts_under(&self.dir).is_empty() {
            std::fs::remove_dir_all(&self.dir).map_err(|source| DaemonError::Io {
                path: self.dir.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// `containerd` and shims started for this daemon's directory, still alive.
    fn stragglers(&self) -> Vec<u32> {
        let needle = self
            .dir
            .join(EXEC)
            .to_string_lossy()
            .into_owned()
            .into_bytes();
        isolab_host::leaks::processes_naming(&needle)
    }
}

impl Drop for PrivateDaemon {
    fn drop(&mut self) {
        if let Err(e) = self.stop(Duration::from_secs(10)) {
            tracing::warn!("stopping the private dockerd: {e}");
        }
    }
}

/// The daemon's exec root below its directory: one letter, because the sockets of the daemon's
/// `containerd` live below it and their paths are limited (see [`check_socket_path`]).
const EXEC: &str = "x";

/// The longest socket the daemon makes below `dir` (its `containerd`'s debug socket) must be
/// at most 104 bytes (`containerd` refuses longer ones; `sockaddr_un` holds 107), or the daemon
/// fails with a timeout waiting for `containerd`.
fn check_socket_path(dir: &Path) -> Result<(), DaemonError> {
    const MAX: usize = 104;
    let path = dir.join(EXEC).join("containerd/containerd-debug.sock");
    let len = path.as_os_str().len();
    if len > MAX {
        return Err(DaemonError::SocketPath {
            path,
            len,
            max: MAX,
        });
    }
    Ok(())
}

/// The daemon's command line (after the program).
fn daemon_args(dir: &Path) -> Vec<String> {
    let p = |sub: &str| dir.join(sub).to_string_lossy().into_owned();
    vec![
        format!("--config-file={}", p("daemon.json")),
        format!("--data-root={}", p("data")),
        format!("--exec-root={}", p(EXEC)),
        format!("--pidfile={}", p("dockerd.pid")),
        format!("--host=unix://{}", p("docker.sock")),
        "--bridge=none".into(),
        "--iptables=false".into(),
        "--ip6tables=false".into(),
        "--ip-forward=false".into(),
        "--ip-masq=false".into(),
        "--userland-proxy=false".into(),
        "--exec-opt=native.cgroupdriver=cgroupfs".into(),
        "--log-level=warn".into(),
    ]
}

/// `daemon.json`: the installed extra runtimes (runsc with ptrace, which works everywhere).
fn daemon_json() -> String {
    let runtimes: serde_json::Map<String, serde_json::Value> = EXTRA_RUNTIMES
        .iter()
        .filter_map(|(name, args)| {
            let path = find(name)?;
            Some((
                (*name).to_owned(),
                serde_json::json!({ "path": path, "runtimeArgs": args }),
            ))
        })
        .collect();
    serde_json::json!({ "runtimes": runtimes }).to_string()
}

fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill has no memory preconditions; the pid is one we started or found by its
    // command line naming our own directory.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Waits up to `timeout` for `child` to end; true when it did (and was reaped).
fn wait_child(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() >= deadline => return false,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_path_over_the_unix_limit_is_named() {
        // The longest default: the largest pid, ten digits of start ticks, `dk` (see
        // `DockerBackend::new`).
        let ok = Path::new("/var/lib/isolab/containers/isolab-agent-4194304.9999999999-0/dk");
        assert!(check_socket_path(ok).is_ok());
        let long = Path::new("/var/lib/isolab")
            .join("x".repeat(60))
            .join("dockerd");
        let e = check_socket_path(&long).unwrap_err().to_string();
        assert!(
            e.contains("containerd-debug.sock") && e.contains("--state-dir"),
            "{e}"
        );
    }

    #[test]
    fn the_daemon_keeps_off_the_host_network_and_uses_cgroupfs() {
        let args = daemon_args(Path::new("/state/d"));
        for flag in [
            "--bridge=none",
            "--iptables=false",
            "--ip-forward=false",
            "--ip-masq=false",
        ] {
            assert!(
                args.iter().any(|a| a == flag),
                "{flag} missing from {args:?}"
            );
        }
        assert!(args.contains(&"--exec-opt=native.cgroupdriver=cgroupfs".to_owned()));
        assert!(args.contains(&"--host=unix:///state/d/docker.sock".to_owned()));
        assert!(args.contains(&"--config-file=/state/d/daemon.json".to_owned()));
        let json: serde_json::Value = serde_json::from_str(&daemon_json()).unwrap();
        assert!(json["runtimes"].is_object(), "{json}");
    }

    #[test]
    fn a_missing_dockerd_is_named() {
        assert!(find("isolab-no-such-dockerd").is_none());
        assert!(find("/nonexistent/dockerd").is_none());
    }
}
