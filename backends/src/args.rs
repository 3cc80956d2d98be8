//! The workload command line of one instance, shared by every process-launching backend: the
//! allowlist check, `--param KEY=VALUE` pairs with plain-word keys, and the trial's duration
//! added when the workload takes one and none was given.

use isolab_model::catalog;
use isolab_model::plan::InstanceSpec;

use crate::TrialContext;

/// Why an instance's command line could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// A workload that is not in the catalog.
    #[error("instance {instance}: unknown workload `{name}`; this agent runs only: {known}")]
    UnknownWorkload {
        /// Instance index.
        instance: u32,
        /// The name asked for.
        name: String,
        /// The catalog's names.
        known: String,
    },
    /// A parameter name that cannot be passed as `--param KEY=VALUE`.
    #[error("instance {instance}: invalid parameter name {key:?}: {reason}")]
    BadParam {
        /// Instance index.
        instance: u32,
        /// The name given.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Every instance of the trial with its arguments: `(index, NAME [--param k=v]…)`.
pub fn trial_args(ctx: &TrialContext) -> Result<Vec<(u32, Vec<String>)>, ArgsError> {
    ctx.trial
        .instances
        .iter()
        .map(|spec| Ok((spec.index, workload_args(ctx, spec)?)))
        .collect()
}

/// The arguments after the program name: `NAME [--param k=v]…`.
pub fn workload_args(ctx: &TrialContext, spec: &InstanceSpec) -> Result<Vec<String>, ArgsError> {
    let info = catalog::find(&spec.workload).ok_or_else(|| ArgsError::UnknownWorkload {
        instance: spec.index,
        name: spec.workload.clone(),
        known: catalog::names().join(", "),
    })?;
    let mut args = vec![info.name.to_owned()];
    for (key, value) in &spec.params {
        let reason = if key.is_empty() {
            Some("empty")
        } else if key.contains('=') {
            Some("contains `=`")
        } else if key.starts_with('-') || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Some("must be a plain word")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(ArgsError::BadParam {
                instance: spec.index,
                key: key.clone(),
                reason,
            });
        }
        args.push("--param".into());
        args.push(format!("{key}={value}"));
    }
    if !spec.params.contains_key("duration") && info.params.iter().any(|p| p.name == "duration") {
        args.push("--param".into());
        args.push(format!("duration={}", ctx.trial.duration));
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use isolab_model::pipeline::{BackendKind, Platform};

    use super::*;
    use crate::testing as conformance;

    fn platform() -> Platform {
        serde_json::from_value(serde_json::json!({ "backend": BackendKind::Docker })).unwrap()
    }

    fn ctx(workload: &str, params: &[(&str, &str)]) -> TrialContext {
        let t = conformance::trial(
            &platform(),
            workload,
            1,
            params,
            Duration::from_millis(250),
            Duration::from_secs(5),
        );
        TrialContext {
            run_id: "r".into(),
            trial: Arc::new(isolab_wire::TrialSpec::from(&t)),
            attempt: 0,
        }
    }

    #[test]
    fn the_trial_duration_is_added_and_params_are_passed() {
        let c = ctx("syscall", &[("iterations", "10")]);
        let args = workload_args(&c, &c.trial.instances[0]).unwrap();
        assert_eq!(args[0], "syscall");
        assert!(
            args.windows(2).any(|w| w == ["--param", "iterations=10"]),
            "{args:?}"
        );
        assert!(args.last().unwrap().starts_with("duration="), "{args:?}");
    }

    #[test]
    fn unknown_workloads_and_odd_keys_are_refused() {
        let c = ctx("rm_rf", &[]);
        let e = workload_args(&c, &c.trial.instances[0]).unwrap_err();
        assert!(e.to_string().contains("unknown workload `rm_rf`"), "{e}");
        for key in ["", "a=b", "-x", "a b"] {
            let c = ctx("syscall", &[(key, "1")]);
            let e = workload_args(&c, &c.trial.instances[0]).unwrap_err();
            assert!(matches!(e, ArgsError::BadParam { .. }), "{key:?}: {e}");
        }
    }
}
