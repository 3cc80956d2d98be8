//! The agent inventory (`--inventory hosts.yaml`) and trial placement.
//!
//! ```yaml
//! agents:
//!   - address: https://10.0.0.11:7411
//!     labels: { rack: r1, zone: a }
//!     tls_domain: r1          # optional: the name in the agent's certificate
//! ```
//!
//! Placement follows each experiment's `placement` ([`isolab_model::pipeline::Placement`]):
//! `spread_by: LABEL` deals the experiment's trials round-robin over the label's values (sorted),
//! and within a value round-robin over its agents; `pack: true` puts them all on the first agent;
//! `host: NAME` on the agent whose `host` label, address host or TLS domain is `NAME`. Without a
//! placement a trial goes to whichever agent is free first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use isolab_model::Pipeline;
use isolab_model::plan::Trial;
use serde::Deserialize;

/// An inventory file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// The agents.
    pub agents: Vec<InventoryAgent>,
}

/// One agent of the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryAgent {
    /// Its gRPC address (`https://host:port`, `host:port`).
    pub address: String,
    /// Labels such as `rack` and `zone`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The name its TLS certificate carries, when not the host of `address`.
    #[serde(default)]
    pub tls_domain: Option<String>,
}

/// Why an inventory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The file could not be read.
    #[error("cannot read inventory {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid inventory.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// No agents listed.
    #[error("{path}: the inventory lists no agents")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// Reads and checks an inventory file.
pub fn load_inventory(path: &Path) -> Result<Inventory, InventoryError> {
    let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_inventory(path, &text)
}

/// Parses inventory text; `path` names it in errors.
pub fn parse_inventory(path: &Path, text: &str) -> Result<Inventory, InventoryError> {
    let inv: Inventory = isolab_model::yaml::from_str(text).map_err(|e| InventoryError::Parse {
        path: path.to_path_buf(),
        line: e.pos.line,
        column: e.pos.col,
        message: e.message,
    })?;
    if inv.agents.is_empty() {
        return Err(InventoryError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(inv)
}

/// An agent to connect to, from `--agent` or the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Target {
    /// Its address.
    pub address: String,
    /// Its inventory labels (empty for `--agent`).
    pub labels: BTreeMap<String, String>,
    /// The name its TLS certificate carries, when not the host of `address`.
    pub tls_domain: Option<String>,
    /// The name it announced (discovery): the name its certificate must carry when neither the
    /// inventory nor `--tls-domain` gives one, so a discovered agent is checked against its own
    /// per-agent certificate (`isolab certs init --agent NAME`).
    pub announced_name: Option<String>,
}

/// The agents of a run: every `--agent` address, then the inventory's.
pub fn targets(agents: &[String], inventory: Option<&Path>) -> Result<Vec<Target>, InventoryError> {
    let mut out: Vec<Target> = agents
        .iter()
        .map(|a| Target {
            address: a.clone(),
            ..Target::default()
        })
        .collect();
    if let Some(path) = inventory {
        for a in load_inventory(path)?.agents {
            out.push(Target {
                address: a.address,
                labels: a.labels,
                tls_domain: a.tls_domain,
                announced_name: None,
            });
        }
    }
    Ok(out)
}

/// What placement knows of an agent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentSlot {
    /// The address the coordinator dials (its key in the run).
    pub address: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Other names it answers to (host label, TLS domain, reported host name).
    pub names: Vec<String>,
}

/// The placement view of a connected agent: inventory labels over the labels it reports.
pub fn slot(
    address: &str,
    target: Option<&Target>,
    caps: &isolab_proto::v1::CapabilitiesResponse,
) -> AgentSlot {
    let mut labels: BTreeMap<String, String> = caps
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut names = Vec::new();
    if let Some(t) = target {
        labels.extend(t.labels.clone());
        names.extend(t.tls_domain.clone());
    }
    if let Some(h) = &caps.host {
        names.push(h.hostname.clone());
    }
    AgentSlot {
        address: address.to_owned(),
        labels,
        names,
    }
}

