//! The `vm` backend: each instance is a QEMU virtual machine booting a stock Linux kernel with
//! an initramfs the agent writes itself, around the static `isolab-workload` as `/init`.
//!
//! # How a VM runs
//!
//! 1. [`kernel`] finds the guest kernel and its modules (`./bootstrap` puts Debian's cloud
//!    kernel in `/var/cache/isolab/kernel`; `--kernel`/`--modules` override), [`modules`] reads
//!    their dependencies from `.modinfo`, [`initramfs`] writes the newc archive.
//! 2. [`cmdline`] puts the workload, its params and the modules to load on the kernel command
//!    line (`isolab.workload=… isolab.param.k=v`), with `tsc_early_khz`, `panic=-1` and `quiet`.
//! 3. [`accel`] picks KVM only when a probe VM really boots on it, else TCG; [`vmm`] and
//!    [`qemu`] turn a [`qemu::VmSpec`] into a command (`-M microvm`, `-no-reboot`, serial on
//!    stdout); [`launch`] starts it inside the instance's own cgroup.
//! 4. In the guest, `/init` (`workload/src/pid1.rs`) mounts, loads modules, runs the workload,
//!    frames each sample line on the serial console, writes an end record and powers off.
//!    [`console`] splits the console back into samples and log lines.
//! 5. [`backend::VmBackend`] drives all this on the [`crate::backend::Backend`] trait: deadline
//!    and cancel kill QEMU by pid, teardown removes cgroups and files, and the leftover scan
//!    looks for any QEMU process carrying the trial's name.
//!
//! # Measured here (QEMU 7.2, TCG, Debian 6.1 cloud kernel)
//!
//! A microvm boots to the first line of `/init` in about 0.9 s and exits in about 1.6 s on an
//! idle host; `/dev/kvm` opens but hangs a guest (nested PVM), so the KVM probe times out after
//! [`accel::KVM_PROBE_TIMEOUT`] once per agent and TCG is used.
//!
//! A new VMM (Firecracker, Cloud Hypervisor) is a new variant of [`vmm::Vmm`]; its
//! documentation says what that needs.

pub mod accel;
pub mod backend;
pub mod bench;
pub mod cmdline;
pub mod console;
pub mod error;
pub mod initramfs;
pub mod kernel;
pub mod launch;
pub mod modules;
pub mod plan;
pub mod qemu;
pub mod setup;
pub mod spawner;
pub mod vmm;

pub use backend::{VmBackend, VmPrepared};
pub use error::VmError;
pub use setup::VmConfig;
