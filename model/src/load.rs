//! Reading a pipeline: bytes → UTF-8 → YAML → `--set` overrides → [`Pipeline`] → validation.
//!
//! Each stage reports its own [`LoadError`] with a file position; the semantic stage reports
//! every broken rule at once. [`load_file_full`] also returns the effective text and its
//! SHA-256 so that a run manifest records exactly what ran.

use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Diagnostic, LoadError};
use crate::location::{At, LocationIndex, Pos};
use crate::pipeline::Pipeline;
use crate::suggest;
use crate::validate;
use crate::yaml::{self, YamlError};

mod overrides;
mod profiles;

use overrides::Override;

/// Largest pipeline file (or submitted text) accepted: 1 MiB. Larger input is refused before
/// it is read or parsed, so that a huge file cannot exhaust memory.
pub const MAX_PIPELINE_BYTES: u64 = 1024 * 1024;

/// A loaded pipeline with the exact text it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The validated pipeline.
    pub pipeline: Pipeline,
    /// The effective text: the file as read or, with overrides, the re-serialized result
    /// (headed by a comment naming the file and the overrides).
    pub text: String,
    /// SHA-256 of `text`, lower-case hex.
    pub sha256: String,
}

/// Reads, parses and validates the pipeline file at `path`.
pub fn load_file(path: &Path) -> Result<Pipeline, LoadError> {
    load_file_full(path, &[]).map(|l| l.pipeline)
}

/// Parses and validates pipeline text; `file` names it in diagnostics.
pub fn load_str(file: &str, text: &str) -> Result<Pipeline, LoadError> {
    load_str_full(file, text, &[]).map(|l| l.pipeline)
}

/// Like [`load_file`], with `--set KEY=VALUE` overrides applied before validation
/// (`defaults.duration=1s`, `experiments.micro.repetitions=2`, `platforms.vm.vcpus=2`).
pub fn load_with_overrides(path: &Path, overrides: &[String]) -> Result<Pipeline, LoadError> {
    load_file_full(path, overrides).map(|l| l.pipeline)
}

/// Reads `path`, applies `overrides` and validates; returns the pipeline with its effective text.
pub fn load_file_full(path: &Path, overrides: &[String]) -> Result<Loaded, LoadError> {
    load_file_profile(path, None, overrides)
}

