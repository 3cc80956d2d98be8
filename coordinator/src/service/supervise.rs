//! Supervision of the service's run queue.
//!
//! Each run executes in a task of its own, so a panic in one run (a bug, never an input the
//! service should accept) ends that run as an `error` with the panic's message, and the queue
//! goes on to the next run instead of stopping silently with every later submission queued
//! forever. The queue task itself is restarted if it dies ([`super::core::ServiceCore::supervise_queue`]).
//! The executor is a seam for tests: production always uses [`crate::run::run`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;

use crate::run::{self, RunOptions, RunOutcome};

/// The future an executor returns: the run's outcome, or why it could not run.
pub(crate) type RunFuture = Pin<Box<dyn Future<Output = Result<RunOutcome, String>> + Send>>;

/// What executes one run; [`Executor::default`] is [`crate::run::run`].
#[derive(Clone)]
pub(crate) struct Executor(
    Arc<dyn Fn(RunOptions, watch::Receiver<bool>) -> RunFuture + Send + Sync>,
);

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Executor")
    }
}

impl Default for Executor {
    fn default() -> Self {
        Self(Arc::new(|opts, cancel| {
            Box::pin(async move { run::run(&opts, cancel).await.map_err(|e| e.to_string()) })
        }))
    }
}

impl Executor {
    /// An executor calling `f` (tests).
    #[cfg(test)]
    pub(crate) fn new(
        f: impl Fn(RunOptions, watch::Receiver<bool>) -> RunFuture + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(f))
    }

    /// Runs one run in its own task; a panic becomes an error naming it.
    pub(crate) async fn execute(
        &self,
        opts: RunOptions,
        cancel: watch::Receiver<bool>,
    ) -> Result<RunOutcome, String> {
        match tokio::spawn((self.0)(opts, cancel)).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => Err(format!(
                "internal error: the run panicked ({}); the service goes on with the next run",
                panic_message(e.into_panic().as_ref())
            )),
            Err(_) => Err("internal error: the run's task was cancelled".to_owned()),
        }
    }
}

/// The text of a panic payload (`&str` or `String`), else a placeholder.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic payload".to_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::service::core::{RunPhase, ServiceConfig, ServiceCore, SubmitRequest};

    const PIPELINE: &str = "apiVersion: isolab/v1\nkind: Pipeline\nname: supervised\n\
        defaults: { repetitions: 1, warmup: 0, duration: 100ms }\n\
        platforms:\n  native: { backend: native }\n\
        experiments:\n  - name: micro\n    analysis: overhead\n    platforms: [native]\n\
        \x20   workloads: [cpu_spin]\n";

    fn submit(core: &ServiceCore) -> String {
        core.submit(SubmitRequest {
            pipeline_yaml: PIPELINE.to_owned(),
            file_name: "p.yaml".to_owned(),
            ..SubmitRequest::default()
        })
        .expect("valid pipeline")
        .run_id
    }

    async fn wait_until_done(core: &ServiceCore, n: usize) -> Vec<crate::service::core::RunInfo> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let runs = core.list();
            let done = runs
                .iter()
                .filter(|r| !matches!(r.phase, RunPhase::Queued | RunPhase::Running))
                .count();
            if done >= n || tokio::time::Instant::now() > deadline {
                return runs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_panicking_run_ends_as_an_error_and_the_queue_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let calls = Arc::new(Mutex::new(Vec::<String>::new()));
        let seen = calls.clone();
        let results = dir.path().to_owned();
        let exec = Executor::new(move |opts, _cancel| {
            let id = opts.run_id.clone().unwrap_or_default();
            let n = {
                let mut c = seen.lock().unwrap();
                c.push(id);
                c.len()
            };
            let run_dir = results.join(format!("run{n}"));
            Box::pin(async move {
                assert!(n != 1, "a bug in the first run");
                Ok(RunOutcome {
                    run_dir,
                    ok: 1,
                    failed: 0,
                    not_run: 0,
                })
            })
        });
        let core = ServiceCore::with_executor(
            ServiceConfig {
                results: dir.path().to_owned(),
                ..ServiceConfig::default()
            },
            exec,
        );
        let first = submit(&core);
        let second = submit(&core);
        let queue = tokio::spawn({
            let core = core.clone();
            async move { core.supervise_queue().await }
        });
        let runs = wait_until_done(&core, 2).await;
        assert_eq!(*calls.lock().unwrap(), [first.clone(), second.clone()]);
        let by_id = |id: &str| runs.iter().find(|r| r.run_id == id).unwrap().clone();
        let first = by_id(&first);
        assert_eq!(first.phase, RunPhase::Error);
        let msg = first.error.unwrap_or_default();
        assert!(
            msg.contains("panicked") && msg.contains("a bug in the first run"),
            "{msg}"
        );
        let second = by_id(&second);
        assert!(
            !matches!(
                second.phase,
                RunPhase::Queued | RunPhase::Running | RunPhase::Error
            ),
            "the second run was executed: {second:?}"
        );
        assert_eq!(second.ok, 1);
        core.shutdown(Duration::from_secs(1)).await;
        tokio::time::timeout(Duration::from_secs(5), queue)
            .await
            .expect("the queue ends after shutdown")
            .unwrap();
    }

    #[test]
    fn panic_messages_are_read_from_both_payload_kinds() {
        let s: Box<dyn std::any::Any + Send> = Box::new("static");
        assert_eq!(panic_message(s.as_ref()), "static");
        let s: Box<dyn std::any::Any + Send> = Box::new(String::from("owned"));
        assert_eq!(panic_message(s.as_ref()), "owned");
        let s: Box<dyn std::any::Any + Send> = Box::new(7_u8);
        assert_eq!(panic_message(s.as_ref()), "a non-text panic payload");
    }
}
