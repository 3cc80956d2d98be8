//! Admission of a trial at the agent: parameter values, durations and timeouts checked against
//! the agent's configured [`ParamBounds`] before anything is made.
//!
//! `isolab validate` checks the same rules with the default bounds (the functions are shared, in
//! `isolab_model::validate`), but a caller can skip validation or hold a pipeline written for
//! looser bounds, so the agent checks again: `dir` inside the instance's scratch, `host` on the
//! trial's own network, and upper bounds on sizes, threads, connections, forks, durations and the
//! timeout. A refused trial names the instance, the parameter, its value and the bound.
//!
//! The runtime is checked here too, before anything runs: a name, never a path; for the
//! container backend one of this agent's [`RuntimeTable`] (the error lists the names known) and
//! `runtime_args` only from the runtime's allowlist (`isolab_model::validate::check_runtime_arg`).
//! A docker runtime must be a name too; the docker backend checks it against its daemon's.

use isolab_model::resolve::ResolvedPlatform;
use isolab_model::validate::{self, NetContext, ParamBounds};
use isolab_wire::TrialSpec;

use crate::core::RunTrialError;
use isolab_backends::container::RuntimeTable;

/// Why a trial was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// A workload parameter value outside what this agent allows.
    #[error("instance {instance} ({workload}): parameter `{param}`: {reason}")]
    Param {
        /// Instance index.
        instance: u32,
        /// The instance's workload.
        workload: String,
        /// Parameter name.
        param: String,
        /// What is wrong, with the value and the bound.
        reason: String,
    },
    /// The trial's duration is over the bound.
    #[error("duration: {reason}")]
    Duration {
        /// What is wrong, with the value and the bound.
        reason: String,
    },
    /// The runtime is a path, or not one of this agent's.
    #[error("runtime: {reason}")]
    Runtime {
        /// What is wrong, with the names known.
        reason: String,
    },
    /// A runtime argument off the runtime's allowlist.
    #[error("runtime_args: {reason}")]
    RuntimeArg {
        /// What is wrong, with the argument and the allowed set.
        reason: String,
    },
    /// The trial's timeout is over the bound.
    #[error("timeout: {reason}")]
    Timeout {
        /// What is wrong, with the value and the bound.
        reason: String,
    },
}