/// Reads `path`, applies the overrides of `profile` (from the file's `profiles:`), then
/// `overrides`, and validates. An unknown profile is an error listing the known ones.
pub fn load_file_profile(
    path: &Path,
    profile: Option<&str>,
    overrides: &[String],
) -> Result<Loaded, LoadError> {
    use std::io::Read as _;
    let file = path.display().to_string();
    let read_error = |source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(read_error)?;
    // Read at most one byte more than the limit: the size is checked on what was read, so a
    // growing file or a pipe cannot slip past a stale metadata length.
    let mut bytes = Vec::new();
    f.take(MAX_PIPELINE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    let size_bytes = bytes.len() as u64;
    if size_bytes > MAX_PIPELINE_BYTES {
        let size_bytes = std::fs::metadata(path).map_or(size_bytes, |m| m.len().max(size_bytes));
        return Err(too_large(&file, size_bytes));
    }
    let text = decode(&file, bytes)?;
    load_str_profile(&file, &text, profile, overrides)
}

/// Parses `text`, applies `overrides` and validates; `file` names the text in diagnostics.
pub fn load_str_full(file: &str, text: &str, overrides: &[String]) -> Result<Loaded, LoadError> {
    load_str_profile(file, text, None, overrides)
}

/// Like [`load_str_full`], with the overrides of `profile` applied before `overrides`.
pub fn load_str_profile(
    file: &str,
    text: &str,
    profile: Option<&str>,
    overrides: &[String],
) -> Result<Loaded, LoadError> {
    if text.len() as u64 > MAX_PIPELINE_BYTES {
        return Err(too_large(file, text.len() as u64));
    }
    let (index, tree) = LocationIndex::parse(text).map_err(|e| syntax_error(file, e))?;
    if let Some((path, at)) = index.duplicates().first() {
        return Err(LoadError::Syntax {
            diagnostic: Diagnostic::new(
                file,
                at.line,
                at.col,
                format!("invalid YAML: duplicate key `{path}`"),
            ),
            source: YamlError {
                message: format!("duplicate key `{path}`"),
                pos: *at,
            },
        });
    }
    let Some(tree) = tree else {
        let message = "empty pipeline: expected a mapping with apiVersion, kind, name, platforms \
                       and experiments";
        return Err(LoadError::Shape {
            diagnostic: Diagnostic::new(file, 1, 1, message),
            source: YamlError {
                message: message.to_owned(),
                pos: Pos::START,
            },
        });
    };
    let mut value: Value = tree.value.to_json();

    check_profiles(file, &index, &value)?;
    let mut sources: Vec<(String, String)> = Vec::new();
    if let Some(name) = profile {
        let flags = profiles::flags(&value, name).map_err(|m| {
            let pos = index.locate("profiles", At::Key);
            LoadError::Override {
                flag: format!("--profile {name}"),
                diagnostic: Diagnostic::new(
                    file,
                    pos.line,
                    pos.col,
                    format!("--profile {name}: {m}"),
                ),
            }
        })?;
        let origin = format!("profile `{name}`:");
        sources.extend(flags.into_iter().map(|f| (origin.clone(), f)));
    }
    sources.extend(
        overrides
            .iter()
            .map(|raw| ("--set".to_owned(), raw.clone())),
    );
    let applied: Vec<Override> = sources
        .iter()
        .map(|(origin, raw)| {
            overrides::apply(&mut value, raw)
                .map(|o| Override {
                    origin: origin.clone(),
                    ..o
                })
                .map_err(|(path, m)| override_error(file, &index, origin, raw, &path, &m))
        })
        .collect::<Result<_, _>>()?;

    let effective = if applied.is_empty() {
        text.to_owned()
    } else {
        let mut flags: Vec<String> = Vec::new();
        if let Some(name) = profile {
            flags.push(format!("--profile {name}"));
        }
        flags.extend(
            applied
                .iter()
                .filter(|o| o.origin == "--set")
                .map(|o| format!("--set {}", o.flag)),
        );
        let body = yaml::to_string(&value).unwrap_or_default();
        format!(
            "# effective pipeline: {file} with {}\n{body}",
            flags.join(" ")
        )
    };

    let pipeline: Pipeline = yaml::from_str(&effective)
        .map_err(|e| shape_error(file, &index, &effective, &applied, e))?;

    let issues = validate::check(&pipeline);
    if !issues.is_empty() {
        let mut diagnostics: Vec<Diagnostic> = issues
            .iter()
            .map(|i| {
                let pos = index.locate(&i.path, i.at);
                let message = match overrides::covering(&applied, &i.path) {
                    Some(o) => o.describe(&i.path, &i.message),
                    None => i.to_message(),
                };
                Diagnostic::new(file, pos.line, pos.col, message)
            })
            .collect();
        diagnostics.sort_by_key(|d| (d.line, d.col));
        return Err(LoadError::Invalid {
            file: file.to_owned(),
            diagnostics,
        });
    }

    let sha256 = hex::encode(Sha256::digest(effective.as_bytes()));
    Ok(Loaded {
        pipeline,
        text: effective,
        sha256,
    })
}

fn too_large(file: &str, size_bytes: u64) -> LoadError {
    LoadError::TooLarge {
        file: file.to_owned(),
        size_bytes,
        limit_bytes: MAX_PIPELINE_BYTES,
    }
}

/// UTF-8 text of `bytes`, or the position of the first invalid byte.
fn decode(file: &str, bytes: Vec<u8>) -> Result<String, LoadError> {
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let bad = e.utf8_error().valid_up_to();
        let valid = std::str::from_utf8(&bytes[..bad]).unwrap_or_default();
        let line = valid.matches('\n').count() + 1;
        let col = valid.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        LoadError::NotUtf8 {
            file: file.to_owned(),
            line,
            col,
            byte: bytes[bad],
        }
    })
}

