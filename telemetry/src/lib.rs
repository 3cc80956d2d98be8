//! Logging and tracing for both binaries (`isolab`, `isolab-agent`): a `tracing-subscriber` fmt
//! layer on stderr, plus an OpenTelemetry layer exporting spans over OTLP/gRPC when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set; and the W3C `traceparent` carried in gRPC metadata, so the
//! agent's spans of a trial are children of the coordinator's trial span.
//!
//! The OTLP exporter uses tonic, so [`init`] must run inside a Tokio runtime, and
//! [`Telemetry::shutdown`] (flush) before that runtime ends.
//!
//!
//! [`metrics`] is the Prometheus side: counters and histograms of trials, served on `/metrics`.
//!
//! ```no_run
//! # async fn demo() {
//! let telemetry = isolab_telemetry::init("isolab-agent", "ISOLAB_LOG", "info")
//!     .expect("telemetry");
//! tracing::info!("hello");
//! telemetry.shutdown();
//! # }
//! ```

pub mod metrics;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tonic::metadata::{KeyRef, MetadataKey, MetadataMap, MetadataValue};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The environment variable that turns OTLP export on (standard OpenTelemetry name).
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryInitError {
    /// The OTLP exporter could not be built.
    #[error("OTLP exporter for {endpoint}: {source}")]
    Exporter {
        /// The endpoint from `OTEL_EXPORTER_OTLP_ENDPOINT`.
        endpoint: String,
        /// What the exporter said.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// A global subscriber was already installed.
    #[error("cannot install the tracing subscriber: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

/// The installed telemetry; [`Telemetry::shutdown`] flushes spans not yet exported.
#[derive(Debug)]
#[must_use = "call shutdown() at exit to flush spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes and stops the exporter (no-op without one).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.force_flush() {
                eprintln!("telemetry: flush failed: {e}");
            }
            if let Err(e) = p.shutdown() {
                eprintln!("telemetry: shutdown failed: {e}");
            }
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Which spans go to OpenTelemetry: isolab's own at `info` and above (not the transport's).
pub fn otel_filter() -> Targets {
    Targets::new()
        .with_target("isolab", LevelFilter::INFO)
        .with_default(LevelFilter::OFF)
}

/// The OpenTelemetry layer for `provider`, filtered by [`otel_filter`] (tests install it over an
/// in-memory exporter).
pub fn otel_layer<S>(provider: &SdkTracerProvider, service: &'static str) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service))
        .with_filter(otel_filter())
}

/// Installs the global subscriber: fmt on stderr filtered by `$filter_env` (else `default_filter`)
/// and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, OTLP/gRPC span export for `service`.
pub fn init(
    service: &'static str,
    filter_env: &str,
    default_filter: &str,
) -> Result<Telemetry, TelemetryInitError> {
    let filter = tracing_subscriber::EnvFilter::try_from_env(filter_env)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    let endpoint = std::env::var(OTLP_ENDPOINT_ENV)
        .ok()
        .filter(|e| !e.trim().is_empty());
    let provider = match &endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()
                .map_err(|source| TelemetryInitError::Exporter {
                    endpoint: endpoint.clone(),
                    source,
                })?;
            Some(
                SdkTracerProvider::builder()
                    .with_resource(Resource::builder().with_service_name(service).build())
                    .with_batch_exporter(exporter)
                    .build(),
            )
        }
        None => None,
    };
    let otel = provider.as_ref().map(|p| otel_layer(p, service));
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()?;
    if let Some(e) = &endpoint {
        tracing::debug!(endpoint = %e, "exporting spans over OTLP");
    }
    Ok(Telemetry { provider })
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                KeyRef::Ascii(k) => Some(k.as_str()),
                KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// Writes `span`'s trace context into `metadata` as W3C `traceparent` (nothing when the span is
/// not recorded by OpenTelemetry).
pub fn inject_trace_context(span: &tracing::Span, metadata: &mut MetadataMap) {
    let cx = span.context();
    TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(metadata));
}

/// Makes `span` a child of the W3C trace context in `metadata`, if it carries one.
pub fn set_parent_from(span: &tracing::Span, metadata: &MetadataMap) {
    if metadata.get("traceparent").is_none() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&MetadataExtractor(metadata));
    if let Err(e) = span.set_parent(cx) {
        tracing::debug!("cannot parent the span on the caller's trace: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt as _;

    #[test]
    fn traceparent_round_trips_through_metadata() {
        let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry().with(otel_layer(&provider, "test"));
        tracing::subscriber::with_default(subscriber, || {
            let caller = tracing::info_span!("caller");
            let mut md = MetadataMap::new();
            inject_trace_context(&caller, &mut md);
            let tp = md.get("traceparent").expect("traceparent set");
            let caller_cx = caller.context();
            let caller_sc = caller_cx.span().span_context().clone();
            assert!(
                tp.to_str()
                    .unwrap()
                    .contains(&caller_sc.trace_id().to_string())
            );
            let callee = tracing::info_span!("callee");
            set_parent_from(&callee, &md);
            drop(callee);
            drop(caller);
        });
        let spans = exporter.get_finished_spans().unwrap();
        let callee = spans.iter().find(|s| s.name == "callee").unwrap();
        let caller = spans.iter().find(|s| s.name == "caller").unwrap();
        assert_eq!(
            callee.span_context.trace_id(),
            caller.span_context.trace_id()
        );
        assert_eq!(callee.parent_span_id, caller.span_context.span_id());
        assert!(callee.parent_span_is_remote);
    }

    #[test]
    fn no_traceparent_leaves_a_root_span() {
        let md = MetadataMap::new();
        let span = tracing::Span::none();
        set_parent_from(&span, &md);
        assert!(md.get("traceparent").is_none());
    }
}
