//! `isolab-backends`: how an instance is isolated — a plain process ([`native`]), an OCI
//! container through runc, crun or runsc ([`container`]), a Docker container ([`docker`]), an
//! LXC container ([`lxc`]) or a QEMU virtual machine ([`vm`]). One module per backend, and no
//! backend imports another (`tests/backend_isolation.rs`): what two of them share is in this
//! crate's root modules (rootfs, scratch, spawner, handle, args, base) or in `isolab-host`
//! (cgroups, network namespaces, mounts, /proc scans, reaping).
//!
//! Every backend implements [`Backend`] with its own error type and per-trial state, and
//! [`AnyBackend`] dispatches over them so the agent holds one list. A backend implements only
//! what differs; the life of one trial is the [`lifecycle`]'s, driven by the agent's runner:
//! [`Backend::cgroup_plan`] → the cgroup engine makes the trial and instance cgroups with their
//! final limits ([`isolab_host::cgroup::CgroupEngine`]) → [`Backend::prepare`] makes the
//! backend's own resources (bundle, rootfs, image, VM files, network namespaces) →
//! [`Backend::start`] starts every instance in its instance cgroup and hands back one
//! [`InstanceHandle`] each (line streams of stdout and stderr, a pid, the exit) → statistics
//! from the engine while they run → [`Backend::stop`] and the engine's kill on deadline or
//! cancel → [`Backend::teardown`] and the engine's removal, always → the leftover scan of both,
//! reported as a [`LeakReport`]. `testing` (feature `testing`) holds trial fixtures for tests;
//! the conformance suite every backend's tests run is the agent's (it drives the runner).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use isolab_model::pipeline::BackendKind;
use isolab_model::resolve::ResolvedPlatform;
use isolab_wire::TrialSpec;

use isolab_host::cgroup::{CgroupEngine, CgroupPlan, TrialCgroups};

mod any;
pub mod args;
pub mod base;
pub mod catalog;
pub mod container;
pub mod docker;
pub mod error;
pub use isolab_host::cgroup::envelope;
mod handle;
pub mod lifecycle;
pub mod lxc;
pub(crate) use isolab_host::mounts;
pub mod native;
pub use isolab_host::reap;
pub mod rootfs;
pub mod scratch;
pub mod spawner;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod vm;

pub use any::{AnyBackend, AnyBackendError, AnyPrepared};
pub use error::{CommonError, SpawnError};
pub use handle::{
    ExitFuture, InstanceExit, InstanceHandle, Launch, LineStream, MAX_LINE_BYTES, clean_log_line,
    last_lines, limit_text, lines, then_note,
};
pub use isolab_host::cgroup::agent_dir::{AgentDir, remove_stale_runtime};
pub use isolab_host::leaks::{Leak, LeakReport, process_alive, process_start_time};

/// Environment variable naming the trial attempt (`<id>-a<attempt>`) in every process a backend
/// starts for it, so that leftovers can be found without any backend's own state.
pub const TRIAL_ENV: &str = "ISOLAB_TRIAL";

/// What a backend is told about the trial it prepares.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialContext {
    /// The run the trial belongs to.
    pub run_id: String,
    /// The trial.
    pub trial: Arc<TrialSpec>,
    /// Attempt number.
    pub attempt: u32,
}

/// A trial handed to a backend whose platform is another backend's (the core dispatches by the
/// platform's backend, so only a direct caller can get this).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trial {trial}: its platform is for the {got} backend, not {expected}")]
pub struct PlatformMismatch {
    /// The trial attempt.
    pub trial: String,
    /// The backend it was handed to.
    pub expected: &'static str,
    /// The backend its platform is for.
    pub got: &'static str,
}

impl TrialContext {
    /// The trial's resolved platform as backend `expected` reads it, e.g.
    /// `ctx.platform(BackendKind::Vm, ResolvedPlatform::as_vm)`.
    pub fn platform<'a, T>(
        &'a self,
        expected: BackendKind,
        pick: impl FnOnce(&'a ResolvedPlatform) -> Option<&'a T>,
    ) -> Result<&'a T, PlatformMismatch> {
        pick(&self.trial.platform_spec).ok_or_else(|| PlatformMismatch {
            trial: self.slug(),
            expected: expected.as_str(),
            got: self.trial.platform_spec.backend().as_str(),
        })
    }

    /// A name unique to this attempt of this trial: `<trial id>-a<attempt>`, usable in paths,
    /// cgroup names and network namespace names.
    pub fn slug(&self) -> String {
        format!("{}-a{}", self.trial.id, self.attempt)
    }
}

