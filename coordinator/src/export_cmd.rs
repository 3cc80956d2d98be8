//! `isolab export RUN_DIR --format csv|parquet|json [--table summary|trials] [--out FILE]`: a
//! run's summary statistics or its trial list as a plain table (see
//! [`isolab_analyzer::export`]).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use isolab_analyzer::export::{self, Format, Table};

/// Output format of `isolab export`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum FormatArg {
    /// Comma-separated values with a header line.
    Csv,
    /// Parquet (zstd).
    Parquet,
    /// A JSON array of objects.
    Json,
}

/// Table of `isolab export`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum TableArg {
    /// One row per experiment × metric × platform: median, CI, ratio to the baseline, verdict.
    Summary,
    /// One row per trial of the manifest: status, attempts, start and end, host, reason.
    Trials,
}

/// Arguments of `isolab export`.
#[derive(Debug, clap::Args)]
pub(crate) struct ExportArgs {
    /// The run directory (`results/<run_id>`).
    run_dir: PathBuf,
    /// Output format.
    #[arg(long, value_enum)]
    format: FormatArg,
    /// Which table.
    #[arg(long, value_enum, default_value = "summary")]
    table: TableArg,
    /// Write to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Runs `isolab export`.
pub(crate) fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let format = match args.format {
        FormatArg::Csv => Format::Csv,
        FormatArg::Parquet => Format::Parquet,
        FormatArg::Json => Format::Json,
    };
    let table = match args.table {
        TableArg::Summary => Table::Summary,
        TableArg::Trials => Table::Trials,
    };
    let what = || format!("cannot export {}", args.run_dir.display());
    match &args.out {
        Some(path) => {
            // Written next to its final name and renamed, so a reader never sees half a file.
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
            let dir = dir.unwrap_or_else(|| std::path::Path::new("."));
            let mut tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("cannot write into {}", dir.display()))?;
            export::export(&args.run_dir, table, format, tmp.as_file_mut()).with_context(what)?;
            tmp.persist(path)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => {
            let stdout = std::io::stdout();
            if matches!(format, Format::Parquet) && stdout.is_terminal() {
                anyhow::bail!(
                    "--format parquet writes binary data: give --out FILE or redirect stdout"
                );
            }
            let mut out = QuietPipe {
                inner: std::io::BufWriter::new(stdout),
                closed: false,
            };
            export::export(&args.run_dir, table, format, &mut out).with_context(what)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Stdout that ends quietly when the reader goes away (`isolab export … | head`): once the pipe
/// is closed, the rest of the output is dropped instead of failing.
struct QuietPipe<W> {
    inner: W,
    closed: bool,
}

impl<W: std::io::Write> std::io::Write for QuietPipe<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        match self.inner.write(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(buf.len())
            }
            other => other,
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.closed {
            return Ok(());
        }
        match self.inner.flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            other => other,
        }
    }
}
