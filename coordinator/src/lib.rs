//! The coordinator behind the `isolab` command: planning, dispatch to agents, retries, resume,
//! the Parquet sink and the run directory.
//!
//! The command-line parsing lives in the binary; this library is what it calls, so tests drive the
//! same code paths a user does.

pub mod benchmarks;
pub mod client;
pub mod discover;
pub mod events;
pub mod inventory;
pub mod metrics;
pub mod progress;
pub mod provenance;
pub mod report_bench;
pub mod rows;
pub mod run;
pub mod rundir;
pub mod service;
pub mod sink;
pub mod stability;
