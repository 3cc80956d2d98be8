//! Naming conventions of the metrics the analyzer interprets.
//!
//! Workloads name their own metrics (`ns_per_call`, `us_per_process`, `units_per_s`, `tps`…);
//! the coordinator adds the agent's cgroup accounting per instance under fixed names
//! ([`HOST_METRICS`]): `cpu_usage_ns` and `memory_current_bytes` as time series while the trial
//! runs, every counter once at the end (summary rows). Every workload also prints bookkeeping
//! ([`BOOKKEEPING_METRICS`]: `ops`, `elapsed_s`), which reports keep out of the way.

/// Metrics the coordinator derives from the agent's cgroup statistics.
pub const HOST_METRICS: &[&str] = &[
    "cpu_usage_ns",
    "cpu_user_ns",
    "cpu_system_ns",
    "memory_current_bytes",
    "memory_peak_bytes",
    "memory_limit_hits",
    "oom_events",
    "oom_kills",
    "pids_current",
    "pids_limit_hits",
    "io_read_bytes",
    "io_write_bytes",
    "host_steal_fraction",
    "host_background_cpu_fraction",
    "agent_cpu_fraction",
];

/// CPU time an instance used, cumulative, nanoseconds (cgroup accounting).
pub const CPU_USAGE: &str = "cpu_usage_ns";
/// Work rate of `cpu_spin`: a time series every interval and a summary.
pub const UNITS_PER_S: &str = "units_per_s";
/// Times the kernel's OOM killer killed a process of the instance.
pub const OOM_KILLS: &str = "oom_kills";
/// 1 when a signal ended an isolation adversary (the agent records it from the exit status, so a
/// kill counts even where the cgroup's OOM counter lives on an ancestor, as on cgroup v1).
pub const ADVERSARY_KILLED: &str = "adversary_killed";
/// Metrics whose positive value means an adversary ran into a limit: the cgroup's pids limit,
/// its memory limit, a refused fork or allocation, a full disk.
pub const LIMIT_METRICS: &[&str] = &["pids_limit_hits", "memory_limit_hits", "refused", "full"];

/// Counts and durations every workload prints next to its headline figure.
pub const BOOKKEEPING_METRICS: &[&str] = &["ops", "elapsed_s", "setup_s", "process_cpu_ns"];

/// Whether a metric is the agent's accounting rather than a workload's own figure.
pub fn is_host_metric(metric: &str) -> bool {
    HOST_METRICS.contains(&metric)
}

/// Whether a metric is a workload's bookkeeping (operation count, elapsed time).
pub fn is_bookkeeping(metric: &str) -> bool {
    BOOKKEEPING_METRICS.contains(&metric)
}

/// Whether a metric is a workload's own result: neither host accounting nor bookkeeping.
pub fn is_headline(metric: &str) -> bool {
    !is_host_metric(metric) && !is_bookkeeping(metric)
}
