//! Backends: how an instance is isolated (a plain process, a container, a virtual machine).
//!
//! Every backend implements [`Backend`] with its own error type and per-trial state, and
//! [`AnyBackend`] dispatches over them so the agent holds one list. The life of one trial, driven
//! by [`crate::runner`]: [`Backend::prepare`] makes the trial's resources (cgroups, bundle
//! directories, network namespaces) → [`Backend::start`] starts every instance together and
//! hands back one [`InstanceHandle`] each (line streams of stdout and stderr, a pid, the exit) →
//! [`Backend::stats`] while they run → [`Backend::stop`] on deadline or cancel →
//! [`Backend::teardown`], always, which removes everything and reports what it could not in a
//! [`LeakReport`]. `conformance` (feature `testing`) holds the checks that every backend's tests run.

use std::future::Future;
use std::sync::Arc;

use isolab_model::pipeline::BackendKind;
use isolab_model::resolve::ResolvedPlatform;
use isolab_wire::TrialSpec;

use crate::cgroup::CgroupStats;

mod agent_dir;
mod any;
pub mod args;
pub mod catalog;
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod envelope;
mod handle;
pub(crate) use isolab_host::mounts;
pub mod native;
pub use isolab_host::reap;
pub mod scratch;

pub use agent_dir::{AgentDir, remove_stale_runtime};
pub use any::{AnyBackend, AnyBackendError, AnyPrepared};
pub use handle::{
    ExitFuture, InstanceExit, InstanceHandle, Launch, LineStream, MAX_LINE_BYTES, lines,
};
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

/// One way of isolating instances. See the module documentation for the life of a trial.
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

    /// Checks the trial and makes its resources. On error it removes what it made itself.
    fn prepare(
        &self,
        trial: &TrialContext,
    ) -> impl Future<Output = Result<Self::Prepared, Self::Error>> + Send;

    /// Starts every instance of the prepared trial, as close together as it can. On error the
    /// instances already started are still torn down by [`Backend::teardown`].
    fn start(
        &self,
        prepared: &mut Self::Prepared,
    ) -> impl Future<Output = Result<Launch, Self::Error>> + Send;

    /// Statistics of instance `instance`'s accounting cgroup now.
    fn stats(&self, prepared: &Self::Prepared, instance: u32) -> Result<CgroupStats, Self::Error>;

    /// Kills whatever of the trial still runs and returns when it is gone (or could not be
    /// killed: then the error says what). A no-op when nothing runs.
    fn stop(
        &self,
        prepared: &Self::Prepared,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Removes everything the trial made and reports anything that is still there.
    fn teardown(&self, prepared: Self::Prepared) -> impl Future<Output = LeakReport> + Send;

    /// Looks at the system, independently of any prepared state, for anything of this trial
    /// attempt that still exists (processes, cgroups, mounts, network namespaces, veth, tap,
    /// QEMU). The runner calls it after teardown; the conformance suite too.
    fn leftovers(&self, trial: &TrialContext) -> LeakReport;
}