fn syntax_error(file: &str, source: YamlError) -> LoadError {
    let pos = source.pos;
    let message = if source.message.contains("multiple YAML documents")
        || source.message.contains("more than one document")
    {
        "a pipeline file holds one YAML document, found several (`---`)".to_owned()
    } else {
        source.message.clone()
    };
    LoadError::Syntax {
        diagnostic: Diagnostic::new(file, pos.line, pos.col, format!("invalid YAML: {message}")),
        source,
    }
}

fn override_error(
    file: &str,
    index: &LocationIndex,
    origin: &str,
    raw: &str,
    path: &str,
    message: &str,
) -> LoadError {
    let pos = index.locate(path, At::Key);
    LoadError::Override {
        flag: format!("{origin} {raw}"),
        diagnostic: Diagnostic::new(
            file,
            pos.line,
            pos.col,
            format!("{origin} {raw}: {message}"),
        ),
    }
}

/// Checks every profile by applying its overrides to a copy of `root`, deserializing and
/// validating the result; reports the first problem at the profile's key.
fn check_profiles(file: &str, index: &LocationIndex, root: &Value) -> Result<(), LoadError> {
    for name in profiles::names(root) {
        let at = format!("profiles.{name}");
        let fail = |m: String| {
            let pos = index.locate(&at, At::Key);
            LoadError::Override {
                flag: format!("--profile {name}"),
                diagnostic: Diagnostic::new(
                    file,
                    pos.line,
                    pos.col,
                    format!("profile `{name}`: {m}"),
                ),
            }
        };
        let flags = profiles::flags(root, &name).map_err(&fail)?;
        let mut copy = root.clone();
        for raw in &flags {
            overrides::apply(&mut copy, raw).map_err(|(_, m)| fail(format!("{raw}: {m}")))?;
        }
        let text = yaml::to_string(&copy).map_err(&fail)?;
        let pipeline: Pipeline = yaml::from_str(&text).map_err(|e| {
            let eff_index = LocationIndex::build(&text);
            fail(describe(&eff_index, &text, &e))
        })?;
        if let Some(issue) = validate::check(&pipeline).first() {
            return Err(fail(issue.to_message()));
        }
    }
    Ok(())
}

fn shape_error(
    file: &str,
    index: &LocationIndex,
    effective: &str,
    applied: &[Override],
    source: YamlError,
) -> LoadError {
    let mut pos = source.pos;
    let mut message;
    if applied.is_empty() {
        message = describe(index, effective, &source);
        // The parser places a missing field where the mapping ends (it belongs at its start)
        // and some wrong values at their key (they belong at the value).
        if let Some(path) = error_path(index, &source)
            && (message.contains("missing field `")
                || index.node_at(pos).is_some_and(|(k, p)| k && p == path))
        {
            pos = index.locate(&path, At::Value);
        }
    } else {
        // Positions refer to the re-serialized text: map them back through the node's path.
        let eff_index = LocationIndex::build(effective);
        message = describe(&eff_index, effective, &source);
        let path = eff_index.path_at(pos).unwrap_or_default().to_owned();
        pos = index.locate(&path, At::Key);
        if let Some(o) = overrides::covering(applied, &path) {
            let bare = message
                .strip_prefix(&format!("{path}: "))
                .unwrap_or(&message)
                .to_owned();
            message = o.describe(&path, &bare);
        }
    }
    LoadError::Shape {
        diagnostic: Diagnostic::new(file, pos.line, pos.col, message),
        source,
    }
}

/// The path of the node an error is about: the mapping whose key is at the error (an unknown
/// or missing field), or the node whose value starts there.
fn error_path(index: &LocationIndex, e: &YamlError) -> Option<String> {
    let (is_key, path) = index.node_at(e.pos)?;
    let about_the_mapping =
        e.message.contains("unknown field `") || e.message.contains("missing field `");
    let path = if is_key && about_the_mapping {
        crate::location::parent(path).unwrap_or_default()
    } else {
        path
    };
    Some(path.to_owned())
}

