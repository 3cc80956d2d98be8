//! `isolab-agent`: the per-host agent. Serves `isolab.v1.Agent` and the gRPC health service on
//! `--listen` until SIGINT or SIGTERM, then drains. With `--tls-dir` it serves mutual TLS on any
//! address (its identity is the one `agent-<name>` certificate in the directory); without, plain
//! text on loopback only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use isolab_agent::config::{AgentConfig, DEFAULT_CEILING_PIDS};
use isolab_agent::serve::{DEFAULT_LISTEN, serve_tls};
use isolab_model::units::{Bytes, HumanDuration};

/// The isolab per-host agent: runs trials of allowlisted workloads for a coordinator.
#[derive(Debug, Parser)]
#[command(name = "isolab-agent", version, about)]
struct Cli {
    /// Address to serve gRPC on; anything but loopback needs TLS.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Directory with the CA and this agent's `agent-<name>` certificate and key (`isolab certs
    /// init`): serve mutual TLS, requiring clients signed by the same CA.
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// Allow plain text on a loopback address other than the default one.
    #[arg(long)]
    allow_plaintext: bool,
    /// Labels reported to the coordinator, `key=value` separated by commas (`rack=r1,zone=a`).
    #[arg(long, value_delimiter = ',', value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// The `isolab-workload` binary (default: found beside this binary or in the build tree).
    #[arg(long, env = "ISOLAB_WORKLOAD_BIN")]
    workload_bin: Option<PathBuf>,
    /// Hard limit on processes of every instance.
    #[arg(long, default_value_t = DEFAULT_CEILING_PIDS)]
    ceiling_pids: u64,
    /// Hard memory limit of every instance, e.g. `4GiB` (default: half of the host's memory).
    #[arg(long)]
    ceiling_memory: Option<Bytes>,
    /// How long running trials get to end after SIGINT/SIGTERM.
    #[arg(long, default_value = "10s")]
    grace: HumanDuration,
    /// Host name to report (default: the kernel's).
    #[arg(long)]
    hostname: Option<String>,
    /// Guest kernel for the vm backend: a `vmlinuz`, or a directory holding one
    /// (default: /var/cache/isolab/kernel, filled by ./bootstrap).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Directory of the guest kernel's `.ko` modules (default: `modules/` beside the kernel).
    #[arg(long)]
    modules: Option<PathBuf>,
    /// QEMU binary for the vm backend (default: qemu-system-x86_64 in PATH).
    #[arg(long)]
    qemu: Option<PathBuf>,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("label `{s}` is not `key=value`")),
    }
}

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let default_listen = cli.listen.to_string() == DEFAULT_LISTEN;
    isolab_tls::check_listen(
        cli.listen,
        cli.tls_dir.is_some(),
        cli.allow_plaintext || default_listen,
    )?;
    let tls = match &cli.tls_dir {
        Some(dir) => {
            if !dir.is_dir() {
                bail!("--tls-dir {} is not a directory", dir.display());
            }
            let identity = isolab_tls::find_agent_identity(dir)?;
            tracing::info!(identity, dir = %dir.display(), "serving mutual TLS");
            Some(isolab_tls::server_tls(dir, &identity)?)
        }
        None => None,
    };
    let config = AgentConfig {
        workload_bin: cli.workload_bin,
        labels: cli.labels.into_iter().collect::<BTreeMap<_, _>>(),
        ceiling_pids: cli.ceiling_pids,
        ceiling_memory_bytes: cli.ceiling_memory.map(Bytes::get),
        grace: cli.grace.0,
        hostname: cli.hostname,
        vm: isolab_agent::vm::VmConfig {
            kernel: cli.kernel,
            modules: cli.modules,
            qemu: cli.qemu,
            ..isolab_agent::vm::VmConfig::default()
        },
        ..AgentConfig::default()
    };
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("bind {}", cli.listen))?;
    serve_tls(config, listener, tls, shutdown_signal()).await?;
    Ok(())
}
