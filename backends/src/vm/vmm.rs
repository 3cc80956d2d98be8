//! The VMM seam: which program boots a [`VmSpec`], and how it is called.
//!
//! Today there is one VMM, QEMU. The rest of the backend needs only the methods of [`Vmm`]: a
//! name, a version, the machine types offered, a marker for leftover scans, and a command (or a
//! refusal, for a machine type, accelerator or device it lacks) whose **stdout is the guest's
//! serial console** (the results channel), whose stderr carries the VMM's own messages, and
//! which exits when the guest powers off or reboots.
//!
//! # Adding Firecracker or Cloud Hypervisor
//!
//! Add a variant to [`Vmm`] holding the binary's path (a `--vmm-bin` style flag picks it) and
//! fill in its methods:
//!
//! - **Cloud Hypervisor**: `cloud-hypervisor --kernel <vmlinux or bzImage> --initramfs <cpio>
//!   --cmdline <text> --cpus boot=N --memory size=<M>M --serial tty --console off`, plus
//!   `--net tap=<name>,mac=<mac>` and `--disk path=<raw>`. KVM (or MSHV) only: refuse
//!   [`AccelKind::Tcg`](super::qemu::AccelKind::Tcg) in `command`. The guest sees
//!   virtio-pci, so the transport module is `virtio_pci` (as for
//!   [`Machine::Q35`](super::qemu::Machine::Q35)); power-off ends the process.
//! - **Firecracker**: needs the uncompressed `vmlinux` (which `./bootstrap` already extracts
//!   for QEMU's PVH boot), and takes a JSON config file
//!   (`--no-api --config-file <json>`) with `boot-source` (kernel, initrd, boot_args),
//!   `machine-config` (vcpu_count, mem_size_mib), `network-interfaces` (tap) and `drives`;
//!   the command writes that file into the trial directory first. Serial goes to stdout. KVM only;
//!   virtio-mmio like microvm (`virtio_mmio` transport); the guest must stop with a reboot (the
//!   `-no-reboot` analogue is built in: Firecracker exits on the guest's reset), so `/init`'s
//!   power-off-then-reboot order already works.
//!
//! Nothing else changes: the initramfs, the command line, the console protocol, cgroups,
//! deadlines and leak checks are VMM-independent. Leftover detection finds a VM by the
//! `-name` value for QEMU; a new VMM needs an equally unique marker in its command line
//! (Firecracker's `--id`, Cloud Hypervisor's `--api-socket` path) returned by
//! [`Vmm::marker_args`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::qemu::{self, VmSpec};

/// Default QEMU binary, looked up in `PATH`.
pub const DEFAULT_QEMU: &str = "qemu-system-x86_64";

/// Why a VMM cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The binary is not there.
    #[error(
        "{what} binary {} not found; install qemu-system-x86 (./bootstrap) or pass --qemu",
        path.display()
    )]
    Missing {
        /// Which VMM.
        what: &'static str,
        /// The name or path looked for.
        path: PathBuf,
    },
    /// The VMM cannot boot what was asked (an accelerator or machine it lacks).
    #[error("{what} cannot boot this VM: {reason}")]
    Unsupported {
        /// Which VMM.
        what: &'static str,
        /// What it lacks.
        reason: String,
    },
    /// `--version` did not answer.
    #[error("{} --version failed: {reason}", path.display())]
    Version {
        /// The binary.
        path: PathBuf,
        /// What happened.
        reason: String,
    },
}

/// A virtual machine monitor that can boot a [`VmSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vmm {
    /// QEMU (`qemu-system-x86_64`).
    Qemu {
        /// The binary, resolved to a path when found.
        binary: PathBuf,
    },
}

impl Vmm {
    /// QEMU at `binary` (a path, or a name looked up in `PATH`; default [`DEFAULT_QEMU`]).
    pub fn qemu(binary: Option<&Path>) -> Result<Self, VmmError> {
        let name = binary.unwrap_or(Path::new(DEFAULT_QEMU));
        let binary = resolve(name).ok_or_else(|| VmmError::Missing {
            what: "QEMU",
            path: name.to_path_buf(),
        })?;
        Ok(Self::Qemu { binary })
    }

    /// The VMM's name (`qemu`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Qemu { .. } => "qemu",
        }
    }

    /// The binary.
    pub fn binary(&self) -> &Path {
        match self {
            Self::Qemu { binary } => binary,
        }
    }

    /// The first line of `--version` (`QEMU emulator version 7.2.22 (…)`). Blocks briefly.
    pub fn version(&self) -> Result<String, VmmError> {
        isolab_host::facts::tool_version(&self.binary().to_string_lossy(), &["--version"])
            .ok_or_else(|| VmmError::Version {
                path: self.binary().to_path_buf(),
                reason: "no answer".into(),
            })
    }

    /// The program and arguments that boot `spec` (see the module documentation for what the
    /// process must do), or why this VMM cannot boot it.
    pub fn command(&self, spec: &VmSpec) -> Result<(PathBuf, Vec<OsString>), VmmError> {
        match self {
            Self::Qemu { binary } => Ok((binary.clone(), qemu::args(spec))),
        }
    }

    /// The machine types this VMM offers (`-machine help`); empty when it cannot tell.
    pub fn machines(&self) -> Vec<String> {
        match self {
            Self::Qemu { binary } => std::process::Command::new(binary)
                .args(["-machine", "help"])
                .stdin(std::process::Stdio::null())
                .output()
                .map(|out| parse_machine_list(&String::from_utf8_lossy(&out.stdout)))
                .unwrap_or_default(),
        }
    }

    /// The arguments that mark a VM named `name` on its command line, in order, so that
    /// leftover scans find it in `/proc/<pid>/cmdline`.
    pub fn marker_args(&self, name: &str) -> [String; 2] {
        match self {
            Self::Qemu { .. } => ["-name".to_owned(), name.to_owned()],
        }
    }
}

/// The first word of every line after the header of QEMU's `-machine help`.
fn parse_machine_list(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with("Supported machines"))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// `name` itself when it holds a `/`, else the first executable `name` in `PATH`.
fn resolve(name: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.components().count() > 1 || name.is_absolute() {
        return executable(name).then(|| name.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| executable(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_is_named() {
        let err = Vmm::qemu(Some(Path::new("/nonexistent/qemu-system-x86_64"))).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("/nonexistent/qemu-system-x86_64") && text.contains("--qemu"),
            "{text}"
        );
        assert!(Vmm::qemu(Some(Path::new("no-such-qemu-binary-here"))).is_err());
    }

    #[test]
    fn machine_list_parses() {
        let text = "Supported machines are:\nmicrovm              microvm (i386)\npc                   Standard PC (alias of pc-i440fx-7.2)\nq35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)\n";
        assert_eq!(parse_machine_list(text), ["microvm", "pc", "q35"]);
        if let Ok(vmm) = Vmm::qemu(None) {
            assert!(
                vmm.machines().iter().any(|m| m == "q35"),
                "{:?}",
                vmm.machines()
            );
        }
    }

    #[test]
    fn resolves_from_path() {
        let sh = resolve(Path::new("sh")).expect("sh in PATH");
        assert!(sh.is_absolute());
        let vmm = Vmm::Qemu {
            binary: "/usr/bin/qemu-system-x86_64".into(),
        };
        assert_eq!(vmm.marker_args("x"), ["-name".to_owned(), "x".to_owned()]);
        assert_eq!(vmm.name(), "qemu");
    }
}
