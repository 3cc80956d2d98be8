//! Finding agents by their heartbeats (`isolab run|plan --discover nats://HOST:PORT`).
//!
//! Agents started with `--announce` publish an [`isolab_wire::heartbeat::Heartbeat`] every few
//! seconds; [`Discovery`] subscribes to all of them, keeps the live set and drops an agent once it
//! missed `missed` heartbeats in a row (judged by the interval the agent itself announces). The
//! live set becomes [`Target`]s for the existing inventory and placement code.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use isolab_wire::heartbeat::{HEARTBEAT_SUBJECTS, Heartbeat};
use tokio::task::JoinHandle;

use crate::inventory::{AgentSlot, Target};

/// Heartbeats an agent may miss before it leaves the live set.
pub const DEFAULT_MISSED_HEARTBEATS: u32 = 3;
/// How long [`collect`] waits for a first heartbeat.
pub const FIRST_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// The NATS server could not be reached.
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        /// The `--discover` URL.
        url: String,
        /// What async-nats said.
        #[source]
        source: async_nats::ConnectError,
    },
    /// The subscription was refused.
    #[error("cannot subscribe to {subject} on {url}: {source}")]
    Subscribe {
        /// The `--discover` URL.
        url: String,
        /// The subject.
        subject: String,
        /// What async-nats said.
        #[source]
        source: async_nats::SubscribeError,
    },
    /// No agent announced itself in time.
    #[error("no agent announced itself on {url} within {waited:?}")]
    NoAgents {
        /// The `--discover` URL.
        url: String,
        /// How long it waited.
        waited: Duration,
    },
}

#[derive(Debug, Clone)]
struct Seen {
    heartbeat: Heartbeat,
    last: Instant,
}

/// The live set of announced agents, kept up to date by a background task until dropped.
#[derive(Debug)]
pub struct Discovery {
    seen: Arc<Mutex<BTreeMap<String, Seen>>>,
    missed: u32,
    task: JoinHandle<()>,
}

impl Discovery {
    /// Subscribes to every agent's heartbeats on the NATS server at `url`.
    pub async fn start(url: &str, missed: u32) -> Result<Self, DiscoverError> {
        let client = async_nats::ConnectOptions::new()
            .name("isolab coordinator (discovery)")
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|source| DiscoverError::Connect {
                url: url.to_owned(),
                source,
            })?;
        let mut sub = client
            .subscribe(HEARTBEAT_SUBJECTS)
            .await
            .map_err(|source| DiscoverError::Subscribe {
                url: url.to_owned(),
                subject: HEARTBEAT_SUBJECTS.to_owned(),
                source,
            })?;
        let seen: Arc<Mutex<BTreeMap<String, Seen>>> = Arc::default();
        let task = tokio::spawn({
            let seen = Arc::clone(&seen);
            async move {
                // Keep the client alive as long as the subscription.
                let _client = client;
                while let Some(msg) = sub.next().await {
                    match serde_json::from_slice::<Heartbeat>(&msg.payload) {
                        Ok(heartbeat) => {
                            let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                            if !seen.contains_key(&heartbeat.name) {
                                tracing::info!(agent = %heartbeat.name, address = %heartbeat.address, "agent announced");
                            }
                            seen.insert(
                                heartbeat.name.clone(),
                                Seen {
                                    heartbeat,
                                    last: Instant::now(),
                                },
                            );
                        }
                        Err(e) => {
                            tracing::warn!(subject = %msg.subject, "unreadable heartbeat: {e}");
                        }
                    }
                }
            }
        });
        Ok(Self {
            seen,
            missed: missed.max(1),
            task,
        })
    }

    /// The agents alive now, by name; those that missed too many heartbeats are dropped.
    pub fn live(&self) -> Vec<Heartbeat> {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.retain(|name, s| {
            let allowed =
                Duration::from_millis(s.heartbeat.interval_ms.max(1)).saturating_mul(self.missed);
            let alive = now.duration_since(s.last) <= allowed;
            if !alive {
                tracing::warn!(agent = %name, "agent dropped: {} heartbeats missed", self.missed);
            }
            alive
        });
        seen.values().map(|s| s.heartbeat.clone()).collect()
    }

    /// Waits until every agent had the chance to announce itself once: a first heartbeat (at
    /// most `timeout`), then the longest interval announced so far plus a margin.
    pub async fn settle(&self, timeout: Duration) -> Vec<Heartbeat> {
        let started = Instant::now();
        loop {
            let live = self.live();
            let longest = live.iter().map(|h| h.interval_ms).max();
            let elapsed = started.elapsed();
            match longest {
                Some(ms) if elapsed >= Duration::from_millis(ms) + Duration::from_millis(250) => {
                    return live;
                }
                None if elapsed >= timeout => return live,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Discovers the agents announced on `url`: waits for them to settle, errors if there are none.
pub async fn collect(url: &str, missed: u32) -> Result<Vec<Heartbeat>, DiscoverError> {
    let d = Discovery::start(url, missed).await?;
    let live = d.settle(FIRST_HEARTBEAT_TIMEOUT).await;
    if live.is_empty() {
        return Err(DiscoverError::NoAgents {
            url: url.to_owned(),
            waited: FIRST_HEARTBEAT_TIMEOUT,
        });
    }
    Ok(live)
}

/// Announced agents as connection targets (labels from their heartbeats).
pub fn targets(heartbeats: &[Heartbeat]) -> Vec<Target> {
    heartbeats
        .iter()
        .map(|h| Target {
            address: h.address.clone(),
            labels: h.labels.clone(),
            tls_domain: None,
            announced_name: Some(h.name.clone()),
        })
        .collect()
}

/// Announced agents as placement slots (for `isolab plan --discover`).
pub fn slots(heartbeats: &[Heartbeat]) -> Vec<AgentSlot> {
    heartbeats
        .iter()
        .map(|h| AgentSlot {
            address: h.address.clone(),
            labels: h.labels.clone(),
            names: vec![h.name.clone()],
        })
        .collect()
}
