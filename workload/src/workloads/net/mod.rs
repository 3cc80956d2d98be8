//! The network workloads, `tcp_stream` and `tcp_rr`, and the connection set-up they share.

mod conn;
mod rr;
mod stream;

pub(super) use conn::ensure_loopback_up;
pub(super) use rr::tcp_rr;
pub(super) use stream::tcp_stream;
