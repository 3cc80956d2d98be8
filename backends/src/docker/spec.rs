//! The container a trial instance becomes: [`ContainerCreateBody`] from what the instance needs.
//!
//! - Command: `/isolab-workload NAME --param …`, environment `ISOLAB_TRIAL`, `ISOLAB_INSTANCE`,
//!   `TMPDIR=/tmp`, `LANG=C` and a fixed `PATH`, nothing else of the agent's.
//! - Root: the workload image, read-only, with a `/tmp` tmpfs (as the container backend); for
//!   `rootfs: host-ro` the host's `/usr`, `/lib*`, `/bin`, … bound read-only on top.
//! - Network `none` (only loopback). A bridge network is attached after start (see
//!   [`super::network`]).
//! - `cgroup_parent` is the instance's cgroup (relative: the cgroupfs driver nests it under the
//!   daemon's cgroup, which is the agent's). Docker adds one level, the container's id, below it.
//! - Limits: none on Docker's own level, by design. The instance cgroup, which the agent makes
//!   before the container, carries them all (the safety envelope tightened by the pipeline's
//!   limits, exactly as for every other backend). Docker's level would be the wrong place: Docker
//!   removes it the moment the container exits, taking the OOM, `failcnt` and refused-fork
//!   counters of the final statistics with it, and CPU shares there would compete with nobody
//!   (it is the only child of its instance cgroup), so fairness experiments would measure nothing.
//! - Logging driver `none`: output is read through `attach`, never stored.
//! - `init: true`: Docker's `docker-init` (tini) is PID 1 and the workload its child, as with
//!   `docker run --init`. It reaps the orphans a fork bomb leaves, passes the workload's exit
//!   status on (128 + n for signal n), and keeps the workload from being PID 1, which
//!   `isolab-workload` takes as the sign that it is a VM's `/init`.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig};
use isolab_model::pipeline::RootfsKind;

use super::engine::{LABEL_AGENT, LABEL_BOOT, LABEL_OWNER, LABEL_TRIAL};
use super::image::WORKLOAD_PATH;
use crate::TRIAL_ENV;
use crate::rootfs::HOST_RO_PATHS;

/// `PATH` inside the container.
const CONTAINER_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// What one instance's container is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceSpec<'a> {
    /// The image reference.
    pub image: &'a str,
    /// The workload's arguments (after the program).
    pub args: &'a [String],
    /// The agent's cgroup directory name (label).
    pub agent: &'a str,
    /// The trial attempt's slug (label and `ISOLAB_TRIAL`).
    pub slug: &'a str,
    /// Instance index.
    pub index: u32,
    /// The instance cgroup, relative to the agent's own (`cgroup_parent`).
    pub cgroup_rel: &'a str,
    /// Root filesystem flavour.
    pub rootfs: RootfsKind,
    /// An OCI runtime the daemon knows (`runc`, `runsc`…), `None` for the daemon's default.
    pub runtime: Option<&'a str>,
    /// Size of the `/tmp` tmpfs.
    pub tmp_bytes: u64,
}

