//! Facts about the host, recorded with every run (`env/<host>.json`): kernel, OS, CPU, memory,
//! cgroup layout, clock source, KVM. Collection never fails: what cannot be read is "unknown".

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde::Serialize;

/// What a field holds when it could not be read.
pub const UNKNOWN: &str = "unknown";
/// How long [`tool_version`] waits for a tool.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(5);

/// Facts about this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostFacts {
    /// Host name.
    pub hostname: String,
    /// `uname` release and version (`6.1.0-18-amd64 #1 SMP PREEMPT_DYNAMIC Debian …`).
    pub kernel: String,
    /// `PRETTY_NAME` of `/etc/os-release`.
    pub os: String,
    /// Machine architecture (`x86_64`).
    pub arch: String,
    /// CPU model name of the first processor.
    pub cpu_model: String,
    /// CPU feature flags of the first processor.
    pub cpu_flags: Vec<String>,
    /// Online logical CPUs.
    pub cores: u32,
    /// Physical memory (`MemTotal`), 0 when unknown.
    pub memory_bytes: u64,
    /// `v1`, `v2`, `hybrid (v1 controllers, empty v2)` or `hybrid (v1 controllers, v2: cpu …)`;
    /// for hybrid, only v2 controllers isolab uses (cpu, cpuset, io, memory, pids) are listed.
    pub cgroup_version: String,
    /// Current clock source (`tsc`, `kvm-clock`…).
    pub clock_source: String,
    /// `/dev/kvm` state.
    pub kvm: KvmFacts,
}

/// Whether KVM can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KvmFacts {
    /// `/dev/kvm` exists.
    pub dev_present: bool,
    /// `/dev/kvm` opens read-write for us.
    pub openable: bool,
}

/// Reads the facts of this machine; never panics.
pub fn collect() -> HostFacts {
    let uname = nix::sys::utsname::uname().ok();
    let uname_field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uname.as_ref().map(|u| f(u).to_string_lossy().into_owned())
    };
    let kernel = match (uname_field(|u| u.release()), uname_field(|u| u.version())) {
        (Some(r), Some(v)) => format!("{r} {v}"),
        _ => UNKNOWN.to_owned(),
    };
    let cpuinfo = read("/proc/cpuinfo").unwrap_or_default();
    let (cpu_model, cpu_flags) = parse_cpuinfo(&cpuinfo);
    let cores = read("/sys/devices/system/cpu/online")
        .and_then(|s| count_cpu_list(&s))
        .or_else(|| {
            thread::available_parallelism()
                .ok()
                .and_then(|n| u32::try_from(n.get()).ok())
        })
        .unwrap_or(0);
    HostFacts {
        hostname: nix::unistd::gethostname()
            .ok()
            .map_or_else(|| UNKNOWN.to_owned(), |h| h.to_string_lossy().into_owned()),
        kernel,
        os: read("/etc/os-release")
            .and_then(|t| os_release_pretty_name(&t))
            .unwrap_or_else(|| UNKNOWN.to_owned()),
        arch: uname_field(|u| u.machine()).unwrap_or_else(|| std::env::consts::ARCH.to_owned()),
        cpu_model: cpu_model.unwrap_or_else(|| UNKNOWN.to_owned()),
        cpu_flags,
        cores,
        memory_bytes: read("/proc/meminfo")
            .and_then(|t| mem_total_bytes(&t))
            .unwrap_or(0),
        cgroup_version: cgroup_layout(&read("/proc/self/mountinfo").unwrap_or_default(), &|p| {
            read(p)
        }),
        clock_source: read("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| UNKNOWN.to_owned()),
        kvm: KvmFacts {
            dev_present: Path::new("/dev/kvm").exists(),
            openable: std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_ok(),
        },
    }
}

/// First line of a tool's output (stdout, else stderr), e.g. `tool_version("runc", &["--version"])`;
/// `None` if it cannot be started, prints nothing, or takes longer than [`TOOL_TIMEOUT`]
/// (then it is killed).
pub fn tool_version(cmd: &str, args: &[&str]) -> Option<String> {
    tool_version_within(cmd, args, TOOL_TIMEOUT)
}

fn tool_version_within(cmd: &str, args: &[&str], timeout: Duration) -> Option<String> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let (tx, rx) = mpsc::channel();
    let mut pipes: Vec<Box<dyn Read + Send>> = Vec::new();
    pipes.extend(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    pipes.extend(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    for (i, mut pipe) in pipes.into_iter().enumerate() {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut buf = Vec::new();
            // A read error leaves what was read so far; the tool's exit does not matter.
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send((i, buf));
        });
    }
    drop(tx);
    let mut outputs = [Vec::new(), Vec::new()];
    let deadline = std::time::Instant::now() + timeout;
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, buf)) => outputs[i] = buf,
            Err(_) => {
                // Too slow (or a grandchild holds the pipe): stop our child and give up.
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let _ = child.wait();
    outputs
        .iter()
        .find_map(|o| first_line(&String::from_utf8_lossy(o)))
}

fn first_line(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
}

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// `PRETTY_NAME` from os-release text, unquoted.
fn os_release_pretty_name(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix("PRETTY_NAME=")?.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        Some(v.to_owned()).filter(|v| !v.is_empty())
    })
}

