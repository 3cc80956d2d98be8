//! Container root filesystems, made fresh per instance inside its bundle directory (shared by
//! the container and lxc backends; docker reads its host paths).
//!
//! - `minimal`: an empty tree with the mount points `/proc`, `/dev`, `/sys`, `/tmp` and an empty
//!   file `/isolab-workload` on which the static workload binary is bind-mounted read-only (the
//!   runtime mounts `/proc`, a `/dev` tmpfs with the basic devices, `/sys` and a `/tmp` tmpfs).
//! - `host-ro`: the same, plus the host's `/usr`, `/lib`, `/lib64`, `/bin`, `/sbin`, `/etc/ssl`,
//!   `/etc/alternatives` and `/etc/ld.so.cache`, where present, bound read-only (the analogue of
//!   VServer's shared libraries), so that allowlisted host tools and a dynamically linked workload
//!   run. A host path that is a symbolic link (`/bin` → `usr/bin` on a merged-`/usr` system) is
//!   copied as the same link instead of bound.
//!
//! The root is mounted read-only by the runtime; every mount happens in the container's own
//! mount namespace, so nothing here is ever mounted on the host.

use std::path::{Path, PathBuf};

use isolab_model::pipeline::RootfsKind;

/// A `minimal` root holds nothing but the workload, which must then be statically linked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "rootfs: minimal needs a statically linked workload, but {} is dynamically linked \
     (build it with `just build-workload`, or use rootfs: host-ro)",
    path.display()
)]
pub struct NotStatic {
    /// The workload binary.
    pub path: PathBuf,
}