/// The create body of one instance's container.
pub fn container_body(spec: &InstanceSpec<'_>) -> ContainerCreateBody {
    let mut cmd = vec![WORKLOAD_PATH.to_owned()];
    cmd.extend(spec.args.iter().cloned());
    let env = vec![
        format!("{TRIAL_ENV}={}", spec.slug),
        format!("ISOLAB_INSTANCE={}", spec.index),
        format!("PATH={CONTAINER_PATH}"),
        "TMPDIR=/tmp".to_owned(),
        "LANG=C".to_owned(),
    ];
    let mut labels = HashMap::from([
        (LABEL_AGENT.to_owned(), spec.agent.to_owned()),
        (LABEL_TRIAL.to_owned(), spec.slug.to_owned()),
        (
            LABEL_OWNER.to_owned(),
            isolab_host::owner::Owner::me().to_string(),
        ),
    ]);
    if let Some(boot) = isolab_host::state_dir::boot_id() {
        labels.insert(LABEL_BOOT.to_owned(), boot);
    }
    let binds = match spec.rootfs {
        RootfsKind::Minimal => None,
        RootfsKind::HostRo => Some(
            HOST_RO_PATHS
                .iter()
                // `/sbin/docker-init` is where Docker mounts its init; `/usr` brings `sbin` along.
                .filter(|p| **p != "/sbin" && std::fs::symlink_metadata(p).is_ok())
                .map(|p| format!("{p}:{p}:ro"))
                .collect(),
        ),
    };
    let host_config = HostConfig {
        cgroup_parent: Some(spec.cgroup_rel.to_owned()),
        network_mode: Some("none".to_owned()),
        readonly_rootfs: Some(true),
        tmpfs: Some(HashMap::from([(
            "/tmp".to_owned(),
            format!("rw,nosuid,nodev,mode=1777,size={}", spec.tmp_bytes),
        )])),
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".to_owned()),
            config: None,
        }),
        binds,
        runtime: spec.runtime.map(str::to_owned),
        init: Some(true),
        ..HostConfig::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.to_owned()),
        cmd: Some(cmd),
        entrypoint: Some(Vec::new()),
        env: Some(env),
        labels: Some(labels),
        hostname: Some(format!("i{}", spec.index)),
        working_dir: Some("/tmp".to_owned()),
        attach_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(false),
        tty: Some(false),
        network_disabled: Some(false),
        host_config: Some(host_config),
        ..ContainerCreateBody::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(rootfs: RootfsKind) -> ContainerCreateBody {
        let args = vec![
            "syscall".to_owned(),
            "--param".to_owned(),
            "duration=1s".to_owned(),
        ];
        container_body(&InstanceSpec {
            image: "isolab-workload:0123456789abcdef",
            args: &args,
            agent: "isolab-agent-1-0",
            slug: "t1-a0",
            index: 3,
            cgroup_rel: "isolab-agent-1-0/t1-a0/i3",
            rootfs,
            runtime: None,
            tmp_bytes: 64 << 20,
        })
    }

    #[test]
    fn the_workload_runs_alone_with_its_trial_in_its_environment() {
        let b = spec(RootfsKind::Minimal);
        assert_eq!(
            b.cmd.as_deref().unwrap(),
            ["/isolab-workload", "syscall", "--param", "duration=1s"]
        );
        let env = b.env.unwrap();
        assert!(env.contains(&"ISOLAB_TRIAL=t1-a0".to_owned()), "{env:?}");
        assert!(env.contains(&"ISOLAB_INSTANCE=3".to_owned()), "{env:?}");
        let labels = b.labels.unwrap();
        assert_eq!(labels.get(LABEL_TRIAL).map(String::as_str), Some("t1-a0"));
        assert_eq!(
            labels.get(LABEL_AGENT).map(String::as_str),
            Some("isolab-agent-1-0")
        );
        let owner = labels.get(LABEL_OWNER).expect("owner label");
        assert_eq!(
            isolab_host::owner::Owner::parse(owner),
            Some(isolab_host::owner::Owner::me())
        );
        assert_eq!(
            labels.get(LABEL_BOOT),
            isolab_host::state_dir::boot_id().as_ref()
        );
    }

    #[test]
    fn the_container_nests_in_the_instance_cgroup_without_network_or_writable_root() {
        let h = spec(RootfsKind::Minimal).host_config.unwrap();
        assert_eq!(
            h.cgroup_parent.as_deref(),
            Some("isolab-agent-1-0/t1-a0/i3")
        );
        assert_eq!(h.network_mode.as_deref(), Some("none"));
        assert_eq!(h.readonly_rootfs, Some(true));
        assert_eq!(
            h.tmpfs.unwrap().get("/tmp").map(String::as_str),
            Some("rw,nosuid,nodev,mode=1777,size=67108864"),
            "the /tmp tmpfs is sized"
        );
        assert_eq!(h.binds, None);
        assert_eq!(
            h.memory, None,
            "limits live on the instance cgroup, not on Docker's level"
        );
        assert_eq!(h.cpu_shares, None);
    }

    /// Docker's own hardening stays: no privileged mode, no added or dropped capabilities, no
    /// security options (so the default seccomp and AppArmor profiles apply), no devices.
    #[test]
    fn dockers_default_hardening_is_left_alone() {
        for kind in [RootfsKind::Minimal, RootfsKind::HostRo] {
            let h = spec(kind).host_config.unwrap();
            assert_eq!(h.privileged, None);
            assert_eq!(h.cap_add, None);
            assert_eq!(h.cap_drop, None);
            assert_eq!(h.security_opt, None);
            assert_eq!(h.devices, None);
            assert_eq!(h.pid_mode, None);
            assert_eq!(h.ipc_mode, None);
        }
    }

    #[test]
    fn host_ro_binds_the_host_libraries_read_only() {
        let binds = spec(RootfsKind::HostRo).host_config.unwrap().binds.unwrap();
        assert!(binds.contains(&"/usr:/usr:ro".to_owned()), "{binds:?}");
        assert!(binds.iter().all(|b| b.ends_with(":ro")), "{binds:?}");
    }
}
