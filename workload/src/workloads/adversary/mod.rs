//! The adversaries: workloads that try to exhaust one resource and report how far they got.
//!
//! Each runs until its duration ends (or it is killed), printing its progress as a time series
//! (`t_offset_s`) so the last value survives a kill, then a summary. At SIGINT/SIGTERM an
//! adversary stops at once, cleans up (children, files), prints its summary and exits 1
//! ("interrupted"), like every workload. None of them limits itself beyond its params: the
//! agent's safety envelope (pids, memory, disk limits; its own network namespace) is what
//! contains them, and they are meant to run only inside it.

mod clock;
mod cpu_hog;
mod disk_bomb;
mod fork_bomb;
mod memory_bomb;
mod net_flood;

pub(super) use cpu_hog::cpu_hog;
pub(super) use disk_bomb::disk_bomb;
pub(super) use fork_bomb::fork_bomb;
pub(super) use memory_bomb::memory_bomb;
pub(super) use net_flood::net_flood;