/// Whether a root of `kind` can hold the workload at `path` (`is_static`: it is statically
/// linked).
pub fn check_static(kind: RootfsKind, is_static: bool, path: &Path) -> Result<(), NotStatic> {
    if kind == RootfsKind::Minimal && !is_static {
        return Err(NotStatic {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// Where the workload binary appears inside the container.
pub const WORKLOAD_PATH: &str = "/isolab-workload";

/// Host paths bound read-only into a `host-ro` root, when they exist.
pub const HOST_RO_PATHS: &[&str] = &[
    "/usr",
    "/lib",
    "/lib32",
    "/lib64",
    "/bin",
    "/sbin",
    "/etc/ssl",
    "/etc/alternatives",
    "/etc/ld.so.cache",
];

/// Mount points every root has.
const MOUNT_POINTS: &[&str] = &["proc", "dev", "sys", "tmp"];

/// Why a root filesystem could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A directory, file or link could not be made.
    #[error("cannot make {}: {source}", path.display())]
    Make {
        /// What was being made.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A host path could not be inspected.
    #[error("cannot inspect host path {}: {source}", path.display())]
    Inspect {
        /// The host path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A read-only bind mount of a host path at the same path inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBind {
    /// Path on the host, and inside the container.
    pub path: PathBuf,
}

/// A made root filesystem: its directory and the host paths to bind into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rootfs {
    /// The root directory (`<bundle>/rootfs`).
    pub dir: PathBuf,
    /// Host paths to bind read-only (empty for `minimal`).
    pub binds: Vec<HostBind>,
}

/// Makes the root of `kind` at `dir` (which must not exist yet), reading host paths below
/// `host_root` (`/` but in tests).
pub fn create(dir: &Path, kind: RootfsKind, host_root: &Path) -> Result<Rootfs, RootfsError> {
    let make = |path: &Path, source| RootfsError::Make {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| make(dir, e))?;
    for m in MOUNT_POINTS {
        let p = dir.join(m);
        std::fs::create_dir(&p).map_err(|e| make(&p, e))?;
    }
    let bin = dir.join(WORKLOAD_PATH.trim_start_matches('/'));
    std::fs::write(&bin, b"").map_err(|e| make(&bin, e))?;
    let mut binds = Vec::new();
    if kind == RootfsKind::HostRo {
        for host in HOST_RO_PATHS {
            let rel = host.trim_start_matches('/');
            let source = host_root.join(rel);
            let meta = match std::fs::symlink_metadata(&source) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source_err) => {
                    return Err(RootfsError::Inspect {
                        path: source,
                        source: source_err,
                    });
                }
            };
            let target = dir.join(rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| make(parent, e))?;
            }
            if meta.file_type().is_symlink() {
                let link = std::fs::read_link(&source).map_err(|e| RootfsError::Inspect {
                    path: source.clone(),
                    source: e,
                })?;
                std::os::unix::fs::symlink(&link, &target).map_err(|e| make(&target, e))?;
                continue;
            }
            if meta.is_dir() {
                std::fs::create_dir(&target).map_err(|e| make(&target, e))?;
            } else {
                std::fs::write(&target, b"").map_err(|e| make(&target, e))?;
            }
            binds.push(HostBind {
                path: PathBuf::from(host),
            });
        }
    }
    Ok(Rootfs {
        dir: dir.to_owned(),
        binds,
    })
}

/// Whether the ELF file at `path` is statically linked (has no `PT_INTERP` program header), so
/// that it runs in an empty root. `None` when it is not a readable 64-bit little-endian ELF.
pub fn is_static_elf(path: &Path) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    use std::io::Read;
    // Program headers follow the ELF header closely; the first 64 KiB always hold them.
    let mut data = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(64 * 1024)
        .read_to_end(&mut data)
        .ok()?;
    let u16_at = |off: usize| {
        data.get(off..off + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |off: usize| {
        data.get(off..off + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    let u64_at = |off: usize| {
        data.get(off..off + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    // Magic, 64-bit class, little endian.
    if data.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        if u32_at(phoff + i * phentsize)? == PT_INTERP {
            return Some(false);
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_has_mount_points_and_the_workload_placeholder_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = create(
            &tmp.path().join("rootfs"),
            RootfsKind::Minimal,
            Path::new("/"),
        )
        .unwrap();
        assert!(root.binds.is_empty());
        let mut names: Vec<String> = std::fs::read_dir(&root.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["dev", "isolab-workload", "proc", "sys", "tmp"]);
    }

    #[test]
    fn host_ro_binds_directories_and_copies_links() {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("host");
        std::fs::create_dir_all(host.join("usr/bin")).unwrap();
        std::fs::create_dir_all(host.join("etc/ssl")).unwrap();
        std::os::unix::fs::symlink("usr/bin", host.join("bin")).unwrap();
        std::fs::write(host.join("etc/ld.so.cache"), b"x").unwrap();
        let root = create(&tmp.path().join("rootfs"), RootfsKind::HostRo, &host).unwrap();
        let bound: Vec<&Path> = root.binds.iter().map(|b| b.path.as_path()).collect();
        assert_eq!(
            bound,
            [
                Path::new("/usr"),
                Path::new("/etc/ssl"),
                Path::new("/etc/ld.so.cache")
            ]
        );
        assert!(root.dir.join("usr").is_dir());
        assert!(root.dir.join("etc/ld.so.cache").is_file());
        assert_eq!(
            std::fs::read_link(root.dir.join("bin")).unwrap(),
            Path::new("usr/bin")
        );
        assert!(
            !root.dir.join("lib64").exists(),
            "absent host paths are skipped"
        );
    }

    #[test]
    fn static_and_dynamic_binaries_are_told_apart() {
        // The test binary itself is dynamically linked (a normal cargo build).
        let me = std::env::current_exe().unwrap();
        assert_eq!(is_static_elf(&me), Some(false));
        let tmp = tempfile::tempdir().unwrap();
        let not_elf = tmp.path().join("x");
        std::fs::write(&not_elf, b"#!/bin/sh\n").unwrap();
        assert_eq!(is_static_elf(&not_elf), None);
        // A synthetic ELF header with one program header: PT_LOAD (static) or PT_INTERP.
        for (ptype, want) in [(1u32, true), (3u32, false)] {
            let mut elf = vec![0u8; 0x40 + 0x38];
            elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
            elf[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
            elf[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
            elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
            elf[0x40..0x44].copy_from_slice(&ptype.to_le_bytes());
            let path = tmp.path().join(format!("elf{ptype}"));
            std::fs::write(&path, &elf).unwrap();
            assert_eq!(is_static_elf(&path), Some(want));
        }
    }
}
