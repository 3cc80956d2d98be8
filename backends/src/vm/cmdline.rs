//! The guest kernel command line: console, boot settings, and what `/init` runs.
//!
//! `/init` (`workload/src/pid1.rs`) reads `isolab.`-prefixed words from `/proc/cmdline`:
//! `isolab.workload=NAME`, `isolab.param.KEY=VALUE` (VALUE percent-encoded), `isolab.modules=a,b`
//! (load order), `isolab.disk=/dev/vda` (an ext4 disk for `/tmp`), `isolab.net=ADDR/PREFIX`
//! (`eth0`'s address) and `isolab.probe=1`. The kernel would hand undotted `key=value` words to
//! init's environment and bare words to its argv; dotted words it keeps, so nothing here leaks
//! into the workload's environment.
//!
//! Boot settings, as measured on QEMU 7.2 with Debian's cloud kernel: `tsc_early_khz=<host TSC
//! kHz>` (without it microvm sometimes hangs calibrating the TSC against the PIT), `panic=-1`
//! (a panic reboots at once, and QEMU's `-no-reboot` turns that into an exit), `quiet` (only
//! errors reach the console, which is also the results channel), `tsc=reliable` (under TCG a
//! busy host delays vCPU threads, the clocksource watchdog then finds the TSC "skewed" and
//! switches the guest to `refined-jiffies` after a second or two: 4 ms clock resolution and
//! `clock_gettime` as a system call, which would corrupt every timing the workload takes; the
//! TSC QEMU gives the guest is the host's and is monotonic, so the watchdog is wrong to distrust
//! it; measured: 4 of 4 concurrent guests switched without the flag, 0 of 4 with it).

use std::fmt::Write as _;

/// Longest command line the x86 kernel takes (`COMMAND_LINE_SIZE`), terminating NUL excluded.
pub const MAX_CMDLINE_BYTES: usize = 2047;

/// Why a command line cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum CmdlineError {
    /// A parameter name that is not a plain word.
    #[error(
        "parameter name {key:?} cannot go on a kernel command line (use letters, digits, `_`, `-`)"
    )]
    BadKey {
        /// The name.
        key: String,
    },
    /// A workload or module name that is not a plain word.
    #[error("{what} name {name:?} cannot go on a kernel command line")]
    BadName {
        /// `workload` or `module`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// The line is longer than the kernel accepts.
    #[error("kernel command line is {len} bytes, more than the kernel's {MAX_CMDLINE_BYTES}")]
    TooLong {
        /// Its length.
        len: usize,
    },
}

/// What goes on one guest's command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestCmdline {
    /// Console device (`ttyS0`).
    pub console: String,
    /// Host TSC frequency, for `tsc_early_khz`.
    pub tsc_khz: Option<u64>,
    /// The workload to run (none for a probe).
    pub workload: Option<String>,
    /// Workload parameters, in order.
    pub params: Vec<(String, String)>,
    /// Modules `/init` loads, in order.
    pub modules: Vec<String>,
    /// Whether this boot only answers the accelerator probe.
    pub probe: bool,
    /// A block device `/init` mounts (ext4) on `/tmp`.
    pub disk: Option<String>,
    /// `ADDR/PREFIX` for the guest's `eth0`.
    pub net: Option<String>,
    /// Further kernel words, verbatim (machine-specific settings).
    pub extra: Vec<String>,
}

impl GuestCmdline {
    /// The command line text.
    pub fn render(&self) -> Result<String, CmdlineError> {
        let mut line = format!("console={} panic=-1 quiet tsc=reliable", self.console);
        if let Some(khz) = self.tsc_khz {
            let _ = write!(line, " tsc_early_khz={khz}");
        }
        for word in &self.extra {
            let _ = write!(line, " {word}");
        }
        if !self.modules.is_empty() {
            for m in &self.modules {
                check_name("module", m)?;
            }
            let _ = write!(line, " isolab.modules={}", self.modules.join(","));
        }
        if self.probe {
            line.push_str(" isolab.probe=1");
        }
        if let Some(disk) = &self.disk {
            let _ = write!(line, " isolab.disk={}", percent_encode(disk));
        }
        if let Some(net) = &self.net {
            let _ = write!(line, " isolab.net={}", percent_encode(net));
        }
        if let Some(w) = &self.workload {
            check_name("workload", w)?;
            let _ = write!(line, " isolab.workload={w}");
        }
        for (k, v) in &self.params {
            if k.is_empty()
                || !k
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(CmdlineError::BadKey { key: k.clone() });
            }
            let _ = write!(line, " isolab.param.{k}={}", percent_encode(v));
        }
        if line.len() > MAX_CMDLINE_BYTES {
            return Err(CmdlineError::TooLong { len: line.len() });
        }
        Ok(line)
    }
}

