//! Network `bridge`: per trial a network namespace holding a bridge, per instance a network
//! namespace joined to that bridge by a veth pair. Nothing is ever made in the host's own
//! network namespace, so test traffic never leaves namespaces isolab made.
//!
//! Layout for the trial prefix `P` (unique per agent and trial attempt):
//!
//! ```text
//! netns P        lo up, bridge br0 up, veth v<i> (one per instance) enslaved to br0
//! netns P-i<i>   lo up, eth0 (peer of v<i>) up with 10.<x>.<h/256>.<h%256>/16, h = i + 2
//! ```
//!
//! `x` is derived from the trial so neighbouring trials differ, though they never could clash:
//! each trial's bridge is in its own namespace. A /16 leaves room for 65,533 instances. The
//! container joins `P-i<i>` by path (`/run/netns/P-i<i>`). Teardown deletes the namespaces,
//! which takes the veths and the bridge along.
//!
//! The namespaces are made with `ip` from iproute2 (`ip netns add`, `ip -n … -batch -`): it
//! names namespaces by the bind mounts in `/run/netns` that every tool (and `ip netns exec`, for
//! debugging) understands, and its batch mode configures a whole namespace in one process. Doing
//! the same with rtnetlink would add a netlink stack and its async runtime glue to the agent for
//! a few milliseconds per trial.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where `ip netns` keeps named network namespaces.
pub const NETNS_DIR: &str = "/run/netns";
/// Prefix length of the instance addresses.
pub const PREFIX_LEN: u8 = 16;
use crate::which::SEARCH_PATH;

/// What went wrong making or removing network namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// `ip` could not be started.
    #[error("cannot run `ip` (iproute2 installed?): {0}")]
    Spawn(#[source] std::io::Error),
    /// An `ip` command failed.
    #[error("`ip {args}` failed ({status}): {stderr}")]
    Failed {
        /// Its arguments and, for batches, the commands.
        args: String,
        /// Its exit status.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// More instances than a /16 holds.
    #[error("{count} instances do not fit in one /16 bridge network")]
    TooMany {
        /// How many were asked for.
        count: usize,
    },
}

/// One instance's network namespace and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceNet {
    /// Instance index.
    pub index: u32,
    /// Name of its network namespace.
    pub ns: String,
    /// Its address on the bridge.
    pub addr: Ipv4Addr,
}

impl InstanceNet {
    /// The namespace's path, for `config.json`.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.ns)
    }
}

/// A trial's bridge network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialNetwork {
    /// Name of the trial's namespace (also the prefix of the instances').
    pub trial_ns: String,
    /// One per instance.
    pub instances: Vec<InstanceNet>,
}

/// The second octet of a trial's 10.x.0.0/16 network, from its prefix (64..=191).
pub fn subnet_octet(prefix: &str) -> u8 {
    // FNV-1a: stable across builds and platforms.
    let h = prefix.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    64 + u8::try_from(h % 128).unwrap_or(0)
}

/// The address of instance `index` in the network with second octet `x`.
pub fn instance_addr(x: u8, index: u32) -> Option<Ipv4Addr> {
    let h = index.checked_add(2)?;
    let (hi, lo) = (u8::try_from(h >> 8).ok()?, u8::try_from(h & 0xff).ok()?);
    (h < 0xffff).then_some(Ipv4Addr::new(10, x, hi, lo))
}

/// Makes the trial's namespace with its bridge and one joined namespace per instance index.
/// On error, removes whatever it made.
pub fn create(prefix: &str, indexes: &[u32]) -> Result<TrialNetwork, NetnsError> {
    let x = subnet_octet(prefix);
    let instances = indexes
        .iter()
        .map(|&index| {
            let addr = instance_addr(x, index).ok_or(NetnsError::TooMany {
                count: indexes.len(),
            })?;
            Ok(InstanceNet {
                index,
                ns: format!("{prefix}-i{index}"),
                addr,
            })
        })
        .collect::<Result<Vec<_>, NetnsError>>()?;
    let net = TrialNetwork {
        trial_ns: prefix.to_owned(),
        instances,
    };
    let made = build(&net);
    if let Err(e) = made {
        if let Err(e2) = destroy(prefix) {
            tracing::warn!("removing a half-made bridge network {prefix}: {e2}");
        }
        return Err(e);
    }
    Ok(net)
}

