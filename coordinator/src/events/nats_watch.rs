//! Reading a run's events back from JetStream (`isolab watch --events nats://…`): an ordered,
//! ephemeral consumer replays the run's history, then follows it live.

use async_nats::jetstream::{self, consumer};
use futures::StreamExt as _;

use super::event::{EventKind, RUN_STATUS_FILTER, RunEvent, run_filter};
use super::nats::{NatsError, connect, ensure_stream};

/// Why watching over NATS failed.
#[derive(Debug, thiserror::Error)]
pub enum NatsWatchError {
    /// NATS or the stream is unusable.
    #[error(transparent)]
    Nats(#[from] NatsError),
    /// The consumer could not be created or broke.
    #[error("NATS {url}: consumer on {filter}: {what}")]
    Consumer {
        /// The URL.
        url: String,
        /// The subject filter.
        filter: String,
        /// What failed.
        what: String,
    },
}

/// A run's events from JetStream, history first.
pub struct NatsWatch {
    url: String,
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    run_id: Option<String>,
    messages: Option<(String, consumer::push::Ordered)>,
}

impl std::fmt::Debug for NatsWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsWatch")
            .field("url", &self.url)
            .field("run_id", &self.run_id)
            .finish_non_exhaustive()
    }
}

impl NatsWatch {
    /// Watches `run_id` on `url`; `None`: the newest run on the stream (the last one that
    /// started), or the next one to start when the stream holds none.
    pub async fn open(url: &str, run_id: Option<&str>) -> Result<Self, NatsWatchError> {
        let client = connect(url).await?;
        let js = jetstream::new(client);
        let stream = ensure_stream(&js, url).await?;
        let mut w = Self {
            url: url.to_owned(),
            js,
            stream,
            run_id: run_id.map(str::to_owned),
            messages: None,
        };
        if w.run_id.is_none() {
            w.run_id = w.newest_run().await?;
        }
        let filter = match &w.run_id {
            Some(r) => run_filter(r),
            None => RUN_STATUS_FILTER.to_owned(),
        };
        let c = w.consumer(&filter).await?;
        w.messages = Some((filter, c));
        Ok(w)
    }

    /// The run followed (once known).
    pub fn run_id(&self) -> Option<&str> {
        self.run_id.as_deref()
    }

    async fn consumer(&self, filter: &str) -> Result<consumer::push::Ordered, NatsWatchError> {
        let err = |what: String| NatsWatchError::Consumer {
            url: self.url.clone(),
            filter: filter.to_owned(),
            what,
        };
        let c = self
            .stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: self.js.client().new_inbox(),
                filter_subject: filter.to_owned(),
                deliver_policy: consumer::DeliverPolicy::All,
                ..consumer::push::OrderedConfig::default()
            })
            .await
            .map_err(|e| err(e.to_string()))?;
        c.messages().await.map_err(|e| err(e.to_string()))
    }

    /// The run of the last `run_started` event on the stream, if any.
    async fn newest_run(&self) -> Result<Option<String>, NatsWatchError> {
        let c = self
            .stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: self.js.client().new_inbox(),
                filter_subject: RUN_STATUS_FILTER.to_owned(),
                deliver_policy: consumer::DeliverPolicy::All,
                ..consumer::push::OrderedConfig::default()
            })
            .await
            .map_err(|e| NatsWatchError::Consumer {
                url: self.url.clone(),
                filter: RUN_STATUS_FILTER.to_owned(),
                what: e.to_string(),
            })?;
        let mut pending = c.cached_info().num_pending;
        if pending == 0 {
            return Ok(None);
        }
        let mut messages = c.messages().await.map_err(|e| NatsWatchError::Consumer {
            url: self.url.clone(),
            filter: RUN_STATUS_FILTER.to_owned(),
            what: e.to_string(),
        })?;
        let mut newest = None;
        while pending > 0 {
            let Some(m) = messages.next().await else {
                break;
            };
            let m = m.map_err(|e| NatsWatchError::Consumer {
                url: self.url.clone(),
                filter: RUN_STATUS_FILTER.to_owned(),
                what: e.to_string(),
            })?;
            pending = m.info().map_or(0, |i| i.pending);
            if let Ok(ev) = serde_json::from_slice::<RunEvent>(&m.payload)
                && matches!(ev.kind, EventKind::RunStarted { .. })
            {
                newest = Some(ev.run_id);
            }
        }
        Ok(newest)
    }

    /// The next event of the run; `None` when the connection ended.
    pub async fn next(&mut self) -> Result<Option<RunEvent>, NatsWatchError> {
        loop {
            let Some((filter, messages)) = self.messages.as_mut() else {
                return Ok(None);
            };
            let Some(m) = messages.next().await else {
                return Ok(None);
            };
            let m = m.map_err(|e| NatsWatchError::Consumer {
                url: self.url.clone(),
                filter: filter.clone(),
                what: e.to_string(),
            })?;
            let ev = match serde_json::from_slice::<RunEvent>(&m.payload) {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::warn!(subject = %m.subject, "not an isolab event: {e}");
                    continue;
                }
            };
            if self.run_id.is_none() {
                // Waiting for the next run to start: then replay that run from its beginning.
                if matches!(ev.kind, EventKind::RunStarted { .. }) {
                    let filter = run_filter(&ev.run_id);
                    self.run_id = Some(ev.run_id.clone());
                    let c = self.consumer(&filter).await?;
                    self.messages = Some((filter, c));
                }
                continue;
            }
            return Ok(Some(ev));
        }
    }
}
