//! The initramfs the agent writes for every VM: a newc (SVR4 "new ASCII") cpio archive holding
//! the static `isolab-workload` as `/init`, the mount points it uses, `/dev/console` (the kernel
//! opens it for init before anything is mounted) and the kernel modules under `/lib/modules/`.
//!
//! The writer is hand-written rather than the `cpio` crate's: newc is thirteen fixed-width hex
//! fields and two paddings, and the crate's `Writer` silently emits a corrupt archive when fewer
//! bytes are written than declared; here every field is set explicitly (mtime 0, uid/gid 0,
//! inodes numbered in order), so the same inputs always give the same bytes, and a reader for
//! tests and checks sits beside it.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::modules::ModuleFile;

/// Directory of kernel modules inside the initramfs (what `/init` reads).
pub const MODULES_DIR: &str = "lib/modules";
/// Magic of a newc header.
const MAGIC: &[u8; 6] = b"070701";
/// Name of the last entry.
const TRAILER: &str = "TRAILER!!!";
/// Mode bits of a directory, a regular file and a character device.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;

/// Why the initramfs could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// An input file could not be read.
    #[error("reading {} for the initramfs: {source}", path.display())]
    ReadInput {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The `/init` binary is not a static executable, so it cannot run in an empty initramfs.
    #[error(
        "{} is not a static executable (it asks for a dynamic loader); build it with \
         `just build-workload` or point ISOLAB_WORKLOAD_BIN at a static build",
        path.display()
    )]
    NotStatic {
        /// The binary.
        path: PathBuf,
    },
    /// Writing the archive failed.
    #[error("writing the initramfs {}: {source}", path.display())]
    Write {
        /// Where it was written.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An entry does not fit the format (a file of 4 GiB or more).
    #[error("initramfs entry {name} is too large for newc ({size} bytes)")]
    TooLarge {
        /// Entry name.
        name: String,
        /// Its size.
        size: usize,
    },
    /// Bytes that are not a newc archive.
    #[error("not a newc archive at byte {offset}: {reason}")]
    Malformed {
        /// Where reading stopped.
        offset: usize,
        /// What was wrong.
        reason: &'static str,
    },
}

/// A newc archive being written.
#[derive(Debug)]
pub struct NewcWriter<W: Write> {
    out: W,
    written: usize,
    next_ino: u32,
}

impl<W: Write> NewcWriter<W> {
    /// Starts an archive.
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_ino: 1,
        }
    }

    /// A directory (`mode` without the type bits, e.g. `0o755`).
    pub fn dir(&mut self, name: &str, mode: u32) -> std::io::Result<()> {
        self.entry(name, S_IFDIR | mode, 2, (0, 0), &[])
    }

    /// A regular file.
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> std::io::Result<()> {
        self.entry(name, S_IFREG | mode, 1, (0, 0), data)
    }

    /// A character device node.
    pub fn char_dev(
        &mut self,
        name: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> std::io::Result<()> {
        self.entry(name, S_IFCHR | mode, 1, (major, minor), &[])
    }

    /// Writes the trailer and hands back the output.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.next_ino = 0;
        self.entry(TRAILER, 0, 1, (0, 0), &[])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> std::io::Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| {
            std::io::Error::other(format!(
                "{name}: {} bytes is too large for newc",
                data.len()
            ))
        })?;
        let namesize = u32::try_from(name.len() + 1)
            .map_err(|_| std::io::Error::other("entry name too long"))?;
        let ino = self.next_ino;
        self.next_ino = self.next_ino.wrapping_add(1);
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize
        // check
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        let mut header = Vec::with_capacity(110 + name.len() + 4);
        header.extend_from_slice(MAGIC);
        for f in fields {
            header.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        header.extend_from_slice(name.as_bytes());
        header.push(0);
        header.resize(header.len().next_multiple_of(4), 0);
        self.write(&header)?;
        self.write(data)?;
        let pad = self.written.next_multiple_of(4) - self.written;
        self.write(&[0; 3][..pad])
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len();
        Ok(())
    }
}

