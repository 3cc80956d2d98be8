//! Every platform the agent reports in its capabilities (and so in `env/<host>.json`), in one
//! place: the backends' own probes, plus the platforms that cannot run here at all, each with
//! the reason, so that a report of the spectrum says what is missing and why.
//!
//! | platform | where its status comes from |
//! |---|---|
//! | `native`, `container`, `vm`, `docker`, `lxc` | the backend's probe (`not implemented` if the agent has none) |
//! | `container/<runtime>` | the container backend's probe of each OCI runtime (`runc`, `crun`, `youki`, `runsc`) |
//! | `vm/kvm` | the vm backend's KVM check (a probe VM must boot on it; nested KVM often hangs) |
//! | `xen`, `openvz`, `linux-vserver` | [`OUT_OF_REACH`]: they need another or a patched kernel |
//!
//! [`complete`] adds what the probes cannot know and replaces a bare "not found" of an optional
//! runtime with how to install it.

use super::BackendStatus;
use crate::vm::accel::KvmCheck;

/// A platform no backend of this agent can run on a mainline Linux host, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfReach {
    /// Platform name in capabilities.
    pub name: &'static str,
    /// Why it cannot run here, and what stands in for it.
    pub reason: &'static str,
}

/// Platforms of the 2007 study and its critics that need another or a patched kernel.
pub const OUT_OF_REACH: &[OutOfReach] = &[
    OutOfReach {
        name: "xen",
        reason: "requires another kernel: the host must boot under the Xen hypervisor as dom0, \
                 and this agent runs on a Linux kernel on bare metal or in a VM; QEMU (vm) \
                 stands in for the hypervisor",
    },
    OutOfReach {
        name: "openvz",
        reason: "requires a patched kernel (OpenVZ's vzkernel), not mainline Linux; \
                 namespaces and cgroups (container, lxc, docker) stand in for it",
    },
    OutOfReach {
        name: "linux-vserver",
        reason: "requires a patched kernel (the Linux-VServer patch, last for Linux 4.9), not \
                 mainline Linux; namespaces and cgroups (container, lxc, docker) stand in for it",
    },
];

/// Backend names every agent reports, implemented or not.
pub const BACKENDS: [&str; 5] = ["native", "container", "vm", "docker", "lxc"];

/// How to install an optional runtime or tool that a probe found missing.
pub const INSTALL_HINTS: &[(&str, &str)] = &[
    (
        "container/youki",
        "youki not installed (./bootstrap --with-youki)",
    ),
    (
        "container/runsc",
        "runsc not installed (./bootstrap installs it)",
    ),
    (
        "container/crun",
        "crun not installed (./bootstrap installs it)",
    ),
    (
        "container/runc",
        "runc not installed (./bootstrap installs it)",
    ),
];

/// `vm/kvm`: whether the vm backend could use KVM here.
pub fn kvm_status(check: &KvmCheck) -> BackendStatus {
    match check {
        KvmCheck::Works { boot } => BackendStatus {
            name: "vm/kvm".into(),
            available: true,
            version: format!("a probe VM booted in {} ms", boot.as_millis()),
            accel: "kvm".into(),
            ..BackendStatus::default()
        },
        KvmCheck::Unusable { reason } => BackendStatus {
            accel: "tcg".into(),
            ..BackendStatus::unavailable("vm/kvm", format!("{reason}; VMs use TCG"))
        },
    }
}

/// Completes a list of probed statuses: a "not implemented" entry for every backend the agent
/// lacks, every [`OUT_OF_REACH`] platform, and install hints for missing optional runtimes.
pub fn complete(statuses: &mut Vec<BackendStatus>) {
    for s in statuses
        .iter_mut()
        .filter(|s| !s.available && is_missing(&s.reason))
    {
        if let Some((_, hint)) = INSTALL_HINTS.iter().find(|(name, _)| *name == s.name) {
            s.reason = (*hint).to_owned();
        }
    }
    for name in BACKENDS {
        if !statuses.iter().any(|s| s.name == name) {
            statuses.push(BackendStatus::unavailable(
                name,
                "not implemented in this agent version",
            ));
        }
    }
    for p in OUT_OF_REACH {
        if !statuses.iter().any(|s| s.name == p.name) {
            statuses.push(BackendStatus::unavailable(p.name, p.reason));
        }
    }
}

/// Whether a probe's reason says the binary is not there.
fn is_missing(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    r.contains("not found") || r.contains("not installed")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_backend_and_out_of_reach_platform_is_listed_once() {
        let mut s = vec![
            BackendStatus {
                name: "native".into(),
                available: true,
                ..Default::default()
            },
            BackendStatus::unavailable(
                "container/youki",
                "runtime `youki` not found (not installed: …)",
            ),
            BackendStatus::unavailable(
                "container/crun",
                "probe container failed: cannot use hybrid cgroups",
            ),
        ];
        complete(&mut s);
        complete(&mut s);
        let names: Vec<&str> = s.iter().map(|b| b.name.as_str()).collect();
        for n in BACKENDS
            .iter()
            .chain(["xen", "openvz", "linux-vserver"].iter())
        {
            assert_eq!(
                names.iter().filter(|x| *x == n).count(),
                1,
                "{n} in {names:?}"
            );
        }
        let youki = s.iter().find(|b| b.name == "container/youki").unwrap();
        assert_eq!(
            youki.reason,
            "youki not installed (./bootstrap --with-youki)"
        );
        let crun = s.iter().find(|b| b.name == "container/crun").unwrap();
        assert!(
            crun.reason.contains("hybrid"),
            "a real failure keeps its reason: {}",
            crun.reason
        );
        let xen = s.iter().find(|b| b.name == "xen").unwrap();
        assert!(
            !xen.available && xen.reason.contains("another kernel"),
            "{xen:?}"
        );
        let vserver = s.iter().find(|b| b.name == "linux-vserver").unwrap();
        assert!(vserver.reason.contains("patched kernel"), "{vserver:?}");
    }

    #[test]
    fn kvm_status_says_which_accelerator_vms_get() {
        let ok = kvm_status(&KvmCheck::Works {
            boot: Duration::from_millis(300),
        });
        assert!(ok.available);
        assert_eq!(ok.accel, "kvm");
        let nested = kvm_status(&KvmCheck::Unusable {
            reason: "a probe VM did not answer within 4 s".into(),
        });
        assert!(!nested.available);
        assert_eq!(nested.accel, "tcg");
        assert!(
            nested.reason.contains("did not answer") && nested.reason.contains("TCG"),
            "{}",
            nested.reason
        );
    }
}
