//! Traces: the `tracing` spans of requests, run advances and step attempts, exported over
//! OTLP (HTTP; protobuf, or JSON with `OTEL_EXPORTER_OTLP_PROTOCOL=http/json`) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the
//! other standard `OTEL_*` settings apply as the OpenTelemetry SDK reads them.
//!
//! A run is one trace however many workers advance it: the run's trace context (its ids,
//! the `traceparent` its steps send) is the engine's, in `cairn_core::telemetry::traces`,
//! re-exported here.

use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

pub use cairn_core::telemetry::traces::*;

/// The spans exported: Cairn's (requests, run advances, step attempts) and what the
/// libraries it uses record at `info` and above, but not the database driver's events.
pub const FILTER: &str = "info,sqlx=warn";

/// What the exporter needs at the process's end: its last spans sent.
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("sending the last trace spans failed: {e}");
        }
    }
}

/// The layer that turns spans into OpenTelemetry spans for the exporter.
pub type OtelLayer<S> =
    tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>;

/// Whether the environment asks for traces to be exported.
pub fn configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()))
}

/// The exporter and the layer that feeds it, when [`configured`]; the service name is
/// `OTEL_SERVICE_NAME`, else `cairn`.
pub fn layer<S>() -> Result<Option<(OtelLayer<S>, Exporter)>, String>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    if !configured() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| format!("the OTLP exporter: {e}"))?;
    let name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "cairn".into());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(name).build())
        .build();
    let tracer = provider.tracer("cairn");
    Ok(Some((
        tracing_opentelemetry::layer().with_tracer(tracer),
        Exporter { provider },
    )))
}
