//! `isolab serve`, `isolab submit` and `isolab watch`: the command-line edges of the
//! coordinator service and the event bus.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use isolab_coordinator::client::ClientTls;
use isolab_coordinator::events::{EventBus, EventKind, NatsWatch, Render, RunEvent};
use isolab_coordinator::service::client::{DEFAULT_SERVER, ServiceClient, ServiceClientError};
use isolab_coordinator::service::core::{ServiceConfig, ServiceCore, SubmitRequest};
use isolab_model::manifest::RunStatus;
use isolab_model::units::HumanDuration;

use crate::cli::{EXIT_ERROR, EXIT_TRIALS_FAILED};

/// Resolves on the first SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                _ = term.recv() => tracing::info!("SIGTERM received"),
            }
        }
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Options of `isolab serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to serve gRPC on; anything but loopback needs --tls-dir.
    #[arg(long, default_value = DEFAULT_SERVER)]
    listen: SocketAddr,
    /// Results directory.
    #[arg(long, default_value = "results")]
    results: PathBuf,
    /// Also publish events on NATS JetStream (`nats://HOST:PORT`).
    #[arg(long, value_name = "URL")]
    events: Option<String>,
    /// Agent address (repeatable); none → an embedded agent per run.
    #[arg(long = "agent", value_name = "URL")]
    agents: Vec<String>,
    /// Agents with labels for placement.
    #[arg(long, value_name = "FILE")]
    inventory: Option<PathBuf>,
    /// Discover agents announced on NATS (`isolab-agent --announce`), e.g. nats://nats:4222:
    /// each run uses the agents alive when it starts.
    #[arg(long, value_name = "URL")]
    discover: Option<String>,
    /// Heartbeats an announced agent may miss before it is dropped.
    #[arg(long, default_value_t = isolab_coordinator::discover::DEFAULT_MISSED_HEARTBEATS, requires = "discover")]
    missed_heartbeats: u32,
    /// Mutual TLS with the `coordinator` identity of this directory, towards clients and
    /// agents; clients must present a certificate of the same CA.
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<PathBuf>,
    /// The name the agents' certificates must carry (default: the host of each address), e.g.
    /// the one name all agent pods share when they are dialled at their pod IPs.
    #[arg(long, value_name = "NAME", requires = "tls_dir")]
    tls_domain: Option<String>,
    /// Allow plain text on a loopback address other than the default one.
    #[arg(long)]
    allow_plaintext: bool,
    /// On SIGTERM/SIGINT, how long running trials get to finish before they are cancelled.
    #[arg(long, default_value = "60s")]
    drain_timeout: HumanDuration,
    /// Serve Prometheus metrics (text format, plain HTTP) on `GET /metrics` at this address, e.g.
    /// `0.0.0.0:9464`: trial attempts running, finished by status, durations, events dropped.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
}

/// How `isolab submit --watch` and `isolab watch` print events.
#[derive(Debug, Clone, Copy, clap::Args)]
pub(crate) struct RenderArgs {
    /// Include live samples.
    #[arg(long)]
    samples: bool,
    /// Print events as JSON lines.
    #[arg(long)]
    json: bool,
}

impl RenderArgs {
    fn render(self) -> Render {
        Render {
            json: self.json,
            samples: self.samples,
        }
    }
}

/// The operator's `client` identity of a TLS directory.
fn client_tls(dir: Option<PathBuf>) -> Option<ClientTls> {
    dir.map(|dir| ClientTls {
        dir,
        identity: isolab_tls::layout::CLIENT.to_owned(),
        domain: None,
    })
}

