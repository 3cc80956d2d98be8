//! Fixtures for tests of backends and of the agent (feature `testing`, not in the release
//! library): a trial of a given platform with a unique id. The conformance suite that drives
//! every backend through a whole trial is the agent's (`isolab_agent::conformance`), since it
//! runs the agent's runner.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use isolab_model::pipeline::{AnalysisKind, ParamValue, Params, Platform};
use isolab_model::plan::{InstanceSpec, Role, Trial};
use isolab_model::units::HumanDuration;

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A trial id unique in this machine's recent history (pid and a counter).
pub fn unique_trial_id() -> String {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    format!("c{:07x}{:08x}", std::process::id() & 0x0fff_ffff, n)
}

/// A one-platform trial of `n` instances of `workload` with `params`.
pub fn trial(
    platform: &Platform,
    workload: &str,
    n: u32,
    params: &[(&str, &str)],
    duration: Duration,
    timeout: Duration,
) -> Trial {
    let params: Params = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), ParamValue::Str((*v).to_owned())))
        .collect();
    Trial {
        id: unique_trial_id(),
        experiment: "conformance".into(),
        analysis: AnalysisKind::Overhead,
        platform: platform.backend.as_str().into(),
        platform_spec: platform.clone(),
        resolved: isolab_model::resolve::resolve(platform)
            .unwrap_or_else(|e| panic!("a conformance platform must resolve: {e}")),
        repetition: 0,
        warmup: false,
        workload: workload.into(),
        adversary: None,
        params: Params::new(),
        instances: (0..n)
            .map(|index| InstanceSpec {
                index,
                role: Role::Peer,
                group: None,
                workload: workload.into(),
                params: params.clone(),
                cpu_weight: None,
                cpu_reservation: None,
            })
            .collect(),
        duration: HumanDuration(duration),
        timeout: HumanDuration(timeout),
        retries: 0,
    }
}
