//! The pipeline loader: any bytes as a pipeline file (size limit, UTF-8, YAML, shape, semantic
//! rules, positions), then planning what loads. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match isolab_model::load_str("fuzz.yaml", text) {
        Ok(pipeline) => {
            // Validation bounded the plan (100,000 trials), so expanding it is bounded too.
            let trials = isolab_model::plan::plan(&pipeline);
            assert!(trials.len() as u64 <= isolab_model::validate::MAX_TRIALS);
        }
        Err(e) => {
            // Every error flattens into positioned diagnostics.
            for d in e.diagnostics() {
                assert!(d.line >= 1 && d.col >= 1);
            }
        }
    }
});
