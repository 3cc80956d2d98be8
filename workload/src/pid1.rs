//! PID 1 inside an isolab VM: set the guest up, run one workload, report on the serial console,
//! power off.
//!
//! `main` enters here when the process is PID 1 *and* has no arguments, which is how a kernel
//! starts `/init`; a container's PID 1 (`isolab-workload NAME …`) always has arguments.
//!
//! The agent's initramfs holds this binary as `/init`, its kernel modules under `/lib/modules/`,
//! and the directories and `/dev/console` node the kernel needs. The kernel starts `/init` with
//! the console as stdin, stdout and stderr. Everything it is told comes from `/proc/cmdline`,
//! words with an `isolab.` prefix (the kernel keeps dotted words away from init's argv and
//! environment, so reading the file is the only dependable way):
//!
//! | word | meaning |
//! |---|---|
//! | `isolab.workload=NAME` | the workload to run |
//! | `isolab.param.KEY=VALUE` | one `--param KEY=VALUE` (VALUE percent-encoded: `%20` is a space) |
//! | `isolab.modules=a,b,c` | modules to load from `/lib/modules/<name>.ko`, in this order |
//! | `isolab.probe=1` | answer [`READY`] and power off (the agent's accelerator probe) |
//! | `isolab.disk=/dev/vda` | mount this ext4 block device on `/tmp` (else `/tmp` is a tmpfs) |
//! | `isolab.net=ADDR/PREFIX` | give `eth0` this address and bring it and `lo` up ([`net`]) |
//!
//! Console protocol (each a whole line starting with [`FRAME_PREFIX`]; anything else on the
//! console, kernel messages and the workload's stderr included, is log text):
//!
//! - `@@isolab@@ {json}`: one sample, exactly the line the workload printed on its stdout;
//! - `@@isolab@@ !ready`: the probe's answer;
//! - `@@isolab@@ !end exit=CODE` or `!end signal=N`: how the workload ended, always last;
//! - `@@isolab@@ !error MESSAGE`: the guest could not be set up (a mount, a module, no
//!   workload named); no workload ran.
//!
//! The workload runs as a child (`/init NAME --param K=V…`, so it parses its arguments exactly as
//! everywhere else) with its stdout on a pipe that PID 1 frames line by line, and its stderr on
//! the console. PID 1 survives the workload's crash or an OOM kill inside the guest, reaps
//! orphans, and never panics: a panic here would be a kernel panic, so everything runs under
//! `catch_unwind` and any failure ends in an `!error` record and a power-off. If power-off
//! returns, PID 1 asks for a reboot, which QEMU's `-no-reboot` turns into an exit.

use std::ffi::CString;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::process::{Command, Stdio};

use isolab_model::sample::FRAME_PREFIX;

mod net;

/// Payload of the probe's answer.
pub(crate) const READY: &str = "!ready";
/// Payload prefix of the end record.
pub(crate) const END: &str = "!end";
/// Payload prefix of a set-up failure.
pub(crate) const ERROR: &str = "!error";
/// Where the initramfs keeps kernel modules.
const MODULES_DIR: &str = "/lib/modules";
/// How long a disk's device node (or the network interface) gets to appear after its driver
/// was loaded.
const DISK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// Longest workload output line framed whole; longer ones are cut.
const MAX_LINE_BYTES: u64 = 64 * 1024;

/// What the kernel command line asks of PID 1.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct GuestArgs {
    /// The workload to run.
    pub(crate) workload: Option<String>,
    /// `(key, value)` params, in command-line order.
    pub(crate) params: Vec<(String, String)>,
    /// Modules to load, in order.
    pub(crate) modules: Vec<String>,
    /// Whether this boot only answers the accelerator probe.
    pub(crate) probe: bool,
    /// An ext4 block device to mount on `/tmp`.
    pub(crate) disk: Option<String>,
    /// The address of `eth0`.
    pub(crate) net: Option<net::NetConfig>,
}

/// Runs PID 1 and never returns.
pub(crate) fn run() -> ! {
    let mut console = Console::open();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| guest_main(&console)));
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(message)) => console.record(&format!("{ERROR} {message}")),
        Err(_) => console.record(&format!("{ERROR} init panicked")),
    }
    console.flush();
    power_off()
}

/// Mounts, loads modules, runs the workload; `Err` is a set-up failure for an `!error` record.
fn guest_main(console: &Console) -> Result<(), String> {
    mount_basics()?;
    let cmdline = std::fs::read_to_string("/proc/cmdline")
        .map_err(|e| format!("reading /proc/cmdline failed: {e}"))?;
    let args = parse_cmdline(&cmdline)?;
    for module in &args.modules {
        load_module(module)?;
    }
    match &args.disk {
        Some(dev) => mount_disk(dev)?,
        None => mount("tmpfs", "/tmp", "tmpfs")?,
    }
    if let Some(cfg) = &args.net {
        net::configure(cfg, DISK_WAIT)?;
    }
    if args.probe {
        console.record(READY);
        return Ok(());
    }
    let workload = args
        .workload
        .as_deref()
        .ok_or_else(|| "no isolab.workload=NAME on the kernel command line".to_owned())?;
    let end = run_workload(console, workload, &args.params)?;
    console.record(&format!("{END} {end}"));
    Ok(())
}

