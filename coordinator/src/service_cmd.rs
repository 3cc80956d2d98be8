//! `isolab serve`, `isolab submit` and `isolab watch`: the command-line edges of the
//! coordinator service and the event bus.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use isolab_coordinator::client::ClientTls;
use isolab_coordinator::events::{EventBus, EventKind, NatsWatch, Render, RunEvent};
use isolab_coordinator::service::client::ServiceClient;
use isolab_coordinator::service::core::{ServiceConfig, ServiceCore, SubmitRequest};
use isolab_model::manifest::RunStatus;

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
#[derive(Debug)]
pub(crate) struct ServeArgs {
    pub(crate) listen: SocketAddr,
    pub(crate) results: PathBuf,
    pub(crate) events: Option<String>,
    pub(crate) agents: Vec<String>,
    pub(crate) inventory: Option<PathBuf>,
    pub(crate) tls_dir: Option<PathBuf>,
    pub(crate) allow_plaintext: bool,
    pub(crate) drain_timeout: Duration,
}

pub(crate) async fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let tls = match &a.tls_dir {
        Some(dir) => Some(isolab_tls::server_tls(
            dir,
            isolab_tls::layout::COORDINATOR,
        )?),
        None => None,
    };
    let default_listen =
        a.listen.to_string() == isolab_coordinator::service::client::DEFAULT_SERVER;
    let bus = EventBus::with_memory(a.events.as_deref())?;
    std::fs::create_dir_all(&a.results)
        .with_context(|| format!("cannot create {}", a.results.display()))?;
    let core = ServiceCore::new(ServiceConfig {
        results: a.results,
        agents: a.agents,
        inventory: a.inventory,
        tls: a.tls_dir.map(ClientTls::coordinator),
        bus,
    });
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("bind {}", a.listen))?;
    let addr = listener.local_addr()?;
    // Scripts and tests read the address (the port may have been 0) from this line.
    println!("listening on {addr}");
    isolab_coordinator::service::grpc::serve(
        core,
        listener,
        tls,
        a.allow_plaintext || default_listen,
        shutdown_signal(),
        a.drain_timeout,
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// Options of `isolab submit`.
#[derive(Debug)]
pub(crate) struct SubmitArgs {
    pub(crate) file: PathBuf,
    pub(crate) server: String,
    pub(crate) tls: Option<ClientTls>,
    pub(crate) profile: Option<String>,
    pub(crate) sets: Vec<String>,
    pub(crate) only: Option<String>,
    pub(crate) watch: bool,
    pub(crate) render: Render,
}

pub(crate) async fn submit(a: SubmitArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("cannot read {}", a.file.display()))?;
    let client = ServiceClient::connect(&a.server, a.tls.as_ref()).await?;
    let submitted = match client
        .submit(&SubmitRequest {
            pipeline_yaml: text,
            file_name: a.file.display().to_string(),
            profile: a.profile,
            sets: a.sets,
            only: a.only,
        })
        .await
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(1));
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
    watch_server(&client, Some(&submitted.run_id), a.render, false).await
}

/// Options of `isolab watch`.
#[derive(Debug)]
pub(crate) struct WatchArgs {
    pub(crate) run_id: Option<String>,
    pub(crate) events: Option<String>,
    pub(crate) server: Option<String>,
    pub(crate) tls: Option<ClientTls>,
    pub(crate) render: Render,
    pub(crate) follow: bool,
}

pub(crate) async fn watch(a: WatchArgs) -> anyhow::Result<ExitCode> {
    if let Some(server) = &a.server {
        let client = ServiceClient::connect(server, a.tls.as_ref()).await?;
        return watch_server(&client, a.run_id.as_deref(), a.render, a.follow).await;
    }
    let Some(url) = a.events else {
        bail!("give --events nats://HOST:PORT or --server ADDR");
    };
    let mut w = NatsWatch::open(&url, a.run_id.as_deref()).await?;
    match w.run_id() {
        Some(r) => eprintln!("watching {r}"),
        None => eprintln!("no run on the stream yet; waiting for the next one"),
    }
    let mut last = None;
    while let Some(ev) = w.next().await? {
        if let Some(code) = show(&ev, a.render, a.follow, &mut last) {
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

/// 0 when the run finished ok, 1 otherwise (failed, interrupted, or the stream ended first).
fn exit_code(status: Option<RunStatus>) -> ExitCode {
    if status == Some(RunStatus::Ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
