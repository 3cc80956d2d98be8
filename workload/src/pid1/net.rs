//! The guest's network for PID 1: `eth0` (virtio-net, on the trial's bridge) gets the address
//! the agent chose, and `lo` comes up; plain `ioctl`s on an `AF_INET` socket, no netlink, no
//! busybox.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// The guest interface the agent's tap shows up as.
const GUEST_IF: &str = "eth0";

/// An address with its prefix length, from `isolab.net=10.64.0.2/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NetConfig {
    /// The guest's address.
    pub(crate) addr: Ipv4Addr,
    /// Network prefix length.
    pub(crate) prefix_len: u8,
}

impl NetConfig {
    /// Parses `ADDR/PREFIX`.
    pub(crate) fn parse(value: &str) -> Result<Self, String> {
        let bad = || format!("bad network `{value}` (expected ADDRESS/PREFIX, e.g. 10.64.0.2/16)");
        let (addr, prefix) = value.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix_len: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix_len > 32 {
            return Err(bad());
        }
        Ok(Self { addr, prefix_len })
    }

    /// The netmask of the prefix.
    pub(crate) fn netmask(&self) -> Ipv4Addr {
        let bits = u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0);
        Ipv4Addr::from(bits)
    }
}

/// Waits up to `wait` for `eth0` (its driver may probe asynchronously), gives it the address,
/// and brings it and `lo` up.
pub(crate) fn configure(cfg: &NetConfig, wait: Duration) -> Result<(), String> {
    let deadline = Instant::now() + wait;
    while !std::path::Path::new("/sys/class/net")
        .join(GUEST_IF)
        .exists()
    {
        if Instant::now() >= deadline {
            return Err(format!("{GUEST_IF} did not appear within {wait:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: socket takes plain integers; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh socket owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    set_addr(&sock, GUEST_IF, libc::SIOCSIFADDR, cfg.addr)?;
    set_addr(&sock, GUEST_IF, libc::SIOCSIFNETMASK, cfg.netmask())?;
    up(&sock, GUEST_IF)?;
    up(&sock, "lo")
}

/// An `ifreq` naming `name`, everything else zero.
fn ifreq(name: &str) -> Result<libc::ifreq, String> {
    // SAFETY: `ifreq` is plain old data (a name array and a union of integers, arrays and
    // pointers), for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(format!("interface name {name} too long"));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = libc::c_char::from_ne_bytes([src]);
    }
    Ok(req)
}

/// `SIOCSIFADDR`/`SIOCSIFNETMASK` with an IPv4 address.
fn set_addr(
    sock: &OwnedFd,
    name: &str,
    request: libc::c_ulong,
    addr: Ipv4Addr,
) -> Result<(), String> {
    let mut req = ifreq(name)?;
    let sin = libc::sockaddr_in {
        sin_family: libc::sa_family_t::try_from(libc::AF_INET).unwrap_or_default(),
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `sockaddr_in` and `sockaddr` are both 16 bytes and `sockaddr` has no invalid bit
    // patterns; writing the union field copies plain bytes.
    req.ifr_ifru.ifru_addr =
        unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) };
    // SAFETY: `req` is a valid `ifreq` that outlives the call; the socket is open.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request, &mut req) } < 0 {
        return Err(format!(
            "setting {addr} on {name}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Sets `IFF_UP` on `name`.
fn up(sock: &OwnedFd, name: &str) -> Result<(), String> {
    let mut req = ifreq(name)?;
    // SAFETY: `req` is a valid `ifreq` that outlives the call; the socket is open.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(format!(
            "reading the flags of {name}: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::c_short::try_from(libc::IFF_UP).unwrap_or_default();
    // SAFETY: as above.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req) } < 0 {
        return Err(format!(
            "bringing {name} up: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_address_and_prefix() {
        let c = NetConfig::parse("10.64.0.2/16").unwrap();
        assert_eq!(c.addr, Ipv4Addr::new(10, 64, 0, 2));
        assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(
            NetConfig::parse("10.0.0.1/32").unwrap().netmask(),
            Ipv4Addr::BROADCAST
        );
        assert_eq!(
            NetConfig::parse("10.0.0.1/0").unwrap().netmask(),
            Ipv4Addr::UNSPECIFIED
        );
        for bad in ["10.0.0.1", "10.0.0.1/33", "x/16", "10.0.0.1/x"] {
            assert!(NetConfig::parse(bad).is_err(), "{bad}");
        }
        assert!(ifreq("a-name-longer-than-ifnamsiz").is_err());
    }
}
