//! `isolab-host`: host plumbing that the agent, its backends and the tools around them share,
//! free of any backend: today, finding the `isolab-workload` binary every instance runs
//! ([`workload_bin`]).

pub mod workload_bin;
