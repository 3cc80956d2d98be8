//! Starting workload processes: a clean environment, piped output, the cgroup joined between
//! fork and exec, SIGKILL if the agent dies (forked from a dedicated spawner thread, see
//! [`crate::spawner`]), and the pid registered against the orphan reaper.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use crate::TRIAL_ENV;
use crate::{InstanceExit, InstanceHandle, LineStream, lines};
use isolab_host::cgroup::JoinTarget;
use isolab_host::reap;

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

/// `TMPDIR` and the working directory of an instance: its scratch tmpfs
/// ([`crate::scratch`]).
fn in_scratch(cmd: &mut Command, scratch: &Path) {
    cmd.env("TMPDIR", scratch).current_dir(scratch);
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

/// Lines buffered between the spawner thread and the runner, per stream.
const LINE_BUFFER: usize = 1024;

/// Forwards a line stream into a channel (on the spawner's runtime).
async fn forward(mut lines: LineStream, tx: mpsc::Sender<std::io::Result<String>>) {
    while let Some(line) = lines.next().await {
        if tx.send(line).await.is_err() {
            break;
        }
    }
}

/// What the spawner hands back for a started child.
type Started = (
    Option<u32>,
    mpsc::Receiver<std::io::Result<String>>,
    mpsc::Receiver<std::io::Result<String>>,
    oneshot::Receiver<InstanceExit>,
);

/// Starts one instance inside the cgroup of `join`, forked by the spawner thread.
pub(super) async fn spawn_instance(
    program: &Path,
    args: &[String],
    index: u32,
    trial_slug: &str,
    scratch: &Path,
    join: JoinTarget,
) -> std::io::Result<InstanceHandle> {
    let mut cmd = command(program, args);
    in_scratch(&mut cmd, scratch);
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
    let (started_tx, started_rx) = oneshot::channel::<std::io::Result<Started>>();
    crate::spawner::handle()?.spawn(async move {
        let mut child = match spawn_registered(&mut cmd) {
            Ok(child) => child,
            Err(e) => {
                let _ = started_tx.send(Err(e));
                return;
            }
        };
        let registered = Registered(child.id());
        let (out_tx, out_rx) = mpsc::channel(LINE_BUFFER);
        let (err_tx, err_rx) = mpsc::channel(LINE_BUFFER);
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(forward(lines(stdout), out_tx));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(forward(lines(stderr), err_tx));
        }
        let (mut exit_tx, exit_rx) = oneshot::channel();
        if started_tx
            .send(Ok((child.id(), out_rx, err_rx, exit_rx)))
            .is_err()
        {
            return; // nobody wants it: dropping `child` kills it
        }
        tokio::select! {
            status = child.wait() => {
                let exit = status.map_or_else(
                    |e| InstanceExit::Lost(format!("wait failed: {e}")),
                    InstanceExit::from_status,
                );
                drop(registered);
                let _ = exit_tx.send(exit);
            }
            () = exit_tx.closed() => {
                // The handle was dropped: kill, as `kill_on_drop` would, and reap.
                let _ = child.start_kill();
                let _ = child.wait().await;
                drop(registered);
            }
        }
    });
    let (pid, out_rx, err_rx, exit_rx) = started_rx
        .await
        .map_err(|_| std::io::Error::other("spawner task ended"))??;
    let exit = Box::pin(async move {
        exit_rx
            .await
            .unwrap_or_else(|_| InstanceExit::Lost("spawner task ended".into()))
    });
    Ok(InstanceHandle {
        index,
        pid,
        stdout: Box::pin(ReceiverStream::new(out_rx)),
        stderr: Box::pin(ReceiverStream::new(err_rx)),
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