/// Writes the VM initramfs for `init` (the static workload binary) and `modules` to `path`.
/// Returns the archive's size in bytes.
pub fn write_initramfs(
    path: &Path,
    init: &Path,
    modules: &[ModuleFile],
) -> Result<u64, InitramfsError> {
    let bytes = build(init, modules)?;
    std::fs::write(path, &bytes).map_err(|source| InitramfsError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(bytes.len() as u64)
}

/// The initramfs bytes (see [`write_initramfs`]).
pub fn build(init: &Path, modules: &[ModuleFile]) -> Result<Vec<u8>, InitramfsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| InitramfsError::ReadInput {
            path: path.to_path_buf(),
            source,
        })
    };
    let mut init_bytes = read(init)?;
    if !is_static_elf(&init_bytes) {
        return Err(InitramfsError::NotStatic {
            path: init.to_path_buf(),
        });
    }
    strip_to_segments(&mut init_bytes);
    let mut w = NewcWriter::new(Vec::with_capacity(init_bytes.len() + (1 << 20)));
    let io = |source| InitramfsError::Write {
        path: PathBuf::from("<memory>"),
        source,
    };
    for dir in ["dev", "lib", MODULES_DIR, "proc", "sys", "tmp"] {
        w.dir(dir, 0o755).map_err(io)?;
    }
    w.char_dev("dev/console", 0o600, 5, 1).map_err(io)?;
    w.file("init", 0o755, &init_bytes).map_err(io)?;
    for m in modules {
        let data = read(&m.path)?;
        w.file(&format!("{MODULES_DIR}/{}.ko", m.name), 0o644, &data)
            .map_err(io)?;
    }
    w.finish().map_err(io)
}

/// Whether `elf` is an ELF executable without a `PT_INTERP` program header (no dynamic
/// loader needed). Anything unreadable counts as not static.
pub fn is_static_elf(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if elf.get(..4) != Some(b"\x7fELF".as_slice()) || elf.get(4) != Some(&2) {
        return false;
    }
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let u64_at = |o: usize| {
        let b: [u8; 8] = elf.get(o..o + 8)?.try_into().ok()?;
        usize::try_from(u64::from_le_bytes(b)).ok()
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        elf.get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) != PT_INTERP)
    })
}

/// Cuts an ELF64 executable down to what the kernel loads: everything up to the end of the
/// last segment's file contents, with the section header table dropped (like `sstrip`). Debug
/// information (most of a release build with `debug = "line-tables-only"`: 28 MB of 32 for the
/// workload) then never crosses into the guest, where unpacking it costs boot time under TCG.
/// Leaves anything it does not understand untouched.
pub fn strip_to_segments(elf: &mut Vec<u8>) {
    let u16_at = |e: &[u8], o: usize| {
        e.get(o..o + 2)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let u64_at = |e: &[u8], o: usize| {
        let b: [u8; 8] = e.get(o..o + 8)?.try_into().ok()?;
        usize::try_from(u64::from_le_bytes(b)).ok()
    };
    if elf.get(..4) != Some(b"\x7fELF".as_slice())
        || elf.get(4) != Some(&2)
        || elf.get(5) != Some(&1)
    {
        return;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) =
        (u64_at(elf, 0x20), u16_at(elf, 0x36), u16_at(elf, 0x38))
    else {
        return;
    };
    let mut end = phoff + phentsize * phnum;
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let (Some(offset), Some(filesz)) = (u64_at(elf, at + 0x08), u64_at(elf, at + 0x20)) else {
            return;
        };
        end = end.max(offset.saturating_add(filesz));
    }
    if end >= elf.len() || end < 0x40 {
        return;
    }
    elf.truncate(end);
    elf[0x28..0x30].fill(0); // e_shoff
    elf[0x3c..0x40].fill(0); // e_shnum, e_shstrndx
}

/// One entry read back from a newc archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpioEntry {
    /// Path inside the archive.
    pub name: String,
    /// Mode with type bits.
    pub mode: u32,
    /// Device numbers of a device node.
    pub rdev: (u32, u32),
    /// File contents.
    pub data: Vec<u8>,
}

