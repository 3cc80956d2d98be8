//! Runtimes are names, never paths; runtime arguments come from a short allowlist.
//!
//! A pipeline's `runtime` (container and docker backends) names an OCI runtime; the agent maps
//! the name to a binary from its own configuration (`isolab-agent --runtime NAME=/abs/path`,
//! default: `runc`, `crun`, `youki` and `runsc` found on its `PATH` at start). Anything with a
//! `/` is a path and refused: a client must never choose which binary a root agent executes.
//!
//! `runtime_args` (container backend) are global flags put after the agent's own `--root`, so
//! they could override it, add `--log /any/file` or give runsc `--network=host`. A client may
//! only pass the flags listed here for its runtime ([`allowed_runtime_args`]); anything else is
//! refused, naming the argument and the allowed set. Flags an operator wants on every call of a
//! runtime belong in the agent's configuration (`--runtime-arg NAME=ARG`), not in pipelines.
//! [`check_runtime_name`] and [`check_runtime_arg`] run in `isolab validate` (at file:line:col)
//! and again at the agent when a trial arrives, before anything runs.

/// Runtimes the agent probes for on its `PATH` when its configuration names none.
pub const DEFAULT_RUNTIMES: [&str; 4] = ["runc", "crun", "youki", "runsc"];

/// One flag a client may pass to a runtime: `--flag=value` with `value` from a fixed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowedArg {
    /// The flag, with its dashes (`--platform`).
    pub flag: &'static str,
    /// The values it may take.
    pub values: &'static [&'static str],
}

/// What runsc (gVisor) accepts from a client: the platform that intercepts system calls.
/// Network, logging, state, debugging and file-access flags stay the agent's.
const RUNSC_ARGS: &[AllowedArg] = &[AllowedArg {
    flag: "--platform",
    values: &["ptrace", "systrap", "kvm"],
}];

/// The flags a client may pass to runtime `runtime` (by name): runsc's `--platform`, nothing
/// for runc, crun, youki or any other name.
pub fn allowed_runtime_args(runtime: &str) -> &'static [AllowedArg] {
    match runtime {
        "runsc" => RUNSC_ARGS,
        _ => &[],
    }
}

/// The allowed set of `runtime` as text: `--platform=ptrace|systrap|kvm`, or `none`.
pub fn describe_allowed_args(runtime: &str) -> String {
    let allowed = allowed_runtime_args(runtime);
    if allowed.is_empty() {
        return "none".into();
    }
    allowed
        .iter()
        .map(|a| format!("{}={}", a.flag, a.values.join("|")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A runtime must be a name (letters, digits, `-`, `_`, `.`), never a path.
pub fn check_runtime_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if name.contains('/') {
        return Err(format!(
            "`{name}` is a path; a runtime is a name the agent maps to a binary from its own \
             configuration (e.g. {}; operators add others with `isolab-agent --runtime \
             NAME=/abs/path`), never a path",
            DEFAULT_RUNTIMES.join(", ")
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        || name.starts_with('.')
    {
        return Err(format!(
            "invalid runtime name `{name}`: use only letters, digits, `-`, `_` and `.`"
        ));
    }
    Ok(())
}

/// Whether a client may pass `arg` to runtime `runtime` (see [`allowed_runtime_args`]).
pub fn check_runtime_arg(runtime: &str, arg: &str) -> Result<(), String> {
    let allowed = allowed_runtime_args(runtime);
    let ok = arg.split_once('=').is_some_and(|(flag, value)| {
        allowed
            .iter()
            .any(|a| a.flag == flag && a.values.contains(&value))
    });
    if ok {
        return Ok(());
    }
    Err(format!(
        "`{arg}` is not allowed for runtime `{runtime}` (allowed: {}); arguments such as \
         `--root`, `--log` or `--network` stay the agent's, and an operator sets others in the \
         agent's configuration (`isolab-agent --runtime-arg {runtime}=ARG`)",
        describe_allowed_args(runtime)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_odd_names_are_refused() {
        for ok in ["runc", "runsc", "crun", "youki", "runsc-kvm", "kata.v2"] {
            check_runtime_name(ok).unwrap();
        }
        let e = check_runtime_name("/tmp/x").unwrap_err();
        assert!(
            e.contains("`/tmp/x` is a path") && e.contains("--runtime"),
            "{e}"
        );
        assert!(check_runtime_name("bin/runc").is_err());
        assert!(check_runtime_name("..").is_err());
        assert!(check_runtime_name("run c").is_err());
        assert!(check_runtime_name(" ").is_err());
    }

    #[test]
    fn only_allowlisted_args_pass() {
        for p in ["ptrace", "systrap", "kvm"] {
            check_runtime_arg("runsc", &format!("--platform={p}")).unwrap();
        }
        for bad in [
            "--root",
            "/x",
            "--log=/etc/passwd",
            "--network=host",
            "--platform=xen",
            "--platform",
            "--debug",
        ] {
            let e = check_runtime_arg("runsc", bad).unwrap_err();
            assert!(
                e.contains(&format!("`{bad}`")) && e.contains("--platform=ptrace|systrap|kvm"),
                "{e}"
            );
        }
        let e = check_runtime_arg("runc", "--platform=ptrace").unwrap_err();
        assert!(e.contains("allowed: none"), "{e}");
        assert_eq!(describe_allowed_args("crun"), "none");
    }
}
