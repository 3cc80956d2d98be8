//! The steps of one LXC trial (or probe), each blocking except [`spawn`]: make its root,
//! network and configurations around the cgroups the engine made; start an `lxc-execute` per
//! instance; stop; destroy; look for what is left. Layout for trial attempt `slug`:
//!
//! ```text
//! <state>/trials/<slug>/rootfs        the root directory, shared by the trial's instances
//! <state>/trials/<slug>/i<i>.conf     instance i's configuration (see super::conf)
//! <state>/path/                       the LXC path (-P) of this agent: containers <slug>-i<i>
//! /run/lxc/lock/<state>/path/         LXC's lock directory for it, removed with the backend
//! cgroups <agent dir>/<slug>/{i<i>[/lxc], m<i>, pivot}    (the engine makes i<i>)
//! ```

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use isolab_model::pipeline::{NetworkMode, RootfsKind};

use super::LxcError;
use super::backend::Inner;
use super::conf::{self, ConfSpec};
use crate::TRIAL_ENV;
use crate::error::SpawnError;
use crate::rootfs::{self, WORKLOAD_PATH};
use crate::{Leak, LeakReport, process_alive};
use isolab_host::cgroup::TrialCgroups;
use isolab_host::mounts::{detach, mounts_under};
use isolab_host::netns::{self, TrialNetwork};
use isolab_host::which::SEARCH_PATH;

/// Where LXC keeps lock files, below which it mirrors the LXC path.
pub const LOCK_DIR: &str = "/run/lxc/lock";

/// One instance, made.
#[derive(Debug, Clone)]
pub(crate) struct Instance {
    pub(crate) index: u32,
    pub(crate) name: String,
    pub(crate) conf: PathBuf,
    pub(crate) args: Vec<String>,
}

/// A made trial.
#[derive(Debug, Clone)]
pub(crate) struct Made {
    pub(crate) slug: String,
    pub(crate) dir: PathBuf,
    pub(crate) cgroups: TrialCgroups,
    pub(crate) network: Option<TrialNetwork>,
    pub(crate) instances: Vec<Instance>,
}

/// What one instance needs: index and workload arguments.
pub(crate) type Plan = (u32, Vec<String>);

/// Makes the trial of `cgs` (whose cgroups the engine made): root, network, configurations. On
/// error removes what it made.
pub(crate) fn make(
    inner: &Inner,
    cgs: TrialCgroups,
    kind: RootfsKind,
    network: NetworkMode,
    plans: &[Plan],
) -> Result<Made, LxcError> {
    let slug = cgs.slug.clone();
    let dir = inner.state.join("trials").join(&slug);
    for (index, _) in plans {
        cgs.set_leaf(*index, format!("{}/lxc", cgs.instance_rel(*index)));
    }
    let made = Made {
        slug,
        dir,
        cgroups: cgs,
        network: None,
        instances: Vec::new(),
    };
    match fill(inner, made.clone(), kind, network, plans) {
        Ok(m) => Ok(m),
        Err(e) => {
            for p in destroy(inner, &made) {
                tracing::warn!("cleaning up after a failed prepare: {p}");
            }
            Err(e)
        }
    }
}

