//! The static build (`ISOLAB_WORKLOAD_BIN`, set by `just test` to the output of
//! `just build-workload`): it has no ELF interpreter, and every workload runs in an empty
//! root directory (no `/proc`, no `/tmp`, no libraries), as in a bare container rootfs.
//! Adversaries run there too, kept small by their own params (`max_forks`, `limit`), since no
//! cgroup contains them in this test.
//!
//! Without `ISOLAB_WORKLOAD_BIN` (or without root, for the chroot) these tests print why and
//! skip, except under `CI=true`, where they fail.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use isolab_model::catalog::WORKLOADS;
use support::{TestDir, run_program};

const PT_INTERP: u32 = 3;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips (returns `None`) outside CI with a printed reason; fails in CI.
fn skip(reason: &str) -> Option<PathBuf> {
    assert!(!in_ci(), "CI=true but {reason}");
    eprintln!("skipping: {reason}");
    None
}

fn static_bin() -> Option<PathBuf> {
    match std::env::var_os("ISOLAB_WORKLOAD_BIN").filter(|p| !p.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None => skip(
            "ISOLAB_WORKLOAD_BIN is not set (run `just build-workload` and point it at the result)",
        ),
    }
}

/// The ELF interpreter (`PT_INTERP`) of a 64-bit little-endian executable, `None` if it has none
/// (statically linked, including static-pie).
fn interpreter(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.len() >= 64 && bytes.starts_with(b"\x7fELF"),
        "{} is not ELF",
        path.display()
    );
    assert_eq!(
        (bytes[4], bytes[5]),
        (2, 1),
        "{}: not 64-bit little-endian ELF",
        path.display()
    );
    let u16_at = |o: usize| usize::from(u16::from_le_bytes([bytes[o], bytes[o + 1]]));
    let u64_at = |o: usize| {
        let raw = u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
        usize::try_from(raw).unwrap()
    };
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).map(|i| phoff + i * phentsize).find_map(|ph| {
        let p_type = u32::from_le_bytes(bytes[ph..ph + 4].try_into().unwrap());
        (p_type == PT_INTERP).then(|| {
            let (offset, size) = (u64_at(ph + 8), u64_at(ph + 32));
            String::from_utf8_lossy(&bytes[offset..offset + size])
                .trim_end_matches('\0')
                .to_owned()
        })
    })
}

#[test]
fn interpreter_reader_sees_a_dynamic_binary() {
    // /bin/sh on Debian is dynamically linked; this guards the ELF reader itself.
    let sh = Path::new("/bin/sh");
    let target = std::fs::canonicalize(sh).unwrap_or_else(|_| sh.to_owned());
    if !std::fs::read(&target).is_ok_and(|b| b.starts_with(b"\x7fELF")) {
        eprintln!("skipping: /bin/sh is not an ELF file here");
        return;
    }
    let interp = interpreter(&target);
    assert!(
        interp.as_deref().is_some_and(|i| i.contains("ld-")),
        "{interp:?}"
    );
}

#[test]
fn static_build_has_no_interpreter() {
    let Some(bin) = static_bin() else { return };
    assert_eq!(
        interpreter(&bin),
        None,
        "{} is dynamically linked",
        bin.display()
    );
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Params that keep a workload small here (adversaries especially: no cgroup contains them in
/// this test); a `size` given here replaces the default 64KiB.
fn bounds(workload: &str) -> &'static [&'static str] {
    match workload {
        "fork_bomb" => &["--param", "max_forks=8"],
        "memory_bomb" => &["--param", "step=4MiB", "--param", "limit=16MiB"],
        "disk_bomb" => &["--param", "step=1MiB", "--param", "limit=4MiB"],
        "cpu_hog" => &["--param", "threads=1"],
        "net_flood" => &["--param", "size=1KiB"],
        "build" => &["--param", "jobs=2"],
        _ => &[],
    }
}

#[test]
fn every_workload_runs_in_an_empty_root() {
    let Some(bin) = static_bin() else { return };
    if !is_root() {
        skip("chroot needs root");
        return;
    }
    let Some(chroot) = ["/usr/sbin/chroot", "/usr/bin/chroot", "/sbin/chroot"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
    else {
        skip("no chroot(8) binary");
        return;
    };
    let root = TestDir::new("rootfs");
    std::fs::copy(&bin, root.path.join("isolab-workload")).unwrap();
    for w in WORKLOADS {
        let accepts = |p: &str| w.params.iter().any(|i| i.name == p);
        let mut args = vec![root.path.to_str().unwrap(), "/isolab-workload", w.name];
        args.extend(if accepts("iterations") {
            ["--param", "iterations=3"]
        } else {
            ["--param", "duration=150ms"]
        });
        let bounds = bounds(w.name);
        if accepts("size") && !bounds.iter().any(|b| b.starts_with("size=")) {
            args.extend(["--param", "size=64KiB"]);
        }
        args.extend(bounds);
        let r = run_program(chroot, &args, |c: &mut Command| {
            c.env_clear();
        });
        assert_eq!(r.code, Some(0), "{} in an empty root: {}", w.name, r.stderr);
        assert!(r.summary("ops") >= 1.0, "{}", w.name);
        if accepts("iterations") {
            assert_eq!(r.summary("ops"), 3.0, "{}", w.name);
        }
    }
    assert_eq!(
        root.entries(),
        ["isolab-workload"],
        "something was left in the root"
    );
}
