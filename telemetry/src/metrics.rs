//! Prometheus metrics of both binaries, served as text (format 0.0.4) on `GET /metrics`.
//!
//! One [`Metrics`] per process holds the registry and the handles the code updates: trials
//! running, trials finished by status, a trial duration histogram, instances running and the
//! memory their limits commit (the agent's envelope usage), events dropped for a slow client.
//! The registry and encoding are `prometheus-client` (the Prometheus project's own Rust client);
//! the HTTP side is a two-route axum router (`/metrics`, and `/` with a pointer), served on its
//! own plain-HTTP port by [`serve`] so that the mTLS gRPC port and its health checks stay as they
//! are. Metrics carry counts and durations only, no names of runs, trials or hosts.
//!
//! ```
//! let metrics = isolab_telemetry::metrics::Metrics::new("isolab_agent");
//! let trial = metrics.trial_started();
//! trial.finish("ok");
//! assert!(metrics.encode().contains("isolab_agent_trials_finished_total{status=\"ok\"} 1"));
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Trial durations' bucket bounds in seconds: 0.1 s to about 55 min, doubling.
fn duration_buckets_s() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.1, 2.0, 16)
}

/// Statuses a finished trial is counted under: the wire's trial statuses, anything else is
/// counted as `other` (a label value must come from a small fixed set, never from input).
pub const STATUSES: &[&str] = &["ok", "failed", "timeout", "cancelled", "refused", "error"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

/// The parts of the agent's host-wide budget, as label values of `budget`.
pub const BUDGET_RESOURCES: &[&str] =
    &["memory_bytes", "pids", "disk_bytes", "trials", "instances"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabel {
    resource: &'static str,
}

/// The process's metrics: cheap to clone, every handle shared.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    trials_running: Gauge,
    trials_finished: Family<StatusLabel, Counter>,
    trial_duration_s: Histogram,
    instances_running: Gauge,
    memory_committed_bytes: Gauge,
    events_dropped: Counter,
    budget: Family<ResourceLabel, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("trials_running", &self.trials_running.get())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry whose metric names start with `prefix` (`isolab_agent`, `isolab_coordinator`).
    pub fn new(prefix: &str) -> Self {
        let mut registry = Registry::with_prefix(prefix);
        let trials_running = Gauge::default();
        registry.register(
            "trials_running",
            "Trials running now",
            trials_running.clone(),
        );
        let trials_finished = Family::<StatusLabel, Counter>::default();
        registry.register(
            "trials_finished",
            "Trials finished, by status",
            trials_finished.clone(),
        );
        let trial_duration_s = Histogram::new(duration_buckets_s());
        registry.register_with_unit(
            "trial_duration",
            "Wall-clock duration of finished trials",
            prometheus_client::registry::Unit::Seconds,
            trial_duration_s.clone(),
        );
        let instances_running = Gauge::default();
        registry.register(
            "instances_running",
            "Instances of running trials",
            instances_running.clone(),
        );
        let memory_committed_bytes = Gauge::default();
        registry.register_with_unit(
            "memory_limits_committed",
            "Sum of the memory limits of running instances (the envelope's usage)",
            prometheus_client::registry::Unit::Bytes,
            memory_committed_bytes.clone(),
        );
        let events_dropped = Counter::default();
        registry.register(
            "events_dropped",
            "Trial events dropped because the receiver was too slow",
            events_dropped.clone(),
        );
        let budget = Family::<ResourceLabel, Gauge>::default();
        registry.register(
            "budget",
            "The agent's host-wide budget, by resource (memory_bytes, pids, disk_bytes, trials, \
             instances)",
            budget.clone(),
        );
        Self {
            registry: Arc::new(registry),
            trials_running,
            trials_finished,
            trial_duration_s,
            instances_running,
            memory_committed_bytes,
            events_dropped,
            budget,
        }
    }

    /// Sets the budget of `resource` (one of [`BUDGET_RESOURCES`]; anything else is ignored).
    pub fn set_budget(&self, resource: &str, value: u64) {
        if let Some(resource) = BUDGET_RESOURCES.iter().copied().find(|r| *r == resource) {
            self.budget
                .get_or_create(&ResourceLabel { resource })
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
    }

    /// Counts a trial as running until the returned guard is finished (or dropped: then it
    /// counts as `error`, so that a trial whose task panicked is not running forever).
    pub fn trial_started(&self) -> TrialGuard {
        self.trials_running.inc();
        TrialGuard {
            metrics: self.clone(),
            started: Instant::now(),
            instances: 0,
            memory_bytes: 0,
            done: false,
        }
    }

    /// One event dropped for a slow receiver.
    pub fn event_dropped(&self) {
        self.events_dropped.inc();
    }

    /// The registry in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; an error here would be a bug in the encoder.
        if prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry).is_err()
        {
            text.clear();
        }
        text
    }
}