/// Admits the runtime of `platform`: a name (never a path), for the container backend one of
/// `runtimes` with only allowlisted arguments.
pub fn admit_runtime(
    platform: &ResolvedPlatform,
    runtimes: &RuntimeTable,
) -> Result<(), AdmissionError> {
    let bad = |reason: String| AdmissionError::Runtime { reason };
    match platform {
        ResolvedPlatform::Container(c) => {
            validate::check_runtime_name(&c.runtime).map_err(bad)?;
            runtimes.get(&c.runtime).map_err(|e| bad(e.to_string()))?;
            for arg in &c.runtime_args {
                validate::check_runtime_arg(&c.runtime, arg)
                    .map_err(|reason| AdmissionError::RuntimeArg { reason })?;
            }
        }
        ResolvedPlatform::Docker(d) => {
            if let Some(name) = &d.runtime {
                validate::check_runtime_name(name).map_err(bad)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Admits `trial` under `bounds` and `runtimes`, or says the first thing that is refused.
pub fn admit(
    trial: &TrialSpec,
    bounds: &ParamBounds,
    runtimes: &RuntimeTable,
) -> Result<(), AdmissionError> {
    admit_runtime(&trial.platform_spec, runtimes)?;
    validate::check_duration(trial.duration.0, bounds)
        .map_err(|reason| AdmissionError::Duration { reason })?;
    validate::check_timeout(trial.timeout.0, bounds)
        .map_err(|reason| AdmissionError::Timeout { reason })?;
    let net = NetContext {
        backend: trial.platform_spec.backend(),
        network: trial.platform_spec.network(),
    };
    for inst in &trial.instances {
        for (param, value) in &inst.params {
            validate::check_param(param, value, net, bounds).map_err(|reason| {
                AdmissionError::Param {
                    instance: inst.index,
                    workload: inst.workload.clone(),
                    param: param.clone(),
                    reason,
                }
            })?;
        }
    }
    Ok(())
}

/// [`admit`] as the core's refusal: an invalid trial, named by its id.
pub fn admit_request(
    trial: &TrialSpec,
    bounds: &ParamBounds,
    runtimes: &RuntimeTable,
) -> Result<(), RunTrialError> {
    admit(trial, bounds, runtimes).map_err(|e| RunTrialError::InvalidTrial {
        trial: trial.id.clone(),
        reason: format!("refused by this agent: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use isolab_model::pipeline::{BackendKind, Limits, NetworkMode, Platform};
    use isolab_model::units::HumanDuration;

    use super::*;
    use crate::conformance::trial;

    fn spec(
        backend: BackendKind,
        network: Option<NetworkMode>,
        params: &[(&str, &str)],
    ) -> TrialSpec {
        let platform = Platform {
            backend,
            runtime: None,
            runtime_args: vec![],
            rootfs: None,
            network,
            limits: Limits::default(),
            vcpus: None,
            memory: None,
            accel: None,
            machine: None,
        };
        let workload = if params.iter().any(|(k, _)| *k == "host") {
            "tcp_rr"
        } else {
            "disk"
        };
        let t = trial(
            &platform,
            workload,
            1,
            params,
            Duration::from_secs(1),
            Duration::from_secs(5),
        );
        TrialSpec::from(&t)
    }

    fn refused(s: &TrialSpec) -> String {
        admit_request(s, &ParamBounds::default(), &table())
            .unwrap_err()
            .to_string()
    }

    /// A table with runc and runsc (any existing absolute binary will do: nothing runs).
    fn table() -> RuntimeTable {
        RuntimeTable::from_flags(&["runc=/bin/sh".into(), "runsc=/bin/sh".into()], &[]).unwrap()
    }

    fn ok(s: &TrialSpec, bounds: &ParamBounds) {
        admit(s, bounds, &table()).unwrap();
    }

    fn runtime_spec(backend: BackendKind, runtime: &str, args: &[&str]) -> TrialSpec {
        let mut s = spec(backend, None, &[]);
        match &mut s.platform_spec {
            ResolvedPlatform::Container(c) => {
                c.runtime = runtime.into();
                c.runtime_args = args.iter().map(|a| (*a).to_owned()).collect();
            }
            ResolvedPlatform::Docker(d) => d.runtime = Some(runtime.into()),
            _ => unreachable!("a container or docker platform"),
        }
        s
    }

    #[test]
    fn runtime_paths_unknown_names_and_args_off_the_allowlist_are_refused() {
        let e = refused(&runtime_spec(BackendKind::Container, "/tmp/x", &[]));
        assert!(e.contains("runtime: `/tmp/x` is a path"), "{e}");
        let e = refused(&runtime_spec(BackendKind::Docker, "/tmp/x", &[]));
        assert!(e.contains("runtime: `/tmp/x` is a path"), "{e}");
        let e = refused(&runtime_spec(BackendKind::Container, "kata", &[]));
        assert!(
            e.contains("runtime `kata` is not configured on this agent (known: runc, runsc)"),
            "{e}"
        );
        let e = refused(&runtime_spec(
            BackendKind::Container,
            "runc",
            &["--root", "/x"],
        ));
        assert!(
            e.contains("runtime_args: `--root` is not allowed for runtime `runc` (allowed: none)"),
            "{e}"
        );
        let e = refused(&runtime_spec(
            BackendKind::Container,
            "runsc",
            &["--network=host"],
        ));
        assert!(
            e.contains("`--network=host`") && e.contains("--platform=ptrace|systrap|kvm"),
            "{e}"
        );
        ok(
            &runtime_spec(BackendKind::Container, "runsc", &["--platform=kvm"]),
            &ParamBounds::default(),
        );
        ok(
            &runtime_spec(BackendKind::Docker, "runsc", &[]),
            &ParamBounds::default(),
        );
    }

    #[test]
    fn dir_outside_the_scratch_is_refused() {
        for dir in ["/etc", "../../x"] {
            let e = refused(&spec(BackendKind::Native, None, &[("dir", dir)]));
            assert!(
                e.contains("parameter `dir`") && e.contains(dir) && e.contains("scratch"),
                "{e}"
            );
        }
        ok(
            &spec(BackendKind::Native, None, &[("dir", "data/a")]),
            &ParamBounds::default(),
        );
    }

    #[test]
    fn hosts_off_the_trials_network_are_refused() {
        let e = refused(&spec(BackendKind::Native, None, &[("host", "8.8.8.8")]));
        assert!(
            e.contains("parameter `host`") && e.contains("8.8.8.8"),
            "{e}"
        );
        let bridged = spec(
            BackendKind::Container,
            Some(NetworkMode::Bridge),
            &[("host", "10.100.0.3")],
        );
        ok(&bridged, &ParamBounds::default());
        let native = spec(BackendKind::Native, None, &[("host", "10.100.0.3")]);
        assert!(admit(&native, &ParamBounds::default(), &table()).is_err());
    }

    #[test]
    fn sizes_and_deadlines_over_the_bounds_are_refused() {
        let e = refused(&spec(BackendKind::Native, None, &[("size", "1PiB")]));
        assert!(
            e.contains("parameter `size`") && e.contains("1PiB") && e.contains("16GiB"),
            "{e}"
        );
        let tight = ParamBounds {
            max_size_bytes: 1 << 20,
            ..ParamBounds::default()
        };
        let s = spec(BackendKind::Native, None, &[("size", "2MiB")]);
        assert!(admit(&s, &tight, &table()).is_err());
        ok(&s, &ParamBounds::default());
        let mut s = spec(BackendKind::Native, None, &[]);
        s.timeout = HumanDuration(Duration::from_secs(100 * 3600));
        let e = refused(&s);
        assert!(e.contains("timeout") && e.contains("max_timeout"), "{e}");
        let mut s = spec(BackendKind::Native, None, &[]);
        s.duration = HumanDuration(Duration::from_secs(2 * 3600));
        assert!(refused(&s).contains("max_duration"));
    }
}
