//! Network `bridge` for Docker containers, which Docker itself cannot join to a namespace it did
//! not make. The trial's network is made exactly as for the container backend
//! ([`isolab_host::netns`]: a bridge in the trial's namespace `P`, one namespace `P-i<i>`
//! per instance holding `eth0`, the far end of a veth on that bridge). The container starts with
//! network `none`; right after its start, `eth0` moves from `P-i<i>` into the container's
//! network namespace (found by its pid), the name `P-i<i>` is re-pointed at that namespace, and
//! `eth0` gets its address back (moving a link drops its addresses) and goes up. The workload's
//! clients retry until the network is up, servers bind the wildcard address. No link ever
//! exists in the host's network namespace; teardown deletes the names, the container's namespace
//! goes with the container.

use std::io::Write;
use std::process::{Command, Stdio};

use isolab_host::netns::{InstanceNet, NetnsError, PREFIX_LEN};

/// `PATH` used to find `ip`.
const SEARCH_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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

/// Moves `net`'s `eth0` into the network namespace of `pid` and configures it.
pub fn attach(net: &InstanceNet, pid: u32) -> Result<(), NetnsError> {
    let [out, rename, inside] = attach_batches(net, pid);
    ip(&["-n", &net.ns], &out)?;
    ip(&[], &rename)?;
    ip(&["-n", &net.ns], &inside)
}

/// Runs `ip <args> -batch -` with `commands` on stdin.
fn ip(args: &[&str], commands: &str) -> Result<(), NetnsError> {
    let program = SEARCH_PATH
        .split(':')
        .map(|d| std::path::Path::new(d).join("ip"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| "ip".into());
    let mut child = Command::new(program)
        .env_clear()
        .env("PATH", SEARCH_PATH)
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

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

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
}
