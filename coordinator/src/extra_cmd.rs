//! `isolab completions`, `isolab man` and `isolab rerun`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use isolab_coordinator::run::RunOptions;
use isolab_model::manifest::Manifest;

/// Prints the completion script of `shell` for `cmd`.
pub(crate) fn completions(
    shell: clap_complete::Shell,
    cmd: &mut clap::Command,
) -> anyhow::Result<ExitCode> {
    let mut out = Vec::new();
    clap_complete::generate(shell, cmd, "isolab", &mut out);
    crate::pipe::write_stdout(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints the man page of `cmd`, or writes one page per command into `dir`.
pub(crate) fn man(cmd: clap::Command, dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    match dir {
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            crate::pipe::write_stdout(&out)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
            println!("{}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The options that run again what `run_dir`'s manifest holds: its pipeline text (named as
/// the original file), `--set`s, `--profile`, `--only` and order seed.
pub(crate) fn rerun_options(
    run_dir: &Path,
    results: Option<PathBuf>,
    agents: Vec<String>,
) -> anyhow::Result<RunOptions> {
    let path = run_dir.join("manifest.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let m: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a run manifest", path.display()))?;
    let results = results.unwrap_or_else(|| {
        run_dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    });
    Ok(RunOptions {
        pipeline: PathBuf::from(&m.pipeline_file),
        pipeline_text: Some(m.pipeline_text),
        results,
        agents,
        only: m.only,
        overrides: m.overrides,
        profile: m.profile,
        seed: m.seed,
        ..RunOptions::default()
    })
}

/// `isolab rerun RUN_DIR`.
pub(crate) async fn rerun(
    run_dir: &Path,
    results: Option<PathBuf>,
    agents: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let opts = rerun_options(run_dir, results, agents)?;
    eprintln!("rerunning {}", run_dir.display());
    crate::run_to_exit(opts).await
}
