//! The in-process bus (the embedded default): a tokio broadcast channel plus a bounded history,
//! so a subscriber that comes late still sees the run so far.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast;

use super::event::{EventKind, RunEvent};

/// Events kept for late subscribers (all runs together; the oldest go first).
pub const DEFAULT_HISTORY_EVENTS: usize = 200_000;
/// Events a live subscriber may fall behind before it misses some.
const LIVE_CAPACITY_EVENTS: usize = 8192;

/// In-process event bus; clones share one channel and history.
#[derive(Debug, Clone)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: broadcast::Sender<RunEvent>,
    history: Mutex<VecDeque<RunEvent>>,
    history_cap: usize,
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new(DEFAULT_HISTORY_EVENTS)
    }
}

impl MemoryBus {
    /// A bus keeping the last `history_cap` events.
    pub fn new(history_cap: usize) -> Self {
        let (tx, _) = broadcast::channel(LIVE_CAPACITY_EVENTS);
        Self {
            inner: Arc::new(Inner {
                tx,
                history: Mutex::new(VecDeque::new()),
                history_cap: history_cap.max(1),
            }),
        }
    }

    /// Publishes `ev` to live subscribers and the history; never blocks.
    pub fn publish(&self, ev: RunEvent) {
        let mut h = self
            .inner
            .history
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if h.len() == self.inner.history_cap {
            h.pop_front();
        }
        h.push_back(ev.clone());
        // Sent under the lock so a subscriber sees each event exactly once (history or live).
        let _ = self.inner.tx.send(ev);
    }

    /// Live events of every run from now on (no history), for counters such as the metrics.
    pub fn subscribe_live(&self) -> broadcast::Receiver<RunEvent> {
        self.inner.tx.subscribe()
    }

    /// The events of `run_id` so far, then live ones. `None`: the newest run in the history
    /// (the last one that started), or the next run to start when the history has none.
    pub fn subscribe(&self, run_id: Option<&str>) -> Subscription {
        let h = self
            .inner
            .history
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let run = run_id.map(str::to_owned).or_else(|| {
            h.iter()
                .rev()
                .find(|e| matches!(e.kind, EventKind::RunStarted { .. }))
                .map(|e| e.run_id.clone())
        });
        let history = match &run {
            Some(r) => h.iter().filter(|e| e.run_id == *r).cloned().collect(),
            None => VecDeque::new(),
        };
        let rx = self.inner.tx.subscribe();
        drop(h);
        Subscription {
            history,
            rx,
            run,
            missed: 0,
        }
    }
}

/// A subscriber of one run on a [`MemoryBus`].
#[derive(Debug)]
pub struct Subscription {
    history: VecDeque<RunEvent>,
    rx: broadcast::Receiver<RunEvent>,
    run: Option<String>,
    missed: u64,
}

impl Subscription {
    /// The run followed (once known).
    pub fn run_id(&self) -> Option<&str> {
        self.run.as_deref()
    }

    /// Live events this subscriber fell too far behind to receive.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// The next event of the run; `None` when the bus is gone.
    pub async fn next(&mut self) -> Option<RunEvent> {
        if let Some(e) = self.history.pop_front() {
            return Some(e);
        }
        loop {
            match self.rx.recv().await {
                Ok(e) => match &self.run {
                    Some(r) if e.run_id == *r => return Some(e),
                    Some(_) => {}
                    None if matches!(e.kind, EventKind::RunStarted { .. }) => {
                        self.run = Some(e.run_id.clone());
                        return Some(e);
                    }
                    None => {}
                },
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "event subscriber fell behind");
                    self.missed += n;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::event::EventKind;

    fn started(run: &str) -> RunEvent {
        RunEvent::now(
            run,
            EventKind::RunStarted {
                pipeline: "p".into(),
                trials: 1,
                to_run: 1,
            },
        )
    }

    #[tokio::test]
    async fn late_subscriber_sees_history_then_live_of_its_run_only() {
        let bus = MemoryBus::new(100);
        bus.publish(started("a"));
        bus.publish(started("b"));
        let mut sub = bus.subscribe(Some("a"));
        bus.publish(started("b"));
        bus.publish(started("a"));
        assert_eq!(sub.next().await.unwrap().run_id, "a");
        assert_eq!(sub.next().await.unwrap().run_id, "a");
        let newest = bus.subscribe(None);
        assert_eq!(newest.run_id(), Some("a"));
    }

    #[tokio::test]
    async fn history_is_bounded_and_no_run_waits_for_the_next_start() {
        let bus = MemoryBus::new(2);
        let mut waiting = bus.subscribe(None);
        assert_eq!(waiting.run_id(), None);
        for r in ["x", "y", "z"] {
            bus.publish(started(r));
        }
        assert_eq!(waiting.next().await.unwrap().run_id, "x");
        let sub = bus.subscribe(Some("x"));
        assert!(sub.history.is_empty(), "x fell out of a history of 2");
    }
}
