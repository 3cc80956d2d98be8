//! `Sample::parse_line`: one line of a workload's output, as the agent reads it from a process
//! it does not trust. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(line) = std::str::from_utf8(data) {
        let _ = isolab_model::sample::Sample::parse_line(line);
    }
});
