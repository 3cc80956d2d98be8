//! The `lxc` backend: each instance is an LXC system container started with `lxc-execute` from
//! Debian's `lxc` package and a configuration the agent generates ([`conf`]).
//!
//! # Life of a trial
//!
//! - prepare (the runner's cgroup engine made the trial and instance cgroups with every limit,
//!   [`isolab_host::cgroup::engine`]): a read-only directory root holding mount points and a
//!   placeholder for the workload ([`crate::rootfs`]),
//!   for `bridge` the trial's network namespaces ([`isolab_host::netns`]), and one
//!   configuration file per instance.
//! - start: `lxc-execute -P <own LXC path> -n <slug>-i<i> -f <conf> -- /isolab-workload …`
//!   per instance, with stdout and stderr piped (the console is off, so the workload writes to
//!   them), and for `bridge` inside the instance's network namespace (`lxc.net.0.type = none`
//!   then shares it). `-P` keeps the agent to its own containers.
//! - stats: the runner's, on the instance cgroup (LXC's own level below it is removed when the
//!   container exits; its counters are kept by a stop hook, see [`isolab_host::cgroup::TrialCgroups`]).
//! - stop: the runner kills the instance cgroups; then let the monitors report, kill what is
//!   left in the trial's.
//! - teardown: the network namespaces, the trial directory and LXC's lock files below
//!   `/run/lxc/lock`; the runner removes the trial's cgroups in every hierarchy (LXC leaves empty
//!   `lxc.pivot` cgroups and makes directories in the `devices`, `name=systemd` and v2
//!   hierarchies too); the leak check looks for all of them. Dropping the backend removes its
//!   LXC path and lock directories.

mod backend;
pub mod conf;
mod config;
mod error;
pub mod hardening;
mod probe;
mod trial;

pub use backend::{LxcBackend, LxcPrepared};
pub use config::LxcConfig;
pub use error::LxcError;
pub use trial::{LOCK_DIR, lock_dir};
