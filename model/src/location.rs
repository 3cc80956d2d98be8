//! Where each node of a YAML document sits: an index from a path such as
//! `experiments[0].platforms[2]` or `platforms.vm.vcpus` to the line and column of its key and of
//! its value.
//!
//! serde sees values, not positions, so the rules in [`crate::validate`] name the path of what is
//! wrong and this index turns the path into a position. It is built from `yaml-rust2`'s marked
//! parser events; a path that does not exist (a defaulted field) falls back to its nearest
//! existing parent.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

impl Pos {
    /// The start of the file.
    pub const START: Self = Self { line: 1, col: 1 };

    /// `yaml-rust2` markers carry a 1-based line but a 0-based column.
    fn from_marker(m: Marker) -> Self {
        Self {
            line: m.line().max(1),
            col: m.col() + 1,
        }
    }
}

/// The positions of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The key of a mapping entry; `None` for list items and the document root.
    pub key: Option<Pos>,
    /// The value (for a collection: where the collection starts).
    pub value: Pos,
}

/// Which position of a node to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum At {
    /// The key (`vcpus:` in `vcpus: 2`); the value for list items.
    Key,
    /// The value.
    Value,
}

/// Index from YAML paths to positions.
#[derive(Debug, Clone, Default)]
pub struct LocationIndex {
    entries: HashMap<String, Entry>,
    duplicates: Vec<(String, Pos)>,
}

impl LocationIndex {
    /// Indexes `text`. A syntax error stops indexing; what was seen before it is kept.
    pub fn build(text: &str) -> Self {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        // Errors are reported by the serde parser; a partial index is still useful.
        let _ = parser.load(&mut builder, false);
        Self {
            entries: builder.entries,
            duplicates: builder.duplicates,
        }
    }

    /// The positions of `path`, if it exists in the document.
    pub fn get(&self, path: &str) -> Option<Entry> {
        self.entries.get(path).copied()
    }

    /// The position of `path`'s key or value, or of its nearest existing parent (the parent's
    /// key: that is where a missing field belongs), or the start of the file.
    pub fn locate(&self, path: &str, at: At) -> Pos {
        if let Some(e) = self.get(path) {
            return match at {
                At::Key => e.key.unwrap_or(e.value),
                At::Value => e.value,
            };
        }
        let mut p = path;
        while let Some(parent) = parent(p) {
            if let Some(e) = self.get(parent) {
                return e.key.unwrap_or(e.value);
            }
            p = parent;
        }
        Pos::START
    }

    /// The path of the node whose key or value starts closest before `pos` (used to map a
    /// position in one rendering of a document to the same node in another).
    pub fn path_at(&self, pos: Pos) -> Option<&str> {
        self.entries
            .iter()
            .flat_map(|(path, e)| e.key.into_iter().chain([e.value]).map(move |p| (p, path)))
            .filter(|(p, _)| *p <= pos)
            .max_by(|(a, pa), (b, pb)| a.cmp(b).then_with(|| pb.len().cmp(&pa.len())))
            .map(|(_, path)| path.as_str())
    }

    /// Keys that appear twice in the same mapping: the path and the second key's position.
    pub fn duplicates(&self) -> &[(String, Pos)] {
        &self.duplicates
    }

