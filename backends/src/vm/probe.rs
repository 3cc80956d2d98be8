//! Probe VMs: a guest that only answers `!ready`, booted in its own directory and cgroup, to
//! learn whether an accelerator really works (KVM) or the whole chain does (TCG, at the
//! availability probe). Everything a probe makes is removed before it returns.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;

use super::cmdline::GuestCmdline;
use super::launch;
use super::qemu::{AccelKind, VmSpec};
use super::setup::{INITRAMFS_FILE, Ready, qemu_memory_bytes};
use crate::AgentDir;
use isolab_host::cgroup::{AnyCgroup, Cgroup, CgroupLimits};

/// Guest memory of a probe VM.
const PROBE_GUEST_MIB: u64 = 96;

/// Counter for probe names.
static PROBES: AtomicU64 = AtomicU64::new(0);

/// Boots a probe VM on `accel` (its own directory, initramfs and cgroup) and waits up to
/// `timeout` for `!ready`; returns how long that took, or why it failed (a phrase that reads
/// after "a probe VM on KVM"). Everything it made is removed before it returns.
pub async fn boot_probe(
    ready: &Arc<Ready>,
    dir: &AgentDir,
    runtime: &Path,
    accel: AccelKind,
    timeout: Duration,
) -> Result<Duration, String> {
    let n = PROBES.fetch_add(1, Ordering::Relaxed);
    let name = format!("probe-{}-{n}", accel.as_str());
    let probe_dir = runtime.join(&name);
    let rel = dir.rel(&name);
    let result = boot_probe_in(ready, dir, &probe_dir, &rel, accel, timeout).await;
    let manager = std::sync::Arc::clone(dir.manager());
    let cleanup_dir = probe_dir.clone();
    let cleaned = tokio::task::spawn_blocking(move || {
        if manager.exists(&rel) {
            let cg = manager.open(&rel).map_err(|e| e.to_string())?;
            cg.kill_all(Duration::from_secs(5))
                .map_err(|e| e.to_string())?;
            cg.remove().map_err(|e| e.to_string())?;
        }
        match std::fs::remove_dir_all(&cleanup_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("removing {}: {e}", cleanup_dir.display()))
            }
            _ => Ok(()),
        }
    })
    .await;
    if let Ok(Err(e)) | Err(e) = cleaned.map_err(|e| e.to_string()) {
        tracing::warn!("cleaning up probe VM {name}: {e}");
    }
    result
}

async fn boot_probe_in(
    ready: &Arc<Ready>,
    dir: &AgentDir,
    probe_dir: &Path,
    rel: &str,
    accel: AccelKind,
    timeout: Duration,
) -> Result<Duration, String> {
    let cmdline = GuestCmdline {
        console: "ttyS0".into(),
        tsc_khz: ready.tsc_khz,
        probe: true,
        extra: ready
            .default_machine
            .kernel_words()
            .iter()
            .map(|w| (*w).to_owned())
            .collect(),
        ..GuestCmdline::default()
    }
    .render()
    .map_err(|e| format!("could not be set up: {e}"))?;
    let spec = VmSpec {
        name: format!(
            "{}-{}",
            dir.name(),
            probe_dir.file_name().unwrap_or_default().to_string_lossy()
        ),
        kernel: ready.kernel.image.clone(),
        initramfs: probe_dir.join(INITRAMFS_FILE),
        cmdline,
        vcpus: 1,
        memory_mib: PROBE_GUEST_MIB,
        accel,
        machine: ready.default_machine,
        nic: None,
        disk: None,
    };
    let ready_owned = Arc::clone(ready);
    let (made_dir, manager, rel_owned) = (
        probe_dir.to_path_buf(),
        std::sync::Arc::clone(dir.manager()),
        rel.to_owned(),
    );
    let limits = CgroupLimits {
        memory_bytes: Some(qemu_memory_bytes(PROBE_GUEST_MIB, accel)),
        pids_max: Some(512),
        ..CgroupLimits::default()
    };
    let cgroup = tokio::task::spawn_blocking(move || -> Result<AnyCgroup, String> {
        std::fs::create_dir_all(&made_dir).map_err(|e| format!("{}: {e}", made_dir.display()))?;
        ready_owned
            .write_initramfs(&made_dir.join(INITRAMFS_FILE), &[])
            .map_err(|e| e.to_string())?;
        let cg = manager.create(&rel_owned).map_err(|e| e.to_string())?;
        cg.apply(&limits).map_err(|e| e.to_string())?;
        Ok(cg)
    })
    .await
    .map_err(|e| format!("could not be set up: {e}"))?
    .map_err(|e| format!("could not be set up: {e}"))?;
    let join = cgroup
        .join_target()
        .map_err(|e| format!("could not be set up: {e}"))?;
    let (ready_tx, ready_rx) = oneshot::channel();
    let started = tokio::time::Instant::now();
    let (handle, process) = launch::spawn_vm(
        &ready.vmm,
        &spec,
        0,
        launch::LaunchOptions {
            join: Some(join),
            on_ready: Some(ready_tx),
            ..launch::LaunchOptions::default()
        },
    )
    .await
    .map_err(|e| format!("could not start: {e}"))?;
    // Nobody else reads the probe's console: log it, so a chatty guest never blocks on it.
    let (mut samples, mut logs) = (handle.stdout, handle.stderr);
    tokio::spawn(async move {
        while let Some(line) = futures::StreamExt::next(&mut logs).await {
            tracing::debug!(
                probe = accel.as_str(),
                "console: {}",
                line.unwrap_or_default()
            );
        }
    });
    tokio::spawn(async move { while futures::StreamExt::next(&mut samples).await.is_some() {} });
    let mut exit = handle.exit;
    let mut exited = false;
    let outcome = tokio::select! {
        answered = ready_rx => match answered {
            Ok(()) => Ok(started.elapsed()),
            // The console closed: QEMU is ending; its exit says why.
            Err(_) => {
                exited = true;
                match tokio::time::timeout(Duration::from_secs(5), &mut exit).await {
                    Ok(ended) => Err(format!("ended without answering: {ended}")),
                    Err(_) => Err("closed its console without answering".to_owned()),
                }
            }
        },
        ended = &mut exit => {
            exited = true;
            Err(format!("ended without answering: {ended}"))
        }
        () = tokio::time::sleep(timeout) => Err(format!("did not answer within {timeout:?}")),
    };
    if let Err(e) = launch::kill_vms(&[process]).await {
        tracing::warn!("probe VM: {e}");
    }
    if !exited {
        let _ = tokio::time::timeout(Duration::from_secs(5), exit).await;
    }
    outcome
}
