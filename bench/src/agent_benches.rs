//! The benchmarks that run the agent's backends in-process (`container`, `container-max`, `vm`,
//! `spectrum`): one agent core for all, the measurements from the agent crate
//! (`isolab_agent::bench::container`, `isolab_agent::bench::vm`, `isolab_agent::bench`), and
//! the table rows.

use std::time::Duration;

use anyhow::{Context as _, bail};
use isolab_agent::bench::container as cbench;
use isolab_agent::bench::vm as vbench;
use isolab_agent::bench::{median, spectrum};
use isolab_agent::config::AgentConfig;
use isolab_agent::core::AgentCore;
use isolab_backends::AnyBackend;
use isolab_backends::vm::qemu::AccelKind;
use isolab_model::pipeline::{Accel, Limits};

/// The benchmarks of this module, in the order they run.
pub(crate) const NAMES: [&str; 4] = ["container", "container-max", "vm", "spectrum"];

/// Command-line settings.
pub(crate) struct Options {
    pub(crate) rounds: u32,
    pub(crate) duration: Duration,
    pub(crate) container_max: u32,
    pub(crate) vm_max: u32,
}

/// How a figure is judged.
enum Goal {
    AtMost(f64),
    AtLeast(f64),
    None,
}

fn header() {
    println!(
        "{:<64} {:>12} {:>12} {:>8} {:>14}",
        "benchmark", "baseline", "measured", "ratio", "goal"
    );
}

/// One table row: `baseline` and `measured` side by side, their ratio, and the goal applied to
/// `judged` (the ratio, or an absolute figure).
fn row(name: &str, baseline: f64, measured: f64, goal: Goal, judged: f64) {
    let ratio = measured / baseline;
    let goal = match goal {
        Goal::AtMost(g) => format!("≤{g} {}", if judged <= g { "ok" } else { "MISS" }),
        Goal::AtLeast(g) => format!("≥{g} {}", if judged >= g { "ok" } else { "MISS" }),
        Goal::None => "—".to_owned(),
    };
    println!("{name:<64} {baseline:>12.2} {measured:>12.2} {ratio:>8.3} {goal:>14}");
}

/// Runs `chosen` (names from [`NAMES`]) on one in-process agent core, then shuts it down.
pub(crate) async fn run(chosen: &[&str], opts: &Options) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{} need root (cgroups, runtimes, QEMU)", chosen.join(", "));
    }
    let core = AgentCore::new(AgentConfig::default()).await;
    // Probes every backend (runtimes, the VM's kernel and accelerator).
    let caps = core.capabilities().await;
    let result = async {
        header();
        for name in chosen {
            match *name {
                "container" => container(&core, opts).await?,
                "container-max" => container_max(&core, opts).await?,
                "vm" => vm(&core, &caps, opts).await?,
                "spectrum" => spectrum_rows(&core, opts).await?,
                other => bail!("unknown benchmark `{other}`"),
            }
        }
        Ok(())
    }
    .await;
    let report = core.shutdown(Duration::from_secs(30)).await;
    eprintln!("agent core shut down: {report:?}");
    result
}

fn container_backend(
    core: &AgentCore,
) -> anyhow::Result<&isolab_backends::container::ContainerBackend> {
    core.backends()
        .iter()
        .find_map(|b| match b {
            AnyBackend::Container(c) => Some(c),
            _ => None,
        })
        .context("the agent has no container backend")
}

async fn container(core: &AgentCore, opts: &Options) -> anyhow::Result<()> {
    let backend = container_backend(core)?;
    let platform = cbench::platform("runc", Limits::default());
    // A container lives ~25 ms: medians of at least 30 rounds, or the host's noise decides.
    let t = cbench::start_times(backend, &platform, opts.rounds.max(30))
        .await
        .map_err(|e| anyhow::anyhow!("container: {e}"))?;
    let (bare, agent) = (median(&t.bare_gone_ms), median(&t.agent_gone_ms));
    row(
        "container start→gone, bare runc | agent (ms)",
        bare,
        agent,
        Goal::AtMost(1.10),
        agent / bare,
    );
    let (bare, agent) = (median(&t.bare_first_ms), median(&t.agent_first_ms));
    row(
        "container start→first sample, bare | agent (ms)",
        bare,
        agent,
        Goal::None,
        agent / bare,
    );
    Ok(())
}

