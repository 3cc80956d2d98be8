//! The agent's core, free of gRPC: its own request, event and capability types, and
//! [`AgentCore`], which runs trials on backends and cancels them.

mod agent;
mod types;

pub use agent::{AgentCore, MAX_INSTANCES, RunTrialError, ShutdownReport};
pub use types::{
    Capabilities, HostInfo, LogStream, TrialEvent, TrialRequest, TrialState, TrialStatus,
};
