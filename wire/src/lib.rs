//! `isolab-wire`: the agent API as both sides see it, free of any transport but its own edge.
//!
//! - [`types`]: what the coordinator asks ([`TrialRequest`]) and what the agent answers
//!   ([`TrialEvent`], [`Capabilities`]), as plain Rust types;
//! - [`convert`]: those types to and from the generated `isolab.v1` protobuf messages, both
//!   directions, used by the agent's gRPC service and the coordinator's client alike (one decoder
//!   of agent events, not one per side);
//! - [`heartbeat`]: the JSON heartbeat agents announce themselves with on NATS.
//!
//! ```
//! use isolab_wire::{TrialEvent, TrialState, TrialStatus, convert};
//! let event = TrialEvent::Status(TrialStatus {
//!     state: TrialState::Ok,
//!     message: String::new(),
//!     host: "h1".into(),
//!     accel: None,
//!     leaks: vec![],
//! });
//! let back = convert::event_from_proto(convert::event_to_proto(event.clone())).unwrap();
//! assert_eq!(back, event);
//! ```

pub mod convert;
pub mod heartbeat;
pub mod types;

pub use convert::ConvertError;
pub use types::{
    BackendStatus, Capabilities, HostBudget, HostInfo, HostNoise, InstanceStats, LogStream,
    TrialEvent, TrialRequest, TrialSpec, TrialState, TrialStatus,
};