fn fill(
    inner: &Inner,
    mut made: Made,
    kind: RootfsKind,
    network: NetworkMode,
    plans: &[Plan],
) -> Result<Made, LxcError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| LxcError::Io { path, source }
    };
    remove_dir(&made.dir)?;
    let root = rootfs::create(&made.dir.join("rootfs"), kind, Path::new("/"))?;
    std::fs::create_dir_all(&inner.lxcpath).map_err(io(&inner.lxcpath))?;
    if network == NetworkMode::Bridge {
        let indexes: Vec<u32> = plans.iter().map(|(i, _)| *i).collect();
        made.network = Some(
            netns::create(&inner.net_prefix(&made.slug), &indexes).map_err(LxcError::Network)?,
        );
    }
    for (index, args) in plans {
        let record = made.dir.join(format!("i{index}.final"));
        let leaf = format!("{}/lxc", made.cgroups.instance_rel(*index));
        let hook = conf::stop_hook(&counter_files(&made.cgroups, &leaf), &record);
        made.cgroups.set_record(*index, record);
        let text = conf::render(&ConfSpec {
            index: *index,
            slug: &made.slug,
            rootfs: &root.dir,
            workload_bin: &inner.workload_bin,
            binds: &root.binds,
            trial_rel: &made.cgroups.trial_rel,
            network,
            stop_hook: Some(&hook),
            tmp_bytes: inner.tmp_bytes,
            hardening: &inner.hardening,
        });
        let path = made.dir.join(format!("i{index}.conf"));
        std::fs::write(&path, text).map_err(io(&path))?;
        made.instances.push(Instance {
            index: *index,
            name: format!("{}-i{index}", made.slug),
            conf: path,
            args: args.clone(),
        });
    }
    Ok(made)
}

/// The files of the leaf `rel` whose counters the stop hook keeps: `memory.oom_control` and
/// `pids.events` on v1, `memory.events` and `pids.events` on v2.
fn counter_files(cgs: &TrialCgroups, rel: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for h in &cgs.hierarchies().list {
        let dir = h.own_dir.join(rel);
        let ctrls: Vec<&str> = h.name.split(',').collect();
        if ctrls.contains(&"memory") {
            files.push(dir.join("memory.oom_control"));
        }
        if ctrls.contains(&"pids") {
            files.push(dir.join("pids.events"));
        }
        if h.name == "unified" && cgs.manager().version() == isolab_host::cgroup::CgroupVersion::V2
        {
            files.push(dir.join("memory.events"));
            files.push(dir.join("pids.events"));
        }
    }
    files
}

/// Starts `lxc-execute` for one instance (in its network namespace for `bridge`), stdout and
/// stderr piped, killed if the agent dies.
pub(crate) fn spawn(
    inner: &Inner,
    made: &Made,
    inst: &Instance,
) -> Result<tokio::process::Child, LxcError> {
    let spawn_err = |source| {
        LxcError::from(SpawnError {
            instance: inst.index,
            program: inner.program.clone(),
            source,
        })
    };
    let netns_fd: Option<OwnedFd> = match made
        .network
        .as_ref()
        .and_then(|n| n.instances.iter().find(|i| i.index == inst.index))
    {
        Some(net) => Some(std::fs::File::open(net.path()).map_err(spawn_err)?.into()),
        None => None,
    };
    let mut cmd = tokio::process::Command::new(&inner.program);
    cmd.arg("-P")
        .arg(&inner.lxcpath)
        .arg("-n")
        .arg(&inst.name)
        .arg("-f")
        .arg(&inst.conf)
        .arg("--")
        .arg(WORKLOAD_PATH)
        .args(&inst.args)
        .env_clear()
        .env("PATH", SEARCH_PATH)
        .env(TRIAL_ENV, &made.slug)
        .env("ISOLAB_INSTANCE", inst.index.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let raw = netns_fd.as_ref().map(AsRawFd::as_raw_fd);
    // SAFETY: runs in the child between fork and exec and makes only async-signal-safe system
    // calls with plain integers: setns on a descriptor the parent keeps open until spawn returns,
    // and prctl.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = raw
                && libc::setns(fd, libc::CLONE_NEWNET) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(spawn_err)?;
    drop(netns_fd);
    Ok(child)
}

/// With the containers killed (their instance cgroups, by the runner), gives the monitors
/// (`monitors`: pid and start time) a moment to report and exit, then kills everything left in
/// the trial's cgroup.
pub(crate) fn stop(
    made: &Made,
    monitors: &[(u32, Option<u64>)],
    timeout: Duration,
) -> Result<(), LxcError> {
    let until = Instant::now() + Duration::from_secs(2).min(timeout);
    while Instant::now() < until
        && monitors
            .iter()
            .any(|(p, t)| process_alive(*p, *t).is_some())
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let rest = made.cgroups.kill_trial();
    // Container inits orphaned to this process (a child subreaper) when their monitor died first.
    isolab_host::reap::reap_orphans("init.lxc.static");
    rest.map(drop).map_err(LxcError::from)
}

/// Removes the trial's network, directory and lock files (the cgroups are the engine's).
pub(crate) fn destroy(inner: &Inner, made: &Made) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = netns::destroy(&inner.net_prefix(&made.slug)) {
        problems.push(e.to_string());
    }
    if let Err(e) = remove_dir(&made.dir) {
        problems.push(e.to_string());
    }
    for inst in &made.instances {
        for lock in lock_files(&inner.lxcpath, &inst.name) {
            if let Err(e) = std::fs::remove_file(&lock)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                problems.push(format!("{}: {e}", lock.display()));
            }
        }
    }
    problems
}

