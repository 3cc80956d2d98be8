//! Command-line parsing: `NAME [--param k=v]…`, `--list`, `--help`, `--version`.
//!
//! Parsing takes any iterator of arguments (no `std::env` inside), so a PID 1 mode can feed it
//! words from the kernel command line.

use std::ffi::OsString;
use std::fmt::Write as _;

use isolab_model::catalog::{self, WorkloadInfo, WorkloadKind};

use crate::params::{ParamError, Params};

/// Usage text for `--help`.
pub(crate) const HELP: &str = "\
isolab-workload: one isolab benchmark, samples as JSON lines on stdout

usage:
  isolab-workload NAME [--param KEY=VALUE]...
  isolab-workload --list      workloads and their params
  isolab-workload --help
  isolab-workload --version

common params: duration (e.g. 2s, 500ms; default 1s), iterations (a fixed count, wins over
duration, where listed). Sizes are written like 4096, 64KiB, 1MiB.
exit codes: 0 ok, 1 runtime failure, 2 usage error.
";

/// What the command line asks for.
#[derive(Debug)]
pub(crate) enum Command {
    /// Print usage.
    Help,
    /// Print the version.
    Version,
    /// Print the catalog.
    List,
    /// Run one workload.
    Run(RunRequest),
}

/// A workload with validated params.
#[derive(Debug)]
pub(crate) struct RunRequest {
    /// The catalog entry.
    pub(crate) info: &'static WorkloadInfo,
    /// Its params, parsed and checked against the catalog.
    pub(crate) params: Params,
}

/// Why the command line was rejected (exit code 2).
#[derive(Debug, thiserror::Error)]
pub(crate) enum UsageError {
    /// No workload name.
    #[error("no workload given; usage: isolab-workload NAME [--param KEY=VALUE]... (see --list)")]
    NoWorkload,
    /// A name that is not in the catalog.
    #[error("unknown workload `{name}`; expected one of: {known}")]
    UnknownWorkload {
        /// The name given.
        name: String,
        /// The catalog's names.
        known: String,
    },
    /// An option this binary does not have.
    #[error("unknown option `{arg}`; expected `--param KEY=VALUE`, `--list` or `--help`")]
    UnknownOption {
        /// The option given.
        arg: String,
    },
    /// A second positional argument.
    #[error(
        "unexpected argument `{arg}` after workload `{workload}`; params go as `--param KEY=VALUE`"
    )]
    ExtraArgument {
        /// The workload named first.
        workload: String,
        /// The extra argument.
        arg: String,
    },
    /// `--param` at the end of the line.
    #[error("`--param` needs a value: `--param KEY=VALUE`")]
    MissingParamValue,
    /// An argument that is not valid UTF-8.
    #[error("argument {arg:?} is not valid UTF-8")]
    NotUtf8 {
        /// The argument, lossily converted.
        arg: String,
    },
    /// A param problem (unknown name, bad value…).
    #[error(transparent)]
    Param(#[from] ParamError),
}

/// Parses the arguments after the program name.
pub(crate) fn parse<I>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator<Item = OsString>,
{
    let mut name: Option<String> = None;
    let mut pairs: Vec<String> = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = utf8(arg)?;
        match arg.as_str() {
            "--help" | "-h" => return Ok(Command::Help),
            "--version" | "-V" => return Ok(Command::Version),
            "--list" => return Ok(Command::List),
            "--param" | "-p" => {
                let value = args.next().ok_or(UsageError::MissingParamValue)?;
                pairs.push(utf8(value)?);
            }
            s if s.starts_with("--param=") => pairs.push(s["--param=".len()..].to_owned()),
            s if s.starts_with('-') => return Err(UsageError::UnknownOption { arg }),
            _ => match &name {
                None => name = Some(arg),
                Some(first) => {
                    return Err(UsageError::ExtraArgument {
                        workload: first.clone(),
                        arg,
                    });
                }
            },
        }
    }
    let name = name.ok_or(UsageError::NoWorkload)?;
    let info = catalog::find(&name).ok_or_else(|| UsageError::UnknownWorkload {
        name: name.clone(),
        known: catalog::names().join(", "),
    })?;
    let params = Params::parse(info, &pairs)?;
    Ok(Command::Run(RunRequest { info, params }))
}

fn utf8(arg: OsString) -> Result<String, UsageError> {
    arg.into_string().map_err(|a| UsageError::NotUtf8 {
        arg: a.to_string_lossy().into_owned(),
    })
}

/// The catalog as text, for `--list`.
pub(crate) fn catalog_text() -> String {
    let mut s = String::new();
    for w in catalog::WORKLOADS {
        let kind = match w.kind {
            WorkloadKind::Benchmark => "benchmark",
            WorkloadKind::Adversary => "adversary",
        };
        let _ = writeln!(s, "{} ({kind}): {}", w.name, w.summary);
        for p in w.params {
            let _ = writeln!(s, "    --param {}=…  {}", p.name, p.help);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_name_and_params() {
        let cmd = parse(args(&[
            "mmap",
            "--param",
            "size=4KiB",
            "--param=iterations=3",
        ]))
        .unwrap();
        let Command::Run(run) = cmd else {
            panic!("expected run, got {cmd:?}")
        };
        assert_eq!(run.info.name, "mmap");
        assert_eq!(run.params.bytes("size", 0), 4096);
        assert_eq!(run.params.iterations(), Some(3));
    }

    #[test]
    fn flags_win() {
        assert!(matches!(
            parse(args(&["syscall", "--list"])),
            Ok(Command::List)
        ));
        assert!(matches!(parse(args(&["--help"])), Ok(Command::Help)));
    }

    #[test]
    fn usage_errors_name_the_culprit() {
        let e = parse(args(&["nope"])).unwrap_err().to_string();
        assert!(e.contains("`nope`") && e.contains("syscall"), "{e}");
        let e = parse(args(&["syscall", "--bogus"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--bogus"), "{e}");
        let e = parse(args(&["syscall", "mmap"])).unwrap_err().to_string();
        assert!(e.contains("mmap"), "{e}");
        assert!(matches!(parse(args(&[])), Err(UsageError::NoWorkload)));
        assert!(matches!(
            parse(args(&["syscall", "--param"])),
            Err(UsageError::MissingParamValue)
        ));
    }

    #[test]
    fn catalog_text_lists_every_param() {
        let text = catalog_text();
        for w in catalog::WORKLOADS {
            assert!(text.contains(w.name));
            for p in w.params {
                assert!(text.contains(&format!("--param {}=", p.name)));
            }
        }
    }
}
