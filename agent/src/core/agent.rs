//! [`AgentCore`]: capabilities, running trials (at most one per trial id at a time), cancelling
//! them, and shutting down with a bounded drain.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use isolab_model::catalog;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use isolab_telemetry::metrics::Metrics;

use super::admit::admit_to_budget;
use super::error::RunTrialError;
use super::{Capabilities, HostInfo, TrialEvent, TrialRequest, relay};
use crate::budget::{Ask, Budget, HostLimits, Ledger, limit_agent_dir};
use crate::config::{AgentConfig, CgroupSource};
use crate::runner::{self, RunnerOptions};
use isolab_backends::container::{ContainerBackend, ContainerConfig};
use isolab_backends::docker::{DockerBackend, DockerConfig};
use isolab_backends::envelope::Ceilings;
use isolab_backends::lxc::{LxcBackend, LxcConfig};
use isolab_backends::native::NativeBackend;
use isolab_backends::vm::VmBackend;
use isolab_backends::{AgentDir, AnyBackend, Backend, BackendStatus, TrialContext};
use isolab_host::cgroup::CgroupManager;
use isolab_host::state_dir::StateDir;

/// Events buffered per trial towards the client; beyond it the relay drops (see [`relay`]).
const EVENT_BUFFER: usize = 1024;
/// Most instances one trial may ask for.
pub const MAX_INSTANCES: usize = 4096;

/// What a shutdown could not finish within its grace period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Trials still running when the grace period ended (their processes were killed).
    pub cut_off: Vec<String>,
}

/// The agent without its transport. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct AgentCore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: AgentConfig,
    host: HostInfo,
    backends: Vec<AnyBackend>,
    trials: Mutex<HashMap<String, CancellationToken>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    runner: RunnerOptions,
    dir: Option<Arc<AgentDir>>,
    metrics: Metrics,
    ledger: Arc<Ledger>,
}