/// The agent each trial goes to: trial id → index into `agents`. Trials of experiments without a
/// placement (or whose placement matches no agent) are absent: any agent may run them.
pub fn place(
    pipeline: &Pipeline,
    trials: &[Trial],
    agents: &[AgentSlot],
) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    if agents.is_empty() {
        return out;
    }
    for exp in &pipeline.experiments {
        let Some(p) = &exp.placement else { continue };
        let ours = trials.iter().filter(|t| t.experiment == exp.name);
        if let Some(label) = &p.spread_by {
            let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
            for (i, a) in agents.iter().enumerate() {
                if let Some(v) = a.labels.get(label) {
                    groups.entry(v.as_str()).or_default().push(i);
                }
            }
            let groups: Vec<Vec<usize>> = groups.into_values().collect();
            if groups.is_empty() {
                continue;
            }
            let mut turn_in_group = vec![0usize; groups.len()];
            for (n, t) in ours.enumerate() {
                let g = n % groups.len();
                let members = &groups[g];
                out.insert(t.id.clone(), members[turn_in_group[g] % members.len()]);
                turn_in_group[g] += 1;
            }
        } else if let Some(host) = &p.host {
            let found = agents.iter().position(|a| {
                a.labels.get("host") == Some(host)
                    || url_host(&a.address) == host
                    || a.names.iter().any(|n| n == host)
            });
            if let Some(i) = found {
                for t in ours {
                    out.insert(t.id.clone(), i);
                }
            }
        } else if p.pack {
            for t in ours {
                out.insert(t.id.clone(), 0);
            }
        }
    }
    out
}

fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(addr: &str, rack: &str) -> AgentSlot {
        AgentSlot {
            address: addr.into(),
            labels: [("rack".to_owned(), rack.to_owned())].into(),
            names: vec![],
        }
    }

    const PIPELINE: &str = "apiVersion: isolab/v1\nkind: Pipeline\nname: p\ndefaults: { repetitions: 3, warmup: 0, duration: 100ms }\nplatforms:\n  native: { backend: native }\nexperiments:\n  - name: e\n    analysis: overhead\n    platforms: [native]\n    workloads: [syscall, cpu_spin]\n    placement: PLACEMENT\n";

    fn pipeline(placement: &str) -> Pipeline {
        let text = PIPELINE.replace("PLACEMENT", placement);
        isolab_model::load::load_str("p.yaml", &text).expect("valid pipeline")
    }

    #[test]
    fn spread_by_rack_uses_every_rack_evenly() {
        let p = pipeline("{ spread_by: rack }");
        let trials = isolab_model::plan::plan(&p);
        let agents = [
            slot("a:1", "r1"),
            slot("b:1", "r2"),
            slot("c:1", "r2"),
            slot("d:1", "r3"),
        ];
        let placed = place(&p, &trials, &agents);
        assert_eq!(placed.len(), trials.len());
        let mut per_rack: BTreeMap<&str, usize> = BTreeMap::new();
        for i in placed.values() {
            *per_rack
                .entry(agents[*i].labels["rack"].as_str())
                .or_default() += 1;
        }
        assert_eq!(per_rack.len(), 3, "{per_rack:?}");
        let (min, max) = (
            per_rack.values().min().unwrap(),
            per_rack.values().max().unwrap(),
        );
        assert!(max - min <= 1, "{per_rack:?}");
    }

    #[test]
    fn pack_and_host() {
        let p = pipeline("{ pack: true }");
        let trials = isolab_model::plan::plan(&p);
        let agents = [slot("https://a:1", "r1"), slot("https://b:1", "r2")];
        assert!(place(&p, &trials, &agents).values().all(|i| *i == 0));
        let p = pipeline("{ host: b }");
        assert!(place(&p, &trials, &agents).values().all(|i| *i == 1));
    }

    #[test]
    fn inventory_errors_point_at_the_line() {
        let path = Path::new("hosts.yaml");
        let err = parse_inventory(path, "agents:\n  - address: a:1\n    rak: r1\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("hosts.yaml:3:"), "{msg}");
        assert!(msg.contains("rak"), "{msg}");
        let inv = parse_inventory(
            path,
            "agents:\n  - address: a:1\n    labels: { rack: r1 }\n    tls_domain: r1\n",
        )
        .unwrap();
        assert_eq!(inv.agents[0].labels["rack"], "r1");
        assert_eq!(inv.agents[0].tls_domain.as_deref(), Some("r1"));
        assert!(matches!(
            parse_inventory(path, "agents: []\n"),
            Err(InventoryError::Empty { .. })
        ));
    }
}