async fn container_max(core: &AgentCore, opts: &Options) -> anyhow::Result<()> {
    let backend = container_backend(core)?;
    let steps = cbench::max_alive(backend, "runc", opts.container_max).await;
    for s in &steps {
        eprintln!(
            "container-max: {} containers: {} (all awake after {:.2} s, {:.0} KiB cgroup memory each){}",
            s.n,
            if s.ok { "ok" } else { "FAILED" },
            s.all_awake_s,
            s.memory_per_container_kib,
            if s.error.is_empty() {
                String::new()
            } else {
                format!(": {}", s.error)
            }
        );
    }
    let best = steps
        .iter()
        .filter(|s| s.ok)
        .map(|s| s.n)
        .max()
        .unwrap_or(0);
    let best_step = steps.iter().find(|s| s.ok && s.n == best);
    row(
        "container-max idle alive, bound | reached (count)",
        f64::from(opts.container_max),
        f64::from(best),
        Goal::AtLeast(1000.0),
        f64::from(best),
    );
    if let Some(s) = best_step {
        row(
            &format!("container-max {best}: start all (s) | KiB each"),
            s.all_awake_s,
            s.memory_per_container_kib,
            Goal::None,
            0.0,
        );
    }
    Ok(())
}

async fn vm(
    core: &AgentCore,
    caps: &isolab_agent::core::Capabilities,
    opts: &Options,
) -> anyhow::Result<()> {
    let backend = core
        .backends()
        .iter()
        .find_map(|b| match b {
            AnyBackend::Vm(v) => Some(v),
            _ => None,
        })
        .context("the agent has no vm backend")?;
    if let Some(s) = caps
        .backends
        .iter()
        .find(|s| s.name == "vm" && !s.available)
    {
        println!("vm: skipped: {}", s.reason);
        return Ok(());
    }
    let accel = match backend.kvm_check().await {
        isolab_backends::vm::accel::KvmCheck::Works { .. } => AccelKind::Kvm,
        isolab_backends::vm::accel::KvmCheck::Unusable { .. } => AccelKind::Tcg,
    };
    let mib = isolab_backends::vm::setup::MIN_GUEST_MIB;
    let platform = vbench::platform(
        mib,
        if accel == AccelKind::Kvm {
            Accel::Kvm
        } else {
            Accel::Tcg
        },
    );
    let (mut agent_ms, mut bare_ms) = (Vec::new(), Vec::new());
    for round in 0..opts.rounds {
        for agent_turn in [round % 2 == 0, round % 2 != 0] {
            if agent_turn {
                let d = vbench::backend_first_sample(backend, &platform)
                    .await
                    .map_err(|e| anyhow::anyhow!("vm through the agent: {e}"))?;
                agent_ms.push(d.as_secs_f64() * 1e3);
            } else {
                let d = vbench::bare_first_sample(backend, mib, accel)
                    .await
                    .map_err(|e| anyhow::anyhow!("bare vm: {e}"))?;
                bare_ms.push(d.as_secs_f64() * 1e3);
            }
        }
        eprintln!("vm: round {}/{} done", round + 1, opts.rounds);
    }
    let (bare, agent) = (median(&bare_ms), median(&agent_ms));
    let accel_name = accel.as_str();
    row(
        &format!("vm boot→first sample {accel_name} {mib} MiB, bare | agent (ms)"),
        bare,
        agent,
        Goal::AtMost(1.05),
        agent / bare,
    );
    let (goal_ms, goal_name) = if accel == AccelKind::Kvm {
        (150.0, "kvm")
    } else {
        (2000.0, "tcg")
    };
    row(
        &format!("vm bare boot {goal_name}, goal | measured (ms)"),
        goal_ms,
        bare,
        Goal::AtMost(goal_ms),
        bare,
    );
    let best = vbench::max_concurrent(backend, &platform, opts.vm_max).await;
    row(
        &format!("vm max concurrent {mib} MiB (kernel needs ≥80), bound | reached (VMs)"),
        f64::from(opts.vm_max),
        f64::from(best),
        Goal::AtLeast(32.0),
        f64::from(best),
    );
    Ok(())
}

async fn spectrum_rows(core: &AgentCore, opts: &Options) -> anyhow::Result<()> {
    let s = spectrum::spectrum(core, &[], opts.rounds, opts.duration)
        .await
        .map_err(|e| anyhow::anyhow!("spectrum: {e}"))?;
    for (label, why) in &s.skipped {
        println!("spectrum {label}: skipped: {why}");
    }
    let Some(native) = s.rows.iter().find(|r| r.label == "native").cloned() else {
        bail!("spectrum: native did not run, nothing to compare with");
    };
    for r in &s.rows {
        let label = &r.label;
        row(
            &format!("spectrum {label} start→first sample, native | it (ms)"),
            native.start_ms,
            r.start_ms,
            Goal::None,
            0.0,
        );
    }
    for r in &s.rows {
        let label = &r.label;
        row(
            &format!("spectrum {label} syscall, native | it (ns/call)"),
            native.syscall_ns,
            r.syscall_ns,
            Goal::None,
            0.0,
        );
    }
    for r in &s.rows {
        let label = &r.label;
        row(
            &format!("spectrum {label} fork_exit, native | it (us/process)"),
            native.fork_exit_us,
            r.fork_exit_us,
            Goal::None,
            0.0,
        );
    }
    Ok(())
}