/// Removes a trial from the registry when its task ends, also on panic.
struct Registered {
    inner: Arc<Inner>,
    id: String,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.inner
            .trials
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl AgentCore {
    /// Starts the core: reads host facts, finds cgroups (removing stale ones of a crashed agent)
    /// and the workload binary. Problems make backends unavailable (with the reason) rather than
    /// failing here.
    pub async fn new(config: AgentConfig) -> Self {
        let cfg = config.clone();
        let (facts, state, dir, bin, budget) = tokio::task::spawn_blocking(move || {
            let facts = isolab_host::facts::collect();
            // The state directory first: nothing is made (not even a cgroup) when it is unsafe.
            let state = StateDir::open(&cfg.state_dir).map_err(|e| e.to_string());
            let dir = state.clone().and_then(|_| claim_dir(&cfg));
            // Scratch, bundles and VM disks live in the state directory: its file system's free
            // space bounds the disk budget.
            let host = HostLimits::read(
                facts.memory_bytes,
                &cfg.state_dir,
                dir.as_ref().ok().map(|d| d.manager().as_ref()),
            );
            let budget = Budget::resolve(&cfg.budget, &host);
            tracing::info!(?budget, ?host, "host budget");
            // The kernel holds the budget too: without that, no cgroups at all.
            let dir = dir.and_then(|d| {
                limit_agent_dir(&d, &budget)
                    .map(|()| d)
                    .map_err(|e| format!("cannot limit the agent's cgroup to the budget: {e}"))
            });
            let bin = match &cfg.workload_bin {
                // Absolute: the path is bind-mounted into containers and read from other
                // working directories.
                Some(p) if p.is_file() => std::path::absolute(p)
                    .map_err(|e| format!("workload binary {}: {e}", p.display())),
                Some(p) => Err(format!("workload binary {} does not exist", p.display())),
                None => isolab_host::workload_bin::locate().map_err(|e| e.to_string()),
            };
            (facts, state, dir, bin, budget)
        })
        .await
        .unwrap_or_else(|e| {
            let why = format!("agent start-up task failed: {e}");
            let host = HostLimits::read(0, &config.state_dir, None);
            let budget = Budget::resolve(&config.budget, &host);
            (
                isolab_host::facts::collect(),
                Err(why.clone()),
                Err(why.clone()),
                Err(why),
                budget,
            )
        });
        // Not capped by the budget: a platform asking more than the whole budget is refused
        // at admission rather than silently shrunk.
        let ceilings = Ceilings {
            pids: config.ceiling_pids,
            memory_bytes: config.effective_ceiling_memory_bytes(facts.memory_bytes),
        };
        let ledger = Ledger::new(budget, ceilings);
        let metrics = Metrics::new("isolab_agent");
        for (resource, value) in [
            ("memory_bytes", budget.memory_bytes),
            ("pids", budget.pids),
            ("disk_bytes", budget.disk_bytes),
            ("trials", u64::try_from(budget.trials).unwrap_or(u64::MAX)),
            (
                "instances",
                u64::try_from(budget.instances).unwrap_or(u64::MAX),
            ),
        ] {
            metrics.set_budget(resource, value);
        }
        let tmp_bytes = config.budget.tmp_bytes;
        // Unusable state directory: every backend is unavailable with that reason (`dir` is
        // then the same error), the paths below are never used.
        let sub = |purpose: &str| {
            state.as_ref().map_or_else(
                |_| config.state_dir.join(purpose),
                |s| s.root().join(purpose),
            )
        };
        let containers = sub(isolab_host::state_dir::CONTAINERS);
        let container = ContainerBackend::new(
            dir.clone(),
            bin.clone(),
            ceilings,
            ContainerConfig {
                state_dir: containers.clone(),
                tmp_bytes,
                runtimes: config.runtimes.clone(),
                ..ContainerConfig::default()
            },
        );
        let vm = VmBackend::new(
            dir.clone(),
            bin.clone(),
            ceilings,
            isolab_backends::vm::VmConfig {
                runtime_root: config
                    .vm
                    .runtime_root
                    .clone()
                    .or_else(|| Some(sub(isolab_host::state_dir::VM))),
                ..config.vm.clone()
            },
        );
        let docker = DockerBackend::new(
            dir.clone(),
            bin.clone(),
            ceilings,
            DockerConfig {
                state_dir: containers.clone(),
                tmp_bytes,
                ..DockerConfig::default()
            },
        );
        let lxc = LxcBackend::new(
            dir.clone(),
            bin.clone(),
            ceilings,
            LxcConfig {
                state_dir: containers,
                tmp_bytes,
                ..LxcConfig::default()
            },
        );
        let native = NativeBackend::new(
            dir.clone(),
            bin,
            ceilings,
            &sub(isolab_host::state_dir::SCRATCH),
        );
        let host = HostInfo {
            hostname: config
                .hostname
                .clone()
                .unwrap_or_else(|| facts.hostname.clone()),
            kernel: facts.kernel,
            os: facts.os,
            cpu_model: facts.cpu_model,
            cpu_flags: facts.cpu_flags,
            cores: facts.cores,
            memory_bytes: facts.memory_bytes,
            cgroup_version: facts.cgroup_version,
            clock_source: facts.clock_source,
            arch: facts.arch,
        };
        let runner = RunnerOptions {
            host: host.hostname.clone(),
            stats_interval: config.stats_interval,
            ..RunnerOptions::default()
        };
        Self {
            inner: Arc::new(Inner {
                config,
                host,
                backends: vec![
                    AnyBackend::Native(native),
                    // Before `container`: dropped first, the private dockerd is gone (with its
                    // mounts) when the container backend removes the agent's state directory.
                    AnyBackend::Docker(docker),
                    AnyBackend::Lxc(lxc),
                    AnyBackend::Container(container),
                    AnyBackend::Vm(vm),
                ],
                trials: Mutex::new(HashMap::new()),
                shutdown: CancellationToken::new(),
                tracker: TaskTracker::new(),
                runner,
                dir: dir.ok(),
                metrics,
                ledger,
            }),
        }
    }

    /// Its Prometheus metrics (served by `isolab-agent --metrics-listen`).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Its backends (for `isolab-bench`, which measures them directly).
    pub fn backends(&self) -> &[AnyBackend] {
        &self.inner.backends
    }

    /// The host-wide budget in force.
    pub fn budget(&self) -> Budget {
        self.inner.ledger.budget()
    }

    /// What running trials hold of the budget now.
    pub fn budget_in_use(&self) -> Ask {
        self.inner.ledger.in_use()
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &AgentConfig {
        &self.inner.config
    }

    /// Host facts (collected once at start).
    pub fn host(&self) -> &HostInfo {
        &self.inner.host
    }

    /// The agent's cgroup directory name, when cgroups are usable.
    pub fn cgroup_dir(&self) -> Option<&str> {
        self.inner.dir.as_deref().map(AgentDir::name)
    }

    /// The cgroup manager, when cgroups are usable.
    pub fn cgroup_manager(&self) -> Option<&CgroupManager> {
        self.inner.dir.as_deref().map(|d| d.manager().as_ref())
    }

    /// What this agent can do; probes every backend.
    pub async fn capabilities(&self) -> Capabilities {
        // Every backend at once (a slow probe, e.g. a probe VM under TCG, holds up no other);
        // the statuses keep the backends' order.
        let probes = self.inner.backends.iter().map(|b| async move {
            let mut statuses = vec![b.probe().await];
            if let AnyBackend::Container(c) = b {
                // One more entry per OCI runtime (`container/runc`, `container/crun`…).
                statuses.extend(c.runtime_statuses());
            }
            if let AnyBackend::Vm(v) = b {
                statuses.push(isolab_backends::catalog::kvm_status(&v.kvm_check().await));
            }
            statuses
        });
        let mut backends: Vec<BackendStatus> = futures::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
            .collect();
        // Platforms that cannot run here (Xen, OpenVZ…) and backends this agent lacks.
        isolab_backends::catalog::complete(&mut backends);
        Capabilities {
            agent_version: env!("CARGO_PKG_VERSION").into(),
            host: self.inner.host.clone(),
            backends,
            labels: self.inner.config.labels.clone(),
            workloads: catalog::names().into_iter().map(str::to_owned).collect(),
            budget: Some(self.inner.ledger.budget().into()),
        }
    }

    /// Checks and admits a trial, then starts it; its events arrive on the returned receiver,
    /// the last one being its final status. Dropping the receiver cancels the trial.
    ///
    /// Admission computes every instance's final limits (the cgroup engine's, once) and takes
    /// the trial's part of the host budget before anything is made; a trial that does not fit
    /// is refused at once ([`RunTrialError::ResourceExhausted`]). The reservation is given back
    /// when the runner has torn the trial down.
    pub async fn run_trial(
        &self,
        req: TrialRequest,
    ) -> Result<mpsc::Receiver<TrialEvent>, RunTrialError> {
        let inner = &self.inner;
        let id = req.trial.id.clone();
        if inner.shutdown.is_cancelled() {
            return Err(RunTrialError::ShuttingDown { trial: id });
        }
        validate(&req)?;
        crate::admission::admit_request(&req.trial, &inner.config.bounds, &inner.config.runtimes)?;
        let backend_name = req.trial.platform_spec.backend().as_str();
        let Some(backend_index) = inner.backends.iter().position(|b| b.name() == backend_name)
        else {
            return Err(RunTrialError::BackendNotImplemented {
                trial: id,
                backend: backend_name.into(),
            });
        };
        let token = {
            let mut trials = inner.trials.lock().unwrap_or_else(PoisonError::into_inner);
            if trials.contains_key(&id) {
                return Err(RunTrialError::AlreadyRunning { trial: id });
            }
            let token = inner.shutdown.child_token();
            trials.insert(id.clone(), token.clone());
            token
        };
        let registered = Registered {
            inner: Arc::clone(inner),
            id,
        };
        let instances = u32::try_from(req.trial.instances.len()).unwrap_or(u32::MAX);
        let ctx = TrialContext {
            run_id: req.run_id,
            trial: Arc::new(req.trial),
            attempt: req.attempt,
        };
        let (planned, reservation) =
            admit_to_budget(&inner.backends[backend_index], &inner.ledger, &ctx)
                .await
                .map_err(|source| {
                    inner.metrics.trial_started().finish("refused");
                    RunTrialError::ResourceExhausted {
                        trial: ctx.trial.id.clone(),
                        source,
                    }
                })?;
        let memory_limits_bytes = reservation.ask().memory_bytes;
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        inner.tracker.spawn(
            async move {
                let inner = Arc::clone(&registered.inner);
                let backend = &inner.backends[backend_index];
                // The runner sends into the relay, which never lets it wait on the client.
                let (runner_tx, runner_rx) = mpsc::channel(EVENT_BUFFER);
                let relay = relay::forward(
                    runner_rx,
                    tx,
                    inner.metrics.clone(),
                    instances,
                    memory_limits_bytes,
                );
                tokio::join!(
                    runner::run_planned(
                        backend,
                        ctx,
                        planned,
                        reservation,
                        runner_tx,
                        token,
                        &inner.runner
                    ),
                    relay
                );
                drop(registered);
            }
            .in_current_span(),
        );
        Ok(rx)
    }

    /// Cancels a running trial; false when no trial with that id runs here.
    pub fn cancel(&self, trial_id: &str) -> bool {
        let trials = self
            .inner
            .trials
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        trials
            .get(trial_id)
            .map(CancellationToken::cancel)
            .is_some()
    }

    /// Ids of the trials running now, sorted.
    pub fn running(&self) -> Vec<String> {
        let trials = self
            .inner
            .trials
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut ids: Vec<String> = trials.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Refuses new trials, cancels the running ones and waits up to `grace` for them to finish
    /// their teardown; then kills what is left in the agent's cgroups and removes them.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let inner = &self.inner;
        inner.shutdown.cancel();
        inner.tracker.close();
        let mut report = ShutdownReport::default();
        if tokio::time::timeout(grace, inner.tracker.wait())
            .await
            .is_err()
        {
            report.cut_off = self.running();
            tracing::warn!(trials = ?report.cut_off, "grace period of {grace:?} over; cutting off");
        }
        if let Some(dir) = inner.dir.clone() {
            let released = tokio::task::spawn_blocking(move || dir.release()).await;
            match released {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("removing the agent's cgroups: {e}"),
                Err(e) => tracing::warn!("removing the agent's cgroups: {e}"),
            }
        }
        report
    }
}

/// Finds the cgroup hierarchy and claims the agent's directory in it.
fn claim_dir(config: &AgentConfig) -> Result<Arc<AgentDir>, String> {
    let manager = match &config.cgroups {
        CgroupSource::Detect => CgroupManager::detect(),
        CgroupSource::Root {
            root,
            version,
            proc_self_cgroup,
        } => CgroupManager::with_root(root, *version, proc_self_cgroup),
    }
    .map_err(|e| format!("no usable cgroups: {e}"))?;
    let (dir, stale) = AgentDir::claim(Arc::new(manager), &config.cgroup_prefix)
        .map_err(|e| format!("cannot make the agent's cgroup: {e}"))?;
    if !stale.is_empty() {
        tracing::warn!(?stale, "removed cgroups left by a previous agent");
    }
    Ok(Arc::new(dir))
}

/// Checks what can be checked before anything is made: id shape, instances, allowlist.
fn validate(req: &TrialRequest) -> Result<(), RunTrialError> {
    let trial = &req.trial;
    let invalid = |reason: String| RunTrialError::InvalidTrial {
        trial: trial.id.clone(),
        reason,
    };
    let id_ok = !trial.id.is_empty()
        && trial.id.len() <= 64
        && trial
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !id_ok {
        return Err(invalid(
            "trial id must be 1 to 64 letters, digits, `-` or `_`".into(),
        ));
    }
    if trial.timeout.0.is_zero() {
        return Err(invalid("timeout must be positive".into()));
    }
    if trial.instances.is_empty() {
        return Err(invalid("no instances".into()));
    }
    if trial.instances.len() > MAX_INSTANCES {
        return Err(invalid(format!(
            "{} instances; at most {MAX_INSTANCES}",
            trial.instances.len()
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for inst in &trial.instances {
        if !seen.insert(inst.index) {
            return Err(invalid(format!(
                "instance index {} appears twice",
                inst.index
            )));
        }
        if catalog::find(&inst.workload).is_none() {
            return Err(RunTrialError::UnknownWorkload {
                trial: trial.id.clone(),
                instance: inst.index,
                name: inst.workload.clone(),
                known: catalog::names().join(", "),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use isolab_model::pipeline::{BackendKind, Limits, Platform};

    use super::*;
    use crate::conformance::trial;

    fn request(workload: &str) -> TrialRequest {
        let platform = Platform {
            backend: BackendKind::Native,
            runtime: None,
            runtime_args: vec![],
            rootfs: None,
            network: None,
            limits: Limits::default(),
            vcpus: None,
            memory: None,
            accel: None,
            machine: None,
        };
        let t = trial(
            &platform,
            workload,
            2,
            &[],
            Duration::from_secs(1),
            Duration::from_secs(5),
        );
        TrialRequest {
            run_id: "r".into(),
            trial: isolab_wire::TrialSpec::from(&t),
            attempt: 0,
        }
    }

    #[test]
    fn a_plain_request_is_valid() {
        validate(&request("syscall")).expect("valid");
    }

    #[test]
    fn ids_that_could_escape_a_path_are_refused() {
        for id in ["", "../x", "a/b", "a b", &"x".repeat(65)] {
            let mut r = request("syscall");
            r.trial.id = id.to_owned();
            assert!(
                matches!(validate(&r), Err(RunTrialError::InvalidTrial { .. })),
                "id {id:?}"
            );
        }
    }

    #[test]
    fn malformed_trials_are_refused_with_the_reason() {
        let mut r = request("syscall");
        r.trial.instances[1].index = 0;
        assert!(
            validate(&r)
                .unwrap_err()
                .to_string()
                .contains("appears twice")
        );
        let mut r = request("syscall");
        r.trial.instances.clear();
        assert!(
            validate(&r)
                .unwrap_err()
                .to_string()
                .contains("no instances")
        );
        let mut r = request("syscall");
        r.trial.timeout = isolab_model::units::HumanDuration::from_millis(0);
        assert!(validate(&r).unwrap_err().to_string().contains("timeout"));
    }

    #[test]
    fn only_catalog_workloads_run() {
        let err = validate(&request("sh")).unwrap_err();
        assert!(
            matches!(err, RunTrialError::UnknownWorkload { instance: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("unknown workload `sh`"), "{err}");
    }
}
