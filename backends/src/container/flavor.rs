//! What each OCI runtime supports beyond the OCI command line they all share.
//!
//! - `run --keep` (leave the stopped container and its cgroups for the final statistics) is a
//!   runc (and youki) flag; crun and runsc refuse it. [`keeps`] asks the runtime's own
//!   `run --help` once per binary and remembers the answer, so a runtime is driven with what it
//!   supports instead of failing on an unknown flag. crun and runsc remove the container's
//!   cgroup as it ends, so the runner takes their last periodic reading (at most 100 ms old) as
//!   the final statistics.
//! - runsc (gVisor) needs global flags to work on an ordinary host: [`runsc_args`] adds
//!   `--platform=ptrace` (works everywhere, also nested; the 2022 release has no usable
//!   `systrap`, and its default hangs here) and `--network=none`/`--network=host` for the
//!   platform's network mode (gVisor's own network stack refuses to start in the host's network
//!   namespace), unless the platform's allowlisted `runtime_args` or the operator's arguments
//!   (`--runtime-arg`) already set them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use isolab_model::pipeline::NetworkMode;

/// How long `<runtime> run --help` may take.
const HELP_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers of [`keeps`] by binary.
static KEEPS: Mutex<BTreeMap<PathBuf, bool>> = Mutex::new(BTreeMap::new());

/// Whether `program run` accepts `--keep`, from its `run --help` (asked once per binary; a
/// runtime whose help cannot be read is taken not to).
pub(crate) fn keeps(program: &Path) -> bool {
    if let Some(k) = KEEPS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(program)
    {
        return *k;
    }
    let k = help_mentions_keep(&run_help(program));
    KEEPS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(program.to_owned(), k);
    k
}

/// Whether a `run --help` text lists a `--keep` (or Go-style `-keep`) flag.
fn help_mentions_keep(help: &str) -> bool {
    help.split(|c: char| c.is_whitespace() || c == ',' || c == '=')
        .any(|w| w == "--keep" || w == "-keep")
}

/// `program run --help`, stdout and stderr together; empty when it cannot be run in time.
fn run_help(program: &Path) -> String {
    let child = Command::new(program)
        .args(["run", "--help"])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        return String::new();
    };
    let deadline = Instant::now() + HELP_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return String::new();
            }
        }
    }
    // Help texts are small: the pipes held them while the runtime ran.
    let mut text = String::new();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read>),
    ]
    .into_iter()
    .flatten()
    {
        let mut p = pipe;
        let _ = p.read_to_string(&mut text);
    }
    text
}

/// The global flags runtime `program` needs for `network` on top of `user` (the platform's
/// allowlisted `runtime_args`, then the operator's; they come first and win): runsc gets `--platform=ptrace` and a
/// `--network` mode unless already given; other runtimes nothing.
pub(crate) fn runsc_args(program: &Path, user: &[String], network: NetworkMode) -> Vec<String> {
    let mut args = user.to_vec();
    if program.file_name().is_none_or(|n| n != "runsc") {
        return args;
    }
    let has = |flag: &str| {
        user.iter()
            .any(|a| a.trim_start_matches('-').split('=').next() == Some(flag))
    };
    if !has("platform") {
        args.push("--platform=ptrace".into());
    }
    if !has("network") {
        match network {
            NetworkMode::None => args.push("--network=none".into()),
            NetworkMode::Host => args.push("--network=host".into()),
            // The instance's own network namespace (a veth into the trial's bridge): gVisor's
            // default `sandbox` stack takes its interfaces from there.
            NetworkMode::Bridge => {}
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn keep_is_read_from_the_help_text() {
        assert!(help_mentions_keep(
            "   --keep                 do not delete the container after it exits"
        ));
        assert!(help_mentions_keep("  -keep\n    \tkeep it"));
        assert!(!help_mentions_keep(
            "  -detach\n    \tdetach from the container's process"
        ));
        assert!(!help_mentions_keep("--keeper --no-keep"));
        assert!(!help_mentions_keep(""));
    }

    #[test]
    fn keep_is_asked_from_the_binary_once() {
        let tmp = tempfile::tempdir().unwrap();
        let write = |name: &str, body: &str| {
            let p = tmp.path().join(name);
            let mut f = std::fs::File::create(&p).unwrap();
            writeln!(f, "#!/bin/sh\n{body}").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        let with = write("with-keep", "echo '   --keep   keep it' >&2; exit 0");
        let without = write("without-keep", "echo '  -detach'; exit 1");
        assert!(keeps(&with));
        assert!(!keeps(&without));
        assert!(!keeps(&tmp.path().join("missing")));
        // Answers are remembered: the binary is not asked again.
        std::fs::remove_file(&with).unwrap();
        assert!(keeps(&with));
    }

    #[test]
    fn runsc_gets_ptrace_and_a_network_mode_unless_given() {
        let runsc = Path::new("/usr/bin/runsc");
        assert_eq!(
            runsc_args(runsc, &[], NetworkMode::None),
            ["--platform=ptrace", "--network=none"]
        );
        assert_eq!(
            runsc_args(runsc, &[], NetworkMode::Host),
            ["--platform=ptrace", "--network=host"]
        );
        assert_eq!(
            runsc_args(runsc, &[], NetworkMode::Bridge),
            ["--platform=ptrace"]
        );
        let user = vec!["--platform=kvm".to_owned(), "--network=sandbox".to_owned()];
        assert_eq!(runsc_args(runsc, &user, NetworkMode::None), user);
        let runc = Path::new("/usr/sbin/runc");
        assert!(runsc_args(runc, &[], NetworkMode::None).is_empty());
    }
}
