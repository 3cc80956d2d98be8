//! Bounds on workload parameter values, durations and timeouts: what a root agent lets a
//! caller ask of its host.
//!
//! Names are checked against the catalog elsewhere; this module checks values. `dir` must stay
//! inside the instance's scratch (a relative path of plain components, no `..`; the workload
//! resolves it beneath the scratch with `openat2(RESOLVE_BENEATH)`), `host` must be an address of
//! the trial's own network (see [`check_host`]), and sizes, thread and connection counts, fork
//! limits, durations and timeouts have upper bounds ([`ParamBounds`]). The same functions run in
//! `isolab validate` (with the default bounds, reported at file:line:col) and in the agent when a
//! trial arrives (with the agent's configured bounds), so the two cannot disagree on a rule.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Component, Path};
use std::time::Duration;

use crate::location::{At, child, index};
use crate::pipeline::{BackendKind, Experiment, NetworkMode, ParamValue, Pipeline, WorkloadRef};
use crate::units::{Bytes, HumanDuration};

use super::Checker;

/// Default largest `size`/`step` of a workload: 16 GiB.
pub const DEFAULT_MAX_SIZE_BYTES: u64 = 16 << 30;
/// Default most `threads` or `jobs` of one instance.
pub const DEFAULT_MAX_THREADS: u64 = 1024;
/// Default most `connections` of one instance.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 1024;
/// Default largest `max_forks` of a fork bomb (the pids ceiling bounds it anyway).
pub const DEFAULT_MAX_FORKS: u64 = 65_536;
/// Default longest trial duration (and `duration`/`interval` parameter): one hour.
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(3600);
/// Default longest trial timeout: four hours (the default timeout of a one-hour trial is
/// 3 h 0 min 30 s).
pub const DEFAULT_MAX_TIMEOUT: Duration = Duration::from_secs(4 * 3600);

/// Upper bounds on what a trial may ask for. The agent reads them from its configuration;
/// `isolab validate` checks against the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamBounds {
    /// Largest `size` and `step` parameter, in bytes.
    pub max_size_bytes: u64,
    /// Most `threads` or `jobs`.
    pub max_threads: u64,
    /// Most `connections`.
    pub max_connections: u64,
    /// Largest `max_forks`.
    pub max_forks: u64,
    /// Longest trial duration, `duration` or `interval` parameter.
    pub max_duration: Duration,
    /// Longest trial timeout.
    pub max_timeout: Duration,
}

impl Default for ParamBounds {
    fn default() -> Self {
        Self {
            max_size_bytes: DEFAULT_MAX_SIZE_BYTES,
            max_threads: DEFAULT_MAX_THREADS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_forks: DEFAULT_MAX_FORKS,
            max_duration: DEFAULT_MAX_DURATION,
            max_timeout: DEFAULT_MAX_TIMEOUT,
        }
    }
}

/// The network an instance runs in, which decides the addresses `host` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetContext {
    /// The backend (native always shares the host's network namespace).
    pub backend: BackendKind,
    /// The platform's network attachment.
    pub network: NetworkMode,
}

/// First and last second octet of the trial bridge networks (`10.x.0.0/16`, see
/// `isolab_host::netns::subnet_octet`).
const BRIDGE_OCTETS: std::ops::RangeInclusive<u8> = 64..=191;

