//! Starting one VMM process: its own cgroup joined between fork and exec, SIGKILL if the agent
//! dies, the serial console split into samples and log lines, and an exit that says what the
//! guest reported rather than what QEMU returned.

use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot};

use super::console::{self, ConsoleSummary, GuestEnd};
use super::error::VmError;
use super::qemu::VmSpec;
use super::vmm::{Vmm, VmmError};
use crate::spawner;
use crate::{InstanceExit, InstanceHandle, lines, process_alive, process_start_time};
use isolab_host::cgroup::JoinTarget;

/// QEMU stderr lines kept for the exit message.
const QEMU_TAIL_LINES: usize = 3;
/// How long killed VM processes get to disappear.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// A started VMM process, identified for killing and leak checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmProcess {
    /// Its pid.
    pub pid: u32,
    /// Its start time (see [`crate::process_start_time`]).
    pub start_time: Option<u64>,
}

/// Why a VM could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The VMM refuses the spec.
    #[error(transparent)]
    Vmm(#[from] VmmError),
    /// The process did not start.
    #[error("starting {}: {source}", program.display())]
    Spawn {
        /// The VMM binary.
        program: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// What a VM is started with beyond its [`VmSpec`].
#[derive(Debug, Default)]
pub struct LaunchOptions {
    /// The cgroup the VMM joins before exec.
    pub join: Option<JoinTarget>,
    /// Fires when the guest answers the probe.
    pub on_ready: Option<oneshot::Sender<()>>,
    /// Added to the VMM's (otherwise clean) environment.
    pub env: Vec<(&'static str, String)>,
    /// A network namespace (`/run/netns/<name>`) the VMM joins before exec.
    pub netns: Option<std::path::PathBuf>,
}

/// Starts the VM of `spec` as instance `index` with `opts`. The VMM is forked, waited for and
/// read on the [`spawner`] thread.
pub async fn spawn_vm(
    vmm: &Vmm,
    spec: &VmSpec,
    index: u32,
    opts: LaunchOptions,
) -> Result<(InstanceHandle, VmProcess), LaunchError> {
    let LaunchOptions {
        join,
        on_ready,
        env,
        netns,
    } = opts;
    let (program, args) = vmm.command(spec)?;
    let mut cmd = Command::new(&program);
    cmd.args(&args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LANG", "C")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let netns_fd = match &netns {
        Some(path) => Some(
            std::fs::File::open(path).map_err(|source| LaunchError::Spawn {
                program: program.clone(),
                source: std::io::Error::new(source.kind(), format!("{}: {source}", path.display())),
            })?,
        ),
        None => None,
    };
    // SAFETY: the hook runs in the child between fork and exec and only makes async-signal-safe
    // calls: `join_current` is open/write/close on pre-built C strings, setns takes a descriptor
    // opened before the fork (close-on-exec, so QEMU does not inherit it), prctl takes integers.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(join) = &join {
                join.join_current()?;
            }
            if let Some(ns) = &netns_fd
                && libc::setns(std::os::fd::AsRawFd::as_raw_fd(ns), libc::CLONE_NEWNET) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawn_err = |source| LaunchError::Spawn {
        program: program.clone(),
        source,
    };
    let (started_tx, started_rx) = oneshot::channel();
    let vmm_name = vmm.name();
    spawner::handle()
        .map_err(spawn_err)?
        .spawn(async move { drop(started_tx.send(start(cmd, index, on_ready, vmm_name))) });
    started_rx
        .await
        .map_err(|_| spawn_err(std::io::Error::other("the spawner thread is gone")))?
        .map_err(spawn_err)
}

/// Forks `cmd` and wires its output and exit up; runs on the spawner's runtime.
fn start(
    mut cmd: Command,
    index: u32,
    on_ready: Option<oneshot::Sender<()>>,
    vmm_name: &'static str,
) -> std::io::Result<(InstanceHandle, VmProcess)> {
    let mut child = cmd.spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| std::io::Error::other("exited at once"))?;
    let process = VmProcess {
        pid,
        start_time: process_start_time(pid),
    };
    let missing = |what| std::io::Error::other(format!("{what} not piped"));
    let stdout = child.stdout.take().ok_or_else(|| missing("stdout"))?;
    let stderr = child.stderr.take().ok_or_else(|| missing("stderr"))?;

    let console = console::split(lines(stdout), on_ready);
    // QEMU's own messages join the console's log lines, and the last few are kept for the exit.
    let (qemu_tx, qemu_rx) = mpsc::channel::<std::io::Result<String>>(64);
    let qemu_tail = tokio::spawn(async move {
        let mut stderr = lines(stderr);
        let mut tail = Vec::new();
        while let Some(line) = stderr.next().await {
            let Ok(line) = line else { break };
            if tail.len() == QEMU_TAIL_LINES {
                tail.remove(0);
            }
            tail.push(line.clone());
            let _ = qemu_tx.send(Ok(format!("{vmm_name}: {line}"))).await;
        }
        tail
    });
    let logs = futures::stream::select(
        console.logs,
        tokio_stream::wrappers::ReceiverStream::new(qemu_rx),
    );
    let summary = console.summary;
    let (exit_tx, exit_rx) = oneshot::channel();
    tokio::spawn(async move {
        let status = child.wait().await;
        let summary = summary.await.unwrap_or_default();
        let tail = qemu_tail.await.unwrap_or_default();
        let exit = match status {
            Ok(status) => exit_of(status, &summary, &tail),
            Err(e) => InstanceExit::Lost(format!("waiting for the VM failed: {e}")),
        };
        let _ = exit_tx.send(exit);
    });
    let exit = Box::pin(async move {
        exit_rx
            .await
            .unwrap_or_else(|_| InstanceExit::Lost("the spawner thread is gone".into()))
    });
    let handle = InstanceHandle {
        index,
        pid: Some(pid),
        stdout: console.samples,
        stderr: Box::pin(logs),
        exit,
    };
    Ok((handle, process))
}

/// SIGKILLs every VM process that is still the one we started, and waits until they are gone.
pub async fn kill_vms(processes: &[VmProcess]) -> Result<(), VmError> {
    for p in processes {
        if process_alive(p.pid, p.start_time).is_some()
            && let Ok(pid) = i32::try_from(p.pid)
        {
            // SAFETY: kill takes plain integers; the pid is a QEMU we started and that was
            // checked (pid and start time) to be alive just now.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let deadline = tokio::time::Instant::now() + KILL_TIMEOUT;
    loop {
        let alive: Vec<u32> = processes
            .iter()
            .filter(|p| process_alive(p.pid, p.start_time).is_some())
            .map(|p| p.pid)
            .collect();
        if alive.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(VmError::Unkillable { pids: alive });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The instance's exit: the guest's end record when it gave one; otherwise what went wrong.
pub fn exit_of(
    status: std::process::ExitStatus,
    summary: &ConsoleSummary,
    qemu_tail: &[String],
) -> InstanceExit {
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = status.signal() {
        // SIGKILL is the agent's own stop; any other signal is QEMU crashing (an assertion on a
        // KVM it cannot drive, say), and its last words say why.
        if sig == libc::SIGKILL || qemu_tail.is_empty() {
            return InstanceExit::Signaled(sig);
        }
        return InstanceExit::Lost(format!(
            "QEMU died of signal {sig}: {}",
            qemu_tail.join(" | ")
        ));
    }
    match &summary.end {
        Some(GuestEnd::Exited(code)) => InstanceExit::Exited(*code),
        Some(GuestEnd::Signaled(sig)) => InstanceExit::Signaled(*sig),
        Some(GuestEnd::InitError(msg)) => {
            InstanceExit::Lost(format!("the guest's /init failed: {msg}"))
        }
        None if status.success() => InstanceExit::Lost(format!(
            "the guest stopped without an end record (kernel panic or crash?); \
             last console lines: {}",
            summary.log_tail.join(" | ")
        )),
        None => InstanceExit::Lost(format!(
            "QEMU failed ({status}): {}",
            if qemu_tail.is_empty() {
                "no message".to_owned()
            } else {
                qemu_tail.join(" | ")
            }
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn exit_prefers_the_guest_record() {
        let ok = std::process::ExitStatus::from_raw(0);
        let failed = std::process::ExitStatus::from_raw(1 << 8);
        let killed = std::process::ExitStatus::from_raw(9);
        let with = |end| ConsoleSummary {
            end,
            ..ConsoleSummary::default()
        };
        assert_eq!(
            exit_of(ok, &with(Some(GuestEnd::Exited(0))), &[]),
            InstanceExit::Exited(0)
        );
        assert_eq!(
            exit_of(ok, &with(Some(GuestEnd::Exited(2))), &[]),
            InstanceExit::Exited(2)
        );
        assert_eq!(
            exit_of(ok, &with(Some(GuestEnd::Signaled(9))), &[]),
            InstanceExit::Signaled(9)
        );
        assert_eq!(
            exit_of(killed, &with(Some(GuestEnd::Exited(0))), &[]),
            InstanceExit::Signaled(9)
        );
        let aborted = std::process::ExitStatus::from_raw(6);
        let assertion =
            vec!["qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69".to_owned()];
        let InstanceExit::Lost(why) = exit_of(aborted, &with(None), &assertion) else {
            panic!("a crashed QEMU is not a killed one")
        };
        assert!(why.contains("signal 6") && why.contains("MSR"), "{why}");
        let InstanceExit::Lost(why) = exit_of(
            ok,
            &with(Some(GuestEnd::InitError("no workload".into()))),
            &[],
        ) else {
            panic!("init error is not an exit code");
        };
        assert!(why.contains("no workload"));
        let InstanceExit::Lost(why) = exit_of(ok, &with(None), &[]) else {
            panic!()
        };
        assert!(why.contains("without an end record"));
        let tail = vec![
            "qemu-system-x86_64: cannot set up guest memory 'microvm.ram': Cannot allocate memory"
                .to_owned(),
        ];
        let InstanceExit::Lost(why) = exit_of(failed, &with(None), &tail) else {
            panic!()
        };
        assert!(why.contains("cannot set up guest memory"), "{why}");
    }
}
