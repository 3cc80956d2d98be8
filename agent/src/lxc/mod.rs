//! The `lxc` backend: each instance is an LXC system container started with `lxc-execute` from
//! Debian's `lxc` package and a configuration the agent generates ([`conf`]).
//!
//! # Life of a trial
//!
//! - prepare: the trial and instance cgroups with every limit
//!   ([`crate::docker::cgroups`], shared with the Docker backend), a read-only directory root
//!   holding mount points and a placeholder for the workload ([`crate::container::rootfs`]),
//!   for `bridge` the trial's network namespaces ([`isolab_host::netns`]), and one
//!   configuration file per instance.
//! - start: `lxc-execute -P <own LXC path> -n <slug>-i<i> -f <conf> -- /isolab-workload …`
//!   per instance, with stdout and stderr piped (the console is off, so the workload writes to
//!   them), and for `bridge` inside the instance's network namespace (`lxc.net.0.type = none`
//!   then shares it). `-P` keeps the agent to its own containers.
//! - stats: the instance cgroup (LXC's own level below it is removed when the container exits).
//! - stop: kill the instance cgroups, let the monitors report, kill what is left in the trial's.
//! - teardown: the trial's cgroups in every hierarchy (LXC leaves empty `lxc.pivot` cgroups and
//!   makes directories in the `devices`, `name=systemd` and v2 hierarchies too), the network
//!   namespaces, the trial directory and LXC's lock files below `/run/lxc/lock`; the leak check
//!   looks for all of them. Dropping the backend removes its LXC path and lock directories.

mod backend;
pub mod conf;
mod config;
mod error;
mod probe;
mod trial;

#[cfg(test)]
mod real_tests;

pub use backend::{LxcBackend, LxcPrepared};
pub use config::LxcConfig;
pub use error::LxcError;
pub use trial::LOCK_DIR;
