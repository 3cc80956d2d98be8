//! Conversions between the agent's core types and the `isolab.v1` protobuf messages, both ways.
//! Public because the coordinator speaks the same messages: it builds requests with
//! [`trial_to_proto`] and reads events with [`event_from_proto`].
//!
//! What the wire does not carry: the platform as written (the resolved one travels instead, a
//! `oneof` per backend), a trial's `params` (the matrix point; each instance carries its own
//! parameters) and `retries`; parameter values arrive as text and are read
//! back as integer, boolean, real or text, which gives the same `--param` spelling; statistics
//! carry user and system CPU time, so `cpu_usage_ns` arrives as their sum and
//! `memory_limit_hits` as 0. Enumerations in text fields use the pipeline file's spelling.

mod capabilities;
mod event;
mod trial;

pub use capabilities::{capabilities_from_proto, capabilities_to_proto};
pub use event::{event_from_proto, event_to_proto};
pub use trial::{trial_from_proto, trial_to_proto};

/// Why a protobuf message could not be read into core types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A required message field is absent.
    #[error("missing field `{field}`")]
    MissingField {
        /// Dotted field path.
        field: &'static str,
    },
    /// A number outside what the agent accepts.
    #[error("field `{field}`: {value} is out of range (expected {expected})")]
    OutOfRange {
        /// Dotted field path.
        field: &'static str,
        /// The value received.
        value: String,
        /// What is accepted.
        expected: String,
    },
    /// An enumeration holds a value this version does not know (or `UNSPECIFIED`).
    #[error("field `{field}`: unknown value {value}")]
    UnknownEnum {
        /// Dotted field path.
        field: &'static str,
        /// The value received.
        value: String,
    },
}

#[cfg(test)]
mod tests;
