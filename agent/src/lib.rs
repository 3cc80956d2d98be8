//! `isolab-agent`: the per-host agent that runs trials of allowlisted workloads.
//!
//! The agent's [`core`] knows nothing of gRPC: [`core::AgentCore`] answers capabilities, runs a
//! trial on a backend of `isolab-backends` ([`isolab_backends::Backend`]) through the [`runner`]
//! and streams [`core::TrialEvent`]s, and cancels trials; [`admission`] decides what a trial may
//! ask for. The [`service`] translates the `isolab.v1` gRPC API to and from the core with the
//! conversions of `isolab-wire` (shared with the coordinator), and [`serve`] runs it with the
//! standard health service and a bounded drain on shutdown. Cgroups, namespaces and the other
//! host plumbing are `isolab-host`'s. The conformance suite every backend's tests run
//! (`conformance`) and the benchmark drivers (`bench`) are test support behind the `testing`
//! feature, not in the release library.
//!
//! ```no_run
//! # async fn demo() -> Result<(), isolab_agent::serve::ServeError> {
//! let agent = isolab_agent::serve::spawn_local(isolab_agent::config::AgentConfig::default()).await?;
//! println!("agent listening on {}", agent.addr);
//! agent.shutdown().await;
//! # Ok(()) }
//! ```

pub mod admission;
pub mod announce;
#[cfg(any(test, feature = "testing"))]
pub mod bench;
pub mod budget;
pub mod config;
#[cfg(any(test, feature = "testing"))]
pub mod confinement;
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod core;
pub mod runner;
pub mod serve;
pub mod service;
