//! The LXC configuration file of one instance, generated (never read from `/etc/lxc`).
//!
//! - Root: a directory root made like the container backend's ([`crate::rootfs`]:
//!   mount points, a placeholder for the workload, and for `host-ro` the host's libraries),
//!   mounted read-only; the workload binary bound read-only onto its placeholder, a `/tmp`
//!   tmpfs, `/proc` and a read-only `/sys`, LXC's minimal `/dev`.
//! - cgroups: `lxc.cgroup.relative = 1` (without it a root LXC bases its cgroups on PID 1's and
//!   leaves the agent's), the container at `<instance cgroup>/lxc`, the monitor at
//!   `<trial>/m<i>`, the monitor's pivot at `<trial>/pivot`: everything below the trial's cgroup,
//!   which teardown removes in every hierarchy. Limits are not LXC keys: they sit on the instance
//!   cgroup the agent made (the envelope tightened by the pipeline, as for every backend), because
//!   LXC removes its own level when the container exits, and with it the OOM, `failcnt` and
//!   refused-fork counters the final statistics need.
//! - Network: `empty` (only loopback); `none` (share the network namespace `lxc-execute` runs in)
//!   for `host`, and for `bridge`, where the agent starts `lxc-execute` inside the instance's
//!   namespace of the trial network ([`isolab_host::netns`]).
//! - `lxc.console.path = none`, so the workload writes to the pipes `lxc-execute` was given.
//! - LXC's default hardening from its shipped `common.conf` ([`super::hardening`]): the
//!   capabilities it drops and its seccomp profile.
//! - A stop hook ([`stop_hook`]) that copies the event counters of LXC's level (OOM kills and
//!   refused forks are booked there on cgroup v1) to a file before LXC removes the level.

use std::fmt::Write as _;
use std::path::Path;

use isolab_model::pipeline::NetworkMode;

use crate::TRIAL_ENV;
use crate::rootfs::{HostBind, WORKLOAD_PATH};

/// `PATH` inside the container.
const CONTAINER_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// What one instance's configuration is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfSpec<'a> {
    /// Instance index.
    pub index: u32,
    /// The trial attempt's slug (`ISOLAB_TRIAL`).
    pub slug: &'a str,
    /// The root directory.
    pub rootfs: &'a Path,
    /// The workload binary on the host.
    pub workload_bin: &'a Path,
    /// Host paths bound read-only (`host-ro`).
    pub binds: &'a [HostBind],
    /// The trial cgroup, relative to the agent's own.
    pub trial_rel: &'a str,
    /// Network attachment.
    pub network: NetworkMode,
    /// Host command LXC runs when the container has stopped, before it removes its cgroup.
    pub stop_hook: Option<&'a str>,
    /// Size of the `/tmp` tmpfs.
    pub tmp_bytes: u64,
    /// LXC's default capability drops and seccomp profile.
    pub hardening: &'a super::hardening::LxcHardening,
}

/// The configuration text.
pub fn render(spec: &ConfSpec<'_>) -> String {
    let mut c = String::new();
    let mut line = |k: &str, v: &str| {
        let _ = writeln!(c, "{k} = {v}");
    };
    let i = spec.index;
    line("lxc.uts.name", &format!("i{i}"));
    line("lxc.rootfs.path", &format!("dir:{}", spec.rootfs.display()));
    line("lxc.rootfs.options", "ro");
    line("lxc.autodev", "1");
    line("lxc.cgroup.relative", "1");
    line(
        "lxc.cgroup.dir.container",
        &format!("{}/i{i}/lxc", spec.trial_rel),
    );
    line(
        "lxc.cgroup.dir.monitor",
        &format!("{}/m{i}", spec.trial_rel),
    );
    line(
        "lxc.cgroup.dir.monitor.pivot",
        &format!("{}/pivot", spec.trial_rel),
    );
    line(
        "lxc.net.0.type",
        if spec.network == NetworkMode::None {
            "empty"
        } else {
            "none"
        },
    );
    line("lxc.console.path", "none");
    line("lxc.tty.max", "0");
    line("lxc.mount.auto", "proc:mixed sys:ro");
    let inside = WORKLOAD_PATH.trim_start_matches('/');
    line(
        "lxc.mount.entry",
        &format!("{} {inside} none bind,ro 0 0", spec.workload_bin.display()),
    );
    line(
        "lxc.mount.entry",
        &format!(
            "tmpfs tmp tmpfs rw,nosuid,nodev,mode=1777,size={} 0 0",
            spec.tmp_bytes
        ),
    );
    for b in spec.binds {
        let p = b.path.display().to_string();
        line(
            "lxc.mount.entry",
            &format!("{p} {} none rbind,ro 0 0", p.trim_start_matches('/')),
        );
    }
    line("lxc.init.cwd", "/tmp");
    for (k, v) in [
        (TRIAL_ENV, spec.slug.to_owned()),
        ("ISOLAB_INSTANCE", i.to_string()),
        ("PATH", CONTAINER_PATH.to_owned()),
        ("TMPDIR", "/tmp".to_owned()),
        ("LANG", "C".to_owned()),
    ] {
        line("lxc.environment", &format!("{k}={v}"));
    }
    if !spec.hardening.cap_drop.is_empty() {
        line("lxc.cap.drop", &spec.hardening.cap_drop.join(" "));
    }
    if let Some(profile) = &spec.hardening.seccomp_profile {
        line("lxc.seccomp.profile", &profile.display().to_string());
    }
    if let Some(hook) = spec.stop_hook {
        line("lxc.hook.stop", hook);
    }
    line("lxc.log.level", "ERROR");
    c
}

