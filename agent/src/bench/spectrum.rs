//! The platform spectrum side by side in one run: for every platform available here (native,
//! container on runc and on runsc, Docker, LXC, a VM), start-to-first-sample (an `idle`
//! instance: it reports at once), `syscall` (getppid, ns/call) and `fork_exit` (us/process),
//! each later divided by native's. Availability comes from the agent's own probes
//! ([`crate::core::AgentCore::capabilities`]); an unavailable platform is skipped with the
//! reason. Rounds run every platform in turn after one warm-up round (a private dockerd, page
//! cache, the initramfs) that is not counted.

use std::collections::BTreeMap;
use std::time::Duration;

use isolab_model::pipeline::{Accel, BackendKind, Limits, Platform};

use super::{median, timed};
use crate::conformance;
use crate::core::{AgentCore, TrialState};
use isolab_backends::AnyBackend;

/// How long one spectrum trial may take (a VM boots under TCG).
const TRIAL_TIMEOUT: Duration = Duration::from_secs(120);

/// One platform of the spectrum.
#[derive(Debug, Clone)]
pub struct SpectrumPlatform {
    /// Label in the table (`container/runsc`).
    pub label: &'static str,
    /// The capabilities entry saying whether it is available.
    pub status: &'static str,
    /// The platform spec the trials run on.
    pub platform: Platform,
}

fn spec(backend: BackendKind) -> Platform {
    Platform {
        backend,
        runtime: None,
        runtime_args: Vec::new(),
        rootfs: None,
        network: None,
        limits: Limits::default(),
        vcpus: None,
        memory: None,
        accel: None,
        machine: None,
    }
}

/// native, container/runc, container/runsc, docker, lxc, vm (the smallest guest that boots).
pub fn platforms() -> Vec<SpectrumPlatform> {
    let container = |runtime| super::container::platform(runtime, Limits::default());
    vec![
        SpectrumPlatform {
            label: "native",
            status: "native",
            platform: spec(BackendKind::Native),
        },
        SpectrumPlatform {
            label: "container/runc",
            status: "container/runc",
            platform: container("runc"),
        },
        SpectrumPlatform {
            label: "container/runsc",
            status: "container/runsc",
            platform: container("runsc"),
        },
        SpectrumPlatform {
            label: "docker",
            status: "docker",
            platform: spec(BackendKind::Docker),
        },
        SpectrumPlatform {
            label: "lxc",
            status: "lxc",
            platform: spec(BackendKind::Lxc),
        },
        SpectrumPlatform {
            label: "vm",
            status: "vm",
            platform: super::vm::platform(isolab_backends::vm::setup::MIN_GUEST_MIB, Accel::Auto),
        },
    ]
}

/// The measured figures of one platform (medians over the rounds).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpectrumRow {
    /// Its label.
    pub label: String,
    /// Start to first sample, ms.
    pub start_ms: f64,
    /// `syscall`: ns per getppid.
    pub syscall_ns: f64,
    /// `fork_exit`: us per fork + exit + wait.
    pub fork_exit_us: f64,
}

/// What [`spectrum`] measured and what it skipped.
#[derive(Debug, Clone, Default)]
pub struct Spectrum {
    /// Measured platforms, native first.
    pub rows: Vec<SpectrumRow>,
    /// Skipped platforms with the reason.
    pub skipped: Vec<(String, String)>,
}

/// Measures `which` (labels of [`platforms`]; all when empty) on `core`'s backends: one warm-up
/// round and `rounds` counted ones; `duration` is how long `syscall` and `fork_exit` measure.
pub async fn spectrum(
    core: &AgentCore,
    which: &[&str],
    rounds: u32,
    duration: Duration,
) -> Result<Spectrum, String> {
    let caps = core.capabilities().await;
    let mut out = Spectrum::default();
    let mut chosen = Vec::new();
    for p in platforms() {
        if !which.is_empty() && !which.contains(&p.label) {
            continue;
        }
        match caps.backends.iter().find(|s| s.name == p.status) {
            Some(s) if s.available => chosen.push(p),
            Some(s) => out.skipped.push((p.label.into(), s.reason.clone())),
            None => out
                .skipped
                .push((p.label.into(), "not reported by the agent".into())),
        }
    }
    let mut samples: BTreeMap<&str, [Vec<f64>; 3]> = BTreeMap::new();
    for round in 0..=rounds {
        for p in &chosen {
            let backend = core
                .backends()
                .iter()
                .find(|b| isolab_backends::Backend::name(*b) == p.platform.backend.as_str())
                .ok_or_else(|| format!("{}: no such backend", p.label))?;
            let figures = measure(backend, &p.platform, duration)
                .await
                .map_err(|e| format!("{}: {e}", p.label))?;
            if round > 0 {
                let entry = samples.entry(p.label).or_default();
                for (v, f) in entry.iter_mut().zip(figures) {
                    v.push(f);
                }
            }
        }
    }
    for p in &chosen {
        let [start, syscall, fork] = samples.remove(p.label).unwrap_or_default();
        out.rows.push(SpectrumRow {
            label: p.label.into(),
            start_ms: median(&start),
            syscall_ns: median(&syscall),
            fork_exit_us: median(&fork),
        });
    }
    Ok(out)
}

/// Start (ms), `syscall` (ns/call), `fork_exit` (us/process) of one platform.
async fn measure(
    backend: &AnyBackend,
    platform: &Platform,
    duration: Duration,
) -> Result<[f64; 3], String> {
    let start = conformance::trial(
        platform,
        "idle",
        1,
        &[],
        Duration::from_millis(1),
        TRIAL_TIMEOUT,
    );
    let t = timed(backend, start, |_| false).await;
    let start_ms = match (t.status.state, t.first_sample) {
        (TrialState::Ok, Some(d)) => d.as_secs_f64() * 1e3,
        _ => return Err(format!("idle: {}", t.failure())),
    };
    let mut figures = [start_ms, 0.0, 0.0];
    for (slot, (workload, metric)) in [("syscall", "ns_per_call"), ("fork_exit", "us_per_process")]
        .into_iter()
        .enumerate()
    {
        let trial = conformance::trial(platform, workload, 1, &[], duration, TRIAL_TIMEOUT);
        let t = timed(backend, trial, |_| false).await;
        figures[slot + 1] = match (t.status.state, t.summary(metric)) {
            (TrialState::Ok, Some(v)) => v,
            _ => return Err(format!("{workload}: {}", t.failure())),
        };
    }
    Ok(figures)
}