/// Everything of trial `slug` the backend made that is still there, looked up in the system.
pub(crate) fn leftovers(inner: &Inner, slug: &str, names: &[String]) -> LeakReport {
    let mut report = LeakReport::default();
    for ns in netns::existing(&inner.net_prefix(slug)) {
        report.push(Leak::Netns { name: ns });
    }
    let dir = inner.state.join("trials").join(slug);
    for m in mounts_under(&dir) {
        report.push(Leak::Mount {
            path: m.display().to_string(),
        });
    }
    if dir.exists() {
        report.push(Leak::Other {
            what: format!("lxc trial directory {} still exists", dir.display()),
        });
    }
    for name in names {
        for lock in lock_files(&inner.lxcpath, name)
            .into_iter()
            .filter(|l| l.exists())
        {
            report.push(Leak::Other {
                what: format!("lxc lock {} still exists", lock.display()),
            });
        }
    }
    report
}

/// LXC's lock files of container `name` in LXC path `lxcpath`.
pub(crate) fn lock_files(lxcpath: &Path, name: &str) -> Vec<PathBuf> {
    let dir = lock_dir(lxcpath);
    vec![dir.join(name), dir.join(format!(".{name}"))]
}

/// LXC's lock directory for `lxcpath`: `/run/lxc/lock/<lxcpath without its leading slash>`.
pub fn lock_dir(lxcpath: &Path) -> PathBuf {
    Path::new(LOCK_DIR).join(lxcpath.strip_prefix("/").unwrap_or(lxcpath))
}

/// Removes the lock directory of `lxcpath` and its parents up to [`LOCK_DIR`], each only if
/// empty (another LXC path may share a parent).
pub(crate) fn remove_lock_dirs(lxcpath: &Path) {
    let top = Path::new(LOCK_DIR);
    let mut dir = lock_dir(lxcpath);
    while dir.starts_with(top) && dir != top {
        if std::fs::remove_dir(&dir).is_err() {
            break;
        }
        let Some(parent) = dir.parent() else { break };
        dir = parent.to_owned();
    }
}

/// Removes a trial directory; mounts below it (there should be none: LXC mounts inside the
/// container's own mount namespace) are detached first so removal never crosses into them.
pub(crate) fn remove_dir(dir: &Path) -> Result<(), LxcError> {
    for m in mounts_under(dir) {
        detach(&m);
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LxcError::Io {
            path: dir.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_paths_mirror_the_lxc_path() {
        assert_eq!(
            lock_dir(Path::new("/run/isolab/a/lxc/path")),
            Path::new("/run/lxc/lock/run/isolab/a/lxc/path")
        );
        let files = lock_files(Path::new("/s/path"), "t-a0-i1");
        assert_eq!(
            files,
            [
                PathBuf::from("/run/lxc/lock/s/path/t-a0-i1"),
                PathBuf::from("/run/lxc/lock/s/path/.t-a0-i1")
            ]
        );
    }

    #[test]
    fn a_missing_trial_directory_is_fine_and_a_present_one_goes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("trial");
        remove_dir(&dir).unwrap();
        std::fs::create_dir_all(dir.join("rootfs/tmp")).unwrap();
        remove_dir(&dir).unwrap();
        assert!(!dir.exists());
    }
}