/// Splits the kernel command line into words (double quotes group, as the kernel does) and
/// picks the `isolab.` ones.
pub(crate) fn parse_cmdline(cmdline: &str) -> Result<GuestArgs, String> {
    let mut args = GuestArgs::default();
    for word in split_words(cmdline) {
        let Some(rest) = word.strip_prefix("isolab.") else {
            continue;
        };
        let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
        if let Some(param) = key.strip_prefix("param.") {
            if param.is_empty() {
                return Err(format!("empty param name in `{word}`"));
            }
            args.params.push((param.to_owned(), percent_decode(value)?));
        } else {
            match key {
                "workload" => args.workload = Some(percent_decode(value)?),
                "modules" => {
                    args.modules = value
                        .split(',')
                        .filter(|m| !m.is_empty())
                        .map(str::to_owned)
                        .collect();
                }
                "probe" => args.probe = value == "1",
                "net" => args.net = Some(net::NetConfig::parse(value)?),
                "disk" => {
                    if !value.starts_with("/dev/") || value.contains("..") {
                        return Err(format!("bad disk `{value}` (expected /dev/NAME)"));
                    }
                    args.disk = Some(value.to_owned());
                }
                // Unknown isolab words are ignored, so an older /init boots a newer agent's VM.
                _ => {}
            }
        }
    }
    Ok(args)
}

/// Kernel-style word splitting: spaces separate, double quotes group and are removed.
fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// Decodes `%XX` escapes.
pub(crate) fn percent_decode(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in `{value}`"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{value}` does not decode to UTF-8"))
}

/// Mounts `/proc`, `/sys` and `/dev` (`/tmp` comes once modules are loaded).
fn mount_basics() -> Result<(), String> {
    mount("proc", "/proc", "proc")?;
    mount("sysfs", "/sys", "sysfs")?;
    mount("devtmpfs", "/dev", "devtmpfs")
}

/// Mounts `source` of type `fstype` on `target`, creating the mount point if missing. `EBUSY`
/// is fine: `/dev` may already be devtmpfs (`CONFIG_DEVTMPFS_MOUNT`).
fn mount(source: &str, target: &str, fstype: &str) -> Result<(), String> {
    std::fs::create_dir_all(target).map_err(|e| format!("creating {target} failed: {e}"))?;
    let c = |s: &str| CString::new(s).map_err(|_| format!("NUL in {s:?}"));
    let (src, tgt, fst) = (c(source)?, c(target)?, c(fstype)?);
    // SAFETY: the three pointers are valid NUL-terminated strings that outlive the call; a null
    // data pointer is allowed.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fst.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(format!(
                "mounting {fstype} {source} on {target} failed: {e}"
            ));
        }
    }
    Ok(())
}

/// Waits for the disk's device node (its driver may probe asynchronously) and mounts it on
/// `/tmp`.
fn mount_disk(dev: &str) -> Result<(), String> {
    let deadline = std::time::Instant::now() + DISK_WAIT;
    while !std::path::Path::new(dev).exists() {
        if std::time::Instant::now() >= deadline {
            return Err(format!("disk {dev} did not appear within {DISK_WAIT:?}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    mount(dev, "/tmp", "ext4")
}

/// Loads `/lib/modules/<name>.ko` with `finit_module`; an already loaded module is fine.
fn load_module(name: &str) -> Result<(), String> {
    if name.contains('/') {
        return Err(format!("bad module name `{name}`"));
    }
    let path = format!("{MODULES_DIR}/{name}.ko");
    let file = File::open(&path).map_err(|e| format!("opening module {path} failed: {e}"))?;
    let no_params = c"";
    // SAFETY: the fd is open for the duration of the call, the params pointer is a valid empty
    // C string, and flags 0 asks for nothing special.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            no_params.as_ptr(),
            0,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(format!("loading module {path} failed: {e}"));
        }
    }
    Ok(())
}

/// Runs the workload as a child, frames its stdout on the console, reaps it and every orphan,
/// and returns the end record's value (`exit=CODE` or `signal=N`).
fn run_workload(
    console: &Console,
    workload: &str,
    params: &[(String, String)],
) -> Result<String, String> {
    let exe = std::env::current_exe().unwrap_or_else(|_| "/init".into());
    let mut cmd = Command::new(&exe);
    cmd.arg(workload);
    for (k, v) in params {
        cmd.arg("--param").arg(format!("{k}={v}"));
    }
    cmd.env("TMPDIR", "/tmp")
        .current_dir("/tmp")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        format!(
            "starting workload {workload} ({}) failed: {e}",
            exe.display()
        )
    })?;
    let pid = i32::try_from(child.id()).map_err(|_| "workload pid out of range".to_owned())?;
    if let Some(stdout) = child.stdout.take() {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader
                .by_ref()
                .take(MAX_LINE_BYTES)
                .read_until(b'\n', &mut line)
            {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    while line.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
                        line.pop();
                    }
                    console.record(&String::from_utf8_lossy(&line));
                }
            }
        }
    }
    // Reap until the workload itself is among the dead; orphans it left are reaped on the way.
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer for the call.
        let reaped = unsafe { libc::waitpid(-1, &mut status, 0) };
        if reaped == pid {
            return Ok(if libc::WIFSIGNALED(status) {
                format!("signal={}", libc::WTERMSIG(status))
            } else {
                format!("exit={}", libc::WEXITSTATUS(status))
            });
        }
        if reaped < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(format!("waiting for workload {workload} failed: {e}"));
            }
        }
    }
}

