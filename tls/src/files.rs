//! Writing the PKI's files: a private directory, atomic writes with an exact mode.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use crate::certs::CertsError;

/// Creates `dir` (mode 0700, it holds private keys) unless it exists.
pub(crate) fn create_dir(dir: &Path) -> Result<(), CertsError> {
    if dir.is_dir() {
        return Ok(());
    }
    let dir_err = |source| CertsError::Dir {
        dir: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(dir_err)?;
    // A new directory holds private keys: keep it to its owner.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(dir_err)
}

/// Writes next to the target with `mode`, syncs, renames over it, syncs the directory.
pub(crate) fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertsError> {
    let write_err = |source| CertsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("pem");
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(write_err)?;
    // The umask may have narrowed the mode; set it exactly.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(write_err)?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(write_err)?;
    fs::rename(&tmp, path).map_err(write_err)?;
    // Make the rename itself durable.
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(write_err),
        None => Ok(()),
    }
}

/// The whole file as text.
pub(crate) fn read_string(path: &Path) -> Result<String, CertsError> {
    fs::read_to_string(path).map_err(|source| CertsError::Read {
        path: path.to_path_buf(),
        source,
    })
}
