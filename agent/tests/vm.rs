//! The vm backend with real QEMU guests (TCG on hosts without a working KVM): the conformance
//! suite, eight concurrent VMs, guest modules, the accelerator probe, and bad input (no kernel,
//! a memory size QEMU refuses). Needs root (cgroups), QEMU, the guest kernel from `./bootstrap`
//! and a static `isolab-workload` (`just build-workload`); off CI, missing pieces skip.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use isolab_agent::conformance;
use isolab_agent::core::TrialState;
use isolab_backends::envelope::Ceilings;
use isolab_backends::lifecycle::{Lifecycle, LifecycleError};
use isolab_backends::vm::cmdline::GuestCmdline;
use isolab_backends::vm::initramfs;
use isolab_backends::vm::kernel::{self, DEFAULT_KERNEL_DIR};
use isolab_backends::vm::launch;
use isolab_backends::vm::modules::ModuleIndex;
use isolab_backends::vm::qemu::{AccelKind, Machine, VmSpec};
use isolab_backends::vm::vmm::Vmm;
use isolab_backends::vm::{VmBackend, VmConfig, VmError};
use isolab_backends::{AgentDir, Backend, TrialContext};
use isolab_host::cgroup::CgroupManager;
use isolab_model::pipeline::{Accel, BackendKind, Platform};
use isolab_model::units::Bytes;

const CEILINGS: Ceilings = Ceilings {
    pids: 4096,
    memory_bytes: 4 << 30,
};

/// The static workload binary, if there is one (CI must have it).
fn static_workload() -> Option<PathBuf> {
    let bin = isolab_host::workload_bin::locate().ok();
    let head = bin.as_ref().and_then(|b| std::fs::read(b).ok());
    if let (Some(bin), Some(head)) = (bin, head)
        && initramfs::is_static_elf(&head)
    {
        return Some(bin);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI needs a static isolab-workload (just build-workload)"
    );
    eprintln!("skipping: no static isolab-workload (run `just build-workload`)");
    None
}

/// Root, QEMU, the guest kernel and a static workload, or a printed reason to skip.
fn vm_ready(test: &str) -> Option<PathBuf> {
    if !common::privileged(test) {
        return None;
    }
    let have_kernel = kernel::locate(None, None).is_ok();
    let have_qemu = Vmm::qemu(None).is_ok();
    if !(have_kernel && have_qemu) {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: CI needs QEMU and the guest kernel (./bootstrap)"
        );
        eprintln!("skipping {test}: QEMU or the guest kernel in {DEFAULT_KERNEL_DIR} is missing");
        return None;
    }
    static_workload()
}

fn backend(prefix: &str, bin: PathBuf, config: VmConfig) -> (VmBackend, Arc<AgentDir>) {
    let manager = Arc::new(CgroupManager::detect().expect("cgroups"));
    let (dir, _) = AgentDir::claim(manager, prefix).expect("claim agent dir");
    let dir = Arc::new(dir);
    (
        VmBackend::new(Ok(Arc::clone(&dir)), Ok(bin), CEILINGS, config),
        dir,
    )
}

