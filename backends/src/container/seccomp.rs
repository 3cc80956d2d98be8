//! The seccomp profile of every container: allow by default, refuse with `EPERM` the system
//! calls no benchmark needs and that reach past the container (kernel modules, kexec, mounts,
//! swap, clocks, keyrings, BPF, perf, ptrace, namespace changes, raw I/O ports).
//!
//! A deny-list (like the kernel-facing half of Docker's default profile) rather than an
//! allow-list: workloads are ours and allowlisted, and an allow-list would make every new
//! benchmark a profile change. `EPERM` rather than a kill, so that a refused call shows up as an
//! error the workload reports. Names libseccomp does not know are skipped by runc with a warning
//! (checked with runc 1.1.5 and libseccomp 2.5.4).

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscallBuilder,
};

/// System calls refused inside containers.
pub const DENIED_SYSCALLS: &[&str] = &[
    // Kernel code and reboot.
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "reboot",
    // Mounts and the root.
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    // Swap, accounting, quotas.
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "nfsservctl",
    // Clocks of the whole host.
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "stime",
    // Keyrings.
    "add_key",
    "request_key",
    "keyctl",
    // BPF, perf, kernel logs.
    "bpf",
    "perf_event_open",
    "syslog",
    "lookup_dcookie",
    // Other processes and namespaces.
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "setns",
    "unshare",
    // File handles that bypass path lookup.
    "open_by_handle_at",
    "name_to_handle_at",
    // Raw hardware and legacy calls.
    "iopl",
    "ioperm",
    "vm86",
    "vm86old",
    "uselib",
    "userfaultfd",
];

/// `EPERM`, returned for a refused call.
const EPERM: u32 = 1;

/// The profile: allow everything but [`DENIED_SYSCALLS`], which fail with `EPERM`, on x86-64 and
/// its 32-bit ABIs (so a 32-bit call cannot slip past the list).
pub fn default_profile() -> LinuxSeccomp {
    let denied = LinuxSyscallBuilder::default()
        .names(
            DENIED_SYSCALLS
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>(),
        )
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(EPERM)
        .build()
        .expect("all fields of the syscall rule are set");
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ])
        .syscalls(vec![denied])
        .build()
        .expect("all fields of the profile are set")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_refuses_the_dangerous_calls_and_allows_the_rest() {
        let p = default_profile();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActAllow);
        let rules = p.syscalls().as_ref().expect("rules");
        assert_eq!(rules.len(), 1);
        let names = rules[0].names();
        for must in [
            "kexec_load",
            "init_module",
            "finit_module",
            "mount",
            "umount2",
            "reboot",
        ] {
            assert!(names.iter().any(|n| n == must), "{must} not refused");
        }
        for needed in [
            "execve", "clone", "clone3", "fork", "getppid", "mmap", "wait4",
        ] {
            assert!(
                !names.iter().any(|n| n == needed),
                "{needed} is needed by workloads"
            );
        }
        assert_eq!(rules[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(rules[0].errno_ret(), Some(EPERM));
    }
}
