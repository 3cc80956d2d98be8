//! `isolab-host`: host plumbing that the agent, its backends and the tools around them share,
//! free of any backend: control groups and the one engine that makes, limits, reads, kills and
//! removes every trial's cgroups ([`cgroup`]), facts about the machine recorded with every run
//! ([`facts`]), network namespaces, bridges and veths through `ip` ([`netns`]), mount
//! points ([`mounts`]), `/proc` scans for what a trial left behind ([`leaks`]), reaping orphans
//! ([`reap`]), finding host binaries ([`which`]) and the `isolab-workload` binary
//! ([`workload_bin`]). Backends move shared
//! code down here rather than importing each other.

pub mod cgroup;
pub mod facts;
pub mod leaks;
pub mod mounts;
pub mod netns;
pub mod reap;
pub mod which;
pub mod workload_bin;