pub use isolab_wire::BackendStatus;

/// The status a backend's probe ends in: available with `version`, or unavailable for the
/// reason `outcome` gives (with the version still reported).
pub fn probe_status(name: &str, version: String, outcome: Result<(), String>) -> BackendStatus {
    match outcome {
        Ok(()) => BackendStatus {
            name: name.into(),
            available: true,
            version,
            ..BackendStatus::default()
        },
        Err(reason) => BackendStatus {
            version,
            ..BackendStatus::unavailable(name, reason)
        },
    }
}

/// One way of isolating instances: only what differs between backends. See the module
/// documentation for the life of a trial; the runner drives it through
/// [`crate::lifecycle::Lifecycle`], which owns the trial's cgroups.
///
/// Every process a backend starts for a trial carries `ISOLAB_TRIAL=<slug>` in its environment
/// ([`TRIAL_ENV`]), so that leftover processes can be found independently.
///
/// Implementations must be cancel-safe in one sense only: the runner never drops a future of
/// [`Backend::prepare`], [`Backend::start`], [`Backend::stop`] or [`Backend::teardown`]
/// half-way, so they may assume they run to completion.
pub trait Backend: Send + Sync + 'static {
    /// What goes wrong in this backend.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Per-trial state from [`Backend::prepare`] to [`Backend::teardown`].
    type Prepared: Send + Sync + 'static;

    /// The backend's name as pipelines spell it (`native`).
    fn name(&self) -> &'static str;

    /// Whether the backend works here (binaries present, cgroups writable, a probe VM boots).
    fn probe(&self) -> impl Future<Output = BackendStatus> + Send;

    /// The cgroup engine its trials' cgroups are made by; the error says why there is none.
    fn cgroup_engine(&self) -> Result<&Arc<CgroupEngine>, Self::Error>;

    /// How long the engine's kill of one of its cgroups may take (the backend's stop timeout);
    /// the default is the engine's.
    fn kill_timeout(&self) -> Duration {
        CgroupPlan::default().kill_timeout
    }

    /// Checks what can be checked before anything is made, and says how the engine makes the
    /// trial's cgroups (the default: every instance cgroup made and limited by the engine, and
    /// killed within [`Backend::kill_timeout`]).
    fn cgroup_plan(
        &self,
        _trial: &TrialContext,
    ) -> impl Future<Output = Result<CgroupPlan, Self::Error>> + Send {
        let plan = CgroupPlan {
            kill_timeout: self.kill_timeout(),
            ..CgroupPlan::default()
        };
        async { Ok(plan) }
    }

    /// Checks the trial and makes its own resources (bundle, rootfs, image, containers, VM
    /// files, network namespaces) around the cgroups the engine made. On error it removes
    /// what it made itself (the runner removes the cgroups).
    fn prepare(
        &self,
        trial: &TrialContext,
        cgroups: &TrialCgroups,
    ) -> impl Future<Output = Result<Self::Prepared, Self::Error>> + Send;

    /// Starts every instance of the prepared trial in its instance cgroup, as close together
    /// as it can. On error the instances already started are still stopped and torn down.
    fn start(
        &self,
        prepared: &mut Self::Prepared,
    ) -> impl Future<Output = Result<Launch, Self::Error>> + Send;

    /// Stops what only the backend knows how to stop (a QEMU by pid, a runtime process that
    /// must end, orphans to reap), right after the runner killed everything in the instance
    /// cgroups. A no-op when nothing of the backend's runs.
    fn stop(
        &self,
        _prepared: &Self::Prepared,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        async { Ok(()) }
    }

    /// Removes what [`Backend::prepare`] made (not the cgroups: the runner removes them after
    /// this) and returns what it could not remove, one line each.
    fn teardown(&self, prepared: Self::Prepared) -> impl Future<Output = Vec<String>> + Send;

    /// Looks at the system, independently of any prepared state, for anything of this trial
    /// attempt that the backend made and that still exists (containers, mounts, network
    /// namespaces, veth, tap, QEMU, files). The runner adds the cgroups' own scan.
    fn leftovers(&self, trial: &TrialContext) -> LeakReport;
}
