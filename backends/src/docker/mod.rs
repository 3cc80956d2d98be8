//! The `docker` backend: each instance is a Docker Engine container, driven through the Engine
//! API on its Unix socket with `bollard`.
//!
//! # The daemon
//!
//! [`DockerConfig::daemon`] picks it: the daemon at the configured socket (`DOCKER_HOST` or
//! `/var/run/docker.sock`), or a private `dockerd` the agent starts itself ([`PrivateDaemon`]:
//! its own data and exec roots, no bridge, no iptables, cgroupfs driver) and stops when the
//! backend is dropped. The default, `auto`, takes the socket when a daemon answers there, else a
//! private daemon when `dockerd` is installed. The probe runs a real container and checks that it
//! lands in the agent's cgroup ([`probe`]).
//!
//! # Life of a trial
//!
//! - prepare: the workload image ([`image`]: imported from a tar stream holding the static
//!   `isolab-workload`, tagged with the binary's hash, reused when present); the trial and
//!   instance cgroups with every limit (made by the runner's engine, [`isolab_host::cgroup::engine`]);
//!   for network `bridge` the trial's network
//!   namespaces ([`isolab_host::netns`]); one created, not started, container per instance
//!   ([`spec`]: `cgroup_parent` = the instance cgroup, network `none`, read-only root, `/tmp`
//!   tmpfs, labels naming agent and trial).
//! - start: attach to every container's output, start them together, read their pids, and for
//!   `bridge` move each instance's veth end into its container
//!   ([`isolab_host::netns::attach_to_process`]).
//! - stats, stop: the runner's, on the instance cgroups (Docker notices its containers exited).
//! - teardown: remove the containers and the network namespaces (the runner removes the
//!   cgroups); the leak check lists containers still labelled with the trial and namespaces
//!   (and the runner's, cgroups and processes). Images tagged `isolab-workload:<hash>` are a cache and stay (unless
//!   [`DockerConfig::remove_image`]).

mod attach;
mod backend;
mod config;
mod daemon;
pub mod engine;
mod error;
pub mod image;
mod probe;
pub mod spec;
mod trial;

pub use backend::{DockerBackend, DockerPrepared};
pub use config::{DEFAULT_SOCKET, DaemonMode, DockerConfig};
pub use daemon::{DaemonError, PrivateDaemon};
pub use error::DockerError;
