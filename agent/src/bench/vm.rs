//! Measurements for `just bench` (called by `isolab-bench`): what the agent adds to a VM's boot,
//! and how many VMs run at once.
//!
//! - [`backend_first_sample`]: one `syscall` trial through the runner and the vm backend (as the
//!   agent runs it, gRPC aside): time from the call to the first sample event, i.e. prepare
//!   (initramfs, cgroups), QEMU start, guest boot and the workload's first line.
//! - [`bare_first_sample`]: the identical kernel, initramfs bytes and command line booted by
//!   QEMU directly (no cgroup, no runner): time from spawn to the first framed sample line.
//!
//!   Their ratio, measured alternately in one run, is the agent's overhead on a boot (goal
//!   ≤ 1.05); the bare figure is the absolute boot time (goal ≤ 2 s under TCG, ≤ 150 ms on
//!   KVM).
//! - [`max_concurrent`]: the largest power of two of VMs (up to a bound) that all boot and report
//!   in one trial (goal ≥ 32 at 64 MiB; the Debian cloud kernel needs 80 MiB,
//!   [`isolab_backends::vm::setup::MIN_GUEST_MIB`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use isolab_model::pipeline::{Accel, BackendKind, Platform};
use isolab_model::units::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::conformance;
use crate::core::{TrialEvent, TrialState};
use crate::runner::{RunnerOptions, run_trial};
use isolab_backends::TrialContext;
use isolab_backends::vm::backend::VmBackend;
use isolab_backends::vm::cmdline::GuestCmdline;
use isolab_backends::vm::launch;
use isolab_backends::vm::qemu::{AccelKind, VmSpec};

/// How long one measured boot may take before it counts as failed.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// A one-vCPU vm platform with `memory_mib` of guest memory on `accel`.
pub fn platform(memory_mib: u64, accel: Accel) -> Platform {
    Platform {
        backend: BackendKind::Vm,
        runtime: None,
        runtime_args: Vec::new(),
        rootfs: None,
        network: None,
        limits: isolab_model::pipeline::Limits::default(),
        vcpus: Some(1),
        memory: Some(Bytes(memory_mib << 20)),
        accel: Some(accel),
        machine: None,
    }
}

/// Runs `n` instances of `syscall` for `duration` through the runner; returns the time to the
/// first sample event and the final state.
async fn run(
    backend: &VmBackend,
    platform: &Platform,
    n: u32,
    duration: Duration,
) -> Result<(Duration, TrialState), String> {
    let trial = conformance::trial(platform, "syscall", n, &[], duration, BOOT_TIMEOUT);
    let ctx = TrialContext {
        run_id: "bench".into(),
        trial: Arc::new(isolab_wire::TrialSpec::from(&trial)),
        attempt: 0,
    };
    let (tx, mut rx) = mpsc::channel(4096);
    let started = Instant::now();
    let opts = RunnerOptions {
        host: "bench".into(),
        ..RunnerOptions::default()
    };
    let runner = run_trial(backend, ctx, tx, CancellationToken::new(), &opts);
    let watcher = async {
        let mut first = None;
        while let Some(e) = rx.recv().await {
            if first.is_none() && matches!(e, TrialEvent::Sample { .. }) {
                first = Some(started.elapsed());
            }
        }
        first
    };
    let (status, first) = tokio::join!(runner, watcher);
    match first {
        Some(t) => Ok((t, status.state)),
        None => Err(format!("no sample ({}: {})", status.state, status.message)),
    }
}

/// Time to the first sample of a one-VM `syscall` trial through the runner and the backend.
pub async fn backend_first_sample(
    backend: &VmBackend,
    platform: &Platform,
) -> Result<Duration, String> {
    let (t, state) = run(backend, platform, 1, Duration::from_millis(100)).await?;
    if state == TrialState::Ok {
        Ok(t)
    } else {
        Err(format!("trial ended {state}"))
    }
}

/// Time to the first framed sample of the same VM booted by QEMU directly.
pub async fn bare_first_sample(
    backend: &VmBackend,
    memory_mib: u64,
    accel: AccelKind,
) -> Result<Duration, String> {
    let ready = backend.ready().ok_or("the vm backend is unavailable")?;
    let runtime = backend
        .runtime_dir()
        .ok_or("the vm backend has no runtime directory")?;
    let dir = runtime.join(format!("bench-bare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = async {
        let image = dir.join(isolab_backends::vm::setup::INITRAMFS_FILE);
        ready
            .write_initramfs(&image, &[])
            .map_err(|e| e.to_string())?;
        let cmdline = GuestCmdline {
            console: "ttyS0".into(),
            tsc_khz: ready.tsc_khz,
            workload: Some("syscall".into()),
            params: vec![("duration".into(), "100ms".into())],
            extra: ready
                .default_machine
                .kernel_words()
                .iter()
                .map(|w| (*w).to_owned())
                .collect(),
            ..GuestCmdline::default()
        }
        .render()
        .map_err(|e| e.to_string())?;
        let spec = VmSpec {
            name: format!("isolab-bench-bare-{}", std::process::id()),
            kernel: ready.kernel.image.clone(),
            initramfs: image,
            cmdline,
            vcpus: 1,
            memory_mib,
            accel,
            machine: ready.default_machine,
            nic: None,
            disk: None,
        };
        let started = Instant::now();
        let (mut handle, _) =
            launch::spawn_vm(&ready.vmm, &spec, 0, launch::LaunchOptions::default())
                .await
                .map_err(|e| e.to_string())?;
        let first = tokio::time::timeout(BOOT_TIMEOUT, handle.stdout.next()).await;
        let elapsed = started.elapsed();
        let exit = tokio::time::timeout(BOOT_TIMEOUT, handle.exit).await;
        match (first, exit) {
            (Ok(Some(Ok(_))), Ok(e)) if e.success() => Ok(elapsed),
            (_, Ok(e)) => Err(format!("bare VM: {e}")),
            (_, Err(_)) => Err("bare VM did not end".to_owned()),
        }
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The largest `n` in 1, 2, 4, … `limit` for which a trial of `n` VMs all report and end Ok.
pub async fn max_concurrent(backend: &VmBackend, platform: &Platform, limit: u32) -> u32 {
    let mut best = 0;
    let mut n = 1;
    while n <= limit {
        match run(backend, platform, n, Duration::from_millis(100)).await {
            Ok((_, TrialState::Ok)) => best = n,
            _ => break,
        }
        n *= 2;
    }
    best
}
