//! The thread that forks every process a backend starts itself and that must die with the
//! agent (native workload processes, QEMU).
//!
//! `PR_SET_PDEATHSIG` (SIGKILL to the child when the agent dies) fires when the *thread* that
//! forked the child ends, not the process. Runtime workers can be retired (`block_in_place`) and
//! blocking-pool threads end after idling, so forking from them would kill a running instance at
//! a random moment. One thread, alive for the whole process, with its own small runtime, forks,
//! waits for and reads every such child.

use std::sync::OnceLock;

/// The spawner's runtime (started on first use).
pub fn handle() -> std::io::Result<&'static tokio::runtime::Handle> {
    static SPAWNER: OnceLock<Result<tokio::runtime::Handle, String>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            let started = std::thread::Builder::new()
                .name("isolab-spawner".into())
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => {
                            let _ = tx.send(Ok(rt.handle().clone()));
                            rt.block_on(std::future::pending::<()>());
                        }
                        Err(e) => {
                            let _ = tx.send(Err(format!("spawner runtime: {e}")));
                        }
                    }
                });
            match started {
                Ok(_) => rx
                    .recv()
                    .unwrap_or_else(|_| Err("spawner thread died".into())),
                Err(e) => Err(format!("spawner thread: {e}")),
            }
        })
        .as_ref()
        .map_err(|e| std::io::Error::other(e.clone()))
}

/// A child forked on the spawner thread: its pid, pipes and exit status.
#[derive(Debug)]
pub struct SpawnedChild {
    /// Its pid (`None` if it was reaped at once).
    pub pid: Option<u32>,
    /// Its stdout, when piped.
    pub stdout: Option<tokio::process::ChildStdout>,
    /// Its stderr, when piped.
    pub stderr: Option<tokio::process::ChildStderr>,
    /// Its exit status, once the spawner reaped it.
    pub exit: tokio::sync::oneshot::Receiver<std::io::Result<std::process::ExitStatus>>,
}

impl SpawnedChild {
    /// The instance handle of a runtime process forked here, as
    /// [`crate::InstanceHandle::of_runtime_child`] makes one of a child forked elsewhere: its
    /// pipes as line streams (`stderr` wraps the error stream), its exit from the status.
    pub fn into_runtime_handle(
        self,
        index: u32,
        runtime: &str,
        stderr: impl FnOnce(crate::LineStream) -> crate::LineStream,
    ) -> std::io::Result<crate::InstanceHandle> {
        let (Some(out), Some(err)) = (self.stdout, self.stderr) else {
            // Both are piped by whoever made the command; without them there is nothing to
            // measure.
            if let Some(pid) = self.pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid.cast_signed()),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            return Err(std::io::Error::other("stdout or stderr not piped"));
        };
        let runtime = runtime.to_owned();
        let exit_rx = self.exit;
        let exit = Box::pin(async move {
            match exit_rx.await {
                Ok(Ok(status)) => crate::InstanceExit::from_runtime_status(status),
                Ok(Err(e)) => {
                    crate::InstanceExit::Lost(format!("waiting for {runtime} failed: {e}"))
                }
                Err(_) => crate::InstanceExit::Lost("the spawner thread is gone".into()),
            }
        });
        Ok(crate::InstanceHandle {
            index,
            pid: self.pid,
            stdout: crate::lines(out),
            stderr: stderr(crate::lines(err)),
            exit,
        })
    }
}

/// Forks `cmd` on the spawner thread and reaps it there, so that a `PR_SET_PDEATHSIG` set in
/// its `pre_exec` fires when the agent dies, never when some worker thread ends.
pub async fn spawn(mut cmd: tokio::process::Command) -> std::io::Result<SpawnedChild> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    handle()?.spawn(async move {
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let (exit_tx, exit_rx) = tokio::sync::oneshot::channel();
        let spawned = SpawnedChild {
            pid: child.id(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            exit: exit_rx,
        };
        let _ = tx.send(Ok(spawned));
        let _ = exit_tx.send(child.wait().await);
    });
    rx.await
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_spawner_runs_tasks_on_its_own_thread() {
        let here = std::thread::current().id();
        let there = super::handle()
            .unwrap()
            .spawn(async { std::thread::current().id() })
            .await
            .unwrap();
        assert_ne!(here, there);
        let again = super::handle()
            .unwrap()
            .spawn(async { std::thread::current().id() })
            .await
            .unwrap();
        assert_eq!(there, again, "one thread for every spawn");
    }
}