pub(crate) async fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let tls = match &a.tls_dir {
        Some(dir) => Some(isolab_tls::server_tls(
            dir,
            isolab_tls::layout::COORDINATOR,
        )?),
        None => None,
    };
    let default_listen = a.listen.to_string() == DEFAULT_SERVER;
    let bus = EventBus::with_memory(a.events.as_deref())?;
    std::fs::create_dir_all(&a.results)
        .with_context(|| format!("cannot create {}", a.results.display()))?;
    let core = ServiceCore::new(ServiceConfig {
        results: a.results,
        agents: a.agents,
        inventory: a.inventory,
        discover: a.discover,
        missed_heartbeats: a.missed_heartbeats,
        tls: a
            .tls_dir
            .map(|d| ClientTls::coordinator(d).with_domain(a.tls_domain)),
        bus: bus.clone(),
    });
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("bind {}", a.listen))?;
    let addr = listener.local_addr()?;
    // Ends the metrics endpoint when the service has drained (dropped at return).
    let (_metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    if let (Some(maddr), Some(memory)) = (a.metrics_listen, bus.memory()) {
        let mlistener = tokio::net::TcpListener::bind(maddr)
            .await
            .with_context(|| format!("--metrics-listen: bind {maddr}"))?;
        tracing::info!(addr = %maddr, "serving metrics on /metrics");
        let metrics = isolab_telemetry::metrics::Metrics::new("isolab_coordinator");
        tokio::spawn(isolab_coordinator::metrics::count(
            memory.subscribe_live(),
            metrics.clone(),
        ));
        tokio::spawn(async move {
            let stopped = async {
                let _ = metrics_stopped.await;
            };
            if let Err(e) = isolab_telemetry::metrics::serve(mlistener, metrics, stopped).await {
                tracing::warn!("{e}");
            }
        });
    }
    // Scripts and tests read the address (the port may have been 0) from this line.
    println!("listening on {addr}");
    isolab_coordinator::service::grpc::serve(
        core,
        listener,
        tls,
        a.allow_plaintext || default_listen,
        shutdown_signal(),
        a.drain_timeout.0,
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// Options of `isolab submit`.
#[derive(Debug, clap::Args)]
pub(crate) struct SubmitArgs {
    /// Pipeline file.
    file: PathBuf,
    #[command(flatten)]
    conn: ConnArgs,
    /// Only trials matching, e.g. `platform=native`.
    #[arg(long)]
    only: Option<String>,
    /// Override a pipeline value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Apply the pipeline's profile NAME.
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,
    /// Then watch the run until it finishes (exit 0 if it finished ok, 3 if trials failed).
    #[arg(long)]
    watch: bool,
    /// Keep trying to reach the service this long (e.g. while it starts), then give up.
    #[arg(long, default_value = "0s")]
    wait: HumanDuration,
    #[command(flatten)]
    render: RenderArgs,
}

/// Connects to the service at `server`, retrying every second for `wait` while it cannot be
/// reached (a Job started beside a coordinator that is still starting).
async fn connect_waiting(
    server: &str,
    tls: Option<&ClientTls>,
    wait: std::time::Duration,
) -> anyhow::Result<ServiceClient> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match ServiceClient::connect(server, tls).await {
            Ok(c) => return Ok(c),
            Err(e @ ServiceClientError::Connect { .. })
                if tokio::time::Instant::now() < deadline =>
            {
                eprintln!("{e}; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

pub(crate) async fn submit(a: SubmitArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("cannot read {}", a.file.display()))?;
    let client = connect_waiting(
        &a.conn.server,
        client_tls(a.conn.tls_dir).as_ref(),
        a.wait.0,
    )
    .await?;
    let submitted = match client
        .submit(&SubmitRequest {
            pipeline_yaml: text,
            file_name: a.file.display().to_string(),
            profile: a.profile,
            sets: a.set,
            only: a.only,
        })
        .await
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(EXIT_ERROR));
        }
    };
    println!("{}", submitted.run_id);
    eprintln!(
        "submitted {}: {} trials, {} runs ahead",
        submitted.run_id, submitted.trials, submitted.queued_ahead
    );
    if !a.watch {
        return Ok(ExitCode::SUCCESS);
    }
    watch_server(&client, Some(&submitted.run_id), a.render.render(), false).await
}

/// Options of `isolab watch`.
#[derive(Debug, clap::Args)]
pub(crate) struct WatchArgs {
    /// The run (default: the newest).
    run_id: Option<String>,
    /// Read events from NATS JetStream (`nats://HOST:PORT`).
    #[arg(long, value_name = "URL")]
    events: Option<String>,
    /// Watch through the coordinator service at ADDR instead (default: `$ISOLAB_SERVER`).
    #[arg(long, value_name = "ADDR", conflicts_with = "events")]
    server: Option<String>,
    /// With --server: mutual TLS with the `client` identity of this directory (default:
    /// `$ISOLAB_TLS_DIR`).
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<PathBuf>,
    #[command(flatten)]
    render: RenderArgs,
    /// Keep going after the run finished.
    #[arg(long)]
    follow: bool,
}

pub(crate) async fn watch(a: WatchArgs) -> anyhow::Result<ExitCode> {
    let env_server = || std::env::var(SERVER_ENV).ok().filter(|s| !s.is_empty());
    let server = a
        .server
        .or_else(|| a.events.is_none().then(env_server).flatten());
    if let Some(server) = &server {
        let tls_dir = a
            .tls_dir
            .or_else(|| std::env::var_os(TLS_DIR_ENV).map(PathBuf::from));
        let client = ServiceClient::connect(server, client_tls(tls_dir).as_ref()).await?;
        return watch_server(&client, a.run_id.as_deref(), a.render.render(), a.follow).await;
    }
    if a.tls_dir.is_some() {
        bail!("--tls-dir applies to --server, not to --events");
    }
    let Some(url) = a.events else {
        bail!("give --events nats://HOST:PORT or --server ADDR (or set {SERVER_ENV})");
    };
    let mut w = NatsWatch::open(&url, a.run_id.as_deref()).await?;
    match w.run_id() {
        Some(r) => eprintln!("watching {r}"),
        None => eprintln!("no run on the stream yet; waiting for the next one"),
    }
    let mut last = None;
    while let Some(ev) = w.next().await? {
        if let Some(code) = show(&ev, a.render.render(), a.follow, &mut last) {
            return Ok(code);
        }
    }
    Ok(exit_code(last))
}

async fn watch_server(
    client: &ServiceClient,
    run_id: Option<&str>,
    render: Render,
    follow: bool,
) -> anyhow::Result<ExitCode> {
    let mut stream = Box::pin(client.watch(run_id, render.samples).await?);
    let mut last = None;
    while let Some(ev) = stream.next().await {
        if let Some(code) = show(&ev?, render, follow, &mut last) {
            return Ok(code);
        }
    }
    Ok(exit_code(last))
}

/// Prints `ev`; the exit code when the watch is over (the run finished and not `follow`).
fn show(
    ev: &RunEvent,
    render: Render,
    follow: bool,
    last: &mut Option<RunStatus>,
) -> Option<ExitCode> {
    if let Some(line) = render.line(ev) {
        println!("{line}");
    }
    if let EventKind::RunFinished { status, .. } = &ev.kind {
        *last = Some(*status);
        if !follow {
            return Some(exit_code(*last));
        }
    }
    None
}

/// 0 when the run finished ok, 3 when trials failed, 1 otherwise (interrupted, or the stream
/// ended first).
fn exit_code(status: Option<RunStatus>) -> ExitCode {
    match status {
        Some(RunStatus::Ok) => ExitCode::SUCCESS,
        Some(RunStatus::Failed) => ExitCode::from(EXIT_TRIALS_FAILED),
        _ => ExitCode::from(EXIT_ERROR),
    }
}

/// Environment variable naming the service when `--server` is not given.
pub(crate) const SERVER_ENV: &str = "ISOLAB_SERVER";
/// Environment variable naming the client's TLS directory when `--tls-dir` is not given.
pub(crate) const TLS_DIR_ENV: &str = "ISOLAB_TLS_DIR";

/// How a client command reaches `isolab serve`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ConnArgs {
    /// The service's address.
    #[arg(long, env = SERVER_ENV, default_value = DEFAULT_SERVER)]
    server: String,
    /// Mutual TLS with the `client` identity of this directory.
    #[arg(long, value_name = "DIR", env = TLS_DIR_ENV)]
    tls_dir: Option<PathBuf>,
}

