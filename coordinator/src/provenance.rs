//! What decides a run's numbers besides its pipeline: the build of isolab (version, git
//! commit) and the SHA-256 of each binary the run uses, recorded in the manifest's `build` so
//! that `isolab compare` can tell a platform's change from a machine's or a build's.
//!
//! The binaries are looked up as the embedded agent finds them: `isolab-workload` like
//! [`isolab_host::workload_bin::locate`], the guest kernel in its default place, runtimes in
//! `PATH`. With remote agents these are the coordinator host's copies.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use isolab_model::Pipeline;
use isolab_model::manifest::BuildRecord;
use isolab_model::resolve::{ResolvedPlatform, resolve};
use sha2::{Digest as _, Sha256};

/// The git commit this build came from (set by the build script).
pub const GIT_COMMIT: &str = env!("ISOLAB_GIT_COMMIT");

/// The build record of a run of `pipeline`.
pub fn build_record(pipeline: &Pipeline) -> BuildRecord {
    let mut record = BuildRecord {
        isolab_version: env!("CARGO_PKG_VERSION").to_owned(),
        git_commit: GIT_COMMIT.to_owned(),
        ..BuildRecord::default()
    };
    let mut wanted: BTreeMap<String, Result<PathBuf, String>> = BTreeMap::new();
    wanted.insert(
        "isolab-workload".to_owned(),
        isolab_host::workload_bin::locate().map_err(|e| e.to_string()),
    );
    for platform in pipeline.platforms.values() {
        let Ok(resolved) = resolve(platform) else {
            continue;
        };
        let runtimes: &[&str] = match &resolved {
            ResolvedPlatform::Native(_) => &[],
            ResolvedPlatform::Container(c) => {
                let name = c.runtime.clone();
                let found = in_path(&name);
                wanted.insert(name, found);
                &[]
            }
            ResolvedPlatform::Vm(_) => {
                wanted.insert(
                    "guest-kernel".to_owned(),
                    isolab_backends::vm::kernel::locate(None, None)
                        .map(|k| k.image)
                        .map_err(|e| e.to_string()),
                );
                &["qemu-system-x86_64"]
            }
            ResolvedPlatform::Docker(_) => &["docker"],
            ResolvedPlatform::Lxc(_) => &["lxc-start"],
        };
        for name in runtimes {
            wanted.insert((*name).to_owned(), in_path(name));
        }
    }
    for (name, path) in wanted {
        match path.and_then(|p| sha256_file(&p).map_err(|e| format!("{}: {e}", p.display()))) {
            Ok(hash) => {
                record.sha256.insert(name, hash);
            }
            Err(why) => {
                record.missing.insert(name, why);
            }
        }
    }
    record
}

/// `name` in `PATH`.
fn in_path(name: &str) -> Result<PathBuf, String> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("`{name}` not found in PATH"))
}

/// SHA-256 of a file's bytes, lower-case hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_files_and_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        std::fs::write(&f, "abc").unwrap();
        assert_eq!(
            sha256_file(&f).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(
            in_path("no-such-binary-isolab")
                .unwrap_err()
                .contains("PATH")
        );
        assert!(in_path("sh").is_ok());
    }
}
