//! [`EventBus`]: where a run publishes its events (in-process by default, NATS when asked).

use std::time::Duration;

use super::event::RunEvent;
use super::memory::MemoryBus;
use super::nats::{NatsPublisher, PublishStats};

/// Why an `--events` URL is not usable.
#[derive(Debug, thiserror::Error)]
pub enum EventsUrlError {
    /// Only `nats://` is known.
    #[error("--events `{url}`: expected nats://HOST:PORT")]
    Scheme {
        /// The URL given.
        url: String,
    },
}

/// Where events go. Publishing never blocks and never fails the run.
#[derive(Debug, Clone)]
pub enum EventBus {
    /// The in-process bus (the embedded default).
    Memory(MemoryBus),
    /// NATS JetStream.
    Nats(NatsPublisher),
    /// Both: the in-process bus for the coordinator service's `WatchRun`, and NATS.
    Tee(MemoryBus, NatsPublisher),
}

/// History of the in-process bus of a plain `isolab run`, which has no late subscribers.
const RUN_HISTORY_EVENTS: usize = 1024;

impl Default for EventBus {
    fn default() -> Self {
        Self::Memory(MemoryBus::new(RUN_HISTORY_EVENTS))
    }
}

impl EventBus {
    /// The bus for `--events URL`: NATS for `nats://…`, in-process without a URL.
    /// Must be called inside a tokio runtime (NATS publishes from a task).
    pub fn from_url(url: Option<&str>) -> Result<Self, EventsUrlError> {
        match url {
            None => Ok(Self::default()),
            Some(u) => Ok(Self::Nats(nats_publisher(u)?)),
        }
    }

    /// An in-process bus keeping [`super::DEFAULT_HISTORY_EVENTS`] for late watchers, tee'd to
    /// NATS when `url` is given (`isolab serve`).
    pub fn with_memory(url: Option<&str>) -> Result<Self, EventsUrlError> {
        let mem = MemoryBus::default();
        match url {
            None => Ok(Self::Memory(mem)),
            Some(u) => Ok(Self::Tee(mem, nats_publisher(u)?)),
        }
    }

    /// Publishes `ev`.
    pub fn publish(&self, ev: RunEvent) {
        match self {
            Self::Memory(m) => m.publish(ev),
            Self::Nats(n) => n.publish(ev),
            Self::Tee(m, n) => {
                n.publish(ev.clone());
                m.publish(ev);
            }
        }
    }

    /// The in-process bus, if this bus has one.
    pub fn memory(&self) -> Option<&MemoryBus> {
        match self {
            Self::Memory(m) | Self::Tee(m, _) => Some(m),
            Self::Nats(_) => None,
        }
    }

    /// The NATS URL and the publisher's counters so far, if this bus publishes to NATS.
    pub fn nats_stats(&self) -> Option<(String, PublishStats)> {
        match self {
            Self::Memory(_) => None,
            Self::Nats(n) | Self::Tee(_, n) => Some((n.url().to_owned(), n.stats())),
        }
    }

    /// Waits (up to `timeout`) for NATS to acknowledge what was published; the counters of the
    /// NATS publisher, if any.
    pub async fn flush(&self, timeout: Duration) -> Option<PublishStats> {
        match self {
            Self::Memory(_) => None,
            Self::Nats(n) | Self::Tee(_, n) => Some(n.flush(timeout).await),
        }
    }
}

fn nats_publisher(url: &str) -> Result<NatsPublisher, EventsUrlError> {
    if !url.starts_with("nats://") {
        return Err(EventsUrlError::Scheme {
            url: url.to_owned(),
        });
    }
    Ok(NatsPublisher::spawn(url))
}
