//! `isolab`: validate, plan and run pipelines, and report on their results.
//!
//! Exit codes (see [`cli`]): 0 success, 1 could not run, 2 usage error, 3 some trials failed,
//! 4 a regression found by `compare --fail-on-regression`.

/// mimalloc: the Parquet sink encodes on short-lived threads, and glibc's per-thread arenas hand
/// them freshly trimmed memory (a page fault per 4 KiB, expensive on VMs); see `just bench` sink.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser as _};
use isolab_coordinator::client::ClientTls;
use isolab_coordinator::discover;
use isolab_coordinator::inventory::{self, AgentSlot};
use isolab_coordinator::run::{self, RunError, RunOptions};
use isolab_model::LoadError;
use isolab_model::plan::{self, Filter};

mod cli;
mod export_cmd;
mod extra_cmd;
mod pipe;
mod service_cmd;

use cli::{
    CertsCommand, Cli, Command, EXIT_ERROR, EXIT_REGRESSION, EXIT_TRIALS_FAILED, RunsCommand,
};

fn print_load_error(e: &LoadError) {
    for d in e.diagnostics() {
        eprintln!("{d}");
    }
}

fn main() -> ExitCode {
    pipe::quiet_on_closed_stdout();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    // The OTLP exporter (when OTEL_EXPORTER_OTLP_ENDPOINT is set) needs the runtime.
    let telemetry = {
        let _enter = rt.enter();
        isolab_telemetry::init("isolab", "ISOLAB_LOG", "warn")
    };
    let telemetry = match telemetry {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let code = match real_main(cli, &rt) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    };
    telemetry.shutdown();
    code
}

