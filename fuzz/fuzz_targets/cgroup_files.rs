//! The cgroup statistics file parsers (`isolab_host::cgroup::stats`): any text as
//! `memory.current`, `cpu.stat`, `io.stat`, `blkio.*service_bytes`. Must never panic.
//!
//! The module is pure (std only) and included by path, so this target does not build the whole
//! agent (its gRPC, Docker and OpenTelemetry dependencies) under the fuzzing toolchain.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unreachable_pub, missing_docs)]
#[path = "../../host/src/cgroup/stats.rs"]
mod stats;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = stats::parse_u64(text);
    let keyed = stats::parse_flat_keyed(text);
    assert!(keyed.keys().all(|k| !k.is_empty()));
    let _ = stats::parse_io_stat(text);
    let _ = stats::parse_blkio_service_bytes(text);
});
