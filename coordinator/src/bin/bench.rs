//! Benchmarks (placeholder until the coordinator lands).
fn main() {}