/// Checks one parameter value; `Err` says what is wrong and which bound applies (without the
/// parameter's name, which the caller puts in front). A bounded value that does not parse is
/// refused too (it could not be compared with its bound).
pub fn check_param(
    name: &str,
    value: &ParamValue,
    net: NetContext,
    bounds: &ParamBounds,
) -> Result<(), String> {
    let text = value.to_string();
    match name {
        "dir" => check_dir(&text),
        "host" => match text.trim().parse::<IpAddr>() {
            Ok(ip) => check_host(ip, net),
            Err(_) => Err(format!(
                "`{text}` is not an IP address (host names are not resolved)"
            )),
        },
        "size" | "step" => match text.parse::<Bytes>() {
            Ok(b) if b.get() > bounds.max_size_bytes => Err(format!(
                "`{text}` is larger than the bound of {} (agent setting max_size_bytes)",
                Bytes(bounds.max_size_bytes)
            )),
            Ok(_) => Ok(()),
            Err(_) => Err(format!(
                "`{text}` is not a size (expected e.g. `4096`, `64KiB` or `1GiB`)"
            )),
        },
        "threads" | "jobs" => count(&text, bounds.max_threads, "max_threads"),
        "connections" => count(&text, bounds.max_connections, "max_connections"),
        "max_forks" => count(&text, bounds.max_forks, "max_forks"),
        "duration" | "interval" => match text.parse::<HumanDuration>() {
            Ok(d) => check_duration(d.0, bounds),
            Err(_) => Err(format!(
                "`{text}` is not a duration (expected e.g. `500ms` or `2s`)"
            )),
        },
        _ => Ok(()),
    }
}

fn count(text: &str, max: u64, setting: &str) -> Result<(), String> {
    match text.trim().parse::<u64>() {
        Ok(n) if n > max => Err(format!(
            "{n} is more than the bound of {max} (agent setting {setting})"
        )),
        Ok(_) => Ok(()),
        Err(_) => Err(format!("`{text}` is not a whole number")),
    }
}

/// A trial (or `duration` parameter) may last at most `max_duration`.
pub fn check_duration(d: Duration, bounds: &ParamBounds) -> Result<(), String> {
    if d > bounds.max_duration {
        return Err(format!(
            "{} is longer than the bound of {} (agent setting max_duration)",
            HumanDuration(d),
            HumanDuration(bounds.max_duration)
        ));
    }
    Ok(())
}

/// A trial's deadline may be at most `max_timeout`.
pub fn check_timeout(d: Duration, bounds: &ParamBounds) -> Result<(), String> {
    if d > bounds.max_timeout {
        return Err(format!(
            "{} is longer than the bound of {} (agent setting max_timeout)",
            HumanDuration(d),
            HumanDuration(bounds.max_timeout)
        ));
    }
    Ok(())
}

/// `dir` must be a non-empty relative path of plain components: it names a directory inside
/// the instance's scratch, never a place on the host.
pub fn check_dir(text: &str) -> Result<(), String> {
    let path = Path::new(text);
    let why = if text.is_empty() {
        "must not be empty"
    } else if text.contains('\0') {
        "must not contain NUL bytes"
    } else if path.is_absolute() {
        "is absolute"
    } else if path.components().any(|c| c == Component::ParentDir) {
        "contains `..`"
    } else if !path
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        "is not a plain relative path"
    } else {
        return Ok(());
    };
    Err(format!(
        "`{text}` {why}; `dir` is a relative path without `..`, resolved beneath the \
         instance's scratch directory"
    ))
}

/// `host` may only name the trial's own network: loopback always; the unspecified address
/// (listen on every interface) and the trial bridge range `10.64.0.0`–`10.191.255.255` only
/// where the instance has a network namespace of its own (not `native`, not `network: host`),
/// so that no traffic leaves the host's namespace for another machine.
pub fn check_host(ip: IpAddr, net: NetContext) -> Result<(), String> {
    if ip.is_loopback() {
        return Ok(());
    }
    let own_ns = net.backend != BackendKind::Native && net.network != NetworkMode::Host;
    if own_ns && ip.is_unspecified() {
        return Ok(());
    }
    let bridged = own_ns && net.network == NetworkMode::Bridge;
    if bridged && is_bridge_addr(ip) {
        return Ok(());
    }
    let allowed = if bridged {
        "loopback, 0.0.0.0/:: or the trial bridge's 10.64.0.0-10.191.255.255"
    } else if own_ns {
        "loopback or 0.0.0.0/:: (the instance's network has no other interface)"
    } else {
        "loopback (this platform shares the host's network namespace)"
    };
    Err(format!(
        "`{ip}` is not an address of the trial's own network (allowed on a {} platform with \
         network {}: {allowed})",
        net.backend.as_str(),
        network_name(net.network)
    ))
}

