//! The one YAML layer of isolab: reading and writing YAML with `serde-saphyr`.
//!
//! serde-saphyr (on the granit-parser, a maintained YAML 1.2 parser) was chosen over the
//! deprecated `serde_yaml` and over `saphyr`'s marked nodes because it is serde-native, reports
//! every error with a 1-based line and column in characters, never panics on bad input, and
//! gives spans through [`Spanned`] without a second parser: the [`crate::location`] index is
//! built from a [`Spanned`] tree of [`Node`]s, the typed [`crate::Pipeline`] is read from the
//! same text, and both see exactly the same YAML.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeOwned, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_saphyr::{DuplicateKeyPolicy, MessageFormatter as _, Spanned};

use crate::location::Pos;

/// A YAML error: a message without position, and the position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at line {}, column {}", pos.line, pos.col)]
pub struct YamlError {
    /// What the parser or deserializer said, without its position.
    pub message: String,
    /// Where (the start of the file when the parser gave none).
    pub pos: Pos,
}

impl YamlError {
    fn new(e: &serde_saphyr::Error) -> Self {
        let inner = e.without_snippet();
        let message = serde_saphyr::DefaultMessageFormatter
            .format_message(inner)
            .into_owned();
        Self {
            message,
            pos: e.location().map_or(Pos::START, Pos::from_location),
        }
    }
}

/// One YAML node with its children spanned, as read for the position index. Mapping keys are
/// read as strings (a pipeline has no other keys); entries keep file order and duplicates.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    /// `~`, `null` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A whole number above `i64::MAX`.
    UInt(u64),
    /// Any other number.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Spanned<Node>>),
    /// A mapping, in file order, duplicates kept.
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
                Ok(i64::try_from(v).map_or(Node::UInt(v), Node::Int))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_owned()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut items = Vec::with_capacity(a.size_hint().unwrap_or(0));
                while let Some(item) = a.next_element()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut entries = Vec::with_capacity(a.size_hint().unwrap_or(0));
                while let Some(key) = a.next_key()? {
                    entries.push((key, a.next_value()?));
                }
                Ok(Node::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

impl Node {
    /// The plain value, for editing (`--set`) and re-serializing. Non-finite floats become
    /// strings (`.inf`), which no pipeline field accepts as a number anyway.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(i) => Value::from(*i),
            Node::UInt(u) => Value::from(*u),
            Node::Float(f) => serde_json::Number::from_f64(*f)
                .map_or_else(|| Value::String(f.to_string()), Value::Number),
            Node::Str(s) => Value::String(s.clone()),
            Node::Seq(items) => Value::Array(items.iter().map(|i| i.value.to_json()).collect()),
            Node::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.value.clone(), v.value.to_json()))
                    .collect(),
            ),
        }
    }
}

/// The parser options: no source snippets in messages (isolab prints `file:line:col` itself),
/// and duplicate keys kept when reading a [`Node`] tree so that the index can name them by
/// path.
fn options(duplicates: DuplicateKeyPolicy) -> serde_saphyr::Options {
    serde_saphyr::options! {
        with_snippet: false,
        duplicate_keys: duplicates,
    }
}

/// Parses `text` into a spanned tree; `None` for an empty document.
pub(crate) fn parse_tree(text: &str) -> Result<Option<Spanned<Node>>, YamlError> {
    serde_saphyr::from_str_with_options::<Option<Spanned<Node>>>(
        text,
        options(DuplicateKeyPolicy::PassThrough),
    )
    .map_err(|e| YamlError::new(&e))
}

/// Reads a `T` from YAML `text`; duplicate keys are an error.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    serde_saphyr::from_str_with_options(text, options(DuplicateKeyPolicy::Error))
        .map_err(|e| YamlError::new(&e))
}

/// Writes `value` as YAML (block style, strings quoted where they would read as another type).
pub fn to_string<T: Serialize>(value: &T) -> Result<String, String> {
    serde_saphyr::to_string(value).map_err(|e| e.to_string())
}

/// The scalar that starts at `pos` in `text`, as written (quotes kept), for messages that only
/// say a scalar was invalid: up to the end of the line, a flow separator or a comment.
pub(crate) fn scalar_at(text: &str, pos: Pos) -> Option<Cow<'_, str>> {
    let line = text.lines().nth(pos.line.checked_sub(1)?)?;
    let start = line.char_indices().nth(pos.col.checked_sub(1)?)?.0;
    let rest = &line[start..];
    let end = if rest.starts_with(['"', '\'']) {
        let q = rest.chars().next()?;
        rest[1..].find(q).map_or(rest.len(), |i| i + 2)
    } else {
        rest.find([',', ']', '}', '#']).unwrap_or(rest.len())
    };
    let s = rest[..end].trim_end();
    (!s.is_empty()).then_some(Cow::Borrowed(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_positions() {
        let e = from_str::<serde_json::Value>("a: 1\nb: [1, 2\n").unwrap_err();
        assert_eq!(e.pos.line, 2, "{e}");
        assert!(!e.message.contains("line"), "{e}");
        let e = from_str::<serde_json::Value>("a: 1\na: 2\n").unwrap_err();
        assert_eq!(e.pos, Pos { line: 2, col: 1 }, "{e}");
    }

    #[test]
    fn tree_keeps_duplicates_and_round_trips() {
        let t = parse_tree("a: 1\na: [x, 2.5, ~]\n").unwrap().unwrap();
        let Node::Map(entries) = &t.value else {
            panic!("{t:?}")
        };
        assert_eq!(entries.len(), 2);
        assert_eq!(parse_tree("# nothing\n").unwrap(), None);
        let v = parse_tree("b: [1, '1', x, true]\n")
            .unwrap()
            .unwrap()
            .value
            .to_json();
        let text = to_string(&v).unwrap();
        assert_eq!(from_str::<serde_json::Value>(&text).unwrap(), v, "{text}");
    }

    #[test]
    fn scalars_at_positions() {
        let t = "a: many # c\nb: [x, \"y, z\"]\n";
        assert_eq!(
            scalar_at(t, Pos { line: 1, col: 4 }).as_deref(),
            Some("many")
        );
        assert_eq!(scalar_at(t, Pos { line: 2, col: 5 }).as_deref(), Some("x"));
        assert_eq!(
            scalar_at(t, Pos { line: 2, col: 8 }).as_deref(),
            Some("\"y, z\"")
        );
        assert_eq!(scalar_at(t, Pos { line: 9, col: 1 }), None);
    }
}