/// The serial console: fd 1 as the kernel handed it over, else `/dev/console` or `/dev/ttyS0`.
struct Console {
    file: Option<File>,
}

impl Console {
    /// Opens the console and ends whatever line the firmware left unfinished (SeaBIOS prints
    /// `Booting from ROM..` without a newline), so the first record starts a line.
    fn open() -> Self {
        // SAFETY: fcntl(F_GETFD) on fd 1 only asks whether it is open.
        let stdout_open = unsafe { libc::fcntl(1, libc::F_GETFD) } >= 0;
        let file = if stdout_open {
            // SAFETY: fd 1 is open; this `File` owns it for the rest of PID 1's life (it is
            // never closed: PID 1 powers off, it does not return).
            Some(unsafe { File::from_raw_fd(1) })
        } else {
            ["/dev/console", "/dev/ttyS0", "/dev/hvc0"]
                .iter()
                .find_map(|p| std::fs::OpenOptions::new().write(true).open(p).ok())
        };
        if let Some(mut f) = file.as_ref() {
            let _ = f.write_all(b"\n");
        }
        Self { file }
    }

    /// Writes one framed line in a single `write`, so no other writer splits it.
    fn record(&self, payload: &str) {
        if let Some(mut file) = self.file.as_ref() {
            let line = format!("{FRAME_PREFIX}{payload}\n");
            let _ = file.write_all(line.as_bytes());
        }
    }

    fn flush(&mut self) {
        if let Some(file) = self.file.as_mut() {
            let _ = file.flush();
        }
    }
}

/// Powers the guest off; if that returns, reboots (QEMU's `-no-reboot` exits), and if even
/// that returns, sleeps forever (the agent's deadline ends the VM).
fn power_off() -> ! {
    // SAFETY: sync and reboot take no pointers; as PID 1 nothing else needs to run first.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
        libc::reboot(libc::RB_AUTOBOOT);
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_isolab_words_from_the_command_line() {
        let cmdline = "console=ttyS0 quiet isolab.workload=syscall isolab.param.duration=300ms \
                       isolab.param.dir=/tmp/a%20b isolab.modules=virtio_ring,virtio, \
                       \"isolab.param.q=x y\" panic=-1 isolab.future=1\n";
        let args = parse_cmdline(cmdline).unwrap();
        assert_eq!(args.workload.as_deref(), Some("syscall"));
        assert_eq!(
            args.params,
            vec![
                ("duration".to_owned(), "300ms".to_owned()),
                ("dir".to_owned(), "/tmp/a b".to_owned()),
                ("q".to_owned(), "x y".to_owned()),
            ]
        );
        assert_eq!(args.modules, vec!["virtio_ring", "virtio"]);
        assert!(!args.probe);
        assert!(parse_cmdline("isolab.probe=1").unwrap().probe);
        let disk = parse_cmdline("isolab.disk=/dev/vda").unwrap().disk;
        assert_eq!(disk.as_deref(), Some("/dev/vda"));
        assert!(parse_cmdline("isolab.disk=/etc/passwd").is_err());
        let net = parse_cmdline("isolab.net=10.64.0.3/16")
            .unwrap()
            .net
            .unwrap();
        assert_eq!(net.addr, std::net::Ipv4Addr::new(10, 64, 0, 3));
        assert!(parse_cmdline("isolab.net=nonsense").is_err());
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(parse_cmdline("isolab.param.=1").is_err());
        assert!(parse_cmdline("isolab.param.x=%zz").is_err());
        assert!(parse_cmdline("isolab.param.x=%4").is_err());
        assert!(parse_cmdline("isolab.param.x=%ff").is_err());
        assert_eq!(percent_decode("a%25b").unwrap(), "a%b");
    }
}
