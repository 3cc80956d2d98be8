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
