//! Errors of loading a pipeline, each one pointing at a file, a line and a column.
//!
//! [`LoadError`] says which stage failed (reading, decoding, YAML syntax, the shape of the
//! document, `--set` overrides, or the semantic rules of [`crate::validate`]);
//! [`LoadError::diagnostics`] flattens any of them into [`Diagnostic`]s, one line each, which is
//! what `isolab validate` prints.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One problem at one place: printed as `FILE:LINE:COL: message`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Diagnostic {
    /// The file as the user named it.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub col: usize,
    /// What is wrong and what was expected, lower-case.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic at `line`:`col` of `file`.
    pub fn new(file: &str, line: usize, col: usize, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            line: line.max(1),
            col: col.max(1),
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

/// Why a pipeline could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{}:1:1: cannot read file: {}", path.display(), lower_first(&source.to_string()))]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file (or submitted text) is larger than [`crate::load::MAX_PIPELINE_BYTES`].
    #[error(
        "{file}:1:1: pipeline is {size_bytes} bytes, more than the limit of {limit_bytes} bytes (1 MiB); split it into several pipelines"
    )]
    TooLarge {
        /// The file.
        file: String,
        /// Its size.
        size_bytes: u64,
        /// The limit.
        limit_bytes: u64,
    },
    /// The file is not UTF-8.
    #[error(
        "{file}:{line}:{col}: not valid UTF-8 (invalid byte 0x{byte:02x}); pipeline files must be UTF-8 text"
    )]
    NotUtf8 {
        /// The file.
        file: String,
        /// 1-based line of the first invalid byte.
        line: usize,
        /// 1-based column (in characters) of the first invalid byte.
        col: usize,
        /// The first invalid byte.
        byte: u8,
    },
    /// The text is not YAML.
    #[error("{diagnostic}")]
    Syntax {
        /// Where and what.
        diagnostic: Diagnostic,
        /// What the YAML parser said.
        #[source]
        source: crate::yaml::YamlError,
    },
    /// The YAML does not have the shape of a pipeline: wrong type, unknown key, missing field.
    #[error("{diagnostic}")]
    Shape {
        /// Where and what.
        diagnostic: Diagnostic,
        /// What the deserializer said.
        #[source]
        source: crate::yaml::YamlError,
    },
    /// A `--set KEY=VALUE` override could not be applied.
    #[error("{diagnostic}")]
    Override {
        /// The flag as given, e.g. `--set defaults.duration=1s`.
        flag: String,
        /// Where and what; the message names the flag.
        diagnostic: Diagnostic,
    },
    /// The pipeline is well-formed but breaks rules of [`crate::validate`]; every broken rule
    /// is listed.
    #[error("{}", join_lines(diagnostics))]
    Invalid {
        /// The file.
        file: String,
        /// All problems, in file order.
        diagnostics: Vec<Diagnostic>,
    },
}

impl LoadError {
    /// Every problem as a [`Diagnostic`], one per line of `isolab validate` output.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        match self {
            Self::Read { path, source } => vec![Diagnostic::new(
                &path.display().to_string(),
                1,
                1,
                format!("cannot read file: {}", lower_first(&source.to_string())),
            )],
            Self::TooLarge {
                file,
                size_bytes,
                limit_bytes,
            } => vec![Diagnostic::new(
                file,
                1,
                1,
                format!(
                    "pipeline is {size_bytes} bytes, more than the limit of {limit_bytes} bytes \
                     (1 MiB); split it into several pipelines"
                ),
            )],
            Self::NotUtf8 {
                file,
                line,
                col,
                byte,
            } => vec![Diagnostic::new(
                file,
                *line,
                *col,
                format!(
                    "not valid UTF-8 (invalid byte 0x{byte:02x}); pipeline files must be UTF-8 text"
                ),
            )],
            Self::Syntax { diagnostic, .. }
            | Self::Shape { diagnostic, .. }
            | Self::Override { diagnostic, .. } => vec![diagnostic.clone()],
            Self::Invalid { diagnostics, .. } => diagnostics.clone(),
        }
    }
}

fn join_lines(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// `No such file` → `no such file`, leaving acronyms (`UTF-8`) alone.
pub(crate) fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(second)) if first.is_uppercase() && !second.is_uppercase() => {
            first.to_lowercase().chain(s.chars().skip(1)).collect()
        }
        _ => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostic_display() {
        let d = Diagnostic::new("p.yaml", 3, 7, "unknown workload `x`");
        assert_eq!(d.to_string(), "p.yaml:3:7: unknown workload `x`");
        assert_eq!(
            Diagnostic::new("p.yaml", 0, 0, "m").to_string(),
            "p.yaml:1:1: m"
        );
    }

    #[test]
    fn lower_first_keeps_acronyms() {
        assert_eq!(lower_first("No such file"), "no such file");
        assert_eq!(lower_first("UTF-8"), "UTF-8");
        assert_eq!(lower_first(""), "");
    }
}
