//! Generated `isolab.v1` protobuf messages and gRPC services. Nothing else lives here: the agent
//! and the coordinator translate between these and their own core types at their edges.

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

/// Package `isolab.v1`.
pub mod v1 {
    tonic::include_proto!("isolab.v1");
}
