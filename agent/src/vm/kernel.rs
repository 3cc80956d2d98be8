//! Finding the guest kernel and its modules.
//!
//! `./bootstrap` extracts Debian's cloud kernel into [`DEFAULT_KERNEL_DIR`]: `vmlinuz`, the
//! `.ko` files under `modules/` and the package name in `VERSION`. The agent's `--kernel` (a
//! `vmlinuz` file, or a directory laid out like the default) and `--modules` (a directory of
//! `.ko` files) flags override it.

use std::path::{Path, PathBuf};

/// Where `./bootstrap` puts the guest kernel.
pub const DEFAULT_KERNEL_DIR: &str = "/var/cache/isolab/kernel";

/// Why the guest kernel cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LocateKernelError {
    /// No kernel image at the path.
    #[error(
        "guest kernel {} not found ({hint}); run ./bootstrap or pass --kernel",
        path.display()
    )]
    KernelMissing {
        /// The path looked at.
        path: PathBuf,
        /// Where the path came from.
        hint: &'static str,
    },
    /// The modules directory is missing.
    #[error("guest kernel modules directory {} not found ({hint}); pass --modules", path.display())]
    ModulesMissing {
        /// The path looked at.
        path: PathBuf,
        /// Where the path came from.
        hint: &'static str,
    },
}

/// A guest kernel image and the directory holding its modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestKernel {
    /// The `vmlinuz` (bzImage) to boot.
    pub vmlinuz: PathBuf,
    /// Directory of `<name>.ko` files.
    pub modules_dir: PathBuf,
    /// What the kernel is (the `VERSION` file beside it, else the image's file name).
    pub version: String,
}

/// Finds the kernel: `kernel` is a `vmlinuz` file or a directory holding `vmlinuz` (default
/// [`DEFAULT_KERNEL_DIR`]); `modules` defaults to `modules/` beside the image.
pub fn locate(
    kernel: Option<&Path>,
    modules: Option<&Path>,
) -> Result<GuestKernel, LocateKernelError> {
    let (given, hint) = match kernel {
        Some(p) => (p.to_path_buf(), "from --kernel"),
        None => (PathBuf::from(DEFAULT_KERNEL_DIR), "the default"),
    };
    let (vmlinuz, dir) = if given.is_dir() {
        (given.join("vmlinuz"), given.clone())
    } else {
        let dir = given.parent().map(Path::to_path_buf).unwrap_or_default();
        (given.clone(), dir)
    };
    if !vmlinuz.is_file() {
        return Err(LocateKernelError::KernelMissing {
            path: vmlinuz,
            hint,
        });
    }
    let (modules_dir, hint) = match modules {
        Some(p) => (p.to_path_buf(), "from --modules"),
        None => (dir.join("modules"), "beside the kernel"),
    };
    if !modules_dir.is_dir() {
        return Err(LocateKernelError::ModulesMissing {
            path: modules_dir,
            hint,
        });
    }
    let version = std::fs::read_to_string(dir.join("VERSION"))
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            vmlinuz
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
    Ok(GuestKernel {
        vmlinuz,
        modules_dir,
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_kernel_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = locate(Some(dir.path()), None).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&dir.path().join("vmlinuz").display().to_string()),
            "{text}"
        );
        assert!(text.contains("--kernel"), "{text}");

        let file = dir.path().join("bzImage");
        let err = locate(Some(&file), None).unwrap_err();
        assert!(err.to_string().contains("bzImage"));
    }

    #[test]
    fn finds_image_modules_and_version() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vmlinuz"), b"k").unwrap();
        let err = locate(Some(dir.path()), None).unwrap_err();
        assert!(
            matches!(err, LocateKernelError::ModulesMissing { .. }),
            "{err}"
        );
        std::fs::create_dir(dir.path().join("modules")).unwrap();
        std::fs::write(dir.path().join("VERSION"), "linux-image-x\n").unwrap();
        let k = locate(Some(dir.path()), None).unwrap();
        assert_eq!(k.vmlinuz, dir.path().join("vmlinuz"));
        assert_eq!(k.modules_dir, dir.path().join("modules"));
        assert_eq!(k.version, "linux-image-x");

        let other = tempfile::tempdir().unwrap();
        let k = locate(Some(&dir.path().join("vmlinuz")), Some(other.path())).unwrap();
        assert_eq!(k.modules_dir, other.path());
        let err = locate(Some(dir.path()), Some(&other.path().join("nope"))).unwrap_err();
        assert!(err.to_string().contains("--modules"), "{err}");
    }
}
