//! Where each node of a YAML document sits: an index from a path such as
//! `experiments[0].platforms[2]` or `platforms.vm.vcpus` to the line and column of its key and of
//! its value.
//!
//! serde sees values, not positions, so the rules in [`crate::validate`] name the path of what is
//! wrong and this index turns the path into a position. It is built in one pass over the spanned
//! tree that [`crate::yaml`] reads (serde-saphyr's [`Spanned`] nodes), with a hash map per
//! document, so building it is linear in the size of the file; a path that does not exist (a
//! defaulted field) falls back to its nearest existing parent.

use std::collections::{HashMap, HashSet};

use serde_saphyr::Spanned;

use crate::yaml::{Node, YamlError};

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

    /// The position of a serde-saphyr location (1-based, in characters, as here).
    pub(crate) fn from_location(l: serde_saphyr::Location) -> Self {
        Self {
            line: usize::try_from(l.line()).unwrap_or(1).max(1),
            col: usize::try_from(l.column()).unwrap_or(1).max(1),
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
    /// Every key and value position with its path, sorted by position (for [`Self::path_at`]).
    by_pos: Vec<(Pos, bool, String)>,
    duplicates: Vec<(String, Pos)>,
}

impl LocationIndex {
    /// Indexes `text`; an empty index when `text` is not YAML (the loader reports that error).
    pub fn build(text: &str) -> Self {
        Self::parse(text)
            .map(|(index, _)| index)
            .unwrap_or_default()
    }

    /// Parses `text` once into its index and its tree (`None` for an empty document).
    pub(crate) fn parse(text: &str) -> Result<(Self, Option<Spanned<Node>>), YamlError> {
        let root = crate::yaml::parse_tree(text)?;
        let mut index = Self::default();
        if let Some(root) = &root {
            index.walk(String::new(), None, root);
        }
        index.by_pos.sort_by(|(a, ak, ap), (b, bk, bp)| {
            a.cmp(b).then(bk.cmp(ak)).then(ap.len().cmp(&bp.len()))
        });
        Ok((index, root))
    }

    fn walk(&mut self, path: String, key: Option<Pos>, node: &Spanned<Node>) {
        let mut value = Pos::from_location(node.referenced);
        match &node.value {
            Node::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.walk(index(&path, i), None, item);
                }
            }
            Node::Map(entries) => {
                let mut seen: HashSet<&str> = HashSet::with_capacity(entries.len());
                for (k, v) in entries {
                    let kpos = Pos::from_location(k.referenced);
                    // A block mapping starts at its first key.
                    value = value.min(kpos);
                    let p = child(&path, &k.value);
                    if !seen.insert(k.value.as_str()) {
                        self.duplicates.push((p, kpos));
                        continue;
                    }
                    self.walk(p, Some(kpos), v);
                }
            }
            _ => {}
        }
        if let Some(k) = key {
            self.by_pos.push((k, true, path.clone()));
        }
        self.by_pos.push((value, false, path.clone()));
        self.entries.entry(path).or_insert(Entry { key, value });
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
    /// position in one rendering of a document to the same node in another). At equal
    /// positions a key wins over a value, and a shorter path over a longer one.
    pub fn path_at(&self, pos: Pos) -> Option<&str> {
        self.node_at(pos).map(|(_, path)| path)
    }

    /// Like [`Self::path_at`], and whether `pos` is exactly a key's position.
    pub fn node_at(&self, pos: Pos) -> Option<(bool, &str)> {
        let end = self.by_pos.partition_point(|(p, _, _)| *p <= pos);
        let (p, _, _) = self.by_pos.get(end.checked_sub(1)?)?;
        // The first entry at the closest position: keys sort before values there.
        let start = self.by_pos.partition_point(|(q, _, _)| q < p);
        let (at, is_key, path) = &self.by_pos[start];
        Some((*is_key && *at == pos, path.as_str()))
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
        assert_eq!(idx.node_at(pos(7, 3)), Some((true, "g.h")));
        assert_eq!(idx.node_at(pos(4, 9)), Some((false, "b[1].c")));
        let dup = LocationIndex::build("x: 1\ny: 2\nx: 3\n");
        assert_eq!(dup.duplicates(), &[("x".to_owned(), pos(3, 1))]);
    }

    #[test]
    fn parents() {
        assert_eq!(parent("a.b[2]"), Some("a.b"));
        assert_eq!(parent("a.b"), Some("a"));
        assert_eq!(parent("a"), Some(""));
        assert_eq!(parent(""), None);
    }
}
