//! The command line of `isolab`: every command, flag and exit code (`isolab --help`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{export_cmd, service_cmd};

#[derive(Debug, Parser)]
#[command(
    name = "isolab",
    version = VERSION,
    about = "Reproducible comparison of isolation platforms",
    after_help = EXIT_CODES_HELP,
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The version with the git commit it was built from (`0.1.0 (abc1234)`).
pub(crate) const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("ISOLAB_GIT_COMMIT"),
    ")"
);

// 0: everything went as asked; 2: usage error (clap's own code).
/// Could not run: invalid pipeline or flags' values, unreadable files, no agent, I/O errors.
pub(crate) const EXIT_ERROR: u8 = 1;
/// The run went through but some trials failed, timed out or did not run; its results and
/// manifest are written, `isolab report` works and `--resume` completes it.
pub(crate) const EXIT_TRIALS_FAILED: u8 = 3;
/// `compare --fail-on-regression` found a significant regression.
pub(crate) const EXIT_REGRESSION: u8 = 4;

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  could not run: invalid pipeline, unreadable file, no agent reachable, other errors
  2  usage error (unknown command or flag, missing argument)
  3  the run finished but some trials failed or did not run (results and manifest written)
  4  compare --fail-on-regression: a metric regressed significantly

Environment:
  ISOLAB_SERVER    default for --server (submit, watch, runs, cancel)
  ISOLAB_TLS_DIR   default for --tls-dir of the client commands (submit, watch, runs, cancel)
  ISOLAB_WORKLOAD_BIN, ISOLAB_LOG   the workload binary; log filter (e.g. `info`)";

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Check pipeline files; one line per error as FILE:LINE:COL: message.
    Validate {
        /// Pipeline files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show the trials a pipeline expands to, with counts and an estimated duration.
    Plan {
        /// Pipeline file.
        file: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Only trials matching, e.g. `experiment=micro,platform=native`.
        #[arg(long)]
        only: Option<String>,
        /// Override a pipeline value, e.g. `defaults.duration=1s` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Apply the pipeline's profile NAME (from its `profiles:`) before the `--set`s.
        #[arg(long, value_name = "NAME")]
        profile: Option<String>,
        /// Show the agent of the inventory each trial would go to.
        #[arg(long, value_name = "FILE")]
        inventory: Option<PathBuf>,
        /// Discover agents announced on NATS (`isolab-agent --announce`), e.g. nats://127.0.0.1:4222.
        #[arg(long, value_name = "URL")]
        discover: Option<String>,
        /// Heartbeats an announced agent may miss before it is dropped.
        #[arg(long, default_value_t = isolab_coordinator::discover::DEFAULT_MISSED_HEARTBEATS, requires = "discover")]
        missed_heartbeats: u32,
        /// Seed of the random trial order to show (default: the pipeline's `defaults.seed`, else
        /// one drawn now; `isolab run` draws its own unless the pipeline pins one).
        #[arg(long, value_name = "N")]
        seed: Option<u64>,
    },
    /// Print the JSON Schema of the pipeline format.
    Schema,
    /// Run a pipeline; prints the run directory.
    Run {
        /// Pipeline file.
        file: PathBuf,
        /// Results directory.
        #[arg(long, default_value = "results")]
        results: PathBuf,
        /// Agent address (repeatable); none → an embedded agent on loopback.
        #[arg(long = "agent", value_name = "URL")]
        agents: Vec<String>,
        /// Complete an earlier run: only trials without results are run.
        #[arg(long, value_name = "RUN_ID")]
        resume: Option<String>,
        /// Only trials matching, e.g. `experiment=micro,platform=native`.
        #[arg(long)]
        only: Option<String>,
        /// Override a pipeline value, e.g. `defaults.duration=1s` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Apply the pipeline's profile NAME (from its `profiles:`) before the `--set`s.
        #[arg(long, value_name = "NAME")]
        profile: Option<String>,
        /// Mutual TLS towards the agents with the `coordinator` identity of this directory
        /// (`isolab certs init`); agent addresses become `https://`.
        #[arg(long, value_name = "DIR")]
        tls_dir: Option<PathBuf>,
        /// The name the agents' certificates must carry (default: the host of each address).
        #[arg(long, value_name = "NAME", requires = "tls_dir")]
        tls_domain: Option<String>,
        /// Agents with labels for placement (`agents: [{ address, labels, tls_domain }]`).
        #[arg(long, value_name = "FILE")]
        inventory: Option<PathBuf>,
        /// Publish trial status and live samples on NATS JetStream (`nats://HOST:PORT`).
        #[arg(long, value_name = "URL")]
        events: Option<String>,
        /// Discover agents announced on NATS (`isolab-agent --announce`), e.g. nats://127.0.0.1:4222.
        #[arg(long, value_name = "URL")]
        discover: Option<String>,
        /// Heartbeats an announced agent may miss before it is dropped.
        #[arg(long, default_value_t = isolab_coordinator::discover::DEFAULT_MISSED_HEARTBEATS, requires = "discover")]
        missed_heartbeats: u32,
    },
    /// Run again exactly what a run directory's manifest holds (pipeline text, --set, --profile,
    /// --only, order seed) into a new run directory; prints it.
    Rerun {
        /// The run directory to reproduce (`results/<run_id>`).
        run_dir: PathBuf,
        /// Results directory of the new run (default: the one holding RUN_DIR).
        #[arg(long)]
        results: Option<PathBuf>,
        /// Agent address (repeatable); none → an embedded agent on loopback.
        #[arg(long = "agent", value_name = "URL")]
        agents: Vec<String>,
    },
    /// Serve the coordinator: run submitted pipelines one at a time, in submission order.
    Serve(service_cmd::ServeArgs),
    /// Submit a pipeline to `isolab serve`; prints the run id.
    Submit(service_cmd::SubmitArgs),
    /// Live trial status (and samples) of a run: its history first, then as it goes.
    Watch(service_cmd::WatchArgs),
    /// Runs known to `isolab serve`.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// Cancel a queued or running run of `isolab serve`.
    Cancel(service_cmd::CancelArgs),
    /// Print a shell completion script: `isolab completions bash > /etc/bash_completion.d/isolab`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `isolab man | man -l -`; `--dir` writes one page per command.
    Man {
        /// Write isolab.1 and isolab-COMMAND.1 into this directory instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Development certificates for mutual TLS.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Write the report of a run directory: report.html (charts, open it in a browser),
    /// report.md (the same tables as text) and summary.json (every number, for scripts).
    Report {
        /// The run directory (`results/<run_id>`).
        run_dir: PathBuf,
        /// Where to write (default: the run directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// A run's summary statistics or its trial list as CSV, Parquet or JSON.
    Export(export_cmd::ExportArgs),
    /// Per-metric changes between two runs with 95% CIs; a change counts when significant after
    /// Benjamini–Hochberg control across all metrics (q ≤ 0.05) and at least the threshold.
    Compare {
        /// The baseline run directory.
        run_a: PathBuf,
        /// The run directory compared with it.
        run_b: PathBuf,
        /// Print JSON instead of a Markdown table.
        #[arg(long)]
        json: bool,
        /// Smallest relative change that counts, in percent (`2`, `2%` or `0.5%`).
        #[arg(long, default_value = "2%", value_parser = parse_threshold)]
        threshold: f64,
        /// Exit 4 when a metric regressed significantly and by at least the threshold.
        #[arg(long)]
        fail_on_regression: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CertsCommand {
    /// Make (or complete) a CA with coordinator, client and agent certificates in DIR.
    Init {
        /// The TLS directory.
        #[arg(long)]
        dir: PathBuf,
        /// An agent name: issues `agent-NAME.pem` (repeatable).
        #[arg(long = "agent", value_name = "NAME")]
        agents: Vec<String>,
        /// An extra DNS name or IP address for the coordinator's and agents' certificates.
        #[arg(long = "san", value_name = "NAME")]
        sans: Vec<String>,
        /// Make a new CA and reissue every certificate.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RunsCommand {
    /// One line per run: id, state, trials ok/failed/not run, submitted, pipeline.
    List(service_cmd::ListArgs),
}

/// `--threshold`: a percentage, `2`, `2%` or `0.5%`, as a fraction.
pub(crate) fn parse_threshold(s: &str) -> Result<f64, String> {
    let number = s.trim().trim_end_matches('%').trim();
    match number.parse::<f64>() {
        Ok(pct) if pct.is_finite() && (0.0..100.0).contains(&pct) => Ok(pct / 100.0),
        _ => Err(format!(
            "expected a percentage from 0 to 100 such as `2%` or `0.5`, got `{s}`"
        )),
    }
}
