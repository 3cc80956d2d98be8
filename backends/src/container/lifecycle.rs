//! The blocking steps of a container trial: make its bundles (and network) around the cgroups
//! the engine named, stop its instances, and destroy everything it made. All run on blocking
//! threads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use isolab_model::pipeline::{NetworkMode, RootfsKind};

use super::ContainerError;
use super::backend::Inner;
use super::bundle::{self, BundleInput, NetAttach};
use super::runtime::Runtime;
use crate::process_alive;
use crate::rootfs;
use isolab_host::cgroup::{AnyCgroup, Cgroup, TrialCgroupError, TrialCgroups};
use isolab_host::mounts::{mounts_under, unmount_detach};
use isolab_host::netns::{self, TrialNetwork};

/// Pause between rounds of the stop loop.
const STOP_ROUND: Duration = Duration::from_millis(10);

/// Names and places of one trial attempt, all derived from the agent directory and the slug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TrialNames {
    /// `<trial id>-a<attempt>` (or a probe's name).
    pub(crate) slug: String,
    /// `<agent state>/trials/<slug>`: the bundles.
    pub(crate) dir: PathBuf,
    /// `<agent dir>-<slug>`: the trial's network namespace and the prefix of its instances'.
    pub(crate) net_prefix: String,
}

impl TrialNames {
    /// The runtime's container id of instance `index`.
    pub(crate) fn container_id(&self, index: u32) -> String {
        format!("{}-i{index}", self.slug)
    }

    /// The prefix every container id of this trial starts with.
    pub(crate) fn id_prefix(&self) -> String {
        format!("{}-i", self.slug)
    }

    /// The bundle directory of instance `index`.
    pub(crate) fn bundle(&self, index: u32) -> PathBuf {
        self.dir.join(format!("i{index}"))
    }
}

/// What one instance is made from (with its instance cgroup).
#[derive(Debug, Clone)]
pub(crate) struct InstancePlan {
    /// Instance index.
    pub(crate) index: u32,
    /// Workload arguments after the program.
    pub(crate) args: Vec<String>,
}

/// One prepared instance.
#[derive(Debug)]
pub(crate) struct Instance {
    /// Instance index.
    pub(crate) index: u32,
    /// The runtime's container id.
    pub(crate) id: String,
    /// Its bundle directory.
    pub(crate) bundle: PathBuf,
    /// Its cgroup (made by the runtime when it starts).
    pub(crate) cgroup: Arc<AnyCgroup>,
    /// Its memory limit, for the out-of-memory note.
    pub(crate) memory_bytes: Option<u64>,
}

/// A started runtime process (`<runtime> run`), identified by pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Running {
    /// Instance index.
    pub(crate) index: u32,
    /// The runtime process's pid.
    pub(crate) pid: u32,
    /// Its start time in clock ticks, against pid reuse.
    pub(crate) start_time: Option<u64>,
}

/// Makes the trial directory, its network (for `bridge`) and one bundle per instance, each
/// bundle's `cgroupsPath` the instance cgroup of `cgroups` and its resources that cgroup's
/// limits. Removes leftovers of an earlier run of the same attempt first (the engine removed
/// its cgroups), and everything it made on error.
pub(crate) fn make_trial(
    inner: &Inner,
    names: &TrialNames,
    runtime: &Runtime,
    cgroups: &TrialCgroups,
    kind: RootfsKind,
    network: NetworkMode,
    plans: &[InstancePlan],
) -> Result<(Option<TrialNetwork>, Vec<Instance>), ContainerError> {
    let dirty = names.dir.exists() || !netns::existing(&names.net_prefix).is_empty();
    if dirty {
        tracing::warn!(trial = %names.slug, "removing leftovers of an earlier run of this trial");
        for e in destroy_trial(names, runtime) {
            tracing::warn!(trial = %names.slug, "{e}");
        }
    }
    let made = make_parts(inner, names, cgroups, kind, network, plans);
    if made.is_err() {
        for e in destroy_trial(names, runtime) {
            tracing::warn!(trial = %names.slug, "cleaning up after a failed prepare: {e}");
        }
    }
    made
}