fn is_bridge_addr(ip: IpAddr) -> bool {
    let v4 = match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4,
            None => return false,
        },
    };
    let [a, b, ..] = v4.octets();
    a == 10 && BRIDGE_OCTETS.contains(&b) && v4 != Ipv4Addr::new(10, b, 255, 255)
}

fn network_name(n: NetworkMode) -> &'static str {
    match n {
        NetworkMode::None => "none",
        NetworkMode::Host => "host",
        NetworkMode::Bridge => "bridge",
    }
}

impl Checker {
    /// Checks durations, timeouts and parameter values of experiment `e` against the default
    /// [`ParamBounds`], on each of its platforms.
    pub(super) fn bounds(&mut self, path: &str, e: &Experiment, p: &Pipeline) {
        let bounds = ParamBounds::default();
        if let Some(d) = e.duration
            && let Err(why) = check_duration(d.0, &bounds)
        {
            self.push(child(path, "duration"), At::Value, why);
        }
        if let Some(t) = e.timeout
            && let Err(why) = check_timeout(t.0, &bounds)
        {
            self.push(child(path, "timeout"), At::Value, why);
        }
        let nets: Vec<(&str, NetContext)> = e
            .platforms
            .iter()
            .filter_map(|name| {
                let pl = p.platforms.get(name)?;
                let network = crate::resolve::resolve(pl)
                    .map(|r| r.network())
                    .unwrap_or(pl.network.unwrap_or_default());
                Some((
                    name.as_str(),
                    NetContext {
                        backend: pl.backend,
                        network,
                    },
                ))
            })
            .collect();
        let mut refs: Vec<(String, &WorkloadRef)> = e
            .workloads
            .iter()
            .enumerate()
            .map(|(j, w)| (index(&child(path, "workloads"), j), w))
            .collect();
        refs.extend(e.workload.iter().map(|w| (child(path, "workload"), w)));
        refs.extend(e.victim.iter().map(|w| (child(path, "victim"), w)));
        for (wp, w) in refs {
            if let WorkloadRef::Full(spec) = w {
                for (key, value) in &spec.params {
                    self.param(
                        &child(&child(&wp, "params"), key),
                        key,
                        value,
                        &nets,
                        &bounds,
                    );
                }
            }
        }
        if let Some(m) = &e.matrix {
            let mp = child(&child(path, "matrix"), "params");
            for (key, values) in &m.params {
                for (k, value) in values.iter().enumerate() {
                    self.param(&index(&child(&mp, key), k), key, value, &nets, &bounds);
                }
            }
        }
    }

    /// Reports the first platform on which `value` breaks a bound (one issue per value).
    fn param(
        &mut self,
        path: &str,
        key: &str,
        value: &ParamValue,
        nets: &[(&str, NetContext)],
        bounds: &ParamBounds,
    ) {
        // Only `host` depends on the platform; the rest is checked once.
        let fallback = [(
            "",
            NetContext {
                backend: BackendKind::Container,
                network: NetworkMode::None,
            },
        )];
        let nets = if nets.is_empty() { &fallback[..] } else { nets };
        for (platform, net) in nets {
            if let Err(why) = check_param(key, value, *net, bounds) {
                let on = if key == "host" && !platform.is_empty() {
                    format!(" on platform `{platform}`")
                } else {
                    String::new()
                };
                self.push(path, At::Value, format!("parameter `{key}`{on}: {why}"));
                return;
            }
        }
    }