fn check_name(what: &'static str, name: &str) -> Result<(), CmdlineError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(CmdlineError::BadName {
            what,
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Percent-encodes every byte that is not a letter, digit or one of `-_.~:/,+@=`, so a value
/// never splits the command line or opens a quote.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~:/,+@=".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The host's TSC frequency in kHz: `/sys/devices/system/cpu/cpu0/tsc_freq_khz` where the
/// kernel has it, else the first `cpu MHz` of `/proc/cpuinfo` (which is the TSC's on hosts with
/// `constant_tsc` and no frequency scaling, such as cloud VMs). `None` when neither reads.
pub fn host_tsc_khz() -> Option<u64> {
    if let Some(khz) = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/tsc_freq_khz")
        .ok()
        .and_then(|t| t.trim().parse().ok())
    {
        return Some(khz);
    }
    tsc_khz_from_cpuinfo(&std::fs::read_to_string("/proc/cpuinfo").ok()?)
}

/// The first `cpu MHz` of a `/proc/cpuinfo` text, in kHz.
pub fn tsc_khz_from_cpuinfo(cpuinfo: &str) -> Option<u64> {
    let mhz = cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "cpu MHz").then(|| v.trim().to_owned())
    })?;
    let (int, frac) = mhz.split_once('.').unwrap_or((&mhz, ""));
    let frac: String = frac.chars().chain(std::iter::repeat('0')).take(3).collect();
    let khz = int.parse::<u64>().ok()? * 1000 + frac.parse::<u64>().ok()?;
    (khz > 0).then_some(khz)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> GuestCmdline {
        GuestCmdline {
            console: "ttyS0".into(),
            tsc_khz: Some(2_596_134),
            ..GuestCmdline::default()
        }
    }

    #[test]
    fn renders_boot_settings_and_the_workload() {
        let line = GuestCmdline {
            workload: Some("syscall".into()),
            params: vec![
                ("duration".into(), "300ms".into()),
                ("dir".into(), "/tmp/a b\"c%".into()),
            ],
            modules: vec!["virtio_ring".into(), "virtio".into()],
            disk: Some("/dev/vda".into()),
            net: Some("10.64.0.2/16".into()),
            extra: vec!["pci=off".into()],
            ..base()
        }
        .render()
        .unwrap();
        assert_eq!(
            line,
            "console=ttyS0 panic=-1 quiet tsc=reliable tsc_early_khz=2596134 pci=off \
             isolab.modules=virtio_ring,virtio isolab.disk=/dev/vda isolab.net=10.64.0.2/16 \
             isolab.workload=syscall \
             isolab.param.duration=300ms isolab.param.dir=/tmp/a%20b%22c%25"
        );
        let probe = GuestCmdline {
            probe: true,
            tsc_khz: None,
            ..base()
        }
        .render()
        .unwrap();
        assert_eq!(
            probe,
            "console=ttyS0 panic=-1 quiet tsc=reliable isolab.probe=1"
        );
    }

    #[test]
    fn refuses_what_would_break_the_line() {
        let bad_key = GuestCmdline {
            params: vec![("a b".into(), "1".into())],
            ..base()
        };
        assert!(matches!(bad_key.render(), Err(CmdlineError::BadKey { .. })));
        let bad_name = GuestCmdline {
            workload: Some("x y".into()),
            ..base()
        };
        assert!(matches!(
            bad_name.render(),
            Err(CmdlineError::BadName {
                what: "workload",
                ..
            })
        ));
        let long = GuestCmdline {
            params: vec![("k".into(), "x".repeat(3000))],
            ..base()
        };
        assert!(matches!(long.render(), Err(CmdlineError::TooLong { .. })));
    }

    #[test]
    fn tsc_from_cpuinfo() {
        let text = "processor\t: 0\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2596.134\n\nprocessor\t: 1\ncpu MHz\t\t: 1.0\n";
        assert_eq!(tsc_khz_from_cpuinfo(text), Some(2_596_134));
        assert_eq!(tsc_khz_from_cpuinfo("cpu MHz : 3000\n"), Some(3_000_000));
        assert_eq!(tsc_khz_from_cpuinfo("cpu MHz : 2.5\n"), Some(2_500));
        assert_eq!(tsc_khz_from_cpuinfo("nothing"), None);
        assert_eq!(tsc_khz_from_cpuinfo("cpu MHz : x\n"), None);
    }
}
