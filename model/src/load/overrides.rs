//! `--set KEY=VALUE` overrides applied to the YAML tree before it is deserialized.
//!
//! KEY is dotted (`defaults.duration`, `platforms.container.limits.memory`); inside a list the
//! segment names an item by its `name` field (`experiments.micro.repetitions`) or by its index.
//! VALUE is read as YAML (`1s`, `2`, `[native, vm]`; empty means "unset").

use serde_json::Value;

use crate::location::{child, index};

/// An override that was applied.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Override {
    /// `KEY=VALUE` as given.
    pub(crate) flag: String,
    /// Where it came from: `--set` or ``profile `quick`:``.
    pub(crate) origin: String,
    /// The YAML path it set, e.g. `experiments[0].repetitions`.
    pub(crate) path: String,
}

impl Override {
    /// An error message about `path` (this override's node or one below it) naming the flag.
    pub(crate) fn describe(&self, path: &str, message: &str) -> String {
        if path == self.path {
            format!("{} {}: {message}", self.origin, self.flag)
        } else {
            format!("{} {}: {path}: {message}", self.origin, self.flag)
        }
    }
}

/// The last override that set `path` or one of its parents.
pub(crate) fn covering<'a>(applied: &'a [Override], path: &str) -> Option<&'a Override> {
    applied.iter().rev().find(|o| {
        path.strip_prefix(o.path.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    })
}

/// Applies `raw` (`KEY=VALUE`) to `root`. On failure returns the deepest path that was found
/// (to place the error) and a message.
pub(crate) fn apply(root: &mut Value, raw: &str) -> Result<Override, (String, String)> {
    let fail = |path: &str, m: String| Err((path.to_owned(), m));
    let Some((key, text)) = raw.split_once('=') else {
        return fail(
            "",
            "expected KEY=VALUE, e.g. `defaults.duration=1s`".to_owned(),
        );
    };
    let segments: Vec<&str> = key.trim().split('.').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return fail(
            "",
            format!("invalid key `{key}`: expected dotted names such as `defaults.duration`"),
        );
    }
    let value: Value = match crate::yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => return fail("", format!("the value is not valid YAML: {e}")),
    };
    let mut path = String::new();
    let mut node = root;
    let (last, parents) = segments.split_last().unwrap_or((&"", &[]));
    for seg in parents {
        let (next, next_path) = step(node, &path, seg, true)?;
        node = next;
        path = next_path;
    }
    match node {
        Value::Object(m) => {
            path = child(&path, last);
            m.insert((*last).to_owned(), value);
        }
        Value::Array(_) => {
            let (slot, slot_path) = step(node, &path, last, false)?;
            *slot = value;
            path = slot_path;
        }
        _ => {
            return fail(
                &path,
                format!("`{path}` is not a mapping, so it has no `{last}`"),
            );
        }
    }
    Ok(Override {
        flag: raw.to_owned(),
        origin: "--set".to_owned(),
        path,
    })
}

/// One segment down from `node` (at `path`); creates missing mappings when `create`.
fn step<'v>(
    node: &'v mut Value,
    path: &str,
    seg: &str,
    create: bool,
) -> Result<(&'v mut Value, String), (String, String)> {
    match node {
        Value::Object(m) => {
            if !m.contains_key(seg) && create {
                m.insert(seg.to_owned(), Value::Object(serde_json::Map::new()));
            }
            let next = child(path, seg);
            match m.get_mut(seg) {
                Some(v) => Ok((v, next)),
                None => Err((path.to_owned(), format!("`{next}` does not exist"))),
            }
        }
        Value::Array(items) => {
            let names: Vec<String> = items
                .iter()
                .filter_map(|i| i.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect();
            let found = items
                .iter()
                .position(|i| i.get("name").and_then(Value::as_str) == Some(seg))
                .or_else(|| seg.parse::<usize>().ok().filter(|&i| i < items.len()));
            match found {
                Some(i) => Ok((&mut items[i], index(path, i))),
                None => Err((
                    path.to_owned(),
                    format!(
                        "`{path}` has no item named `{seg}` (names: {}){}",
                        names.join(", "),
                        crate::suggest::hint(seg, names.iter().map(String::as_str))
                    ),
                )),
            }
        }
        _ => Err((
            path.to_owned(),
            format!("`{path}` is not a mapping, so it has no `{seg}`"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        crate::yaml::from_str(
            "defaults: { duration: 2s }\nexperiments:\n  - { name: micro, repetitions: 3 }\n  - { name: scale }\n",
        )
        .unwrap()
    }

    #[test]
    fn sets_by_name_index_and_creates_parents() {
        let mut v = doc();
        let o = apply(&mut v, "experiments.scale.repetitions=2").unwrap();
        assert_eq!(o.path, "experiments[1].repetitions");
        assert_eq!(v["experiments"][1]["repetitions"], Value::from(2));
        apply(&mut v, "experiments.0.warmup=1").unwrap();
        assert_eq!(v["experiments"][0]["warmup"], Value::from(1));
        let o = apply(&mut v, "platforms.c.limits.memory=256MiB").unwrap();
        assert_eq!(o.path, "platforms.c.limits.memory");
        assert_eq!(
            v["platforms"]["c"]["limits"]["memory"],
            Value::from("256MiB")
        );
        apply(&mut v, "defaults.duration=1s").unwrap();
        assert_eq!(v["defaults"]["duration"], Value::from("1s"));
    }

    #[test]
    fn bad_overrides() {
        let mut v = doc();
        assert!(
            apply(&mut v, "defaults.duration")
                .unwrap_err()
                .1
                .contains("KEY=VALUE")
        );
        assert!(
            apply(&mut v, "defaults..x=1")
                .unwrap_err()
                .1
                .contains("invalid key")
        );
        let (path, m) = apply(&mut v, "experiments.mikro.repetitions=1").unwrap_err();
        assert_eq!(path, "experiments");
        assert!(m.contains("did you mean `micro`?"), "{m}");
        let (path, m) = apply(&mut v, "defaults.duration.x=1").unwrap_err();
        assert_eq!(path, "defaults.duration");
        assert!(m.contains("is not a mapping"), "{m}");
        assert!(
            apply(&mut v, "defaults.x=[1")
                .unwrap_err()
                .1
                .contains("not valid YAML")
        );
    }

    #[test]
    fn covering_matches_whole_segments() {
        let applied = [Override {
            flag: "a.b=1".into(),
            origin: "--set".into(),
            path: "a.b".into(),
        }];
        assert!(covering(&applied, "a.b").is_some());
        assert!(covering(&applied, "a.b.c").is_some());
        assert!(covering(&applied, "a.bc").is_none());
        assert!(covering(&applied, "a").is_none());
    }
}
