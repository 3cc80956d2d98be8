//! Self-announcement: with `isolab-agent --announce nats://HOST:PORT` the agent publishes a
//! [`Heartbeat`] (JSON) every `--heartbeat-interval` on `isolab.agent.<name>.heartbeat`; a
//! coordinator started with `--discover` keeps the live set from them and drops an agent after
//! missed heartbeats.
//!
//! The [`Heartbeat`] type and the subjects are the wire's (`isolab_wire::heartbeat`), so that
//! both sides read the same contract; this module only connects and publishes.

use std::future::Future;
use std::time::Duration;

pub use isolab_wire::heartbeat::{HEARTBEAT_SUBJECTS, Heartbeat, heartbeat_subject};

/// Default time between two heartbeats.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
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