    /// Number of indexed nodes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was indexed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// `a.b[2]` → `a.b`, `a.b` → `a`, `a` → `` (the root), `` → none.
pub fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

/// `child("a", "b")` → `a.b`; `child("", "b")` → `b`.
pub fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// `index("a", 2)` → `a[2]`.
pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

enum Frame {
    Mapping {
        path: String,
        /// The key whose value comes next, with its position; `None` while a key is expected.
        pending: Option<(String, Pos)>,
        seen: Vec<String>,
    },
    Sequence {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    entries: HashMap<String, Entry>,
    duplicates: Vec<(String, Pos)>,
    /// Depth of a complex (non-scalar) mapping key being skipped.
    skipping: usize,
}

impl Builder {
    /// A node starts at `pos`: returns its path, or `None` when the node is a mapping key (or
    /// inside one), which the index does not track.
    fn node(&mut self, pos: Pos, scalar: Option<&str>) -> Option<String> {
        let (path, key) = match self.stack.last_mut() {
            None => (String::new(), None),
            Some(Frame::Sequence { path, next }) => {
                let p = index(path, *next);
                *next += 1;
                (p, None)
            }
            Some(Frame::Mapping {
                path,
                pending,
                seen,
            }) => match pending.take() {
                Some((k, kpos)) => (child(path, &k), Some(kpos)),
                None => {
                    let k = scalar.unwrap_or("?").to_owned();
                    // A block mapping's start event comes after its first key has been
                    // scanned; the mapping starts at that key.
                    if seen.is_empty()
                        && let Some(e) = self.entries.get_mut(path.as_str())
                    {
                        e.value = e.value.min(pos);
                    }
                    if scalar.is_some() && seen.contains(&k) {
                        self.duplicates.push((child(path, &k), pos));
                    } else {
                        seen.push(k.clone());
                    }
                    *pending = Some((k, pos));
                    return None;
                }
            },
        };
        self.entries
            .entry(path.clone())
            .or_insert(Entry { key, value: pos });
        Some(path)
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::from_marker(mark);
        if self.skipping > 0 {
            match ev {
                Event::MappingStart(..) | Event::SequenceStart(..) => self.skipping += 1,
                Event::MappingEnd | Event::SequenceEnd => self.skipping -= 1,
                _ => {}
            }
            return;
        }
        match ev {
            Event::Scalar(ref value, ..) => {
                self.node(pos, Some(value));
            }
            Event::Alias(_) => {
                self.node(pos, None);
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => match self.node(pos, None) {
                Some(path) => self.stack.push(if matches!(ev, Event::MappingStart(..)) {
                    Frame::Mapping {
                        path,
                        pending: None,
                        seen: Vec::new(),
                    }
                } else {
                    Frame::Sequence { path, next: 0 }
                }),
                None => self.skipping = 1,
            },
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
a: 1
b:
  - x
  - {c: d, e: [1, 2]}
f: ééé
g:
  h: 2
";

    fn pos(line: usize, col: usize) -> Pos {
        Pos { line, col }
    }

    #[test]
    fn positions_are_one_based() {
        let idx = LocationIndex::build(DOC);
        assert_eq!(
            idx.get("a"),
            Some(Entry {
                key: Some(pos(1, 1)),
                value: pos(1, 4)
            })
        );
        assert_eq!(idx.get("b[0]").map(|e| e.value), Some(pos(3, 5)));
        assert_eq!(
            idx.get("b[1].c"),
            Some(Entry {
                key: Some(pos(4, 6)),
                value: pos(4, 9)
            })
        );
        assert_eq!(idx.get("b[1].e[1]").map(|e| e.value), Some(pos(4, 19)));
        assert_eq!(
            idx.get("g.h"),
            Some(Entry {
                key: Some(pos(7, 3)),
                value: pos(7, 6)
            })
        );
        assert_eq!(idx.get("f").map(|e| e.value), Some(pos(5, 4)));
    }

    #[test]
    fn missing_paths_fall_back_to_parent_key() {
        let idx = LocationIndex::build(DOC);
        assert_eq!(idx.locate("g.zzz", At::Key), pos(6, 1));
        assert_eq!(idx.locate("b[1].e[7]", At::Value), pos(4, 12));
        assert_eq!(idx.locate("nothing.here", At::Value), pos(1, 1));
        assert_eq!(idx.locate("a", At::Key), pos(1, 1));
        assert_eq!(idx.locate("a", At::Value), pos(1, 4));
    }

    #[test]
    fn reverse_lookup_and_duplicates() {
        let idx = LocationIndex::build(DOC);
        assert_eq!(idx.path_at(pos(7, 6)), Some("g.h"));
        assert_eq!(idx.path_at(pos(4, 10)), Some("b[1].c"));
        let dup = LocationIndex::build("x: 1\ny: 2\nx: 3\n");
        assert_eq!(dup.duplicates(), &[("x".to_owned(), pos(3, 1))]);
    }

    #[test]
    fn complex_keys_are_skipped() {
        let idx = LocationIndex::build("? [a, b]\n: 1\nc: 2\n");
        assert_eq!(idx.get("c").map(|e| e.value), Some(pos(3, 4)));
    }

    #[test]
    fn parents() {
        assert_eq!(parent("a.b[2]"), Some("a.b"));
        assert_eq!(parent("a.b"), Some("a"));
        assert_eq!(parent("a"), Some(""));
        assert_eq!(parent(""), None);
    }
}
