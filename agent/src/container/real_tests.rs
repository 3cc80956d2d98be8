//! Tests against the real runtime (root, runc); run in CI.