/// The error's message for people who write YAML, headed by the path of the node it is about
/// (as in validation messages), with the offending scalar quoted when the parser only said
/// that it was invalid.
fn describe(index: &LocationIndex, text: &str, e: &YamlError) -> String {
    let mut message = improve(&e.message);
    if let Some(kind) = message.strip_prefix("invalid ")
        && let Some(expected) = expected_for(kind)
    {
        let found = yaml::scalar_at(text, e.pos).unwrap_or_default();
        message = format!("invalid value `{found}`, expected {expected}");
    } else if let Some(kind) = message
        .strip_prefix("expected ")
        .and_then(|r| r.strip_suffix(" start"))
    {
        // "expected sequence start": a scalar (or the other collection) stood there.
        message = match yaml::scalar_at(text, e.pos) {
            Some(found) if !found.starts_with(['[', '{', '-']) => {
                format!("invalid value `{found}`, expected a {kind}")
            }
            _ => format!("expected a {kind}"),
        };
    }
    match error_path(index, e) {
        Some(path) if !path.is_empty() => format!("{path}: {message}"),
        _ => message,
    }
}

/// What a bare "invalid u32" from the parser expected, in words.
fn expected_for(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number, 0 or more",
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "bool" | "boolean" => "true or false",
        _ => return None,
    })
}

/// Rewrites serde's wording for people who write YAML, and adds a "did you mean" to unknown
/// keys and values.
fn improve(message: &str) -> String {
    let mut m = message
        .replace("expected u32", "expected a whole number, 0 or more")
        .replace("expected u64", "expected a whole number, 0 or more")
        .replace("expected f64", "expected a number")
        .replace("unit value", "empty value")
        .replace("expected a map", "expected a mapping");
    if (m.starts_with("unknown field `") || m.starts_with("unknown variant `"))
        && let Some((head, list)) = m
            .split_once(", expected one of ")
            .or_else(|| m.split_once(", expected "))
    {
        // serde-saphyr lists the candidates bare (`one of a, b`); serde quotes them.
        let input = head.split('`').nth(1).unwrap_or_default().to_owned();
        let candidates: Vec<String> = list
            .split(", ")
            .flat_map(|c| c.split(" or "))
            .map(|c| c.trim().trim_matches('`').to_owned())
            .filter(|c| !c.is_empty())
            .collect();
        let quoted: Vec<String> = candidates.iter().map(|c| format!("`{c}`")).collect();
        let expected = match quoted.as_slice() {
            [one] => one.clone(),
            [a, b] => format!("{a} or {b}"),
            many => format!("one of {}", many.join(", ")),
        };
        let hint = suggest::hint(&input, candidates.iter().map(String::as_str));
        m = format!("{head}, expected {expected}{hint}");
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_position() {
        let e = decode("f", b"a: 1\nbc: \xff\n".to_vec()).unwrap_err();
        assert!(
            matches!(
                e,
                LoadError::NotUtf8 {
                    line: 2,
                    col: 5,
                    byte: 0xff,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = decode("f", "é\u{e9}\n".bytes().chain([0xc3]).collect()).unwrap_err();
        assert!(
            matches!(
                e,
                LoadError::NotUtf8 {
                    line: 2,
                    col: 1,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn several_documents_and_duplicates_are_named() {
        let e = load_str("f", "a: 1\n---\nb: 2\n").unwrap_err();
        assert!(e.to_string().contains("holds one YAML document"), "{e}");
        let e = load_str("f", "a: 1\nb:\n  c: 1\n  c: 2\n").unwrap_err();
        assert_eq!(e.to_string(), "f:4:3: invalid YAML: duplicate key `b.c`");
    }

    #[test]
    fn improve_adds_hints() {
        assert_eq!(
            improve("unknown field `worklods`, expected one of name, workloads, matrix"),
            "unknown field `worklods`, expected one of `name`, `workloads`, `matrix`; did you mean `workloads`?"
        );
        assert_eq!(
            improve("unknown field `parms`, expected one of name, params"),
            "unknown field `parms`, expected `name` or `params`; did you mean `params`?"
        );
        assert_eq!(
            improve("invalid type: string \"x\", expected u32"),
            "invalid type: string \"x\", expected a whole number, 0 or more"
        );
    }
}
