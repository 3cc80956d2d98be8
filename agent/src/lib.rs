//! `isolab-agent`: the per-host agent that runs trials of allowlisted workloads.
//!
//! The agent's [`core`] knows nothing of gRPC: [`core::AgentCore`] answers capabilities, runs a
//! trial on a [`backend::Backend`] through the [`runner`] and streams [`core::TrialEvent`]s, and
//! cancels trials. The [`service`] translates the `isolab.v1` gRPC API to and from the core with
//! the conversions of `isolab-wire` (shared with the coordinator), and [`serve`] runs it with the
//! standard health service and a bounded drain on shutdown. The conformance suite and benchmark
//! drivers are test support behind the `testing` feature.
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
pub mod config;
#[cfg(any(test, feature = "testing"))]
pub mod confinement;
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod core;
pub mod runner;
pub mod serve;
pub mod service;
