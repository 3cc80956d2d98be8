//! Guest kernel modules: which ones a VM needs, and in which order `/init` loads them.
//!
//! Debian's cloud kernel ships every virtio piece as a module and no `modules.dep`, so the
//! order comes from each `.ko`'s own `.modinfo` section (`name=` and `depends=` strings), read
//! here with a minimal ELF64 section-table reader. [`ModuleIndex::order`] puts every dependency
//! before its users, so `/init` can load the list front to back with `finit_module`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Why modules could not be indexed or ordered.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// The modules directory could not be read.
    #[error("reading modules directory {}: {source}", dir.display())]
    ReadDir {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A `.ko` file could not be read.
    #[error("reading module {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A `.ko` file is not an ELF64 object with a `.modinfo` section.
    #[error("module {} has no readable .modinfo section: {reason}", path.display())]
    BadModule {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// A module (asked for, or a dependency) is not in the directory.
    #[error("kernel module `{name}` not found in {} (needed by {needed_by})", dir.display())]
    Missing {
        /// Module name.
        name: String,
        /// The directory.
        dir: PathBuf,
        /// Who needs it (`the VM` for a requested one).
        needed_by: String,
    },
    /// Modules that depend on each other in a circle.
    #[error("kernel module dependency cycle through `{name}`")]
    Cycle {
        /// A module on the cycle.
        name: String,
    },
}

/// One module file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFile {
    /// Module name (`virtio_ring`), as `/init` is told.
    pub name: String,
    /// The `.ko` file.
    pub path: PathBuf,
    /// Names of the modules it depends on.
    pub depends: Vec<String>,
}

/// Every module of a directory, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleIndex {
    dir: PathBuf,
    modules: BTreeMap<String, ModuleFile>,
}

impl ModuleIndex {
    /// Reads the `.modinfo` of every `*.ko` in `dir`.
    pub fn scan(dir: &Path) -> Result<Self, ModuleError> {
        let read_dir = |source| ModuleError::ReadDir {
            dir: dir.to_path_buf(),
            source,
        };
        let mut modules = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(read_dir)? {
            let path = entry.map_err(read_dir)?.path();
            if path.extension().is_none_or(|e| e != "ko") {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|source| ModuleError::Read {
                path: path.clone(),
                source,
            })?;
            let info = modinfo(&bytes).map_err(|reason| ModuleError::BadModule {
                path: path.clone(),
                reason,
            })?;
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().replace('-', "_"));
            let name = info.get("name").cloned().or(stem).unwrap_or_default();
            let depends = info
                .get("depends")
                .map(|d| {
                    d.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            modules.insert(
                name.clone(),
                ModuleFile {
                    name,
                    path,
                    depends,
                },
            );
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            modules,
        })
    }

    /// The module called `name`, if present.
    pub fn get(&self, name: &str) -> Option<&ModuleFile> {
        self.modules.get(name)
    }

    /// `wanted` and everything they depend on, dependencies first; each module once.
    pub fn order(&self, wanted: &[&str]) -> Result<Vec<ModuleFile>, ModuleError> {
        let mut out = Vec::new();
        let mut done = BTreeSet::new();
        let mut visiting = BTreeSet::new();
        for name in wanted {
            self.visit(name, "the VM", &mut done, &mut visiting, &mut out)?;
        }
        Ok(out)
    }

    fn visit(
        &self,
        name: &str,
        needed_by: &str,
        done: &mut BTreeSet<String>,
        visiting: &mut BTreeSet<String>,
        out: &mut Vec<ModuleFile>,
    ) -> Result<(), ModuleError> {
        if done.contains(name) {
            return Ok(());
        }
        if !visiting.insert(name.to_owned()) {
            return Err(ModuleError::Cycle {
                name: name.to_owned(),
            });
        }
        let module = self.modules.get(name).ok_or_else(|| ModuleError::Missing {
            name: name.to_owned(),
            dir: self.dir.clone(),
            needed_by: needed_by.to_owned(),
        })?;
        for dep in &module.depends {
            self.visit(dep, &format!("module `{name}`"), done, visiting, out)?;
        }
        visiting.remove(name);
        done.insert(name.to_owned());
        out.push(module.clone());
        Ok(())
    }
}

/// The `key=value` strings of an ELF64 little-endian object's `.modinfo` section (the last
/// value wins for repeated keys, which only `alias`/`parm` use).
pub fn modinfo(elf: &[u8]) -> Result<BTreeMap<String, String>, &'static str> {
    let section = find_section(elf, ".modinfo")?;
    let mut map = BTreeMap::new();
    for entry in section.split(|&b| b == 0).filter(|e| !e.is_empty()) {
        let text = String::from_utf8_lossy(entry);
        if let Some((k, v)) = text.split_once('=') {
            map.insert(k.to_owned(), v.to_owned());
        }
    }
    Ok(map)
}