/// The stop hook that copies `files` (the leaf's counter files, any missing one skipped) to
/// `out`. LXC runs hooks through a shell and appends the container name and section.
pub fn stop_hook(files: &[std::path::PathBuf], out: &Path) -> String {
    let quoted = |p: &Path| format!("\"{}\"", p.display());
    let list: Vec<String> = files.iter().map(|f| quoted(f)).collect();
    format!(
        "/bin/sh -c 'cat {} > {} 2>/dev/null; true'",
        list.join(" "),
        quoted(out)
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn conf(network: NetworkMode, binds: &[HostBind]) -> String {
        let hardening = crate::lxc::hardening::LxcHardening {
            cap_drop: vec!["sys_module".into(), "sys_time".into()],
            seccomp_profile: Some("/usr/share/lxc/config/common.seccomp".into()),
        };
        render(&ConfSpec {
            index: 2,
            slug: "t1-a0",
            rootfs: Path::new("/state/trials/t1-a0/rootfs"),
            workload_bin: Path::new("/opt/isolab-workload"),
            binds,
            trial_rel: "isolab-agent-1-0/t1-a0",
            network,
            stop_hook: Some("/bin/true"),
            tmp_bytes: 64 << 20,
            hardening: &hardening,
        })
    }

    #[test]
    fn lxcs_default_hardening_is_applied() {
        let c = conf(NetworkMode::None, &[]);
        assert_eq!(value(&c, "lxc.cap.drop"), ["sys_module sys_time"]);
        assert_eq!(
            value(&c, "lxc.seccomp.profile"),
            ["/usr/share/lxc/config/common.seccomp"]
        );
    }

    fn value<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
        text.lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix(" = "))
            .collect()
    }

    #[test]
    fn cgroups_nest_below_the_trial_and_stay_relative() {
        let c = conf(NetworkMode::None, &[]);
        assert_eq!(value(&c, "lxc.cgroup.relative"), ["1"]);
        assert_eq!(
            value(&c, "lxc.cgroup.dir.container"),
            ["isolab-agent-1-0/t1-a0/i2/lxc"]
        );
        assert_eq!(
            value(&c, "lxc.cgroup.dir.monitor"),
            ["isolab-agent-1-0/t1-a0/m2"]
        );
        assert_eq!(
            value(&c, "lxc.cgroup.dir.monitor.pivot"),
            ["isolab-agent-1-0/t1-a0/pivot"]
        );
        assert!(
            !c.contains("lxc.cgroup.memory"),
            "limits live on the instance cgroup"
        );
    }

    #[test]
    fn the_root_is_read_only_with_the_workload_bound_in_and_output_kept() {
        let c = conf(NetworkMode::None, &[]);
        assert_eq!(
            value(&c, "lxc.rootfs.path"),
            ["dir:/state/trials/t1-a0/rootfs"]
        );
        assert_eq!(value(&c, "lxc.rootfs.options"), ["ro"]);
        assert_eq!(value(&c, "lxc.console.path"), ["none"]);
        let mounts = value(&c, "lxc.mount.entry");
        assert!(
            mounts.contains(&"/opt/isolab-workload isolab-workload none bind,ro 0 0"),
            "{mounts:?}"
        );
        assert!(
            mounts.contains(&"tmpfs tmp tmpfs rw,nosuid,nodev,mode=1777,size=67108864 0 0"),
            "the /tmp tmpfs is sized: {mounts:?}"
        );
        assert!(value(&c, "lxc.environment").contains(&"ISOLAB_TRIAL=t1-a0"));
    }

    #[test]
    fn network_none_is_empty_and_shared_namespaces_are_none() {
        assert_eq!(
            value(&conf(NetworkMode::None, &[]), "lxc.net.0.type"),
            ["empty"]
        );
        assert_eq!(
            value(&conf(NetworkMode::Bridge, &[]), "lxc.net.0.type"),
            ["none"]
        );
        assert_eq!(
            value(&conf(NetworkMode::Host, &[]), "lxc.net.0.type"),
            ["none"]
        );
    }

    #[test]
    fn host_ro_binds_are_read_only() {
        let binds = [HostBind {
            path: PathBuf::from("/usr"),
        }];
        let c = conf(NetworkMode::None, &binds);
        assert!(value(&c, "lxc.mount.entry").contains(&"/usr usr none rbind,ro 0 0"));
    }
}

#[cfg(test)]
mod hook_tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn the_stop_hook_copies_the_counters_and_never_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("memory.oom_control");
        std::fs::write(&a, "oom_kill_disable 0\noom_kill 2\n").unwrap();
        let missing = PathBuf::from("/nonexistent/pids.events");
        let out = tmp.path().join("i0.final");
        let hook = stop_hook(&[a, missing], &out);
        // As LXC runs it: through a shell, with the container name and section appended.
        let status = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("{hook} c1 lxc stop"))
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "oom_kill_disable 0\noom_kill 2\n"
        );
    }
}