    /// Checks `defaults.duration` and `defaults.timeout` against the default bounds.
    pub(super) fn default_bounds(&mut self, p: &Pipeline) {
        let bounds = ParamBounds::default();
        if let Err(why) = check_duration(p.defaults.duration.0, &bounds) {
            self.push("defaults.duration", At::Value, why);
        }
        if let Some(t) = p.defaults.timeout
            && let Err(why) = check_timeout(t.0, &bounds)
        {
            self.push("defaults.timeout", At::Value, why);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NATIVE: NetContext = NetContext {
        backend: BackendKind::Native,
        network: NetworkMode::None,
    };
    const BRIDGE: NetContext = NetContext {
        backend: BackendKind::Container,
        network: NetworkMode::Bridge,
    };
    const ISOLATED: NetContext = NetContext {
        backend: BackendKind::Vm,
        network: NetworkMode::None,
    };

    fn s(v: &str) -> ParamValue {
        ParamValue::Str(v.into())
    }

    #[test]
    fn dir_stays_in_the_scratch() {
        for ok in ["data", "a/b", "./x", "a/./b"] {
            check_dir(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["/etc", "../../x", "a/../../b", "..", "", "/", "a/.."] {
            let e = check_dir(bad).unwrap_err();
            assert!(e.contains("relative path without `..`"), "{bad}: {e}");
        }
    }

    #[test]
    fn host_is_the_trials_own_network() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for net in [NATIVE, BRIDGE, ISOLATED] {
            check_host(ip("127.0.0.1"), net).unwrap();
            check_host(ip("::1"), net).unwrap();
            let e = check_host(ip("8.8.8.8"), net).unwrap_err();
            assert!(e.contains("`8.8.8.8`"), "{e}");
        }
        check_host(ip("10.100.0.3"), BRIDGE).unwrap();
        check_host(ip("0.0.0.0"), BRIDGE).unwrap();
        check_host(ip("0.0.0.0"), ISOLATED).unwrap();
        assert!(check_host(ip("0.0.0.0"), NATIVE).is_err());
        assert!(check_host(ip("10.100.0.3"), NATIVE).is_err());
        assert!(check_host(ip("10.100.0.3"), ISOLATED).is_err());
        assert!(check_host(ip("10.1.0.3"), BRIDGE).is_err());
        assert!(check_host(ip("10.100.255.255"), BRIDGE).is_err());
        let host_net = NetContext {
            backend: BackendKind::Container,
            network: NetworkMode::Host,
        };
        assert!(check_host(ip("0.0.0.0"), host_net).is_err());
    }

    #[test]
    fn sizes_counts_and_durations_are_bounded() {
        let b = ParamBounds::default();
        let e = check_param("size", &s("1PiB"), NATIVE, &b).unwrap_err();
        assert!(e.contains("`1PiB`") && e.contains("16GiB"), "{e}");
        check_param("size", &s("64MiB"), NATIVE, &b).unwrap();
        check_param("size", &ParamValue::Int(4096), NATIVE, &b).unwrap();
        assert!(check_param("step", &s("1TiB"), NATIVE, &b).is_err());
        let e = check_param("threads", &ParamValue::Int(100_000), NATIVE, &b).unwrap_err();
        assert!(e.contains("1024") && e.contains("max_threads"), "{e}");
        assert!(check_param("connections", &ParamValue::Int(5000), NATIVE, &b).is_err());
        assert!(check_param("max_forks", &ParamValue::Int(1 << 22), NATIVE, &b).is_err());
        check_param("max_forks", &ParamValue::Int(100), NATIVE, &b).unwrap();
        assert!(check_param("duration", &s("2h"), NATIVE, &b).is_err());
        check_param("duration", &s("2s"), NATIVE, &b).unwrap();
        assert!(check_timeout(Duration::from_secs(5 * 3600), &b).is_err());
        check_timeout(Duration::from_secs(3 * 3600 + 30), &b).unwrap();
        let e = check_param("size", &s("lots"), NATIVE, &b).unwrap_err();
        assert!(e.contains("not a size"), "{e}");
        assert!(check_param("host", &s("example.org"), NATIVE, &b).is_err());
        let e = check_param("dir", &s("/etc"), NATIVE, &b).unwrap_err();
        assert!(e.contains("`/etc` is absolute"), "{e}");
    }
}
