//! The coordinator as a long-running service (`isolab serve`): operators submit pipelines over
//! gRPC (`isolab.v1.Coordinator`), watch them, list and cancel them.
//!
//! Runs execute one at a time, in submission order (a FIFO queue), through the same
//! [`crate::run::run`] as `isolab run`, so results land in the service's results directory with
//! the same contract. Events go to the service's in-process bus (history for `WatchRun`) and,
//! with `--events nats://…`, to NATS as well.
//!
//! - [`core`]: the queue, free of gRPC.
//! - [`convert`]: protobuf ↔ core.
//! - [`grpc`]: the tonic service and [`grpc::serve`] (mutual TLS, one shutdown future, drain).
//! - [`client`]: the client behind `isolab submit` and `isolab watch --server`.
//! - `supervise`: each run in its own task, so a panicking run ends as an error and the queue
//!   goes on; the queue task restarted if it dies.

pub mod client;
pub mod convert;
pub mod core;
pub mod grpc;
mod supervise;
