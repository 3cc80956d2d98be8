//! The mountinfo parser (`isolab_host::mounts::mount_points_under`): any text as
//! `/proc/self/mountinfo`. Must never panic, and every mount point it returns is at or below the
//! directory asked for.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(table) = std::str::from_utf8(data) else {
        return;
    };
    let dir = Path::new("/var/lib/isolab");
    for p in isolab_host::mounts::mount_points_under(table, dir) {
        assert!(p.starts_with(dir), "{}", p.display());
    }
});
