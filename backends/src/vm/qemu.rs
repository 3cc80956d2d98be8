//! The QEMU command line for one guest.
//!
//! `-M microvm` (virtio-mmio, no PCI, no firmware; boots a bzImage directly) by default, `q35`
//! on request (virtio-pci, for kernels or devices microvm lacks). Always `-nodefaults
//! -no-user-config -nographic -no-reboot`, the serial console on QEMU's stdio (stdout is the
//! console, stderr QEMU's own messages), `-accel kvm` with `-cpu host` or `-accel
//! tcg,thread=multi` with a bounded translation cache. Optional virtio-net on a tap device and
//! virtio-blk on a raw file (`cache=none,aio=threads`, measured 0.6–1.1 GiB/s under TCG).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Which accelerator a guest runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccelKind {
    /// Hardware virtualization.
    Kvm,
    /// QEMU's software emulation (multi-threaded TCG).
    Tcg,
}

impl AccelKind {
    /// `kvm` or `tcg`, as recorded with every sample.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }
}

/// The QEMU machine type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Machine {
    /// `microvm`: virtio-mmio devices, the fastest boot.
    #[default]
    Microvm,
    /// `q35`: a PC with PCIe, virtio-pci devices.
    Q35,
}

impl From<isolab_model::resolve::VmMachine> for Machine {
    fn from(m: isolab_model::resolve::VmMachine) -> Self {
        match m {
            isolab_model::resolve::VmMachine::Microvm => Self::Microvm,
            isolab_model::resolve::VmMachine::Q35 => Self::Q35,
        }
    }
}

impl Machine {
    /// From a pipeline's `machine:` value.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "microvm" => Some(Self::Microvm),
            "q35" => Some(Self::Q35),
            _ => None,
        }
    }

    /// The `-M` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Microvm => "microvm",
            Self::Q35 => "q35",
        }
    }

    /// The transport modules the guest needs before any virtio device shows up.
    pub fn transport_modules(self) -> &'static [&'static str] {
        match self {
            Self::Microvm => &["virtio_mmio"],
            Self::Q35 => &["virtio_pci"],
        }
    }

    /// Kernel words this machine wants (microvm has no PCI bus to probe).
    pub fn kernel_words(self) -> &'static [&'static str] {
        match self {
            Self::Microvm => &["pci=off"],
            Self::Q35 => &[],
        }
    }

    fn device(self, kind: &str) -> String {
        match self {
            Self::Microvm => format!("{kind}-device"),
            Self::Q35 => format!("{kind}-pci"),
        }
    }
}

/// A network interface backed by a tap device that already exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapNic {
    /// The tap device's name on the host (in QEMU's network namespace).
    pub tap: String,
    /// The guest's MAC address.
    pub mac: String,
}

/// Everything one guest is booted with, whichever VMM runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// A name for the VM (shows up in `ps`, and is how leftovers are found).
    pub name: String,
    /// Kernel image.
    pub kernel: PathBuf,
    /// Initramfs archive.
    pub initramfs: PathBuf,
    /// Kernel command line.
    pub cmdline: String,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Accelerator.
    pub accel: AccelKind,
    /// Machine type.
    pub machine: Machine,
    /// Optional network interface.
    pub nic: Option<TapNic>,
    /// Optional disk (a raw image file).
    pub disk: Option<PathBuf>,
}

/// Size of TCG's translation-block cache in MiB (QEMU's default is up to 1 GiB per guest, far
/// too much for dozens of small guests; 64 MiB suits a kernel and one static workload).
pub const TCG_TB_MIB: u64 = 64;