fn build(net: &TrialNetwork) -> Result<(), NetnsError> {
    let mut adds = format!("netns add {}\n", net.trial_ns);
    for i in &net.instances {
        adds.push_str(&format!("netns add {}\n", i.ns));
    }
    ip(&[], &adds)?;
    let mut trial = String::from("link set lo up\nlink add br0 type bridge\nlink set br0 up\n");
    for i in &net.instances {
        trial.push_str(&format!(
            "link add v{idx} type veth peer name eth0 netns {ns}\nlink set v{idx} master br0 up\n",
            idx = i.index,
            ns = i.ns
        ));
    }
    ip(&["-n", &net.trial_ns], &trial)?;
    for i in &net.instances {
        let cmds = format!(
            "link set lo up\naddr add {}/{PREFIX_LEN} dev eth0\nlink set eth0 up\n",
            i.addr
        );
        ip(&["-n", &i.ns], &cmds)?;
    }
    Ok(())
}

/// Deletes the namespace `prefix` and every `prefix-i<n>` (the veths and the bridge go with
/// them). Missing ones are fine.
pub fn destroy(prefix: &str) -> Result<(), NetnsError> {
    delete(&existing(prefix))
}

/// Deletes the named namespaces.
pub fn delete(names: &[String]) -> Result<(), NetnsError> {
    if names.is_empty() {
        return Ok(());
    }
    let cmds: String = names.iter().map(|n| format!("netns del {n}\n")).collect();
    ip(&["-force"], &cmds)
}

/// Names of every namespace whose name starts with `start` (all trials of one agent).
pub fn starting_with(start: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(start))
        .collect();
    names.sort();
    names
}

/// Names of the namespaces of the trial with this prefix that exist now.
pub fn existing(prefix: &str) -> Vec<String> {
    starting_with(prefix)
        .into_iter()
        .filter(|n| belongs(prefix, n))
        .collect()
}

