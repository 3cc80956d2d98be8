//! `isolab-agent`: the per-host agent. Serves `isolab.v1.Agent` and the gRPC health service on
//! `--listen` until SIGINT or SIGTERM, then drains. With `--tls-dir` it serves mutual TLS on any
//! address (its identity is the one `agent-<name>` certificate in the directory); without, plain
//! text on loopback only. With `--announce nats://…` it publishes heartbeats for coordinators
//! that discover agents (see `isolab_agent::announce`). With `--metrics-listen ADDR` it serves
//! Prometheus metrics on `GET /metrics`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use isolab_agent::announce::{self, Heartbeat};
use isolab_agent::budget::BudgetConfig;
use isolab_agent::config::{AgentConfig, DEFAULT_CEILING_PIDS};
use isolab_agent::core::AgentCore;
use isolab_agent::serve::{DEFAULT_LISTEN, serve_core_tls};
use isolab_backends::container::RuntimeTable;
use isolab_model::units::{Bytes, HumanDuration};
use isolab_model::validate::{self, ParamBounds};
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
    /// More labels from a file of `key=value` lines (`#` comments and blank lines ignored), such
    /// as the one the Kubernetes DaemonSet's init container writes from the node's labels;
    /// `--labels` wins on a key in both.
    #[arg(long, value_name = "FILE")]
    labels_file: Option<PathBuf>,
    /// The `isolab-workload` binary (default: found beside this binary or in the build tree).
    #[arg(long, env = "ISOLAB_WORKLOAD_BIN")]
    workload_bin: Option<PathBuf>,
    /// Hard limit on processes of every instance.
    #[arg(long, default_value_t = DEFAULT_CEILING_PIDS)]
    ceiling_pids: u64,
    /// Hard memory limit of every instance, e.g. `4GiB` (default: half of the host's memory).
    #[arg(long)]
    ceiling_memory: Option<Bytes>,
    /// Most memory the limits of all running instances may sum to, e.g. `48GiB` (default: the
    /// host's RAM, or the pod's memory limit when lower, less max(1GiB, 10%)). Also the memory
    /// limit of the agent's own cgroup.
    #[arg(long, value_name = "SIZE")]
    budget_memory: Option<Bytes>,
    /// Most processes the `pids.max` of all running instances may sum to (default: the smallest
    /// of kernel.pid_max, kernel.threads-max and the pod's pids limit, less max(1024, 10%)).
    /// Also the `pids.max` of the agent's own cgroup.
    #[arg(long, value_name = "N")]
    budget_pids: Option<u64>,
    /// Most scratch all running instances may have, `/tmp` tmpfs sizes and VM disk images
    /// together, e.g. `100GiB` (default: the free space of the temporary directory's file
    /// system at start, less max(1GiB, 10%)). In Kubernetes, set it under the state volume's
    /// `sizeLimit` (the kubelet evicts the pod beyond it; `statvfs` sees the node's disk).
    #[arg(long, value_name = "SIZE", env = "ISOLAB_BUDGET_DISK")]
    budget_disk: Option<Bytes>,
    /// Most trials running at once; one more is refused (RESOURCE_EXHAUSTED). HTTP/2 streams per
    /// connection are capped at this plus 32.
    #[arg(long, default_value_t = isolab_agent::budget::DEFAULT_MAX_TRIALS)]
    max_trials: usize,
    /// Most instances running at once, all trials together.
    #[arg(long, default_value_t = isolab_agent::budget::DEFAULT_MAX_INSTANCES)]
    max_instances: usize,
    /// Size of the `/tmp` tmpfs of every runc, Docker and LXC instance (counted in
    /// `--budget-disk`).
    #[arg(long, value_name = "SIZE", default_value = "256MiB")]
    tmp_size: Bytes,
    /// How long running trials get to end after SIGINT/SIGTERM.
    #[arg(long, default_value = "10s")]
    grace: HumanDuration,
    /// Largest `size`/`step` workload parameter a trial may ask for.
    #[arg(long, default_value = "16GiB")]
    max_size: Bytes,
    /// Most `threads`/`jobs` of one instance.
    #[arg(long, default_value_t = validate::DEFAULT_MAX_THREADS)]
    max_threads: u64,
    /// Most `connections` of one instance.
    #[arg(long, default_value_t = validate::DEFAULT_MAX_CONNECTIONS)]
    max_connections: u64,
    /// Largest `max_forks` of a fork bomb.
    #[arg(long, default_value_t = validate::DEFAULT_MAX_FORKS)]
    max_forks: u64,
    /// Longest trial duration (and `duration`/`interval` parameter).
    #[arg(long, default_value = "1h")]
    max_duration: HumanDuration,
    /// Longest trial timeout.
    #[arg(long, default_value = "4h")]
    max_timeout: HumanDuration,
    /// An OCI runtime trials may name, `NAME=/abs/path` (repeatable; e.g.
    /// `--runtime runsc=/usr/bin/runsc`). Trials name runtimes, never paths. Default: `runc`,
    /// `crun`, `youki` and `runsc` as found on `PATH` and in the sbin directories at start.
    #[arg(long = "runtime", value_name = "NAME=PATH")]
    runtimes: Vec<String>,
    /// A global argument the operator approves for every call of runtime NAME, `NAME=ARG`
    /// (repeatable; e.g. `--runtime-arg runsc=--platform=systrap`). Pipelines may only pass the
    /// runtime's allowlisted `runtime_args`.
    #[arg(
        long = "runtime-arg",
        value_name = "NAME=ARG",
        allow_hyphen_values = true
    )]
    runtime_args: Vec<String>,
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
    /// Directory for everything the agent creates on disk (runtime state, bundles, scratch
    /// mounts, VM working directories), never the temp dir. Created mode 0700 if missing; the
    /// agent refuses to start unless it is a real directory owned by its uid and writable by
    /// nobody else. Default: `$STATE_DIRECTORY` (the first, as systemd's `StateDirectory=` sets
    /// it), else /var/lib/isolab.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Prefix of the agent's cgroup directory and of every name it gives (`<prefix>-<pid>.<start
    /// ticks>-<n>`); at start the agent removes what dead agents with the same prefix left, and
    /// nothing else. Two agents on one host need different prefixes only to keep their
    /// leftovers apart.
    #[arg(long, default_value = isolab_agent::config::DEFAULT_CGROUP_PREFIX, value_parser = parse_prefix)]
    cgroup_prefix: String,
    /// Serve Prometheus metrics (text format, plain HTTP) on `GET /metrics` at this address, e.g.
    /// `0.0.0.0:9464`: trials running, finished by status, trial durations, instances running,
    /// memory limits committed, the host budget, events dropped for slow clients. Counts only,
    /// no names.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
}

