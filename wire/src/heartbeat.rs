//! Agent heartbeats: with `isolab-agent --announce nats://HOST:PORT` an agent publishes a
//! [`Heartbeat`] (JSON) on [`heartbeat_subject`]; a coordinator started with `--discover`
//! subscribes to [`HEARTBEAT_SUBJECTS`]. Both sides read this one contract.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::types::Capabilities;

/// The subject every agent's heartbeats match (for subscribers).
pub const HEARTBEAT_SUBJECTS: &str = "isolab.agent.*.heartbeat";

/// The subject an agent named `name` publishes its heartbeats on. Characters NATS treats as
/// separators or wildcards (`.`, `*`, `>`, white space) become `_`.
pub fn heartbeat_subject(name: &str) -> String {
    let token: String = name
        .chars()
        .map(|c| {
            if c == '.' || c == '*' || c == '>' || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect();
    format!("isolab.agent.{token}.heartbeat")
}

/// What an agent says about itself on every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The agent's name (its host name unless set).
    pub name: String,
    /// The gRPC address a coordinator dials (`http://127.0.0.1:7411`, `https://host:7411`).
    pub address: String,
    /// Labels for placement (`rack`, `zone`…).
    pub labels: BTreeMap<String, String>,
    /// Backends that work on this host (`native`, `container`, `vm`…).
    pub platforms: Vec<String>,
    /// The agent's version.
    pub version: String,
    /// Milliseconds until the next heartbeat: how a listener counts missed ones.
    pub interval_ms: u64,
}

impl Heartbeat {
    /// The heartbeat of an agent reachable at `address` with these capabilities.
    pub fn from_capabilities(
        name: &str,
        address: &str,
        caps: &Capabilities,
        interval: Duration,
    ) -> Self {
        Self {
            name: name.to_owned(),
            address: address.to_owned(),
            labels: caps.labels.clone(),
            platforms: caps
                .backends
                .iter()
                .filter(|b| b.available)
                .map(|b| b.name.clone())
                .collect(),
            version: caps.agent_version.clone(),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{BackendStatus, HostInfo};

    #[test]
    fn subjects_are_single_tokens() {
        assert_eq!(heartbeat_subject("node-1"), "isolab.agent.node-1.heartbeat");
        assert_eq!(heartbeat_subject("a.b c*"), "isolab.agent.a_b_c_.heartbeat");
    }

    #[test]
    fn heartbeat_lists_available_platforms_only() {
        let caps = Capabilities {
            agent_version: "0.1.0".into(),
            host: HostInfo::default(),
            backends: vec![
                BackendStatus {
                    name: "native".into(),
                    available: true,
                    ..Default::default()
                },
                BackendStatus::unavailable("vm", "no kernel"),
            ],
            labels: [("rack".to_owned(), "r1".to_owned())].into(),
            workloads: vec![],
            budget: None,
        };
        let hb = Heartbeat::from_capabilities(
            "a",
            "http://127.0.0.1:1",
            &caps,
            Duration::from_millis(500),
        );
        assert_eq!(hb.platforms, ["native"]);
        assert_eq!(hb.labels["rack"], "r1");
        assert_eq!(hb.interval_ms, 500);
        let json = serde_json::to_string(&hb).unwrap();
        assert_eq!(serde_json::from_str::<Heartbeat>(&json).unwrap(), hb);
    }
}
