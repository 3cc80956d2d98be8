//! The agent's core, free of gRPC: [`AgentCore`], which runs trials on backends and cancels
//! them. Its request, event and capability types are the wire's (`isolab-wire`), re-exported
//! here.

mod admit;
mod agent;
mod error;
pub mod relay;

pub use agent::{AgentCore, MAX_INSTANCES, ShutdownReport};
pub use error::RunTrialError;
pub use isolab_wire::{
    Capabilities, HostInfo, HostNoise, LogStream, TrialEvent, TrialRequest, TrialState, TrialStatus,
};
