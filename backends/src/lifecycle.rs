//! [`Lifecycle`]: one trial's life on one backend, with the cgroups owned here and not by the
//! backend.
//!
//! prepare: the backend's [`Backend::cgroup_plan`] → [`CgroupEngine::create`] (trial and
//! instance cgroups, limits written once) → [`Backend::prepare`] (its own resources; on error
//! the cgroups are removed again). start: [`Backend::start`]. stats: [`TrialCgroups::stats`].
//! stop: [`TrialCgroups::kill`], then [`Backend::stop`]. teardown: stop,
//! [`TrialCgroups::kill_trial`], [`Backend::teardown`],
//! [`TrialCgroups::destroy`], then the leftover scan of both; an error of teardown is logged,
//! and recorded in the report only when something was indeed left (a warning about a
//! directory that is gone anyway fails no trial).

use std::sync::Arc;

use isolab_host::leaks::{Leak, LeakReport};

use crate::{Backend, Launch, TrialContext};
use isolab_host::cgroup::{CgroupEngine, CgroupStats, TrialCgroupError, TrialCgroups};

/// What went wrong in a trial's life: the backend's own error, or the cgroups'.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError<E: std::error::Error + 'static> {
    /// The backend's.
    #[error(transparent)]
    Backend(E),
    /// The trial's cgroups'.
    #[error(transparent)]
    Cgroups(#[from] TrialCgroupError),
}

/// A trial prepared on backend `B`: its cgroups and the backend's own state.
#[derive(Debug)]
pub struct Prepared<P> {
    /// The trial attempt.
    pub ctx: TrialContext,
    /// Its cgroups.
    pub cgroups: TrialCgroups,
    /// The backend's state.
    pub backend: P,
}

/// Drives backend `B` through trials.
#[derive(Debug)]
pub struct Lifecycle<'a, B>(pub &'a B);

impl<B: Backend> Lifecycle<'_, B> {
    fn cgroup_engine(&self) -> Result<&Arc<CgroupEngine>, LifecycleError<B::Error>> {
        self.0.cgroup_engine().map_err(LifecycleError::Backend)
    }

    /// The cgroups, then the backend's resources. On error nothing of the trial is left made.
    pub async fn prepare(
        &self,
        ctx: &TrialContext,
    ) -> Result<Prepared<B::Prepared>, LifecycleError<B::Error>> {
        let backend = self.0;
        let engine = self.cgroup_engine()?;
        let plan = backend
            .cgroup_plan(ctx)
            .await
            .map_err(LifecycleError::Backend)?;
        let limits = engine.limits(
            ctx.trial.platform_spec.limits(),
            &ctx.trial.instances,
            &plan,
        );
        let (task_engine, slug) = (Arc::clone(engine), ctx.slug());
        let cgroups = tokio::task::spawn_blocking(move || task_engine.create(&slug, limits, &plan))
            .await
            .map_err(|source| TrialCgroupError::Task {
                trial: ctx.slug(),
                source,
            })??;
        match backend.prepare(ctx, &cgroups).await {
            Ok(prepared) => Ok(Prepared {
                ctx: ctx.clone(),
                cgroups,
                backend: prepared,
            }),
            Err(e) => {
                let cgs = cgroups.clone();
                match tokio::task::spawn_blocking(move || cgs.destroy()).await {
                    Ok(problems) => {
                        for p in problems {
                            tracing::warn!("cleaning up after a failed prepare: {p}");
                        }
                    }
                    Err(join) => tracing::warn!("cleaning up after a failed prepare: {join}"),
                }
                Err(LifecycleError::Backend(e))
            }
        }
    }

    /// Starts every instance.
    pub async fn start(
        &self,
        prepared: &mut Prepared<B::Prepared>,
    ) -> Result<Launch, LifecycleError<B::Error>> {
        self.0
            .start(&mut prepared.backend)
            .await
            .map_err(LifecycleError::Backend)
    }

    /// Statistics of instance `index` now. Blocks (briefly).
    pub fn stats(
        &self,
        prepared: &Prepared<B::Prepared>,
        index: u32,
    ) -> Result<CgroupStats, TrialCgroupError> {
        prepared.cgroups.stats(index)
    }

    /// A kill of everything in the instance cgroups, then the backend's stop (what only it
    /// knows: a QEMU by pid, a runtime process, orphans to reap); returns when it is gone (or
    /// says what could not be killed).
    pub async fn stop(
        &self,
        prepared: &Prepared<B::Prepared>,
    ) -> Result<(), LifecycleError<B::Error>> {
        let cgs = prepared.cgroups.clone();
        let killed = tokio::task::spawn_blocking(move || cgs.kill())
            .await
            .map_err(|source| TrialCgroupError::Task {
                trial: prepared.ctx.slug(),
                source,
            })?
            .map(drop)
            .map_err(LifecycleError::Cgroups);
        let stopped = self
            .0
            .stop(&prepared.backend)
            .await
            .map_err(LifecycleError::Backend);
        killed.and(stopped)
    }

    /// Removes everything of the trial and reports anything that is still there.
    pub async fn teardown(&self, prepared: Prepared<B::Prepared>) -> LeakReport {
        let mut problems = Vec::new();
        if let Err(e) = self.stop(&prepared).await {
            problems.push(e.to_string());
        }
        let Prepared {
            ctx,
            cgroups,
            backend,
        } = prepared;
        // Nothing of the trial runs anywhere in its cgroup (also beside the instance cgroups,
        // where a runtime may keep a sandbox or monitor) before the backend removes its state.
        let cgs = cgroups.clone();
        match tokio::task::spawn_blocking(move || cgs.kill_trial()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => problems.push(e.to_string()),
            Err(e) => problems.push(format!("teardown task failed: {e}")),
        }
        problems.extend(self.0.teardown(backend).await);
        match tokio::task::spawn_blocking(move || cgroups.destroy()).await {
            Ok(p) => problems.extend(p),
            Err(e) => problems.push(format!("teardown task failed: {e}")),
        }
        let mut report = self.leftovers(&ctx);
        for p in problems {
            tracing::warn!(trial = %ctx.slug(), "teardown: {p}");
            if !report.is_clean() {
                report.push(Leak::Other {
                    what: format!("teardown error: {p}"),
                });
            }
        }
        report
    }

    /// Anything of the trial attempt that still exists: its cgroups (processes in them, the
    /// directories in any hierarchy) and what the backend made.
    pub fn leftovers(&self, ctx: &TrialContext) -> LeakReport {
        let mut report = self.0.leftovers(ctx);
        if let Ok(engine) = self.0.cgroup_engine() {
            report.merge(engine.leftovers(&ctx.slug()));
        }
        report
    }
}