/// The bytes of the section called `wanted`.
fn find_section<'a>(elf: &'a [u8], wanted: &str) -> Result<&'a [u8], &'static str> {
    if elf.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err("not an ELF file");
    }
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF file");
    }
    let u16_at = |off: usize| -> Result<usize, &'static str> {
        let b = elf.get(off..off + 2).ok_or("truncated ELF header")?;
        Ok(usize::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let u64_at = |off: usize| -> Result<usize, &'static str> {
        let b: [u8; 8] = elf
            .get(off..off + 8)
            .ok_or("truncated ELF")?
            .try_into()
            .map_err(|_| "truncated ELF")?;
        usize::try_from(u64::from_le_bytes(b)).map_err(|_| "ELF offset out of range")
    };
    let u32_at = |off: usize| -> Result<usize, &'static str> {
        let b: [u8; 4] = elf
            .get(off..off + 4)
            .ok_or("truncated ELF")?
            .try_into()
            .map_err(|_| "truncated ELF")?;
        usize::try_from(u32::from_le_bytes(b)).map_err(|_| "ELF offset out of range")
    };
    let shoff = u64_at(0x28)?;
    let shentsize = u16_at(0x3a)?;
    let shnum = u16_at(0x3c)?;
    let shstrndx = u16_at(0x3e)?;
    if shentsize < 0x40 {
        return Err("bad section header size");
    }
    let header = |i: usize| shoff.checked_add(i.checked_mul(shentsize)?);
    let section = |i: usize| -> Result<(usize, &'a [u8]), &'static str> {
        let h = header(i).ok_or("section header out of range")?;
        let name = u32_at(h)?;
        let off = u64_at(h + 0x18)?;
        let size = u64_at(h + 0x20)?;
        let end = off.checked_add(size).ok_or("section out of range")?;
        Ok((name, elf.get(off..end).ok_or("section out of range")?))
    };
    let (_, names) = section(shstrndx)?;
    for i in 0..shnum {
        let (name_off, bytes) = section(i)?;
        let name = names.get(name_off..).ok_or("section name out of range")?;
        let name = name.split(|&b| b == 0).next().unwrap_or_default();
        if name == wanted.as_bytes() {
            return Ok(bytes);
        }
    }
    Err("no .modinfo section")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 object with a `.shstrtab` and a `.modinfo` holding `info`.
    pub(crate) fn fake_module(info: &[&str]) -> Vec<u8> {
        let mut modinfo = Vec::new();
        for i in info {
            modinfo.extend_from_slice(i.as_bytes());
            modinfo.push(0);
        }
        let shstrtab = b"\0.shstrtab\0.modinfo\0".to_vec();
        let mut elf = vec![0u8; 0x40];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        let strtab_off = elf.len();
        elf.extend_from_slice(&shstrtab);
        let modinfo_off = elf.len();
        elf.extend_from_slice(&modinfo);
        let shoff = elf.len();
        let mut sh = |name: u32, off: usize, size: usize| {
            let mut h = vec![0u8; 0x40];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&h);
        };
        sh(0, 0, 0);
        sh(1, strtab_off, shstrtab.len());
        sh(11, modinfo_off, modinfo.len());
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&0x40u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        elf
    }

    fn dir_with(modules: &[(&str, &str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (file, name, depends) in modules {
            let name = format!("name={name}");
            let depends = format!("depends={depends}");
            let bytes = fake_module(&["license=GPL", &depends, &name]);
            std::fs::write(dir.path().join(file), bytes).unwrap();
        }
        dir
    }

    #[test]
    fn reads_modinfo_and_orders_dependencies_first() {
        let dir = dir_with(&[
            (
                "virtio_net.ko",
                "virtio_net",
                "net_failover,virtio,virtio_ring",
            ),
            ("net_failover.ko", "net_failover", "failover"),
            ("failover.ko", "failover", ""),
            ("virtio.ko", "virtio", ""),
            ("virtio_ring.ko", "virtio_ring", "virtio"),
            ("virtio-rng.ko", "virtio_rng", "virtio,virtio_ring"),
        ]);
        let index = ModuleIndex::scan(dir.path()).unwrap();
        assert!(
            index.get("virtio_rng").is_some(),
            "name from .modinfo, not the file name"
        );
        let order: Vec<String> = index
            .order(&["virtio_net", "virtio_ring"])
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(
            order,
            vec![
                "failover",
                "net_failover",
                "virtio",
                "virtio_ring",
                "virtio_net"
            ]
        );
    }

    #[test]
    fn missing_modules_and_cycles_are_errors() {
        let dir = dir_with(&[("a.ko", "a", "b"), ("b.ko", "b", "a"), ("c.ko", "c", "zz")]);
        let index = ModuleIndex::scan(dir.path()).unwrap();
        assert!(matches!(
            index.order(&["a"]),
            Err(ModuleError::Cycle { .. })
        ));
        let err = index.order(&["c"]).unwrap_err().to_string();
        assert!(err.contains("`zz`") && err.contains("module `c`"), "{err}");
        let err = index.order(&["nope"]).unwrap_err().to_string();
        assert!(err.contains("`nope`") && err.contains("the VM"), "{err}");
    }

    #[test]
    fn garbage_is_not_a_module() {
        assert!(modinfo(b"not elf").is_err());
        let mut truncated = fake_module(&["name=x"]);
        truncated.truncate(0x50);
        assert!(modinfo(&truncated).is_err());
    }

    #[test]
    fn the_real_guest_modules_order_like_the_measured_one() {
        let dir = Path::new(super::super::kernel::DEFAULT_KERNEL_DIR).join("modules");
        if !dir.is_dir() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must have the guest kernel in {}",
                dir.display()
            );
            eprintln!("skipped: no guest modules in {}", dir.display());
            return;
        }
        let index = ModuleIndex::scan(&dir).unwrap();
        let order: Vec<String> = index
            .order(&["virtio_mmio", "virtio_net", "virtio_blk"])
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        let pos = |n: &str| {
            order
                .iter()
                .position(|m| m == n)
                .unwrap_or_else(|| panic!("{n} in {order:?}"))
        };
        assert!(pos("virtio_ring") < pos("virtio_mmio"));
        assert!(pos("failover") < pos("net_failover"));
        assert!(pos("net_failover") < pos("virtio_net"));
    }
}
