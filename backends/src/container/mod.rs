//! The `container` backend: each instance is an OCI bundle run by an OCI runtime binary.
//!
//! # Life of a trial
//!
//! [`ContainerBackend`] prepares, per instance, a bundle directory under the agent's state dir
//! (`<state>/<agent dir>/trials/<trial slug>/i<index>/`) holding a `config.json` built with the
//! `oci-spec` crate ([`bundle`]) and a root filesystem ([`crate::rootfs`]: `minimal` or `host-ro`). For
//! network `bridge` it makes the trial's network namespaces ([`isolab_host::netns`]). It starts each instance
//! with `<runtime> --root <agent state>/runtime/<name> run --keep --bundle … <id>` in the
//! foreground ([`runtime`]): the runtime hands its own stdout and stderr (our pipes) to the
//! workload, so stdout carries nothing but sample lines, and it exits with the workload's status.
//! `--keep` leaves the stopped container and its cgroups in place, so the final statistics (OOM
//! kills, refused forks) can still be read after the workload ended; teardown deletes it.
//!
//! # cgroups
//!
//! The runner's cgroup engine makes the trial cgroup and names each instance cgroup
//! ([`isolab_host::cgroup::InstanceLevel::Runtime`]); the bundle's `cgroupsPath` is that instance
//! cgroup (*relative* `<agent dir>/<trial slug>/i<index>` on v1: runc, a child of the agent, nests
//! it under its own, so the agent's, cgroup in every hierarchy). The runtime makes it and writes
//! the limits the engine computed, which travel in `config.json`; the engine reads statistics,
//! kills, and removes the trial's directories from every hierarchy at teardown (runc also makes
//! the path in hierarchies the cgroup layer does not use: [`isolab_host::cgroup::Hierarchies`]).
//!
//! # Teardown that proves itself
//!
//! After a trial, [`Backend::leftovers`](crate::Backend::leftovers) looks for processes in any of the trial's
//! cgroups, the cgroups themselves in every hierarchy, containers the runtime still lists, the
//! bundle directories, mounts below them and network namespaces; anything found is a
//! [`crate::Leak`] and fails the trial.

mod backend;
pub mod bundle;
mod config;
mod error;
mod flavor;
mod leftovers;
mod lifecycle;
mod probe;
pub mod runtime;
pub mod runtimes;
pub mod seccomp;
mod stale;

pub use backend::{ContainerBackend, ContainerPrepared};
pub use config::{ContainerConfig, DEFAULT_RUNTIMES};
pub use error::ContainerError;
pub use runtimes::{RuntimeEntry, RuntimeTable, RuntimeTableError};
