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

use super::{Capabilities, HostInfo, TrialEvent, TrialRequest, relay};
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

/// Events buffered per trial towards the client; beyond it the relay drops (see [`relay`]).
const EVENT_BUFFER: usize = 1024;
/// Most instances one trial may ask for.
pub const MAX_INSTANCES: usize = 4096;

/// Why a trial was refused before it started.
#[derive(Debug, thiserror::Error)]
pub enum RunTrialError {
    /// The agent is shutting down.
    #[error("trial {trial}: the agent is shutting down")]
    ShuttingDown {
        /// Trial id.
        trial: String,
    },
    /// The request is malformed.
    #[error("trial {trial:?}: {reason}")]
    InvalidTrial {
        /// Trial id.
        trial: String,
        /// What is wrong.
        reason: String,
    },
    /// A workload outside the catalog.
    #[error(
        "trial {trial}: instance {instance}: unknown workload `{name}`; this agent runs only: {known}"
    )]
    UnknownWorkload {
        /// Trial id.
        trial: String,
        /// Instance index.
        instance: u32,
        /// The name asked for.
        name: String,
        /// The catalog's names.
        known: String,
    },
    /// A backend this agent does not have.
    #[error("trial {trial}: backend `{backend}` is not implemented in this agent version")]
    BackendNotImplemented {
        /// Trial id.
        trial: String,
        /// Backend name.
        backend: String,
    },
    /// The same trial id is already running here.
    #[error("trial {trial} is already running on this agent")]
    AlreadyRunning {
        /// Trial id.
        trial: String,
    },
}

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
        let (facts, dir, bin) = tokio::task::spawn_blocking(move || {
            let facts = isolab_host::facts::collect();
            let dir = claim_dir(&cfg);
            let bin = match &cfg.workload_bin {
                // Absolute: the path is bind-mounted into containers and read from other
                // working directories.
                Some(p) if p.is_file() => std::path::absolute(p)
                    .map_err(|e| format!("workload binary {}: {e}", p.display())),
                Some(p) => Err(format!("workload binary {} does not exist", p.display())),
                None => isolab_host::workload_bin::locate().map_err(|e| e.to_string()),
            };
            (facts, dir, bin)
        })
        .await
        .unwrap_or_else(|e| {
            let why = format!("agent start-up task failed: {e}");
            (isolab_host::facts::collect(), Err(why.clone()), Err(why))
        });
        let ceilings = Ceilings {
            pids: config.ceiling_pids,
            memory_bytes: config.effective_ceiling_memory_bytes(facts.memory_bytes),
        };
        let container = ContainerBackend::new(
            dir.clone(),
            bin.clone(),
            ceilings,
            ContainerConfig {
                runtimes: config.runtimes.clone(),
                ..ContainerConfig::default()
            },
        );
        let vm = VmBackend::new(dir.clone(), bin.clone(), ceilings, config.vm.clone());
        let docker =
            DockerBackend::new(dir.clone(), bin.clone(), ceilings, DockerConfig::default());
        let lxc = LxcBackend::new(dir.clone(), bin.clone(), ceilings, LxcConfig::default());
        let native = NativeBackend::new(dir.clone(), bin, ceilings);
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
                metrics: Metrics::new("isolab_agent"),
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
        }
    }

    /// Checks and starts a trial; its events arrive on the returned receiver, the last one being
    /// its final status. Dropping the receiver cancels the trial.
    pub fn run_trial(
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
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let instances = u32::try_from(req.trial.instances.len()).unwrap_or(u32::MAX);
        let memory_limits_bytes = req
            .trial
            .platform_spec
            .limits()
            .memory_bytes
            .unwrap_or(0)
            .saturating_mul(u64::from(instances));
        let ctx = TrialContext {
            run_id: req.run_id,
            trial: Arc::new(req.trial),
            attempt: req.attempt,
        };
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
                    runner::run_trial(backend, ctx, runner_tx, token, &inner.runner),
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
