//! The report's environment section: what each host said about itself in `env/<host>.json`
//! (kernel, CPU, cores, memory, cgroup version, every backend with its version, accelerator and,
//! when it cannot run here, the reason), and which of this run's platforms used each backend.
//!
//! Host files are read leniently: a field an older agent did not write is absent, never an
//! error, so the report of an old run still renders.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::read::Run;

/// One host's description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostEnvironment {
    /// Host name (the `env/<host>.json` file stem).
    pub host: String,
    /// Kernel release.
    pub kernel: Option<String>,
    /// Operating system.
    pub os: Option<String>,
    /// Machine architecture.
    pub arch: Option<String>,
    /// CPU model.
    pub cpu_model: Option<String>,
    /// Online CPUs.
    pub cores: Option<u64>,
    /// Total memory.
    pub memory_bytes: Option<u64>,
    /// cgroup version as the agent described it.
    pub cgroup_version: Option<String>,
    /// Kernel clock source.
    pub clock_source: Option<String>,
    /// Version of the agent that described the host.
    pub agent_version: Option<String>,
    /// Every backend the agent reported, in its order.
    pub backends: Vec<BackendEnvironment>,
}

/// One backend on one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendEnvironment {
    /// Backend name (`native`, `container/runsc`, `vm`…).
    pub name: String,
    /// Whether trials can run on it there.
    pub available: bool,
    /// Version of what implements it.
    pub version: String,
    /// Accelerator a VM would use (`kvm`, `tcg`), empty otherwise.
    pub accel: String,
    /// Why it is not available (empty when it is).
    pub reason: String,
    /// Platforms of this run whose trials ran on this backend on this host, in run order.
    pub used_by: Vec<String>,
}

fn text(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn number(v: &Value, key: &str) -> Option<u64> {
    v.get(key)?.as_u64()
}

/// Platforms of the run by the backend their trials named (exact name: a platform is listed
/// once, under `container` rather than also under `container/runc`).
fn platforms_by_backend(run: &Run, host: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let single_host = run.env.len() <= 1;
    for t in &run.manifest.trials {
        let on_host = t.host.as_deref().map_or(single_host, |h| h == host);
        if !on_host {
            continue;
        }
        let list = out.entry(t.backend.clone()).or_default();
        if !list.contains(&t.platform) {
            list.push(t.platform.clone());
        }
    }
    out
}

/// The environment of every host of the run, by host name.
pub fn environment(run: &Run) -> Vec<HostEnvironment> {
    run.env
        .iter()
        .map(|(host, v)| {
            let used = platforms_by_backend(run, host);
            let backends = v
                .get("backends")
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .filter_map(|b| {
                            let name = text(b, "name")?;
                            Some(BackendEnvironment {
                                available: b.get("available").and_then(Value::as_bool)
                                    == Some(true),
                                version: text(b, "version").unwrap_or_default(),
                                accel: text(b, "accel").unwrap_or_default(),
                                reason: text(b, "reason").unwrap_or_default(),
                                used_by: used.get(&name).cloned().unwrap_or_default(),
                                name,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            HostEnvironment {
                host: host.clone(),
                kernel: text(v, "kernel"),
                os: text(v, "os"),
                arch: text(v, "arch"),
                cpu_model: text(v, "cpu_model"),
                cores: number(v, "cores"),
                memory_bytes: number(v, "memory_bytes"),
                cgroup_version: text(v, "cgroup_version"),
                clock_source: text(v, "clock_source"),
                agent_version: text(v, "agent_version"),
                backends,
            }
        })
        .collect()
}

/// Bytes as GiB with one decimal.
pub fn gib(bytes: u64) -> String {
    // Display only: a memory size is far below 2^53.
    #[allow(clippy::cast_precision_loss)]
    let g = bytes as f64 / f64::from(1u32 << 30);
    format!("{g:.1} GiB")
}

/// Escapes a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The `## Environment` section of `report.md`.
pub fn markdown(hosts: &[HostEnvironment]) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("## Environment\n\n");
    if hosts.is_empty() {
        out.push_str("No host described itself (the run has no `env/<host>.json`).\n\n");
        return out;
    }
    for h in hosts {
        let dash = |x: &Option<String>| x.clone().unwrap_or_else(|| "not recorded".to_owned());
        let _ = writeln!(out, "| host | `{}` |\n|---|---|", h.host);
        let mut kernel = dash(&h.kernel);
        if let Some(os) = &h.os {
            let _ = write!(kernel, " ({os})");
        }
        let cpu = match (&h.cpu_model, h.cores) {
            (Some(m), Some(c)) => format!("{m}, {c} cores"),
            (None, Some(c)) => format!("{c} cores"),
            (m, None) => dash(m),
        };
        let rows = [
            ("kernel", kernel),
            ("CPU", cpu),
            ("architecture", dash(&h.arch)),
            (
                "memory",
                h.memory_bytes
                    .map_or_else(|| "not recorded".to_owned(), gib),
            ),
            ("cgroup", dash(&h.cgroup_version)),
            ("clock source", dash(&h.clock_source)),
            ("agent", dash(&h.agent_version)),
        ];
        for (k, v) in rows {
            let _ = writeln!(out, "| {k} | {} |", cell(&v));
        }
        out.push('\n');
        let (up, down): (Vec<_>, Vec<_>) = h.backends.iter().partition(|b| b.available);
        if !up.is_empty() {
            let _ = writeln!(
                out,
                "| backend | used by | version | accelerator |\n|---|---|---|---|"
            );
            for b in up {
                let used = if b.used_by.is_empty() {
                    "–".to_owned()
                } else {
                    b.used_by.join(", ")
                };
                let accel = if b.accel.is_empty() { "–" } else { &b.accel };
                let version = if b.version.is_empty() {
                    "–"
                } else {
                    &b.version
                };
                let _ = writeln!(
                    out,
                    "| `{}` | {} | {} | {} |",
                    b.name,
                    cell(&used),
                    cell(version),
                    cell(accel)
                );
            }
            out.push('\n');
        }
        if !down.is_empty() {
            let _ = writeln!(out, "Not available on `{}`:\n", h.host);
            for b in down {
                let reason = if b.reason.is_empty() {
                    "no reason given"
                } else {
                    &b.reason
                };
                let mut line = format!("- `{}`: {}", b.name, reason.replace('\n', " "));
                if !b.used_by.is_empty() {
                    let _ = write!(line, " (platforms of this run: {})", b.used_by.join(", "));
                }
                let _ = writeln!(out, "{line}");
            }
            out.push('\n');
        }
    }
    out
}