fn real_main(cli: Cli, rt: &tokio::runtime::Runtime) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate { files } => {
            let mut failed = false;
            for f in &files {
                match isolab_model::load_file(f) {
                    Ok(p) => {
                        let trials = plan::plan(&p);
                        println!(
                            "{}: valid ({} experiments, {} trials)",
                            f.display(),
                            p.experiments.len(),
                            trials.len()
                        );
                    }
                    Err(e) => {
                        print_load_error(&e);
                        failed = true;
                    }
                }
            }
            Ok(if failed {
                ExitCode::from(EXIT_ERROR)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Plan {
            file,
            json,
            only,
            set,
            profile,
            inventory,
            discover,
            missed_heartbeats,
            seed,
        } => {
            let loaded =
                match isolab_model::load::load_file_profile(&file, profile.as_deref(), &set) {
                    Ok(l) => l,
                    Err(e) => {
                        print_load_error(&e);
                        return Ok(ExitCode::from(EXIT_ERROR));
                    }
                };
            let mut trials = plan::plan(&loaded.pipeline);
            if let Some(expr) = &only {
                let f = Filter::parse(expr).map_err(|e| anyhow::anyhow!("--only: {e}"))?;
                trials.retain(|t| f.matches(t));
            }
            let (seed, seed_from) = match (seed, loaded.pipeline.defaults.seed) {
                (Some(s), _) => (s, "--seed"),
                (None, Some(s)) => (s, "defaults.seed"),
                (None, None) => (rand::random(), "drawn now"),
            };
            let trials = plan::arrange(&loaded.pipeline, trials, seed);
            let rounds: Vec<u32> = trials
                .iter()
                .map(|t| plan::round_of(&loaded.pipeline, t))
                .collect();
            let orders: BTreeMap<&str, &str> = loaded
                .pipeline
                .experiments
                .iter()
                .map(|e| (e.name.as_str(), e.trial_order(&loaded.pipeline).as_str()))
                .collect();
            let summary = plan::summarize(&trials);
            let mut slots = Vec::new();
            if let Some(path) = &inventory {
                slots.extend(inventory_slots(path)?);
            }
            if let Some(url) = &discover {
                let announced = rt.block_on(discover::collect(url, missed_heartbeats))?;
                slots.extend(discover::slots(&announced));
            }
            let placed = (inventory.is_some() || discover.is_some())
                .then(|| placement(&slots, &loaded.pipeline, &trials));
            // Each platform as the agent receives it: every default applied, units typed.
            let platforms: BTreeMap<&str, &isolab_model::resolve::ResolvedPlatform> = trials
                .iter()
                .map(|t| (t.platform.as_str(), &t.resolved))
                .collect();
            if json {
                let out = serde_json::json!({
                    "order": { "seed": seed, "seed_from": seed_from, "experiments": orders },
                    "trials": trials,
                    "rounds": rounds,
                    "platforms": platforms,
                    "summary": summary,
                    "placement": placed,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                let modes: Vec<String> = orders.iter().map(|(e, o)| format!("{e}: {o}")).collect();
                println!("order: {} (seed {seed}, {seed_from})", modes.join(", "));
                if seed_from == "drawn now" && orders.values().any(|o| *o == "random") {
                    println!(
                        "       `isolab run` draws its own seed and records it in the manifest; pin one with `--set defaults.seed=N`"
                    );
                }
                print_plan(&trials, &rounds, &summary, placed.as_ref());
                println!();
                for (name, resolved) in &platforms {
                    println!("platform {name}: {}", serde_json::to_string(resolved)?);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&isolab_model::json_schema())?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs {
            command:
                CertsCommand::Init {
                    dir,
                    agents,
                    sans,
                    force,
                },
        } => {
            let overwrite = if force {
                isolab_tls::Overwrite::Force
            } else {
                isolab_tls::Overwrite::Keep
            };
            let pki = isolab_tls::init_dev_pki_with(&dir, &agents, &sans, overwrite)?;
            let mark = |created: bool| if created { "created" } else { "kept" };
            println!("{}  {}", pki.ca_cert.display(), mark(pki.ca_created));
            for id in std::iter::once(&pki.coordinator)
                .chain([&pki.client, &pki.health])
                .chain(&pki.agents)
            {
                println!("{}  {}", id.cert.display(), mark(id.created));
            }
            for r in &pki.removed {
                println!("{}  removed", r.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            file,
            results,
            agents,
            resume,
            only,
            set,
            profile,
            tls_dir,
            tls_domain,
            inventory,
            events,
            discover,
            missed_heartbeats,
        } => {
            let tls = tls_dir.map(|d| ClientTls::coordinator(d).with_domain(tls_domain));
            let bus = {
                let _guard = rt.enter();
                isolab_coordinator::events::EventBus::from_url(events.as_deref())?
            };
            let opts = RunOptions {
                pipeline: file,
                results,
                agents,
                resume,
                only,
                overrides: set,
                profile,
                tls,
                inventory,
                events: Some(bus.clone()),
                discover,
                missed_heartbeats,
                ..RunOptions::default()
            };
            rt.block_on(run_to_exit(opts))
        }
        Command::Rerun {
            run_dir,
            results,
            agents,
        } => rt.block_on(extra_cmd::rerun(&run_dir, results, agents)),
        Command::Runs {
            command: RunsCommand::List(args),
        } => rt.block_on(service_cmd::list(args)),
        Command::Cancel(args) => rt.block_on(service_cmd::cancel(args)),
        Command::Completions { shell } => extra_cmd::completions(shell, &mut Cli::command()),
        Command::Man { dir } => extra_cmd::man(Cli::command(), dir.as_deref()),
        Command::Serve(args) => rt.block_on(service_cmd::serve(args)),
        Command::Submit(args) => rt.block_on(service_cmd::submit(args)),
        Command::Watch(args) => rt.block_on(service_cmd::watch(args)),
        Command::Export(args) => export_cmd::export(args),
        Command::Report { run_dir, out } => {
            let out = out.unwrap_or_else(|| run_dir.clone());
            let paths = isolab_analyzer::write_report(&run_dir, &out)
                .with_context(|| format!("cannot report on {}", run_dir.display()))?;
            println!("{}", paths.report_md.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Compare {
            run_a,
            run_b,
            json,
            threshold,
            fail_on_regression,
        } => {
            let cmp = isolab_analyzer::compare::compare_with(&run_a, &run_b, threshold)
                .with_context(|| {
                    format!(
                        "cannot compare {} with {}",
                        run_a.display(),
                        run_b.display()
                    )
                })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&cmp)?);
            } else {
                print!("{}", cmp.to_markdown());
            }
            Ok(if fail_on_regression && cmp.has_regression() {
                ExitCode::from(EXIT_REGRESSION)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// Runs `opts` until done or SIGINT/SIGTERM (which cancel running trials); prints the run
/// directory on stdout and the counts on stderr. Exit 0 when every trial is ok,
/// [`EXIT_TRIALS_FAILED`] when some failed or did not run, [`EXIT_ERROR`] when it could not run.
pub(crate) async fn run_to_exit(opts: RunOptions) -> anyhow::Result<ExitCode> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        service_cmd::shutdown_signal().await;
        let _ = tx.send(true);
    });
    let result = run::run(&opts, rx).await;
    if let Some(bus) = &opts.events
        && let Some(stats) = bus.flush(std::time::Duration::from_secs(10)).await
    {
        if stats.dropped > 0 {
            tracing::warn!(
                "events: {} published to NATS, {} dropped",
                stats.published,
                stats.dropped
            );
        } else {
            tracing::info!("events: {} published to NATS", stats.published);
        }
    }
    match result {
        Ok(outcome) => {
            println!("{}", outcome.run_dir.display());
            eprintln!(
                "{} ok, {} failed, {} not run",
                outcome.ok, outcome.failed, outcome.not_run
            );
            Ok(if outcome.failed > 0 || outcome.not_run > 0 {
                ExitCode::from(EXIT_TRIALS_FAILED)
            } else {
                ExitCode::SUCCESS
            })
        }
        Err(RunError::Load(e)) => {
            print_load_error(&e);
            Ok(ExitCode::from(EXIT_ERROR))
        }
        Err(e) => Err(e.into()),
    }
}

/// The inventory's agents as placement slots.
fn inventory_slots(path: &std::path::Path) -> anyhow::Result<Vec<AgentSlot>> {
    Ok(inventory::load_inventory(path)?
        .agents
        .into_iter()
        .map(|a| AgentSlot {
            address: a.address,
            labels: a.labels,
            names: a.tls_domain.into_iter().collect(),
        })
        .collect())
}

/// Trial id → the agent placement picks (`any` when the experiment has no placement).
fn placement(
    slots: &[AgentSlot],
    pipeline: &isolab_model::Pipeline,
    trials: &[plan::Trial],
) -> BTreeMap<String, String> {
    let placed = inventory::place(pipeline, trials, slots);
    trials
        .iter()
        .map(|t| {
            let agent = placed
                .get(&t.id)
                .map_or_else(|| "any".to_owned(), |i| slots[*i].address.clone());
            (t.id.clone(), agent)
        })
        .collect()
}

fn print_plan(
    trials: &[plan::Trial],
    rounds: &[u32],
    summary: &plan::PlanSummary,
    placed: Option<&BTreeMap<String, String>>,
) {
    print!(
        "{:<16}  {:<14} {:>5} {:<12} {:<14} {:>4} {:>4}",
        "TRIAL", "EXPERIMENT", "ROUND", "PLATFORM", "WORKLOAD", "N", "REP"
    );
    println!("{}", if placed.is_some() { "  AGENT" } else { "" });
    for (t, round) in trials.iter().zip(rounds) {
        let rep = if t.warmup {
            "w".to_owned()
        } else {
            t.repetition.to_string()
        };
        let workload = match &t.adversary {
            Some(a) => format!("{}+{a}", t.workload),
            None => t.workload.clone(),
        };
        let agent = placed
            .and_then(|p| p.get(&t.id))
            .map(|a| format!("  {a}"))
            .unwrap_or_default();
        println!(
            "{:<16}  {:<14} {:>5} {:<12} {:<14} {:>4} {:>4}{agent}",
            t.id,
            t.experiment,
            round,
            t.platform,
            workload,
            t.instances.len(),
            rep
        );
    }
    println!();
    println!("{summary}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Every `command: [isolab, …]` (with its `args`) in the YAML files under `k8s/`, with
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
                        cmd.filter(|c| c.first().and_then(|c| c.as_str()) == Some("isolab"))
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
                ("POD_NAME", "isolab-coordinator-x7k2p"),
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
    fn every_isolab_command_line_in_the_manifests_parses() {
        let mut commands = Vec::new();
        for (file, argv) in manifest_invocations() {
            let cli = Cli::try_parse_from(&argv)
                .unwrap_or_else(|e| panic!("{}: {argv:?}: {e}", file.display()));
            commands.push(match cli.command {
                Command::Serve(_) => "serve",
                Command::Submit(_) => "submit",
                _ => "other",
            });
        }
        commands.sort_unstable();
        assert_eq!(
            commands,
            ["serve", "submit"],
            "the coordinator and the submit Job"
        );
    }
}
