//! Finding the `isolab-workload` binary that every instance runs.
//!
//! Order: the `ISOLAB_WORKLOAD_BIN` environment variable; `isolab-workload` next to the running
//! executable (an installed agent or coordinator); walking up from the running executable to a
//! `target/x86_64-unknown-linux-gnu/release/isolab-workload` (the static build that
//! `just build-workload` makes); `isolab-workload` in a `target/{release,debug}` beside it.

use std::path::{Path, PathBuf};

/// Environment variable naming the workload binary.
pub const ENV_VAR: &str = "ISOLAB_WORKLOAD_BIN";
/// File name of the workload binary.
pub const BIN_NAME: &str = "isolab-workload";
/// Where `just build-workload` puts the static binary, relative to the workspace root.
pub const STATIC_BUILD: &str = "target/x86_64-unknown-linux-gnu/release/isolab-workload";

/// Why the workload binary was not found.
#[derive(Debug, thiserror::Error)]
pub enum LocateWorkloadError {
    /// The environment variable names a file that does not exist.
    #[error("{ENV_VAR}={path} does not exist")]
    EnvMissing {
        /// The path from the environment.
        path: PathBuf,
    },
    /// Nothing found anywhere.
    #[error(
        "isolab-workload not found (looked beside {exe} and up its directories for {STATIC_BUILD}); \
         build it with `just build-workload` or set {ENV_VAR}"
    )]
    NotFound {
        /// The running executable.
        exe: PathBuf,
    },
}

/// Finds the workload binary (see the module documentation for the order).
pub fn locate() -> Result<PathBuf, LocateWorkloadError> {
    if let Some(p) = std::env::var_os(ENV_VAR).filter(|p| !p.is_empty()) {
        return from_env(PathBuf::from(p));
    }
    let exe = std::env::current_exe().unwrap_or_default();
    locate_from(&exe).ok_or(LocateWorkloadError::NotFound { exe })
}

/// The binary the environment names, made absolute: the path is bind-mounted into containers,
/// whose runtime resolves it from its own working directory.
fn from_env(path: PathBuf) -> Result<PathBuf, LocateWorkloadError> {
    if path.is_file() {
        Ok(std::path::absolute(&path).unwrap_or(path))
    } else {
        Err(LocateWorkloadError::EnvMissing { path })
    }
}

/// Looks beside `exe`, then walks up from it; no environment lookup.
pub fn locate_from(exe: &Path) -> Option<PathBuf> {
    let dir = exe.parent()?;
    let beside = dir.join(BIN_NAME);
    if beside.is_file() {
        return Some(beside);
    }
    if let Some(found) = dir
        .ancestors()
        .map(|a| a.join(STATIC_BUILD))
        .find(|p| p.is_file())
    {
        return Some(found);
    }
    // A plain (dynamically linked) build in the same target directory, e.g. for test binaries
    // in `target/debug/deps`.
    let target = dir
        .ancestors()
        .find(|a| a.file_name().is_some_and(|n| n == "target"))?;
    ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join(BIN_NAME))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_path_from_the_environment_is_made_absolute() {
        // Tests run in the crate's directory.
        let found = from_env(PathBuf::from("src/workload_bin.rs")).unwrap();
        assert!(found.is_absolute(), "{}", found.display());
        assert!(found.ends_with("src/workload_bin.rs"));
        assert!(matches!(
            from_env(PathBuf::from("no/such/isolab-workload")),
            Err(LocateWorkloadError::EnvMissing { .. })
        ));
    }

    #[test]
    fn finds_the_binary_beside_and_above() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("target/debug/deps/agent-test");
        std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
        assert_eq!(locate_from(&exe), None);

        let plain = dir.path().join("target/debug").join(BIN_NAME);
        std::fs::write(&plain, b"").unwrap();
        assert_eq!(locate_from(&exe), Some(plain));

        let static_build = dir.path().join(STATIC_BUILD);
        std::fs::create_dir_all(static_build.parent().unwrap()).unwrap();
        std::fs::write(&static_build, b"").unwrap();
        assert_eq!(locate_from(&exe), Some(static_build));

        let beside = exe.parent().unwrap().join(BIN_NAME);
        std::fs::write(&beside, b"").unwrap();
        assert_eq!(locate_from(&exe), Some(beside));
    }
}