/// Whether namespace `name` is the trial namespace `prefix` or one of its instances'.
pub fn belongs(prefix: &str, name: &str) -> bool {
    name == prefix
        || name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("-i"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// veth interfaces inside namespace `ns`, for leak reports.
pub fn veths_in(ns: &str) -> Vec<String> {
    let Ok(out) = ip_text(&["-n", ns, "-o", "link", "show", "type", "veth"]) else {
        return Vec::new();
    };
    // `3: v0@if2: <…>`: the name is the second field up to `@` or `:`.
    out.lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|n| {
            n.trim_end_matches(':')
                .split('@')
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .filter(|n| !n.is_empty())
        .collect()
}

/// The three `ip` batches that move `net`'s `eth0` into the namespace of process `pid`: in the
/// instance's namespace (move the link out), in the default one (re-point the name), in the
/// re-pointed name (address, up).
pub fn attach_batches(net: &InstanceNet, pid: u32) -> [String; 3] {
    let ns = &net.ns;
    [
        format!("link set eth0 netns {pid}\n"),
        format!("netns del {ns}\nnetns attach {ns} {pid}\n"),
        format!(
            "addr add {}/{PREFIX_LEN} dev eth0\nlink set eth0 up\n",
            net.addr
        ),
    ]
}

/// For an engine that cannot join a namespace it did not make (Docker): moves `net`'s `eth0`
/// into the network namespace of process `pid` (the started container's), re-points the name
/// `net.ns` at that namespace, and gives `eth0` its address back (moving a link drops it) and
/// brings it up. No link ever exists in the host's network namespace.
pub fn attach_to_process(net: &InstanceNet, pid: u32) -> Result<(), NetnsError> {
    let [out, rename, inside] = attach_batches(net, pid);
    ip(&["-n", &net.ns], &out)?;
    ip(&[], &rename)?;
    ip(&["-n", &net.ns], &inside)
}

/// Runs `ip <args> -batch -` with `commands` on stdin (for other network layouts, such as the vm
/// backend's taps).
pub fn ip_batch(args: &[&str], commands: &str) -> Result<(), NetnsError> {
    ip(args, commands)
}

/// What `ip <args>` prints.
pub fn ip_output(args: &[&str]) -> Result<String, NetnsError> {
    ip_text(args)
}

/// Runs `ip <args> -batch -` with `commands` on stdin.
fn ip(args: &[&str], commands: &str) -> Result<(), NetnsError> {
    let mut child = ip_command()
        .args(args)
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NetnsError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(commands.as_bytes())
            .map_err(NetnsError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(NetnsError::Spawn)?;
    if out.status.success() {
        return Ok(());
    }
    Err(NetnsError::Failed {
        args: format!(
            "{} -batch - <<< {}",
            args.join(" "),
            commands.trim().replace('\n', "; ")
        ),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

fn ip_text(args: &[&str]) -> Result<String, NetnsError> {
    let out = ip_command()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(NetnsError::Spawn)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetnsError::Failed {
            args: args.join(" "),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

fn ip_command() -> Command {
    let program = SEARCH_PATH
        .split(':')
        .map(|d| Path::new(d).join("ip"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("ip"));
    let mut cmd = Command::new(program);
    cmd.env_clear().env("PATH", SEARCH_PATH);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_moves_by_pid_and_the_name_follows_it() {
        let net = InstanceNet {
            index: 1,
            ns: "P-i1".into(),
            addr: Ipv4Addr::new(10, 100, 0, 3),
        };
        let [out, rename, inside] = attach_batches(&net, 4242);
        assert_eq!(out, "link set eth0 netns 4242\n");
        assert_eq!(rename, "netns del P-i1\nnetns attach P-i1 4242\n");
        assert_eq!(
            inside,
            "addr add 10.100.0.3/16 dev eth0\nlink set eth0 up\n"
        );
    }

    #[test]
    fn addresses_skip_network_and_bridge_and_fill_a_slash_16() {
        assert_eq!(instance_addr(100, 0), Some(Ipv4Addr::new(10, 100, 0, 2)));
        assert_eq!(
            instance_addr(100, 253),
            Some(Ipv4Addr::new(10, 100, 0, 255))
        );
        assert_eq!(instance_addr(100, 254), Some(Ipv4Addr::new(10, 100, 1, 0)));
        assert_eq!(
            instance_addr(100, 65_532),
            Some(Ipv4Addr::new(10, 100, 255, 254))
        );
        assert_eq!(
            instance_addr(100, 65_533),
            None,
            "the broadcast address is not an instance's"
        );
    }

    #[test]
    fn subnet_is_stable_and_in_range() {
        let a = subnet_octet("isolab-agent-1-0-0123456789abcdef-a0");
        assert_eq!(a, subnet_octet("isolab-agent-1-0-0123456789abcdef-a0"));
        assert!((64..=191).contains(&a));
        let distinct: std::collections::BTreeSet<u8> = (0..50)
            .map(|i| subnet_octet(&format!("trial-{i}")))
            .collect();
        assert!(distinct.len() > 10, "trials spread over subnets");
    }

    #[test]
    fn only_the_trials_namespaces_belong_to_it() {
        assert!(belongs("isolab-a-t", "isolab-a-t"));
        assert!(belongs("isolab-a-t", "isolab-a-t-i12"));
        assert!(!belongs("isolab-a-t", "isolab-a-t-i"));
        assert!(!belongs("isolab-a-t", "isolab-a-t2"));
        assert!(!belongs("isolab-a-t", "isolab-a-t-i1x"));
        assert!(!belongs("isolab-a-t", "other"));
    }
}