/// A running trial; see [`Metrics::trial_started`].
#[derive(Debug)]
#[must_use = "finish() records the trial's status and duration"]
pub struct TrialGuard {
    metrics: Metrics,
    started: Instant,
    instances: i64,
    memory_bytes: i64,
    done: bool,
}

impl TrialGuard {
    /// The trial's instances are running with these limits committed (counted until finish).
    pub fn instances_started(&mut self, instances: u32, memory_limits_bytes: u64) {
        let instances = i64::from(instances);
        let memory = i64::try_from(memory_limits_bytes).unwrap_or(i64::MAX);
        self.metrics.instances_running.inc_by(instances);
        self.metrics.memory_committed_bytes.inc_by(memory);
        self.instances += instances;
        self.memory_bytes = self.memory_bytes.saturating_add(memory);
    }

    /// The trial ended with `status` (one of [`STATUSES`], else counted as `other`).
    pub fn finish(mut self, status: &str) {
        self.record(status);
    }

    fn record(&mut self, status: &str) {
        if self.done {
            return;
        }
        self.done = true;
        let status = STATUSES
            .iter()
            .copied()
            .find(|s| *s == status)
            .unwrap_or("other");
        let m = &self.metrics;
        m.trials_running.dec();
        m.instances_running.dec_by(self.instances);
        m.memory_committed_bytes.dec_by(self.memory_bytes);
        m.trials_finished
            .get_or_create(&StatusLabel { status })
            .inc();
        m.trial_duration_s
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for TrialGuard {
    fn drop(&mut self) {
        self.record("error");
    }
}

/// Why the metrics endpoint stopped.
#[derive(Debug, thiserror::Error)]
#[error("metrics endpoint on {addr}: {source}")]
pub struct MetricsServeError {
    /// The address it listened on.
    pub addr: String,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MetricsServeError> {
    use axum::http::header::CONTENT_TYPE;
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            CONTENT_TYPE,
                            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                        )],
                        metrics.encode(),
                    )
                }
            }),
        )
        .route(
            "/",
            axum::routing::get(|| async { "isolab metrics: GET /metrics\n" }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| MetricsServeError { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn line<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(name))
    }

    #[test]
    fn a_trial_is_running_until_finished_then_counted_by_status() {
        let m = Metrics::new("t");
        let mut trial = m.trial_started();
        trial.instances_started(4, 4 << 30);
        let text = m.encode();
        assert_eq!(line(&text, "t_trials_running "), Some("t_trials_running 1"));
        assert_eq!(
            line(&text, "t_instances_running "),
            Some("t_instances_running 4")
        );
        assert_eq!(
            line(&text, "t_memory_limits_committed_bytes "),
            Some("t_memory_limits_committed_bytes 4294967296")
        );
        trial.finish("timeout");
        let text = m.encode();
        assert_eq!(line(&text, "t_trials_running "), Some("t_trials_running 0"));
        assert_eq!(
            line(&text, "t_instances_running "),
            Some("t_instances_running 0")
        );
        assert_eq!(
            line(&text, "t_memory_limits_committed_bytes "),
            Some("t_memory_limits_committed_bytes 0")
        );
        assert!(
            text.contains("t_trials_finished_total{status=\"timeout\"} 1"),
            "{text}"
        );
        assert!(text.contains("t_trial_duration_seconds_count 1"), "{text}");
    }

    #[test]
    fn the_budget_is_a_gauge_per_resource() {
        let m = Metrics::new("t");
        m.set_budget("memory_bytes", 8 << 30);
        m.set_budget("trials", 16);
        m.set_budget("made-up", 1);
        let text = m.encode();
        assert!(
            text.contains("t_budget{resource=\"memory_bytes\"} 8589934592"),
            "{text}"
        );
        assert!(text.contains("t_budget{resource=\"trials\"} 16"), "{text}");
        assert!(!text.contains("made-up"), "{text}");
    }

    #[test]
    fn a_dropped_guard_counts_as_error_and_unknown_statuses_as_other() {
        let m = Metrics::new("t");
        drop(m.trial_started());
        m.trial_started().finish("status-from-the-wire\"}\n");
        m.event_dropped();
        let text = m.encode();
        assert!(
            text.contains("t_trials_finished_total{status=\"error\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("t_trials_finished_total{status=\"other\"} 1"),
            "{text}"
        );
        assert!(text.contains("t_events_dropped_total 1"), "{text}");
        assert_eq!(line(&text, "t_trials_running "), Some("t_trials_running 0"));
    }

    #[tokio::test]
    async fn the_endpoint_serves_the_text_format_and_stops_on_shutdown() {
        let m = Metrics::new("isolab_test");
        m.trial_started().finish("ok");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, m, async {
            let _ = stopped.await;
        }));
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            response
                .to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{response}"
        );
        assert!(
            response.contains("isolab_test_trials_finished_total{status=\"ok\"} 1"),
            "{response}"
        );
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
