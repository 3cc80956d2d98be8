//! A virtual network for tests: network namespaces joined by veth pairs to a Linux bridge in a hub
//! namespace, processes started inside them, and the cleanup of what an agent left in the cgroup
//! tree. Everything is removed on drop; the host's own network namespace is never touched.
//!
//! Processes join a namespace with `setns(2)` between fork and exec rather than through
//! `ip netns exec`, which remounts `/sys` for the namespace and so hides `/sys/fs/cgroup` from
//! agents (they need it). [`in_netns_with_hosts`] also gives the process a private mount
//! namespace with its own `/etc/hosts` (how a test resolves service names without DNS).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{agent_cgroup_dirs, processes_in_agent_cgroups};

/// `Some(reason)` when this machine cannot build test networks and it is not CI.
pub fn skip_reason() -> Option<String> {
    if std::env::var_os("CI").is_some() {
        return None;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root for network namespaces and cgroups (CI runs it as root)".into());
    }
    if isolab_host::workload_bin::locate().is_err() {
        return Some("no isolab-workload binary (set ISOLAB_WORKLOAD_BIN)".into());
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "`ip netns list` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("no `ip` (iproute2): {e}")),
    }
}

/// Runs `ip ARGS`; `Err` with its stderr when it fails.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn netns_fd(ns: &str) -> io::Result<OwnedFd> {
    File::open(format!("/run/netns/{ns}")).map(OwnedFd::from)
}

/// The namespaces of one test (named `isolab-t<pid>-…`); deleted, with their veths and bridge, on
/// drop.
pub struct Network {
    prefix: String,
    /// Namespaces created, in creation order (the hub first).
    namespaces: Vec<String>,
}

impl Network {
    /// The hub with its bridge, then one namespace per `(name, address/prefix)` with a veth to the
    /// bridge carrying that address.
    pub fn build(members: &[(&str, &str)]) -> Result<Self, String> {
        let mut net = Self {
            prefix: format!("isolab-t{}", std::process::id()),
            namespaces: Vec::new(),
        };
        let hub = net.add("hub")?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for (i, (name, addr)) in members.iter().enumerate() {
            let ns = net.add(name)?;
            let peer = format!("v{}", i + 1);
            ip(&[
                "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &peer, "netns",
                &hub,
            ])?;
            ip(&["-n", &hub, "link", "set", &peer, "master", "br0"])?;
            ip(&["-n", &hub, "link", "set", &peer, "up"])?;
            ip(&["-n", &ns, "addr", "add", addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(net)
    }

    /// The full name of member `name`'s namespace.
    pub fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    fn add(&mut self, name: &str) -> Result<String, String> {
        let ns = self.ns(name);
        if Path::new("/run/netns").join(&ns).exists() {
            // Left by an aborted run of a process that had our pid: ours to remove.
            let _ = ip(&["netns", "del", &ns]);
        }
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// `program` set to run in network namespace `ns` (joined between fork and exec; the child's pid
/// is the program's own).
pub fn in_netns(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let fd = netns_fd(ns).unwrap_or_else(|e| panic!("open namespace {ns}: {e}"));
    let mut cmd = Command::new(program);
    // SAFETY: the hook only calls setns(2), which is async-signal-safe, on a descriptor that the
    // closure owns (opened with O_CLOEXEC, so it does not leak into the program).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
    cmd
}

/// [`in_netns`], and in a private mount namespace where `hosts` is bind-mounted over
/// `/etc/hosts` (nothing else differs from the host's mounts; the mount namespace ends with the
/// process).
pub fn in_netns_with_hosts(
    ns: &str,
    hosts: &Path,
    program: impl AsRef<std::ffi::OsStr>,
) -> Command {
    let fd = netns_fd(ns).unwrap_or_else(|e| panic!("open namespace {ns}: {e}"));
    let hosts = CString::new(hosts.as_os_str().as_bytes()).expect("hosts path");
    let mut cmd = Command::new(program);
    // SAFETY: setns, unshare and mount are async-signal-safe system calls; their arguments were
    // made before the fork (the C strings are owned by the closure).
    unsafe {
        cmd.pre_exec(move || {
            let check = |rc: libc::c_int| {
                if rc == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            };
            check(libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET))?;
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // Private, so that the bind mount below never propagates to the host.
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                hosts.as_ptr(),
                c"/etc/hosts".as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ))
        });
    }
    cmd
}

/// A TCP connection attempt to `addr` made from inside namespace `ns` (by a thread that joins it).
pub fn connect_from(ns: &str, addr: SocketAddr) -> io::Result<TcpStream> {
    let fd = netns_fd(ns)?;
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only (CLONE_NEWNET may be joined per thread); the thread
        // ends right after, so nothing else runs in the namespace. The socket stays in it.
        if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        TcpStream::connect_timeout(&addr, Duration::from_secs(2))
    })
    .join()
    .expect("connect thread")
}

/// Kills what is left in the cgroups of the (dead) agent `pid` and removes them, deepest first.
pub fn remove_agent_cgroups(pid: u32) {
    for p in processes_in_agent_cgroups(pid) {
        if let Ok(p) = i32::try_from(p) {
            // SAFETY: kill has no memory preconditions; the process is in our agent's cgroup.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }
    let end = Instant::now() + Duration::from_secs(10);
    while !processes_in_agent_cgroups(pid).is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    for top in agent_cgroup_dirs(pid) {
        let mut dirs = Vec::new();
        let mut stack = vec![top];
        while let Some(d) = stack.pop() {
            if let Ok(entries) = std::fs::read_dir(&d) {
                stack.extend(
                    entries
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| p.is_dir() && !p.is_symlink()),
                );
            }
            dirs.push(d);
        }
        for d in dirs.iter().rev() {
            if let Err(e) = std::fs::remove_dir(d) {
                eprintln!("cleanup: rmdir {}: {e}", d.display());
            }
        }
    }
}
