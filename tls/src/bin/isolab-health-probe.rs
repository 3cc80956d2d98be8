//! `isolab-health-probe`: one call of the standard gRPC health service over mutual TLS, for
//! Kubernetes exec probes (the kubelet's built-in `grpc:` probe cannot present a client
//! certificate, and isolab's servers admit no client without one).
//!
//! ```text
//! isolab-health-probe --addr 127.0.0.1:7411 --tls-dir /etc/isolab/tls
//! ```
//!
//! Exit status: 0 when the service answers SERVING; 1 when it answers anything else or cannot be
//! reached; 2 on a usage error or an unusable TLS directory.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// One gRPC health check over mutual TLS.
#[derive(Debug, Parser)]
#[command(name = "isolab-health-probe", version)]
struct Args {
    /// Address of the server, `HOST:PORT`.
    #[arg(long)]
    addr: String,
    /// TLS directory made by `isolab certs init` (or a Secret with the same file names).
    #[arg(long)]
    tls_dir: PathBuf,
    /// Identity to present (file stem: `health`, `coordinator`, `client`); by default `health`
    /// when the directory holds it, else the only certificate besides `ca.pem`.
    #[arg(long)]
    identity: Option<String>,
    /// Name the server's certificate must carry.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Health service to ask about; empty means the server as a whole.
    #[arg(long, default_value = "")]
    service: String,
    /// Give up after this long, connecting included.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let identity = match args.identity.clone() {
        Some(identity) => identity,
        None if isolab_tls::layout::cert_path(&args.tls_dir, isolab_tls::layout::HEALTH)
            .exists() =>
        {
            isolab_tls::layout::HEALTH.to_owned()
        }
        None => match isolab_tls::find_identity(&args.tls_dir, "") {
            Ok(identity) => identity,
            Err(e) => return fail(2, &e),
        },
    };
    let tls = match isolab_tls::client_tls(&args.tls_dir, &identity, &args.server_name) {
        Ok(tls) => tls,
        Err(e) => return fail(2, &e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(2, &e),
    };
    let timeout = Duration::from_millis(args.timeout_ms);
    let answer = runtime.block_on(async {
        let endpoint = Endpoint::from_shared(format!("https://{}", args.addr))
            .map_err(|e| e.to_string())?
            .tls_config(tls)
            .map_err(|e| chain(&e))?
            .connect_timeout(timeout)
            .timeout(timeout);
        let call = async {
            let channel = endpoint.connect().await.map_err(|e| chain(&e))?;
            let request = HealthCheckRequest {
                service: args.service.clone(),
            };
            let response = HealthClient::new(channel)
                .check(request)
                .await
                .map_err(|e| chain(&e))?;
            Ok::<_, String>(response.into_inner().status)
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))?
    });
    match answer {
        Ok(status) if status == ServingStatus::Serving as i32 => {
            println!("{}: SERVING", args.addr);
            ExitCode::SUCCESS
        }
        Ok(status) => {
            let name = ServingStatus::try_from(status).map_or("UNKNOWN", |s| s.as_str_name());
            eprintln!("{}: {name}", args.addr);
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("{}: {e}", args.addr);
            ExitCode::from(1)
        }
    }
}

fn fail(code: u8, e: &dyn std::error::Error) -> ExitCode {
    eprintln!("isolab-health-probe: {}", chain(e));
    ExitCode::from(code)
}

/// An error and its sources, `outer: inner: …`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
