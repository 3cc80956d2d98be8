//! The workload image, built without a registry: the equivalent of `docker import` of a tar
//! stream holding the workload binary at `/isolab-workload` and the empty mount points
//! `/proc`, `/dev`, `/sys` and `/tmp`. It is tagged `isolab-workload:<first 16 hex digits of
//! the binary's SHA-256>`, so a daemon that already has it reuses it, and a changed binary gets
//! a new image. Those images are an intended cache: teardown keeps them unless told otherwise.

use std::io::Read;
use std::path::Path;

use bollard::Docker;
use bollard::query_parameters::{CreateImageOptionsBuilder, RemoveImageOptionsBuilder};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::DockerError;

/// Repository of the workload images.
pub const REPOSITORY: &str = "isolab-workload";
/// Label holding the binary's full SHA-256 on the image.
pub const LABEL_SHA256: &str = "isolab.workload-sha256";
/// Path of the workload inside the image.
pub const WORKLOAD_PATH: &str = "/isolab-workload";

/// The workload binary, read once: its bytes and hash.
#[derive(Debug, Clone)]
pub struct WorkloadImage {
    /// Full SHA-256 of the binary, hex.
    pub sha256: String,
    /// `isolab-workload:<hash prefix>`.
    pub reference: String,
    /// The uncompressed tar stream to import.
    pub tar: bytes::Bytes,
}

impl WorkloadImage {
    /// Reads `binary` and builds the tar stream. Blocks.
    pub fn build(binary: &Path) -> std::io::Result<Self> {
        let mut data = Vec::new();
        std::fs::File::open(binary)?.read_to_end(&mut data)?;
        let sha256 = hex::encode(Sha256::digest(&data));
        let reference = format!("{REPOSITORY}:{}", &sha256[..16]);
        let tar = rootfs_tar(&data)?;
        Ok(Self {
            sha256,
            reference,
            tar: tar.into(),
        })
    }

    /// The tag part of the reference.
    pub fn tag(&self) -> &str {
        self.reference.split_once(':').map_or("", |(_, t)| t)
    }

    /// Imports the image unless the daemon already has it (with the same hash). Returns whether
    /// it imported.
    pub async fn ensure(&self, docker: &Docker) -> Result<bool, DockerError> {
        if let Ok(found) = docker.inspect_image(&self.reference).await {
            let label = found
                .config
                .and_then(|c| c.labels)
                .and_then(|l| l.get(LABEL_SHA256).cloned());
            if label.as_deref() == Some(self.sha256.as_str()) {
                return Ok(false);
            }
        }
        let opts = CreateImageOptionsBuilder::default()
            .from_src("-")
            .repo(REPOSITORY)
            .tag(self.tag())
            .changes(vec![
                format!("LABEL {LABEL_SHA256}={}", self.sha256),
                format!("CMD [\"{WORKLOAD_PATH}\"]"),
            ])
            .build();
        let mut progress =
            docker.create_image(Some(opts), Some(bollard::body_full(self.tar.clone())), None);
        while let Some(item) = progress.next().await {
            item.map_err(DockerError::api("import", &self.reference))?;
        }
        let found = docker
            .inspect_image(&self.reference)
            .await
            .map_err(DockerError::api("inspect", &self.reference))?;
        let label = found
            .config
            .and_then(|c| c.labels)
            .and_then(|l| l.get(LABEL_SHA256).cloned());
        if label.as_deref() != Some(self.sha256.as_str()) {
            return Err(DockerError::Image {
                tag: self.reference.clone(),
                reason: format!("imported, but its {LABEL_SHA256} label is {label:?}"),
            });
        }
        Ok(true)
    }

    /// Removes the image (when the configuration asks to leave no image behind).
    pub async fn remove(&self, docker: &Docker) -> Result<(), DockerError> {
        let opts = RemoveImageOptionsBuilder::default().force(true).build();
        match docker.remove_image(&self.reference, Some(opts), None).await {
            Ok(_)
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(DockerError::api("remove image", &self.reference)(e)),
        }
    }
}

/// A tar stream of the root: the binary (mode 0755) and the empty mount point directories.
fn rootfs_tar(binary: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (dir, mode) in [
        ("dev", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("tmp", 0o1777),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        h.set_mtime(0);
        b.append_data(&mut h, dir, std::io::empty())?;
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o755);
    h.set_size(u64::try_from(binary.len()).unwrap_or(u64::MAX));
    h.set_mtime(0);
    b.append_data(&mut h, WORKLOAD_PATH.trim_start_matches('/'), binary)?;
    b.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tar_holds_the_binary_and_mount_points_and_the_tag_follows_the_hash() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("w");
        std::fs::write(&bin, b"\x7fELF pretend").unwrap();
        let img = WorkloadImage::build(&bin).unwrap();
        assert_eq!(img.sha256.len(), 64);
        assert_eq!(
            img.reference,
            format!("isolab-workload:{}", &img.sha256[..16])
        );
        assert_eq!(img.tag(), &img.sha256[..16]);
        let mut archive = tar::Archive::new(img.tar.as_ref());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut e = entry.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mode = e.header().mode().unwrap();
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            seen.push((path, mode, body.len()));
        }
        assert!(
            seen.contains(&("isolab-workload".into(), 0o755, 12)),
            "{seen:?}"
        );
        assert!(
            seen.iter()
                .any(|(p, m, _)| p.trim_end_matches('/') == "tmp" && *m == 0o1777),
            "{seen:?}"
        );
        std::fs::write(&bin, b"another binary").unwrap();
        assert_ne!(
            WorkloadImage::build(&bin).unwrap().reference,
            img.reference,
            "a new binary gets a new tag"
        );
    }
}
