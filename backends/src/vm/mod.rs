//! The `vm` backend: each instance is a QEMU virtual machine booting a stock Linux kernel with
//! an initramfs the agent writes itself, around the static `isolab-workload` as `/init`.
//!
//! # How a VM runs
//!
//! 1. [`kernel`] finds the guest kernel and its modules (`./bootstrap` puts Debian's cloud
//!    kernel in `/var/cache/isolab/kernel`, with an uncompressed `vmlinux` for PVH boot;
//!    `--kernel`/`--modules` override), [`modules`] reads their dependencies from `.modinfo`,
//!    [`initramfs`] writes the newc archive (`/init` stripped to its loadable segments).
//! 2. [`plan`] turns the trial into VMs: [`cmdline`] puts the workload and its params on the
//!    kernel command line (`isolab.workload=… isolab.param.k=v`); a file workload gets a sparse
//!    ext4 disk on virtio-blk as its `/tmp`, a bridge platform a virtio-net on a tap (and only
//!    then are modules loaded).
//! 3. [`accel`] picks KVM only when a [`probe`] VM really boots on it, else TCG; [`vmm`] and
//!    [`qemu`] turn a [`qemu::VmSpec`] into a command (`-M microvm`, q35 when QEMU lacks it,
//!    `-no-reboot`, serial on stdout); [`launch`] starts it inside the instance cgroup the
//!    runner's cgroup engine made (whose memory limit, unless the platform sets one, is what
//!    QEMU needs: [`setup::qemu_memory_bytes`], told to the engine by the backend's
//!    `cgroup_plan`), forked by the long-lived [`crate::spawner`] thread.
//! 4. In the guest, `/init` (`workload/src/pid1.rs`) mounts, loads modules, runs the workload,
//!    frames each sample line on the serial console, writes an end record and powers off.
//!    [`console`] splits the console back into samples and log lines.
//! 5. [`backend::VmBackend`] drives all this on the [`crate::Backend`] trait: deadline
//!    and cancel kill QEMU by pid (the runner kills what is left in the cgroups), teardown
//!    removes the files and the bridge network (the runner the cgroups), and the leftover scan
//!    ([`setup::vm_processes`]) looks for any QEMU process carrying the trial's name.
//!
//! `bench` (feature `testing`) holds the measurements `just bench` reports.
//!
//! # Measured here (QEMU 7.2, TCG, Debian 6.1 cloud kernel, 2 cores)
//!
//! Boot to the first sample: about 1.8 s through the backend and the same bare (ratio about
//! 1.0); 8 VMs together about 8–17 s. `/dev/kvm` opens but QEMU cannot drive it (nested PVM:
//! `-cpu host` aborts on an MSR, the default CPU hangs), so the KVM probe fails within
//! [`accel::KVM_PROBE_TIMEOUT`] once per agent and TCG is used. A guest needs at least
//! [`setup::MIN_GUEST_MIB`] of memory with this kernel.
//!
//! `network: bridge` puts each VM's virtio-net on a tap in a per-trial network namespace
//! ([`net`]), addressed like the container backend's instances. A new VMM (Firecracker, Cloud
//! Hypervisor) is a new variant of [`vmm::Vmm`]; its documentation says what that needs.

pub mod accel;
pub mod backend;
pub mod cmdline;
pub mod console;
pub mod error;
pub mod initramfs;
pub mod kernel;
pub mod launch;
pub mod modules;
pub mod net;
pub mod plan;
pub mod probe;
pub mod qemu;
pub mod setup;
pub mod vmm;

pub use backend::{VmBackend, VmPrepared};
pub use error::VmError;
pub use setup::VmConfig;