/// Reads every entry of a newc archive (the trailer excluded).
pub fn read_entries(bytes: &[u8]) -> Result<Vec<CpioEntry>, InitramfsError> {
    let mut entries = Vec::new();
    let mut at = 0;
    loop {
        let bad = |reason| InitramfsError::Malformed { offset: at, reason };
        let header = bytes
            .get(at..at + 110)
            .ok_or_else(|| bad("truncated header"))?;
        if &header[..6] != MAGIC {
            return Err(bad("bad magic"));
        }
        let field = |i: usize| -> Result<u32, InitramfsError> {
            let text = std::str::from_utf8(&header[6 + i * 8..14 + i * 8])
                .map_err(|_| bad("non-ASCII field"))?;
            u32::from_str_radix(text, 16).map_err(|_| bad("non-hex field"))
        };
        let (mode, size, rdev, namesize) =
            (field(1)?, field(6)?, (field(9)?, field(10)?), field(11)?);
        let name_end = at + 110 + namesize as usize;
        let name = bytes
            .get(at + 110..name_end - 1)
            .ok_or_else(|| bad("truncated name"))?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| bad("non-UTF-8 name"))?;
        let data_start = name_end.next_multiple_of(4);
        let data_end = data_start + size as usize;
        let data = bytes
            .get(data_start..data_end)
            .ok_or_else(|| bad("truncated data"))?;
        if name == TRAILER {
            return Ok(entries);
        }
        entries.push(CpioEntry {
            name,
            mode,
            rdev,
            data: data.to_vec(),
        });
        at = data_end.next_multiple_of(4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest "static executable": an ELF header and one PT_LOAD program header.
    fn fake_exe(interp: bool) -> Vec<u8> {
        let mut elf = vec![0u8; 0x40 + 0x38];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        elf[0x40..0x44].copy_from_slice(&(if interp { 3u32 } else { 1 }).to_le_bytes());
        elf
    }

    #[test]
    fn archive_parses_back_and_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let init = dir.path().join("init");
        std::fs::write(&init, fake_exe(false)).unwrap();
        let ko = dir.path().join("virtio.ko");
        std::fs::write(&ko, b"module bytes!").unwrap();
        let modules = vec![ModuleFile {
            name: "virtio".into(),
            path: ko,
            depends: vec![],
        }];
        let bytes = build(&init, &modules).unwrap();
        assert_eq!(
            bytes,
            build(&init, &modules).unwrap(),
            "same inputs, same bytes"
        );
        assert_eq!(bytes.len() % 4, 0);

        let entries = read_entries(&bytes).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "dev",
                "lib",
                "lib/modules",
                "proc",
                "sys",
                "tmp",
                "dev/console",
                "init",
                "lib/modules/virtio.ko"
            ]
        );
        let console = &entries[6];
        assert_eq!((console.mode, console.rdev), (S_IFCHR | 0o600, (5, 1)));
        assert_eq!(entries[7].mode, S_IFREG | 0o755);
        assert_eq!(entries[7].data, fake_exe(false));
        assert_eq!(entries[8].data, b"module bytes!");
    }

    #[test]
    fn gnu_cpio_reads_it_too() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = NewcWriter::new(Vec::new());
        w.dir("d", 0o755).unwrap();
        w.file("d/odd-length-name", 0o644, b"abcde").unwrap();
        let bytes = w.finish().unwrap();
        let archive = dir.path().join("a.cpio");
        std::fs::write(&archive, &bytes).unwrap();
        let out = match std::process::Command::new("cpio")
            .args(["-t", "--quiet", "-F"])
            .arg(&archive)
            .output()
        {
            Ok(out) => out,
            Err(e) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI needs the cpio tool: {e}"
                );
                eprintln!("skipped: no cpio tool ({e})");
                return;
            }
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "d\nd/odd-length-name\n"
        );
    }

    #[test]
    fn a_dynamic_init_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let init = dir.path().join("dyn-init");
        std::fs::write(&init, fake_exe(true)).unwrap();
        let err = build(&init, &[]).unwrap_err().to_string();
        assert!(err.contains("dyn-init") && err.contains("static"), "{err}");
        let err = build(&dir.path().join("absent"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("absent"), "{err}");
        assert!(!is_static_elf(b"#!/bin/sh\n"));
    }

    #[test]
    fn a_stripped_binary_still_runs() {
        let exe = std::env::current_exe().unwrap();
        let mut bytes = std::fs::read("/bin/true").unwrap();
        let before = bytes.len();
        strip_to_segments(&mut bytes);
        assert!(bytes.len() <= before);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("true");
        std::fs::write(&path, &bytes).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let status = std::process::Command::new(&path).status().unwrap();
        assert!(status.success(), "stripped /bin/true fails");
        let mut test_bin = std::fs::read(exe).unwrap();
        let full = test_bin.len();
        strip_to_segments(&mut test_bin);
        assert!(
            test_bin.len() < full,
            "a debug build has sections past its segments"
        );
        let mut garbage = b"not an elf".to_vec();
        strip_to_segments(&mut garbage);
        assert_eq!(garbage, b"not an elf");
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(read_entries(b"070701zz").is_err());
        assert!(read_entries(&[b'0'; 200]).is_err());
    }
}