fn make_parts(
    inner: &Inner,
    names: &TrialNames,
    cgroups: &TrialCgroups,
    kind: RootfsKind,
    network: NetworkMode,
    plans: &[InstancePlan],
) -> Result<(Option<TrialNetwork>, Vec<Instance>), ContainerError> {
    std::fs::create_dir_all(&names.dir).map_err(|source| ContainerError::StateDir {
        path: names.dir.clone(),
        source,
    })?;
    let net = match network {
        NetworkMode::Bridge => {
            let indexes: Vec<u32> = plans.iter().map(|p| p.index).collect();
            Some(
                netns::create(&names.net_prefix, &indexes).map_err(|source| {
                    ContainerError::Netns {
                        trial: names.slug.clone(),
                        source,
                    }
                })?,
            )
        }
        NetworkMode::None | NetworkMode::Host => None,
    };
    let mut instances = Vec::with_capacity(plans.len());
    for plan in plans {
        let cgroup = cgroups
            .instance(plan.index)
            .ok_or_else(|| TrialCgroupError::NoInstance {
                trial: names.slug.clone(),
                index: plan.index,
            })?;
        let bundle_dir = names.bundle(plan.index);
        let root =
            rootfs::create(&bundle_dir.join("rootfs"), kind, Path::new("/")).map_err(|source| {
                ContainerError::Rootfs {
                    instance: plan.index,
                    source,
                }
            })?;
        let attach = match (network, &net) {
            (NetworkMode::Host, _) => NetAttach::Host,
            (NetworkMode::Bridge, Some(n)) => NetAttach::Netns(
                n.instances
                    .iter()
                    .find(|i| i.index == plan.index)
                    .map(|i| i.path())
                    .unwrap_or_default(),
            ),
            _ => NetAttach::None,
        };
        let hostname = format!("isolab-i{}", plan.index);
        let input = BundleInput {
            args: &plan.args,
            instance: plan.index,
            trial: &names.slug,
            hostname: &hostname,
            rootfs: &root,
            workload_bin: &inner.workload_bin,
            network: &attach,
            cgroups_path: &cgroup.oci_path,
            limits: &cgroup.limits,
            features: inner.features,
        };
        let bundle_err = |source| ContainerError::Bundle {
            instance: plan.index,
            path: bundle_dir.clone(),
            source,
        };
        let spec = bundle::spec(&input).map_err(bundle_err)?;
        bundle::write(&bundle_dir, &spec).map_err(bundle_err)?;
        instances.push(Instance {
            index: plan.index,
            id: names.container_id(plan.index),
            bundle: bundle_dir,
            cgroup: Arc::clone(&cgroup.cgroup),
            memory_bytes: cgroup.limits.memory_bytes,
        });
    }
    Ok((net, instances))
}

/// Kills every process in the instances' cgroups until each runtime process has ended. Past
/// `timeout`, the runtime processes still alive are killed themselves and named in the error.
pub(crate) fn stop_instances(
    slug: &str,
    instances: &[(u32, Arc<AnyCgroup>)],
    running: &[Running],
    timeout: Duration,
) -> Result<(), ContainerError> {
    let deadline = Instant::now() + timeout;
    loop {
        for (_, cg) in instances {
            // A runtime that is still creating the container may add its init at any moment:
            // the loop comes back until the runtime itself has gone.
            if let Err(e) = cg.kill_all(Duration::from_millis(500)) {
                tracing::debug!(trial = slug, "kill: {e}");
            }
        }
        let alive: Vec<&Running> = running
            .iter()
            .filter(|r| process_alive(r.pid, r.start_time).is_some())
            .collect();
        if alive.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            for r in &alive {
                kill_pid(r.pid);
            }
            return Err(ContainerError::StopTimeout {
                trial: slug.to_owned(),
                instances: alive.iter().map(|r| r.index).collect(),
                timeout_ms: timeout.as_millis(),
            });
        }
        std::thread::sleep(STOP_ROUND);
    }
}

fn kill_pid(pid: u32) {
    if let Ok(raw) = i32::try_from(pid)
        && raw > 1
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(raw),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Removes everything of the trial the backend made (the runner killed what ran and removes
/// the cgroups): deletes its containers from the runtime, removes its network namespaces, any
/// mount below its directory, and the directory. Returns what failed (empty when all went well).
pub(crate) fn destroy_trial(names: &TrialNames, runtime: &Runtime) -> Vec<String> {
    let mut errors = Vec::new();
    // Nothing of the trial under the runtime's root: nothing to ask the runtime to delete.
    let entries = runtime.state_entries(&names.id_prefix());
    let rest: Vec<&String> = entries
        .iter()
        .filter(|id| !runtime.remove_stopped(id))
        .collect();
    if !rest.is_empty() {
        match runtime.list() {
            Ok(ids) => {
                for id in ids.iter().filter(|id| id.starts_with(&names.id_prefix())) {
                    if let Err(e) = runtime.delete(id) {
                        errors.push(e.to_string());
                    }
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    if let Err(e) = netns::destroy(&names.net_prefix) {
        errors.push(format!("bridge network {}: {e}", names.net_prefix));
    }
    errors.extend(remove_bundle_dir(&names.dir));
    errors
}

/// Unmounts whatever is left below a trial's bundle directory, then removes the directory.
fn remove_bundle_dir(dir: &Path) -> Vec<String> {
    let mut errors = Vec::new();
    for point in mounts_under(dir) {
        tracing::warn!(mount = %point.display(), "unmounting a mount left below a trial directory");
        if let Err(e) = unmount_detach(&point) {
            errors.push(format!("unmounting {}: {e}", point.display()));
        }
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => errors.push(format!("removing {}: {e}", dir.display())),
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_a_trial() {
        let n = TrialNames {
            slug: "0123456789abcdef-a0".into(),
            dir: "/run/isolab/agent/trials/0123456789abcdef-a0".into(),
            net_prefix: "agent-0123456789abcdef-a0".into(),
        };
        assert_eq!(n.container_id(3), "0123456789abcdef-a0-i3");
        assert!(n.container_id(3).starts_with(&n.id_prefix()));
        assert!(
            !"0123456789abcdef-a01-i3".starts_with(&n.id_prefix()),
            "attempt 01 is not attempt 0"
        );
        assert_eq!(
            n.bundle(3),
            Path::new("/run/isolab/agent/trials/0123456789abcdef-a0/i3")
        );
    }
}
