//! `isolab-workload NAME [--param k=v]…` (placeholder until the workloads land).
fn main() {}
