//! The differences between two runs' environments, shown first by `isolab compare`: kernel,
//! CPU, cores, memory, versions of isolab and of each backend, accelerators and the hashes of
//! the binaries used, so a reader sees at once whether a change is the platform's or the
//! machine's.
//!
//! Read from each run's `env/<host>.json` (one per agent host) and the manifest's `build`
//! record; with several hosts a field lists each host's value.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One field whose value differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvDifference {
    /// `kernel`, `cpu_model`, `backend vm accel`, `sha256 isolab-workload`, …
    pub field: String,
    /// Value in A (`–` when absent).
    pub a: String,
    /// Value in B (`–` when absent).
    pub b: String,
}

/// The environment fields of a run, flattened to `field → value`.
pub fn environment(run_dir: &Path) -> BTreeMap<String, String> {
    let mut per_field: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut add = |field: String, value: String| per_field.entry(field).or_default().push(value);
    let mut hosts: Vec<_> = std::fs::read_dir(run_dir.join("env"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    hosts.sort();
    for path in hosts {
        let Some(env) = read_json(&path) else {
            continue;
        };
        for key in [
            "kernel",
            "os",
            "arch",
            "cpu_model",
            "cores",
            "memory_bytes",
            "cgroup_version",
            "clock_source",
            "agent_version",
        ] {
            if let Some(v) = scalar(&env[key]) {
                add(key.to_owned(), v);
            }
        }
        for b in env["backends"].as_array().into_iter().flatten() {
            let name = b["name"].as_str().unwrap_or("?");
            let available = b["available"].as_bool().unwrap_or(false);
            add(
                format!("backend {name}"),
                if available {
                    "available"
                } else {
                    "not available"
                }
                .to_owned(),
            );
            for key in ["version", "accel"] {
                if let Some(v) = scalar(&b[key]) {
                    add(format!("backend {name} {key}"), v);
                }
            }
        }
    }
    let mut out: BTreeMap<String, String> = per_field
        .into_iter()
        .map(|(k, v)| {
            let distinct: BTreeSet<String> = v.into_iter().collect();
            (k, distinct.into_iter().collect::<Vec<_>>().join("; "))
        })
        .collect();
    if let Some(m) = read_json(&run_dir.join("manifest.json")) {
        if let Some(v) = scalar(&m["isolab_version"]) {
            out.insert("isolab_version".to_owned(), v);
        }
        let build = &m["build"];
        if let Some(v) = scalar(&build["git_commit"]) {
            out.insert("isolab git commit".to_owned(), v);
        }
        for (name, hash) in build["sha256"].as_object().into_iter().flatten() {
            if let Some(h) = hash.as_str() {
                out.insert(format!("sha256 {name}"), h.chars().take(16).collect());
            }
        }
    }
    out
}

/// Fields whose values differ between the environments of `run_a` and `run_b`.
pub fn env_diff(run_a: &Path, run_b: &Path) -> Vec<EnvDifference> {
    diff(&environment(run_a), &environment(run_b))
}

/// Fields whose values differ between two flattened environments.
pub fn diff(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<EnvDifference> {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| EnvDifference {
            field: k.clone(),
            a: a.get(k).cloned().unwrap_or_else(|| "–".to_owned()),
            b: b.get(k).cloned().unwrap_or_else(|| "–".to_owned()),
        })
        .collect()
}

/// The Markdown block: a table of the differences, or one line saying there are none.
pub fn to_markdown(diffs: &[EnvDifference]) -> String {
    let mut out = String::from("## Environment\n\n");
    if diffs.is_empty() {
        out.push_str(
            "Same environment in both runs (kernel, CPU, cores, memory, isolab and backend \
             versions, accelerators, binary hashes): differences below are the platforms'.\n\n",
        );
        return out;
    }
    let _ = writeln!(
        out,
        "{} environment difference(s): a change below may be the machine's or the build's, not \
         the platform's.\n\n| field | A | B |\n|---|---|---|",
        diffs.len()
    );
    for d in diffs {
        let _ = writeln!(out, "| {} | {} | {} |", d.field, d.a, d.b);
    }
    out.push('\n');
    out
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, kernel: &str, accel: &str, commit: &str) {
        std::fs::create_dir_all(dir.join("env")).unwrap();
        let env = serde_json::json!({
            "hostname": "h", "kernel": kernel, "cpu_model": "EPYC", "cores": 2,
            "backends": [{ "name": "vm", "available": true, "version": "QEMU 9", "accel": accel }],
        });
        std::fs::write(dir.join("env/h.json"), env.to_string()).unwrap();
        let manifest = serde_json::json!({
            "isolab_version": "0.1.0",
            "build": { "git_commit": commit, "sha256": { "isolab-workload": "ab".repeat(32) } },
        });
        std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    }

    #[test]
    fn lists_only_what_differs() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write(a.path(), "6.1", "kvm", "c1");
        write(b.path(), "6.12", "kvm", "c2");
        let d = env_diff(a.path(), b.path());
        let fields: Vec<&str> = d.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(fields, ["isolab git commit", "kernel"]);
        assert_eq!((d[1].a.as_str(), d[1].b.as_str()), ("6.1", "6.12"));
        let md = to_markdown(&d);
        assert!(md.contains("| kernel | 6.1 | 6.12 |"), "{md}");
        write(b.path(), "6.1", "kvm", "c1");
        assert!(env_diff(a.path(), b.path()).is_empty());
        assert!(to_markdown(&[]).contains("Same environment"));
    }
}
