//! Self-announcement: with `isolab-agent --announce nats://HOST:PORT` the agent publishes a
//! [`Heartbeat`] (JSON) every `--heartbeat-interval` on `isolab.agent.<name>.heartbeat`; a
//! coordinator started with `--discover` keeps the live set from them and drops an agent after
//! missed heartbeats.
//!
//! The [`Heartbeat`] type and the subjects live here so that both sides read the same contract.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::Capabilities;

/// Default time between two heartbeats.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
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

/// Why announcing failed.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    /// The NATS server could not be reached.
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        /// The `--announce` URL.
        url: String,
        /// What async-nats said.
        #[source]
        source: async_nats::ConnectError,
    },
    /// The heartbeat could not be encoded.
    #[error("cannot encode the heartbeat of {name}: {source}")]
    Encode {
        /// The agent.
        name: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
}

/// Connects to the NATS server at `url` (`nats://host:port`), naming the connection after the agent.
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, AnnounceError> {
    async_nats::ConnectOptions::new()
        .name(format!("isolab-agent {name}"))
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|source| AnnounceError::Connect {
            url: url.to_owned(),
            source,
        })
}

/// Publishes `heartbeat` every `interval` (the first at once) until `stop` resolves. A failed
/// publish is logged and retried on the next tick (the client reconnects by itself).
pub async fn announce(
    client: async_nats::Client,
    heartbeat: Heartbeat,
    interval: Duration,
    stop: impl Future<Output = ()>,
) -> Result<(), AnnounceError> {
    let subject = heartbeat_subject(&heartbeat.name);
    let payload = serde_json::to_vec(&heartbeat).map_err(|source| AnnounceError::Encode {
        name: heartbeat.name.clone(),
        source,
    })?;
    let payload = bytes::Bytes::from(payload);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(%subject, address = %heartbeat.address, "announcing on NATS every {interval:?}");
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = tick.tick() => {
                if let Err(e) = client.publish(subject.clone(), payload.clone()).await {
                    tracing::warn!(%subject, "heartbeat not published: {e}");
                } else if let Err(e) = client.flush().await {
                    tracing::warn!(%subject, "heartbeat not flushed: {e}");
                }
            }
        }
    }
    tracing::info!(%subject, "stopped announcing");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_single_tokens() {
        assert_eq!(heartbeat_subject("node-1"), "isolab.agent.node-1.heartbeat");
        assert_eq!(heartbeat_subject("a.b c*"), "isolab.agent.a_b_c_.heartbeat");
    }

    #[test]
    fn heartbeat_lists_available_platforms_only() {
        let caps = Capabilities {
            agent_version: "0.1.0".into(),
            host: crate::core::HostInfo::default(),
            backends: vec![
                crate::backend::BackendStatus {
                    name: "native".into(),
                    available: true,
                    ..Default::default()
                },
                crate::backend::BackendStatus::unavailable("vm", "no kernel"),
            ],
            labels: [("rack".to_owned(), "r1".to_owned())].into(),
            workloads: vec![],
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