/// Model name and flags of the first processor in `/proc/cpuinfo`.
fn parse_cpuinfo(text: &str) -> (Option<String>, Vec<String>) {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_owned())
        })
    };
    let model = field("model name")
        .or_else(|| field("Model"))
        .or_else(|| field("cpu model"));
    let flags = field("flags")
        .or_else(|| field("Features"))
        .map(|f| f.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    (model, flags)
}

/// Number of CPUs in a kernel CPU list (`0-3,5,7-8` → 7).
fn count_cpu_list(text: &str) -> Option<u32> {
    let mut n = 0u32;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                b.checked_sub(a)? + 1
            }
            None => {
                part.parse::<u32>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n)
}

/// `MemTotal` of `/proc/meminfo` in bytes.
fn mem_total_bytes(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Cgroup layout from the mount table; `read` gets a v2 mount's `cgroup.controllers`.
fn cgroup_layout(mountinfo: &str, read: &dyn Fn(&Path) -> Option<String>) -> String {
    let mut v1 = false;
    let mut v2_point = None;
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        match post.split(' ').next() {
            Some("cgroup") => v1 = true,
            Some("cgroup2") if v2_point.is_none() => v2_point = pre.split(' ').nth(4),
            _ => {}
        }
    }
    match (v1, v2_point) {
        (false, None) => UNKNOWN.to_owned(),
        (true, None) => "v1".to_owned(),
        (false, Some(_)) => "v2".to_owned(),
        (true, Some(point)) => {
            let ctrls = read(&Path::new(point).join("cgroup.controllers")).unwrap_or_default();
            // Only the controllers isolab limits count (a lone `hugetlb` leaves v2 "empty").
            let ctrls: Vec<&str> = ctrls
                .split_whitespace()
                .filter(|c| ["cpu", "cpuset", "io", "memory", "pids"].contains(c))
                .collect();
            if ctrls.is_empty() {
                "hybrid (v1 controllers, empty v2)".to_owned()
            } else {
                format!("hybrid (v1 controllers, v2: {})", ctrls.join(" "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_pretty_name_unquotes() {
        let t = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(
            os_release_pretty_name(t).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(
            os_release_pretty_name("PRETTY_NAME=Plain\n").as_deref(),
            Some("Plain")
        );
        assert_eq!(os_release_pretty_name("ID=x\n"), None);
    }

    #[test]
    fn cpuinfo_first_processor() {
        let t = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) CPU\nflags\t\t: fpu vme sse2 vmx\n\n\
                 processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n";
        let (model, flags) = parse_cpuinfo(t);
        assert_eq!(model.as_deref(), Some("Intel(R) Xeon(R) CPU"));
        assert_eq!(flags, ["fpu", "vme", "sse2", "vmx"]);
    }

    #[test]
    fn cpu_lists_count() {
        assert_eq!(count_cpu_list("0-1\n"), Some(2));
        assert_eq!(count_cpu_list("0-3,5,7-8"), Some(7));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(count_cpu_list("x"), None);
    }

    #[test]
    fn meminfo_total() {
        let t = "MemTotal:        4028440 kB\nMemFree:  1 kB\n";
        assert_eq!(mem_total_bytes(t), Some(4_028_440 * 1024));
        assert_eq!(mem_total_bytes("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn cgroup_layouts() {
        let v1 = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n";
        let v2 = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let none = |_: &Path| None;
        let some = |p: &Path| {
            assert_eq!(p, Path::new("/sys/fs/cgroup/unified/cgroup.controllers"));
            Some("cpu hugetlb memory\n".to_owned())
        };
        assert_eq!(cgroup_layout(v1, &none), "v1");
        assert_eq!(cgroup_layout(v2, &none), "v2");
        assert_eq!(cgroup_layout("", &none), UNKNOWN);
        let hybrid = format!("{v1}{v2}");
        assert_eq!(
            cgroup_layout(&hybrid, &none),
            "hybrid (v1 controllers, empty v2)"
        );
        assert_eq!(
            cgroup_layout(&hybrid, &some),
            "hybrid (v1 controllers, v2: cpu memory)"
        );
    }

    #[test]
    fn collect_on_this_machine_is_filled_in_and_serializes() {
        let facts = collect();
        assert!(facts.cores >= 1, "{facts:?}");
        assert!(facts.memory_bytes > 0, "{facts:?}");
        assert_ne!(facts.kernel, UNKNOWN);
        assert_ne!(facts.arch, "");
        let json = serde_json::to_value(&facts).unwrap();
        assert_eq!(
            json["kvm"]["dev_present"],
            serde_json::json!(facts.kvm.dev_present)
        );
        assert!(json["cgroup_version"].is_string());
    }

    #[test]
    fn tool_version_first_line_and_failures() {
        assert_eq!(
            tool_version("sh", &["-c", "echo; echo ' tool 1.2 '; echo second"]).as_deref(),
            Some("tool 1.2")
        );
        assert_eq!(
            tool_version("sh", &["-c", "echo on-stderr >&2"]).as_deref(),
            Some("on-stderr")
        );
        assert_eq!(
            tool_version("/nonexistent/tool-isolab", &["--version"]),
            None
        );
        assert_eq!(tool_version("true", &[]), None);
    }

    #[test]
    fn tool_version_gives_up_on_a_hanging_tool() {
        let out = tool_version_within("sh", &["-c", "exec sleep 30"], Duration::from_millis(200));
        assert_eq!(out, None);
    }
}
