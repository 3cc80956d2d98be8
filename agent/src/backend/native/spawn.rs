//! Starting workload processes: a clean environment, piped output, the cgroup joined between
//! fork and exec, SIGKILL if the agent dies, and the pid registered against the orphan reaper.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::reap;
use crate::backend::conformance::TRIAL_ENV;
use crate::backend::{InstanceExit, InstanceHandle, lines};
use crate::cgroup::JoinTarget;

/// `PATH` given to workloads (their environment is otherwise empty, for reproducibility).
const WORKLOAD_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// A command for the workload binary with a clean environment and piped output.
fn command(program: &Path, args: &[String]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", WORKLOAD_PATH)
        .env("LANG", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(tmp) = std::env::var_os("TMPDIR") {
        cmd.env("TMPDIR", tmp);
    }
    cmd
}

/// Spawns while holding the reaper's registry, so the reaper never takes this child's status.
fn spawn_registered(cmd: &mut Command) -> std::io::Result<Child> {
    reap::spawn_registered(|| cmd.spawn(), Child::id)
}

/// Unregisters a direct child when its waiter is done (or dropped).
struct Registered(Option<u32>);

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            reap::unregister(pid);
        }
    }
}

/// Starts one instance inside the cgroup of `join`.
pub(super) fn spawn_instance(
    program: &Path,
    args: &[String],
    index: u32,
    trial_slug: &str,
    join: JoinTarget,
) -> std::io::Result<InstanceHandle> {
    let mut cmd = command(program, args);
    cmd.env("ISOLAB_INSTANCE", index.to_string())
        .env(TRIAL_ENV, trial_slug);
    // SAFETY: the hook runs in the child between fork and exec and only makes async-signal-safe
    // calls: `join_current` is open/write/close on pre-built C strings, and prctl takes plain
    // integers. Nothing allocates or takes a lock.
    unsafe {
        cmd.pre_exec(move || {
            join.join_current()?;
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = spawn_registered(&mut cmd)?;
    let pid = child.id();
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("stdout not piped"))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| std::io::Error::other("stderr not piped"))?;
    let registered = Registered(pid);
    let exit = Box::pin(async move {
        let exit = match child.wait().await {
            Ok(status) => InstanceExit::from_status(status),
            Err(e) => InstanceExit::Lost(format!("wait failed: {e}")),
        };
        drop(registered);
        exit
    });
    Ok(InstanceHandle {
        index,
        pid,
        stdout: lines(stdout),
        stderr: lines(stderr),
        exit,
    })
}

/// Runs `program --list` and checks that it succeeds, as the probe does.
pub(super) async fn run_list(program: &Path, timeout: Duration) -> Result<(), String> {
    let mut cmd = command(program, &["--list".to_owned()]);
    let child = spawn_registered(&mut cmd)
        .map_err(|e| format!("cannot run {} --list: {e}", program.display()))?;
    let registered = Registered(child.id());
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| format!("{} --list did not finish in {timeout:?}", program.display()))?
        .map_err(|e| format!("{} --list: {e}", program.display()))?;
    drop(registered);
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(format!(
            "{} --list failed ({}): {}",
            program.display(),
            output.status,
            stderr.trim()
        ))
    }
}