/// The arguments (after the program) that boot `spec` on QEMU.
pub fn args(spec: &VmSpec) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |s: &[&str]| a.extend(s.iter().map(OsString::from));
    push(&["-name", &spec.name, "-M", spec.machine.as_str()]);
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-serial",
        "stdio",
    ]);
    push(&[
        "-m",
        &format!("{}M", spec.memory_mib),
        "-smp",
        &spec.vcpus.to_string(),
    ]);
    match spec.accel {
        AccelKind::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
        AccelKind::Tcg => push(&["-accel", &format!("tcg,thread=multi,tb-size={TCG_TB_MIB}")]),
    }
    if let Some(nic) = &spec.nic {
        let netdev = format!("tap,id=n0,ifname={},script=no,downscript=no", nic.tap);
        let device = format!(
            "{},netdev=n0,mac={}",
            spec.machine.device("virtio-net"),
            nic.mac
        );
        push(&["-netdev", &netdev, "-device", &device]);
    }
    if let Some(disk) = &spec.disk {
        a.push("-drive".into());
        a.push(drive_arg(disk));
        a.push("-device".into());
        a.push(format!("{},drive=d0", spec.machine.device("virtio-blk")).into());
    }
    a.push("-kernel".into());
    a.push(spec.kernel.clone().into_os_string());
    a.push("-initrd".into());
    a.push(spec.initramfs.clone().into_os_string());
    a.push("-append".into());
    a.push(spec.cmdline.clone().into());
    a
}

/// `-drive` value for a raw image: QEMU splits options at commas, so commas in the path are
/// doubled.
fn drive_arg(path: &Path) -> OsString {
    let mut s = OsString::from("id=d0,if=none,format=raw,cache=none,aio=threads,file=");
    s.push(path.to_string_lossy().replace(',', ",,"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            name: "isolab-t1-a0-i0".into(),
            kernel: "/k/vmlinuz".into(),
            initramfs: "/t/initramfs.cpio".into(),
            cmdline: "console=ttyS0 isolab.workload=syscall".into(),
            vcpus: 2,
            memory_mib: 256,
            accel: AccelKind::Tcg,
            machine: Machine::Microvm,
            nic: None,
            disk: None,
        }
    }

    fn text(spec: &VmSpec) -> String {
        args(spec)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn microvm_tcg_command_line() {
        assert_eq!(
            text(&spec()),
            "-name isolab-t1-a0-i0 -M microvm -nodefaults -no-user-config -nographic -no-reboot \
             -serial stdio -m 256M -smp 2 -accel tcg,thread=multi,tb-size=64 \
             -kernel /k/vmlinuz -initrd /t/initramfs.cpio -append console=ttyS0 isolab.workload=syscall"
        );
        let append = args(&spec());
        assert_eq!(
            append.last().unwrap(),
            "console=ttyS0 isolab.workload=syscall",
            "one argument"
        );
    }

    #[test]
    fn kvm_q35_with_devices() {
        let s = VmSpec {
            accel: AccelKind::Kvm,
            machine: Machine::Q35,
            nic: Some(TapNic {
                tap: "isotap0".into(),
                mac: "52:54:00:00:00:01".into(),
            }),
            disk: Some("/t/a,b.raw".into()),
            ..spec()
        };
        let t = text(&s);
        assert!(t.contains("-M q35 "), "{t}");
        assert!(t.contains("-accel kvm -cpu host"), "{t}");
        assert!(
            t.contains("-netdev tap,id=n0,ifname=isotap0,script=no,downscript=no"),
            "{t}"
        );
        assert!(
            t.contains("-device virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01"),
            "{t}"
        );
        assert!(
            t.contains("file=/t/a,,b.raw -device virtio-blk-pci,drive=d0"),
            "{t}"
        );
        let m = VmSpec {
            machine: Machine::Microvm,
            ..s
        };
        assert!(text(&m).contains("virtio-net-device") && text(&m).contains("virtio-blk-device"));
    }

    #[test]
    fn machines_parse() {
        assert_eq!(Machine::parse("microvm"), Some(Machine::Microvm));
        assert_eq!(Machine::parse("q35"), Some(Machine::Q35));
        assert_eq!(Machine::parse("pc"), None);
        assert_eq!(Machine::Q35.transport_modules(), ["virtio_pci"]);
    }
}