fn vm_platform(accel: Accel, memory_mib: u64) -> Platform {
    Platform {
        backend: BackendKind::Vm,
        vcpus: Some(1),
        memory: Some(Bytes(memory_mib << 20)),
        accel: Some(accel),
        ..common::native()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_backend_passes_the_conformance_suite() {
    let Some(bin) = vm_ready("vm conformance") else {
        return;
    };
    let (b, _dir) = backend("isolab-test-vmconf", bin, VmConfig::default());
    let started = Instant::now();
    let status = b.probe().await;
    eprintln!("probe took {:?}: {status:?}", started.elapsed());
    assert!(status.available, "vm unavailable: {}", status.reason);
    assert!(
        status.accel == "kvm" || status.accel == "tcg",
        "accel: {:?}",
        status.accel
    );
    let platform = vm_platform(Accel::Auto, 128);

    let started = Instant::now();
    let o = conformance::check_one_syscall(&b, &platform).await;
    eprintln!(
        "one syscall VM (200 ms of work) took {:?} end to end",
        started.elapsed()
    );
    assert_eq!(
        o.status.accel.as_deref(),
        Some(status.accel.as_str()),
        "accel recorded in the status"
    );
    conformance::check_concurrent_cpu_spin(&b, &platform).await;
    conformance::check_failing_workload(&b, &platform).await;
    conformance::check_deadline(&b, &platform).await;
    conformance::check_cancel(&b, &platform).await;
    conformance::check_unknown_workload(&b, &platform).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_q35_guest_runs_the_workload_too() {
    let Some(bin) = vm_ready("q35") else { return };
    let (b, _dir) = backend("isolab-test-vmq35", bin, VmConfig::default());
    let platform = Platform {
        machine: Some("q35".into()),
        ..vm_platform(Accel::Tcg, 128)
    };
    let started = Instant::now();
    conformance::check_one_syscall(&b, &platform).await;
    eprintln!("q35 syscall trial took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_vms_run_cpu_spin_and_are_all_torn_down() {
    let Some(bin) = vm_ready("eight VMs") else {
        return;
    };
    let (b, _dir) = backend("isolab-test-vm8", bin, VmConfig::default());
    let platform = vm_platform(Accel::Tcg, 96);
    let t = conformance::trial(
        &platform,
        "cpu_spin",
        8,
        &[],
        Duration::from_millis(300),
        Duration::from_secs(300),
    );
    let started = Instant::now();
    let o = conformance::run(&b, t, |_| false).await;
    eprintln!("8 VMs took {:?}", started.elapsed());
    if o.status.state != TrialState::Ok {
        for e in &o.events {
            if let isolab_agent::core::TrialEvent::Log { instance, text, .. } = e {
                eprintln!("instance {instance}: {text}");
            }
        }
    }
    assert_eq!(o.status.state, TrialState::Ok, "{}", o.status.message);
    assert_eq!(o.status.accel.as_deref(), Some("tcg"));
    for i in 0..8 {
        assert!(
            o.samples(i)
                .iter()
                .any(|(m, v)| m == "units_per_s" && *v > 0.0),
            "instance {i}: {:?}",
            o.samples(i)
        );
        let stats = o.final_stats(i).expect("final stats");
        assert!(
            stats.cpu_usage_ns > 0,
            "instance {i}: QEMU's cgroup accounted no CPU"
        );
    }
    conformance::assert_clean(&b, &o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_is_killed_inside_its_vm_and_the_host_is_unaffected() {
    let Some(bin) = vm_ready("memory bomb") else {
        return;
    };
    if isolab_model::catalog::find("memory_bomb").is_none() {
        eprintln!("skipping: no memory_bomb in the catalog");
        return;
    }
    let (b, _dir) = backend("isolab-test-vmbomb", bin, VmConfig::default());
    let platform = vm_platform(Accel::Tcg, 128);
    let t = conformance::trial(
        &platform,
        "memory_bomb",
        1,
        &[],
        Duration::from_secs(5),
        Duration::from_secs(180),
    );
    let o = conformance::run(&b, t, |_| false).await;
    eprintln!("memory bomb: {:?}: {}", o.status.state, o.status.message);
    assert_eq!(o.status.state, TrialState::Failed, "{}", o.status.message);
    assert!(
        o.status.message.contains("out of memory"),
        "the outcome names the OOM kill: {}",
        o.status.message
    );
    let reached = o
        .samples(0)
        .iter()
        .filter(|(m, _)| m == "bytes_reached")
        .map(|(_, v)| *v)
        .fold(0.0, f64::max);
    assert!(
        reached > 0.0 && reached < f64::from(128u32 << 20),
        "bytes_reached {reached}"
    );
    let stats = o.final_stats(0).expect("final stats");
    assert_eq!(
        stats.oom_kills, 0,
        "the host's OOM killer struck QEMU: {stats:?}"
    );
    conformance::assert_clean(&b, &o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_workloads_get_a_disk_and_a_disk_bomb_fills_only_its_own() {
    let Some(bin) = vm_ready("vm disk") else {
        return;
    };
    let config = VmConfig {
        disk_bytes: 64 << 20,
        ..VmConfig::default()
    };
    let (b, _dir) = backend("isolab-test-vmdisk", bin, config);
    // 256 MiB of guest memory: a tmpfs /tmp would take 128 MiB, twice the disk, so the bomb's
    // total tells which one it filled.
    let platform = vm_platform(Accel::Tcg, 256);
    let t = conformance::trial(
        &platform,
        "file_ops",
        1,
        &[],
        Duration::from_millis(300),
        Duration::from_secs(120),
    );
    let o = conformance::run(&b, t, |_| false).await;
    assert_eq!(o.status.state, TrialState::Ok, "{}", o.status.message);
    assert!(
        o.samples(0)
            .iter()
            .any(|(m, v)| m == "ops_per_s" && *v > 0.0),
        "{:?}",
        o.samples(0)
    );
    conformance::assert_clean(&b, &o);

    if isolab_model::catalog::find("disk_bomb").is_none() {
        return;
    }
    let t = conformance::trial(
        &platform,
        "disk_bomb",
        1,
        &[],
        Duration::from_secs(3),
        Duration::from_secs(120),
    );
    let o = conformance::run(&b, t, |_| false).await;
    eprintln!("disk bomb: {:?}: {}", o.status.state, o.status.message);
    let summary = |metric: &str| {
        o.events.iter().rev().find_map(|e| match e {
            isolab_agent::core::TrialEvent::Sample { sample, .. }
                if sample.metric == metric && sample.t_offset_s.is_none() =>
            {
                Some(sample.value)
            }
            _ => None,
        })
    };
    let written = summary("bytes_written").expect("bytes_written");
    assert!(
        written > 0.0 && written <= f64::from(64u32 << 20),
        "wrote {written} bytes on a 64 MiB disk"
    );
    assert_eq!(summary("full"), Some(1.0), "the guest's disk filled up");
    conformance::assert_clean(&b, &o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_vms_talk_tcp_over_the_trial_bridge_and_the_network_is_removed() {
    let Some(bin) = vm_ready("vm bridge") else {
        return;
    };
    if isolab_model::catalog::find("tcp_rr").is_none() {
        return;
    }
    let (b, dir) = backend("isolab-test-vmnet", bin, VmConfig::default());
    let platform = Platform {
        network: Some(isolab_model::pipeline::NetworkMode::Bridge),
        ..vm_platform(Accel::Tcg, 128)
    };
    let mut t = conformance::trial(
        &platform,
        "tcp_rr",
        2,
        &[],
        Duration::from_secs(1),
        Duration::from_secs(120),
    );
    let ctx = TrialContext {
        run_id: "r".into(),
        trial: Arc::new(isolab_wire::TrialSpec::from(&t)),
        attempt: 0,
    };
    let prefix = format!("{}-{}", dir.name(), ctx.slug());
    let server = isolab_backends::vm::net::nic(&prefix, 0)
        .expect("address")
        .addr;
    let param = |k: &str, v: &str| {
        (
            k.to_owned(),
            isolab_model::pipeline::ParamValue::Str(v.to_owned()),
        )
    };
    t.instances[0].params = [param("role", "server"), param("host", "0.0.0.0")]
        .into_iter()
        .collect();
    t.instances[1].params = [param("role", "client"), param("host", &server.to_string())]
        .into_iter()
        .collect();
    let o = conformance::run(&b, t, |_| false).await;
    if o.status.state != TrialState::Ok {
        for e in &o.events {
            if let isolab_agent::core::TrialEvent::Log { instance, text, .. } = e {
                eprintln!("instance {instance}: {text}");
            }
        }
    }
    assert_eq!(o.status.state, TrialState::Ok, "{}", o.status.message);
    assert!(!o.samples(1).is_empty(), "the client measured nothing");
    conformance::assert_clean(&b, &o);
    assert!(isolab_backends::vm::net::leftovers(&prefix).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_loads_virtio_modules_and_boots_with_a_disk() {
    let Some(bin) = vm_ready("guest modules") else {
        return;
    };
    let k = kernel::locate(None, None).expect("kernel");
    let index = ModuleIndex::scan(&k.modules_dir).expect("modules");
    let order = index
        .order(&["virtio_mmio", "virtio_blk"])
        .expect("module order");
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("initramfs.cpio");
    initramfs::write_initramfs(&image, &bin, &order).expect("initramfs");
    let disk = dir.path().join("disk.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let cmdline = GuestCmdline {
        console: "ttyS0".into(),
        tsc_khz: isolab_backends::vm::cmdline::host_tsc_khz(),
        workload: Some("syscall".into()),
        params: vec![("duration".into(), "100ms".into())],
        modules: order.iter().map(|m| m.name.clone()).collect(),
        extra: vec!["pci=off".into()],
        ..GuestCmdline::default()
    };
    let spec = VmSpec {
        name: format!("isolab-test-modules-{}", std::process::id()),
        kernel: k.image,
        initramfs: image,
        cmdline: cmdline.render().unwrap(),
        vcpus: 1,
        memory_mib: 128,
        accel: AccelKind::Tcg,
        machine: Machine::Microvm,
        nic: None,
        disk: Some(disk),
    };
    let vmm = Vmm::qemu(None).unwrap();
    let (handle, _) = launch::spawn_vm(&vmm, &spec, 0, launch::LaunchOptions::default())
        .await
        .expect("spawn");
    let logs = tokio::spawn(futures::StreamExt::collect::<Vec<_>>(handle.stderr));
    let samples: Vec<_> = futures::StreamExt::collect(handle.stdout).await;
    let exit = tokio::time::timeout(Duration::from_secs(120), handle.exit)
        .await
        .expect("VM ended");
    let logs = logs.await.unwrap();
    assert!(exit.success(), "guest ended: {exit}; logs: {logs:?}");
    assert!(!samples.is_empty(), "no samples; logs: {logs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_measurements_run() {
    let Some(bin) = vm_ready("vm bench") else {
        return;
    };
    let (b, _dir) = backend("isolab-test-vmbench", bin, VmConfig::default());
    let platform = isolab_agent::bench::vm::platform(128, Accel::Tcg);
    let through = isolab_agent::bench::vm::backend_first_sample(&b, &platform)
        .await
        .expect("through the backend");
    let bare = isolab_agent::bench::vm::bare_first_sample(&b, 128, AccelKind::Tcg)
        .await
        .expect("bare");
    eprintln!("first sample: {through:?} through the backend, {bare:?} bare");
    assert!(through > Duration::ZERO && bare > Duration::ZERO);
    assert_eq!(
        isolab_agent::bench::vm::max_concurrent(&b, &platform, 2).await,
        2
    );
    let runtime = b.runtime_dir().unwrap();
    let left: Vec<_> = std::fs::read_dir(&runtime)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", runtime.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accel_auto_completes_with_a_reason() {
    let Some(bin) = vm_ready("accel auto") else {
        return;
    };
    let config = VmConfig {
        kvm_probe_timeout: Duration::from_secs(3),
        ..VmConfig::default()
    };
    let (b, _dir) = backend("isolab-test-vmaccel", bin, config);
    let started = Instant::now();
    let choice = b.auto_accel().await;
    eprintln!(
        "auto picked {:?} in {:?}: {}",
        choice.accel,
        started.elapsed(),
        choice.reason
    );
    assert!(!choice.reason.is_empty());
    assert!(matches!(choice.accel, AccelKind::Kvm | AccelKind::Tcg));
    // The verdict is kept: asking again does not probe again.
    let again = Instant::now();
    assert_eq!(b.auto_accel().await, choice);
    assert!(
        again.elapsed() < Duration::from_secs(1),
        "the verdict was not cached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_kernel_makes_the_backend_unavailable_naming_the_path() {
    let bin = static_workload().unwrap_or_else(|| PathBuf::from("/bin/true"));
    let config = VmConfig {
        kernel: Some("/nonexistent/isolab/vmlinuz".into()),
        ..VmConfig::default()
    };
    let b = VmBackend::new(
        Err("no cgroups in this test".into()),
        Ok(bin),
        CEILINGS,
        config,
    );
    let status = b.probe().await;
    assert!(!status.available);
    assert!(
        status.reason.contains("/nonexistent/isolab/vmlinuz"),
        "reason: {}",
        status.reason
    );
    let t = conformance::trial(
        &vm_platform(Accel::Tcg, 128),
        "syscall",
        1,
        &[],
        Duration::from_millis(100),
        Duration::from_secs(10),
    );
    let ctx = TrialContext {
        run_id: "r".into(),
        trial: Arc::new(isolab_wire::TrialSpec::from(&t)),
        attempt: 0,
    };
    let err = Lifecycle(&b).prepare(&ctx).await.unwrap_err();
    assert!(
        matches!(err, LifecycleError::Backend(VmError::Unavailable { .. }))
            && err.to_string().contains("vmlinuz"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_sizes_that_cannot_work_are_clear_errors() {
    let Some(bin) = vm_ready("memory sizes") else {
        return;
    };
    let (b, _dir) = backend("isolab-test-vmmem", bin.clone(), VmConfig::default());
    // Above the agent's ceiling: refused before anything is made.
    let t = conformance::trial(
        &vm_platform(Accel::Tcg, 1 << 20),
        "syscall",
        1,
        &[],
        Duration::from_millis(100),
        Duration::from_secs(30),
    );
    let o = conformance::run(&b, t, |_| false).await;
    assert_eq!(o.status.state, TrialState::Failed);
    assert!(
        o.status.message.contains("memory") && o.status.message.contains("ceiling"),
        "{}",
        o.status.message
    );
    conformance::assert_clean(&b, &o);
    // Too small to boot: refused where the platform is resolved (`isolab validate`, `isolab plan`
    // and the agent's wire decoder, see isolab-wire's tests), before any backend sees it.
    let refused = isolab_model::resolve::resolve(&vm_platform(Accel::Tcg, 8))
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("memory") && refused.contains("MiB"),
        "{refused}"
    );

    // A size QEMU itself refuses (1 TiB on this host), started directly: QEMU's message comes back.
    let k = kernel::locate(None, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("initramfs.cpio");
    initramfs::write_initramfs(&image, &bin, &[]).unwrap();
    let spec = VmSpec {
        name: format!("isolab-test-bigmem-{}", std::process::id()),
        kernel: k.image,
        initramfs: image,
        cmdline: "console=ttyS0 isolab.probe=1".into(),
        vcpus: 1,
        memory_mib: 1 << 20,
        accel: AccelKind::Tcg,
        machine: Machine::Microvm,
        nic: None,
        disk: None,
    };
    let (handle, _) = launch::spawn_vm(
        &Vmm::qemu(None).unwrap(),
        &spec,
        0,
        launch::LaunchOptions::default(),
    )
    .await
    .unwrap();
    drop((handle.stdout, handle.stderr));
    let exit = tokio::time::timeout(Duration::from_secs(60), handle.exit)
        .await
        .expect("QEMU ended");
    let text = exit.to_string();
    assert!(!exit.success());
    assert!(
        text.contains("QEMU failed") && text.contains("memory"),
        "{text}"
    );
}
