//! `isolab-agent`: the per-host agent. Serves `isolab.v1.Agent` and the gRPC health service on
//! `--listen` until SIGINT or SIGTERM, then drains. With `--tls-dir` it serves mutual TLS on any
//! address (its identity is the one `agent-<name>` certificate in the directory); without, plain
//! text on loopback only. With `--announce nats://…` it publishes heartbeats for coordinators
//! that discover agents (see `isolab_agent::announce`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use isolab_agent::announce::{self, Heartbeat};
use isolab_agent::config::{AgentConfig, DEFAULT_CEILING_PIDS};
use isolab_agent::core::AgentCore;
use isolab_agent::serve::{DEFAULT_LISTEN, serve_core_tls};
use isolab_model::units::{Bytes, HumanDuration};
use tokio_util::sync::CancellationToken;

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
    /// Announce this agent on NATS (`nats://HOST:PORT`): a heartbeat with its address, labels and
    /// platforms on `isolab.agent.<name>.heartbeat`, for coordinators run with `--discover`.
    #[arg(long, value_name = "URL")]
    announce: Option<String>,
    /// Time between two heartbeats.
    #[arg(long, default_value = "2s", requires = "announce")]
    heartbeat_interval: HumanDuration,
    /// The name announced (default: the host name).
    #[arg(long, requires = "announce")]
    name: Option<String>,
    /// The gRPC address announced (default: `http(s)://<listen address>`, the host name in place
    /// of an unspecified address).
    #[arg(long, value_name = "URL", requires = "announce")]
    advertise: Option<String>,
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
    let telemetry = isolab_agent::telemetry::init("isolab-agent", "RUST_LOG", "info")?;
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
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown_signal().await;
            stop.cancel();
        }
    });
    let core = AgentCore::new(config).await;
    let announcer = match &cli.announce {
        Some(url) => {
            let caps = core.capabilities().await;
            let name = cli
                .name
                .clone()
                .unwrap_or_else(|| caps.host.hostname.clone());
            let address = cli.advertise.clone().unwrap_or_else(|| {
                let scheme = if tls.is_some() { "https" } else { "http" };
                let host = if cli.listen.ip().is_unspecified() {
                    caps.host.hostname.clone()
                } else {
                    cli.listen.ip().to_string()
                };
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host
                };
                format!("{scheme}://{host}:{}", cli.listen.port())
            });
            let interval = cli.heartbeat_interval.0;
            let heartbeat = Heartbeat::from_capabilities(&name, &address, &caps, interval);
            let client = announce::connect(url, &name).await?;
            Some(tokio::spawn(announce::announce(
                client,
                heartbeat,
                interval,
                stop.clone().cancelled_owned(),
            )))
        }
        None => None,
    };
    let served = serve_core_tls(core, listener, tls, stop.clone().cancelled_owned()).await;
    stop.cancel();
    if let Some(a) = announcer {
        match a.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("{e}"),
            Err(e) => tracing::warn!("announcer task: {e}"),
        }
    }
    telemetry.shutdown();
    served?;
    Ok(())
}
