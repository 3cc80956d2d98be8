//! Events on NATS JetStream: a publisher that never blocks the run, and the stream it writes to.
//!
//! The run hands events to a bounded queue; one task publishes them in order into the
//! `ISOLAB_EVENTS` stream (created if missing) and waits for the acknowledgements in the
//! background. When NATS is unreachable or the queue is full, events are counted as dropped and
//! the run goes on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use futures::StreamExt as _;
use futures::stream::FuturesOrdered;
use tokio::sync::{mpsc, oneshot};

use super::event::RunEvent;

/// The JetStream stream holding every run's events.
pub const STREAM_NAME: &str = "ISOLAB_EVENTS";
/// Subjects of [`STREAM_NAME`].
pub const STREAM_SUBJECTS: &str = "isolab.run.>";
/// How long events are kept.
pub const STREAM_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Bytes the stream may hold before the oldest events go.
pub const STREAM_MAX_BYTES: i64 = 1 << 30;
/// Events waiting to be published before new ones are dropped.
const QUEUE_EVENTS: usize = 16_384;
/// Acknowledgements awaited at once.
const ACKS_IN_FLIGHT: usize = 512;
/// How long connecting to NATS may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why NATS could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// Connecting failed.
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// What async-nats said.
        #[source]
        source: async_nats::ConnectError,
    },
    /// The stream could not be created or read.
    #[error("NATS {url}: stream {STREAM_NAME}: {what}")]
    Stream {
        /// The URL.
        url: String,
        /// What failed.
        what: String,
    },
}

/// Connects to `url` (`nats://HOST:PORT`), failing fast when nobody answers.
pub async fn connect(url: &str) -> Result<async_nats::Client, NatsError> {
    async_nats::ConnectOptions::new()
        .connection_timeout(CONNECT_TIMEOUT)
        .connect(url)
        .await
        .map_err(|source| NatsError::Connect {
            url: url.to_owned(),
            source,
        })
}

/// The `ISOLAB_EVENTS` stream, created with its limits when missing.
pub async fn ensure_stream(
    js: &jetstream::Context,
    url: &str,
) -> Result<stream::Stream, NatsError> {
    js.get_or_create_stream(stream::Config {
        name: STREAM_NAME.to_owned(),
        subjects: vec![STREAM_SUBJECTS.to_owned()],
        max_age: STREAM_MAX_AGE,
        max_bytes: STREAM_MAX_BYTES,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::Old,
        ..stream::Config::default()
    })
    .await
    .map_err(|e| NatsError::Stream {
        url: url.to_owned(),
        what: e.to_string(),
    })
}

/// Counters of a publisher.
#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    dropped: AtomicU64,
}

/// What a publisher did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishStats {
    /// Events the server acknowledged.
    pub published: u64,
    /// Events lost (NATS unreachable, queue full, no acknowledgement).
    pub dropped: u64,
}

#[derive(Debug)]
enum Msg {
    Event(Box<RunEvent>),
    Flush(oneshot::Sender<()>),
}

/// Publishes events into JetStream from a background task; clones share it.
#[derive(Debug, Clone)]
pub struct NatsPublisher {
    url: String,
    tx: mpsc::Sender<Msg>,
    counters: Arc<Counters>,
}

impl NatsPublisher {
    /// Starts the publishing task for `url` (it connects in the background).
    pub fn spawn(url: &str) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_EVENTS);
        let counters = Arc::new(Counters::default());
        tokio::spawn(publish_task(url.to_owned(), rx, counters.clone()));
        Self {
            url: url.to_owned(),
            tx,
            counters,
        }
    }

    /// The NATS URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Queues `ev`; drops (and counts) it when the queue is full. Never blocks.
    pub fn publish(&self, ev: RunEvent) {
        if self.tx.try_send(Msg::Event(Box::new(ev))).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits up to `timeout` for every queued event to be acknowledged or given up on.
    pub async fn flush(&self, timeout: Duration) -> PublishStats {
        let (done_tx, done_rx) = oneshot::channel();
        let _ = tokio::time::timeout(timeout, async {
            if self.tx.send(Msg::Flush(done_tx)).await.is_ok() {
                let _ = done_rx.await;
            }
        })
        .await;
        self.stats()
    }

    /// Counters so far.
    pub fn stats(&self) -> PublishStats {
        PublishStats {
            published: self.counters.published.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
        }
    }
}

async fn publish_task(url: String, mut rx: mpsc::Receiver<Msg>, counters: Arc<Counters>) {
    let js = match connect(&url).await {
        Ok(client) => {
            let js = jetstream::new(client);
            match ensure_stream(&js, &url).await {
                Ok(_) => Some(js),
                Err(e) => {
                    tracing::warn!("events: {e}; events are dropped, the run goes on");
                    None
                }
            }
        }
        Err(e) => {
            tracing::warn!("events: {e}; events are dropped, the run goes on");
            None
        }
    };
    let Some(js) = js else {
        while let Some(m) = rx.recv().await {
            match m {
                Msg::Event(_) => {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Msg::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
        return;
    };
    let mut acks = FuturesOrdered::new();
    let mut warned = false;
    let settle = |r: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
                  warned: &mut bool| match r {
        Ok(_) => {
            counters.published.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            if !std::mem::replace(warned, true) {
                tracing::warn!(url = %url, "events: NATS did not acknowledge an event: {e}");
            }
        }
    };
    loop {
        tokio::select! {
            biased;
            Some(r) = acks.next(), if !acks.is_empty() => settle(r, &mut warned),
            m = rx.recv() => match m {
                None => break,
                Some(Msg::Event(ev)) => {
                    let subject = ev.subject();
                    let payload = match serde_json::to_vec(&ev) {
                        Ok(p) => p,
                        Err(_) => continue,
                    };
                    match js.publish(subject, payload.into()).await {
                        Ok(ack) => acks.push_back(ack.into_future()),
                        Err(e) => settle(Err(e), &mut warned),
                    }
                    while acks.len() >= ACKS_IN_FLIGHT {
                        if let Some(r) = acks.next().await {
                            settle(r, &mut warned);
                        }
                    }
                }
                Some(Msg::Flush(done)) => {
                    while let Some(r) = acks.next().await {
                        settle(r, &mut warned);
                    }
                    let _ = done.send(());
                }
            },
        }
    }
    while let Some(r) = acks.next().await {
        settle(r, &mut warned);
    }
}