fn parse_prefix(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}`: expected 1 to 64 of a-z, 0-9 and `-`, not starting or ending with `-`"
        ))
    }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("label `{s}` is not `key=value`")),
    }
}

/// The labels of a `--labels-file`: `key=value` per line; an error names the file and line.
fn read_labels_file(path: &std::path::Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--labels-file: cannot read {}", path.display()))?;
    let mut labels = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) =
            parse_label(line).map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))?;
        labels.insert(k, v);
    }
    Ok(labels)
}

/// The state directory without `--state-dir`: the first of `$STATE_DIRECTORY` (systemd sets a
/// colon-separated list), else [`isolab_host::state_dir::DEFAULT_STATE_DIR`].
fn state_dir_default(env: Option<&std::ffi::OsStr>) -> PathBuf {
    env.and_then(|v| v.to_str())
        .and_then(|v| v.split(':').find(|s| !s.is_empty()))
        .map_or_else(
            || PathBuf::from(isolab_host::state_dir::DEFAULT_STATE_DIR),
            PathBuf::from,
        )
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
    let telemetry = isolab_telemetry::init("isolab-agent", "ISOLAB_LOG", "info")?;
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
    if cli.max_trials == 0 || cli.max_instances == 0 {
        bail!("--max-trials and --max-instances must be at least 1");
    }
    let mut labels = match &cli.labels_file {
        Some(path) => read_labels_file(path)?,
        None => BTreeMap::new(),
    };
    labels.extend(cli.labels);
    let state_dir = cli
        .state_dir
        .clone()
        .unwrap_or_else(|| state_dir_default(std::env::var_os("STATE_DIRECTORY").as_deref()));
    // Refuse to start on an unsafe state directory, before anything is made.
    let state = isolab_host::state_dir::StateDir::open(&state_dir)
        .context("--state-dir (or $STATE_DIRECTORY)")?;
    tracing::info!(dir = %state.root().display(), "state directory");
    let runtimes = RuntimeTable::from_flags(&cli.runtimes, &cli.runtime_args)?;
    tracing::info!(runtimes = %runtimes.known(), "OCI runtimes trials may name");
    let config = AgentConfig {
        runtimes,
        workload_bin: cli.workload_bin,
        labels,
        ceiling_pids: cli.ceiling_pids,
        ceiling_memory_bytes: cli.ceiling_memory.map(Bytes::get),
        grace: cli.grace.0,
        hostname: cli.hostname,
        bounds: ParamBounds {
            max_size_bytes: cli.max_size.get(),
            max_threads: cli.max_threads,
            max_connections: cli.max_connections,
            max_forks: cli.max_forks,
            max_duration: cli.max_duration.0,
            max_timeout: cli.max_timeout.0,
        },
        budget: BudgetConfig {
            memory_bytes: cli.budget_memory.map(Bytes::get),
            pids: cli.budget_pids,
            disk_bytes: cli.budget_disk.map(Bytes::get),
            max_trials: cli.max_trials,
            max_instances: cli.max_instances,
            tmp_bytes: cli.tmp_size.get(),
        },
        vm: isolab_backends::vm::VmConfig {
            kernel: cli.kernel,
            modules: cli.modules,
            qemu: cli.qemu,
            ..isolab_backends::vm::VmConfig::default()
        },
        state_dir,
        cgroup_prefix: cli.cgroup_prefix,
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
    let metrics = match cli.metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--metrics-listen: bind {addr}"))?;
            tracing::info!(%addr, "serving metrics on /metrics");
            Some(tokio::spawn(isolab_telemetry::metrics::serve(
                listener,
                core.metrics().clone(),
                stop.clone().cancelled_owned(),
            )))
        }
        None => None,
    };
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
    if let Some(m) = metrics {
        match m.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("{e}"),
            Err(e) => tracing::warn!("metrics task: {e}"),
        }
    }
    telemetry.shutdown();
    served?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `command: [isolab-agent, …]` (with its `args`) in the YAML files under `k8s/`, with
    /// `$(VAR)` references expanded the way the kubelet does, to sample values.
    fn manifest_invocations() -> Vec<(PathBuf, Vec<String>)> {
        fn walk(
            v: &serde_json::Value,
            file: &std::path::Path,
            out: &mut Vec<(PathBuf, Vec<String>)>,
        ) {
            match v {
                serde_json::Value::Object(m) => {
                    let cmd = m.get("command").and_then(|c| c.as_array());
                    if let Some(cmd) =
                        cmd.filter(|c| c.first().and_then(|c| c.as_str()) == Some("isolab-agent"))
                    {
                        let args = m
                            .get("args")
                            .and_then(|a| a.as_array())
                            .cloned()
                            .unwrap_or_default();
                        let argv = cmd
                            .iter()
                            .chain(&args)
                            .map(|a| expand(a.as_str().expect("string argument")))
                            .collect();
                        out.push((file.to_owned(), argv));
                    }
                    m.values().for_each(|v| walk(v, file, out));
                }
                serde_json::Value::Array(s) => s.iter().for_each(|v| walk(v, file, out)),
                _ => {}
            }
        }
        fn expand(arg: &str) -> String {
            let mut s = arg.to_owned();
            for (var, sample) in [
                ("POD_IP", "10.244.1.7"),
                ("NODE_NAME", "node-1"),
                ("POD_NAME", "isolab-agent-x7k2p"),
            ] {
                s = s.replace(&format!("$({var})"), sample);
            }
            assert!(!s.contains("$("), "unknown variable in `{arg}`");
            s
        }
        let mut out = Vec::new();
        let mut dirs = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../k8s")];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).expect("read k8s/") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "yaml") {
                    let text = std::fs::read_to_string(&p).expect("read manifest");
                    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
                        .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                    for v in &docs {
                        walk(v, &p, &mut out);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn every_agent_command_line_in_the_manifests_parses() {
        let found = manifest_invocations();
        assert!(!found.is_empty(), "no isolab-agent command under k8s/");
        for (file, argv) in &found {
            let cli = Cli::try_parse_from(argv)
                .unwrap_or_else(|e| panic!("{}: {argv:?}: {e}", file.display()));
            assert!(
                cli.announce.is_some(),
                "{}: the DaemonSet's agents announce themselves",
                file.display()
            );
        }
    }

    #[test]
    fn budget_flags_take_sizes_with_units() {
        let cli = Cli::try_parse_from([
            "isolab-agent",
            "--budget-memory",
            "48GiB",
            "--budget-pids",
            "20000",
            "--budget-disk",
            "100GiB",
            "--max-trials",
            "4",
            "--max-instances",
            "512",
            "--tmp-size",
            "64MiB",
        ])
        .expect("parses");
        assert_eq!(cli.budget_memory.map(Bytes::get), Some(48 << 30));
        assert_eq!(cli.budget_pids, Some(20000));
        assert_eq!(cli.budget_disk.map(Bytes::get), Some(100 << 30));
        assert_eq!((cli.max_trials, cli.max_instances), (4, 512));
        assert_eq!(cli.tmp_size.get(), 64 << 20);
        let defaults = Cli::try_parse_from(["isolab-agent"]).expect("parses");
        assert_eq!(defaults.budget_memory, None);
        assert_eq!(
            defaults.tmp_size.get(),
            isolab_agent::budget::DEFAULT_TMP_BYTES
        );
        let e = Cli::try_parse_from(["isolab-agent", "--budget-memory", "lots"])
            .expect_err("not a size")
            .to_string();
        assert!(e.contains("--budget-memory"), "{e}");
    }

    #[test]
    fn the_state_dir_defaults_to_systemds_then_var_lib() {
        assert_eq!(state_dir_default(None), PathBuf::from("/var/lib/isolab"));
        assert_eq!(
            state_dir_default(Some("/var/lib/a:/var/lib/b".as_ref())),
            PathBuf::from("/var/lib/a")
        );
        assert_eq!(
            state_dir_default(Some("".as_ref())),
            PathBuf::from("/var/lib/isolab")
        );
        let cli = Cli::try_parse_from(["isolab-agent", "--state-dir", "/srv/isolab"]).unwrap();
        assert_eq!(cli.state_dir, Some(PathBuf::from("/srv/isolab")));
        assert_eq!(cli.cgroup_prefix, "isolab-agent");
        let cli = Cli::try_parse_from(["isolab-agent", "--cgroup-prefix", "lab-2"]).unwrap();
        assert_eq!(cli.cgroup_prefix, "lab-2");
        for bad in ["", "A", "a/b", "-a", "a-", "a.b"] {
            let arg = format!("--cgroup-prefix={bad}");
            let e = Cli::try_parse_from(["isolab-agent", arg.as_str()]).unwrap_err();
            assert!(e.to_string().contains("--cgroup-prefix"), "{bad}: {e}");
        }
    }

    #[test]
    fn runtime_flags_make_the_table() {
        let cli = Cli::try_parse_from([
            "isolab-agent",
            "--runtime",
            "gvisor=/bin/sh",
            "--runtime-arg",
            "gvisor=--platform=systrap",
        ])
        .expect("flags");
        let t = RuntimeTable::from_flags(&cli.runtimes, &cli.runtime_args).expect("table");
        let e = t.get("gvisor").expect("gvisor");
        assert_eq!(e.args, ["--platform=systrap"]);
        assert!(
            t.get("runc").is_err(),
            "given runtimes replace the defaults"
        );
        let cli = Cli::try_parse_from(["isolab-agent", "--runtime", "runc=runc"]).expect("flags");
        let e = RuntimeTable::from_flags(&cli.runtimes, &cli.runtime_args).unwrap_err();
        assert!(e.to_string().contains("not an absolute path"), "{e}");
    }

    #[test]
    fn labels_file_lines_and_errors() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("labels");
        std::fs::write(&path, "# from the node\nrack=r1\n\nzone = z1\n").expect("write");
        let labels = read_labels_file(&path).expect("labels");
        assert_eq!(labels.get("rack").map(String::as_str), Some("r1"));
        assert_eq!(labels.get("zone").map(String::as_str), Some("z1"));
        std::fs::write(&path, "rack=r1\nzone\n").expect("write");
        let e = read_labels_file(&path).expect_err("bad line").to_string();
        assert!(e.contains(&format!("{}:2:", path.display())), "{e}");
    }
}
