//! Admission of a trial at the agent: parameter values, durations and timeouts checked against
//! the agent's configured [`ParamBounds`] before anything is made.
//!
//! `isolab validate` checks the same rules with the default bounds (the functions are shared, in
//! `isolab_model::validate`), but a caller can skip validation or hold a pipeline written for
//! looser bounds, so the agent checks again: `dir` inside the instance's scratch, `host` on the
//! trial's own network, and upper bounds on sizes, threads, connections, forks, durations and the
//! timeout. A refused trial names the instance, the parameter, its value and the bound.

use isolab_model::validate::{self, NetContext, ParamBounds};
use isolab_wire::TrialSpec;

use crate::core::RunTrialError;

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
    /// The trial's timeout is over the bound.
    #[error("timeout: {reason}")]
    Timeout {
        /// What is wrong, with the value and the bound.
        reason: String,
    },
}

/// Admits `trial` under `bounds`, or says the first thing that is refused.
pub fn admit(trial: &TrialSpec, bounds: &ParamBounds) -> Result<(), AdmissionError> {
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
pub fn admit_request(trial: &TrialSpec, bounds: &ParamBounds) -> Result<(), RunTrialError> {
    admit(trial, bounds).map_err(|e| RunTrialError::InvalidTrial {
        trial: trial.id.clone(),
        reason: format!("refused by this agent's bounds: {e}"),
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
        admit_request(s, &ParamBounds::default())
            .unwrap_err()
            .to_string()
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
        admit(
            &spec(BackendKind::Native, None, &[("dir", "data/a")]),
            &ParamBounds::default(),
        )
        .unwrap();
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
        admit(&bridged, &ParamBounds::default()).unwrap();
        let native = spec(BackendKind::Native, None, &[("host", "10.100.0.3")]);
        assert!(admit(&native, &ParamBounds::default()).is_err());
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
        assert!(admit(&s, &tight).is_err());
        admit(&s, &ParamBounds::default()).unwrap();
        let mut s = spec(BackendKind::Native, None, &[]);
        s.timeout = HumanDuration(Duration::from_secs(100 * 3600));
        let e = refused(&s);
        assert!(e.contains("timeout") && e.contains("max_timeout"), "{e}");
        let mut s = spec(BackendKind::Native, None, &[]);
        s.duration = HumanDuration(Duration::from_secs(2 * 3600));
        assert!(refused(&s).contains("max_duration"));
    }
}