impl ConnArgs {
    async fn connect(self) -> anyhow::Result<ServiceClient> {
        Ok(ServiceClient::connect(&self.server, client_tls(self.tls_dir).as_ref()).await?)
    }
}

/// Options of `isolab runs list`.
#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

/// `isolab runs list`.
pub(crate) async fn list(a: ListArgs) -> anyhow::Result<ExitCode> {
    let runs = a.conn.connect().await?.list().await?;
    if !a.json {
        println!(
            "{:<44} {:<11} {:>6} {:>6} {:>6} {:>7}  {:<24} PIPELINE",
            "RUN", "STATE", "TRIALS", "OK", "FAILED", "NOT RUN", "SUBMITTED"
        );
    }
    for r in &runs {
        if a.json {
            println!(
                "{}",
                serde_json::json!({
                    "run_id": r.run_id, "state": r.state, "pipeline": r.pipeline,
                    "submitted_at": r.submitted_at, "run_dir": r.run_dir, "trials": r.trials,
                    "ok": r.ok, "failed": r.failed, "not_run": r.not_run, "error": r.error,
                })
            );
        } else {
            println!(
                "{:<44} {:<11} {:>6} {:>6} {:>6} {:>7}  {:<24} {}",
                r.run_id, r.state, r.trials, r.ok, r.failed, r.not_run, r.submitted_at, r.pipeline
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Options of `isolab cancel`.
#[derive(Debug, clap::Args)]
pub(crate) struct CancelArgs {
    /// The run id (`isolab runs list`).
    run_id: String,
    #[command(flatten)]
    conn: ConnArgs,
}

/// `isolab cancel RUN`: prints the run's state afterwards.
pub(crate) async fn cancel(a: CancelArgs) -> anyhow::Result<ExitCode> {
    let state = a.conn.connect().await?.cancel(&a.run_id).await?;
    println!("{} {state}", a.run_id);
    Ok(ExitCode::SUCCESS)
}
