//! Network `bridge` for VMs: per trial one network namespace holding a bridge and one tap per
//! VM. Nothing is made in the host's own network namespace.
//!
//! ```text
//! netns P        lo up, bridge br0 up, tap t<i> (one per VM) enslaved to br0
//! QEMU of VM i   runs inside P (setns before exec), virtio-net on tap t<i>
//! guest i        eth0 = 10.<x>.<h/256>.<h%256>/16, h = i + 2 (given on its command line)
//! ```
//!
//! `P` and the addresses follow the container backend's scheme
//! ([`isolab_host::netns`]): `P` is `<agent dir>-<trial slug>` and instance `i` has the same
//! address on every backend. Teardown deletes `P`, which takes the taps and the bridge along.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use super::error::VmError;
use super::qemu::TapNic;
use crate::Leak;
use isolab_host::netns;

/// One VM's place on the trial's bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmNic {
    /// The tap device and MAC address QEMU is given.
    pub nic: TapNic,
    /// The guest's address.
    pub addr: Ipv4Addr,
}

impl VmNic {
    /// `ADDR/PREFIX` for the guest's command line.
    pub fn guest_net(&self) -> String {
        format!("{}/{}", self.addr, netns::PREFIX_LEN)
    }
}

/// The tap, MAC and address of instance `index` on the network of trial namespace `prefix`.
pub fn nic(prefix: &str, index: u32) -> Result<VmNic, VmError> {
    let addr = netns::instance_addr(netns::subnet_octet(prefix), index).ok_or_else(|| {
        VmError::Network {
            ns: prefix.to_owned(),
            reason: format!("no address for instance {index} in a /16"),
        }
    })?;
    let [_, b, c, d] = addr.octets();
    Ok(VmNic {
        nic: TapNic {
            tap: format!("t{index}"),
            mac: format!("52:54:00:{b:02x}:{c:02x}:{d:02x}"),
        },
        addr,
    })
}

/// The path QEMU's `setns` opens for namespace `ns`.
pub fn ns_path(ns: &str) -> PathBuf {
    PathBuf::from(netns::NETNS_DIR).join(ns)
}

/// Makes namespace `prefix` with its bridge and the taps of `nics`; on error removes it.
/// Blocking.
pub fn create(prefix: &str, nics: &[VmNic]) -> Result<(), VmError> {
    let made = (|| {
        ip(prefix, &[], &format!("netns add {prefix}\n"))?;
        let mut cmds = String::from("link set lo up\nlink add br0 type bridge\nlink set br0 up\n");
        for n in nics {
            let tap = &n.nic.tap;
            cmds.push_str(&format!(
                "tuntap add dev {tap} mode tap\nlink set {tap} master br0 up\n"
            ));
        }
        ip(prefix, &["-n", prefix], &cmds)
    })();
    if made.is_err()
        && let Err(e) = destroy(prefix)
    {
        tracing::warn!("removing a half-made VM network {prefix}: {e}");
    }
    made
}

/// Deletes namespace `prefix` (and with it the bridge and taps); a missing one is fine.
pub fn destroy(prefix: &str) -> Result<(), VmError> {
    netns::destroy(prefix).map_err(|e| VmError::Network {
        ns: prefix.to_owned(),
        reason: e.to_string(),
    })
}

/// What of trial namespace `prefix` still exists: the namespace and any tap in it.
pub fn leftovers(prefix: &str) -> Vec<Leak> {
    let mut leaks = Vec::new();
    for ns in netns::existing(prefix) {
        for tap in taps_in(&ns) {
            leaks.push(Leak::Tap {
                name: format!("{ns}/{tap}"),
            });
        }
        leaks.push(Leak::Netns { name: ns });
    }
    leaks
}

/// Tap devices inside namespace `ns`.
fn taps_in(ns: &str) -> Vec<String> {
    let Ok(out) = netns::ip_output(&["-n", ns, "-o", "tuntap", "show"]) else {
        return Vec::new();
    };
    // `t0: tap persist`: the name is what precedes the first `:`.
    out.lines()
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect()
}

/// Runs `ip <args> -batch -` with `commands` on stdin.
fn ip(ns: &str, args: &[&str], commands: &str) -> Result<(), VmError> {
    netns::ip_batch(args, commands).map_err(|e| VmError::Network {
        ns: ns.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nics_follow_the_container_addressing() {
        let n = nic("isolab-agent-1-0-abc-a0", 3).unwrap();
        let x = netns::subnet_octet("isolab-agent-1-0-abc-a0");
        assert_eq!(n.addr, Ipv4Addr::new(10, x, 0, 5));
        assert_eq!(n.nic.tap, "t3");
        assert_eq!(n.nic.mac, format!("52:54:00:{x:02x}:00:05"));
        assert_eq!(n.guest_net(), format!("10.{x}.0.5/16"));
        assert!(nic("p", 70_000).is_err());
    }

    #[test]
    fn a_bridge_with_taps_is_made_and_removed() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root");
            eprintln!("skipped: needs root for network namespaces");
            return;
        }
        let prefix = format!("isolab-vmnet-test-{}", std::process::id());
        let nics = [nic(&prefix, 0).unwrap(), nic(&prefix, 1).unwrap()];
        create(&prefix, &nics).unwrap();
        assert!(ns_path(&prefix).exists());
        let left = leftovers(&prefix);
        assert!(
            left.contains(&Leak::Tap {
                name: format!("{prefix}/t0")
            }),
            "{left:?}"
        );
        assert!(
            left.contains(&Leak::Netns {
                name: prefix.clone()
            }),
            "{left:?}"
        );
        destroy(&prefix).unwrap();
        assert!(leftovers(&prefix).is_empty());
        destroy(&prefix).unwrap();
    }
}
