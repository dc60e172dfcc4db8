//! A run's trace context: a run is one trace however many workers advance it, at
//! whatever times. Its trace id is its id (a ULID is 128 bits, as a trace id is), so
//! nothing has to be stored to join the advances, and an operator finds a run's trace
//! from the run id alone. `http` and `llm` steps send the attempt's W3C `traceparent`,
//! so the services they call put their spans in the run's trace — also when no exporter
//! is set up (the server's `telemetry::traces` sets one up).

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use sha2::Digest;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The trace of run `run_id`: its id's 128 bits (a ULID), or a hash of a foreign id.
pub fn run_trace_id(run_id: &str) -> TraceId {
    match ulid::Ulid::from_string(run_id) {
        Ok(id) => TraceId::from_bytes(id.to_bytes()),
        Err(_) => {
            let hash = sha2::Sha256::digest(run_id.as_bytes());
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&hash[..16]);
            TraceId::from_bytes(bytes)
        }
    }
}

/// A span id made from `parts`: the same parts, the same id (never the invalid zero id).
fn span_id(parts: &[&str]) -> SpanId {
    let mut hash = sha2::Sha256::new();
    for p in parts {
        hash.update(p.as_bytes());
        hash.update([0x1f]);
    }
    let digest = hash.finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    if bytes == [0; 8] {
        bytes[7] = 1;
    }
    SpanId::from_bytes(bytes)
}

/// Puts `span` (a run's advance) in the run's trace, under the run's root: every advance
/// of a run, on any worker, is a child of the same (never exported) root span.
pub fn join_run(span: &tracing::Span, run_id: &str) {
    let root = SpanContext::new(
        run_trace_id(run_id),
        span_id(&[run_id]),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    let cx = opentelemetry::Context::new().with_remote_span_context(root);
    // Without the OpenTelemetry layer there is nothing to join.
    let _ = span.set_parent(cx);
}

/// The W3C `traceparent` of a step's attempt: the attempt's span when spans are
/// exported (`span`), otherwise ids made from the run and the attempt, in the run's trace.
pub fn traceparent(span: &tracing::Span, run_id: &str, step_id: &str, attempt: u32) -> String {
    let cx = span.context();
    let current = cx.span().span_context().clone();
    let (trace, id) = if current.is_valid() {
        (current.trace_id(), current.span_id())
    } else {
        (
            run_trace_id(run_id),
            span_id(&[run_id, step_id, &attempt.to_string()]),
        )
    };
    format!("00-{trace}-{id}-01")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without an exporter the header still carries the run's trace: the run id's bits,
    /// and an id per attempt, in the W3C format.
    #[test]
    fn traceparent_without_an_exporter_is_the_runs_trace() {
        let run = "01M8YX6C1PBS8R7VJR30QZQ1KH";
        let header = traceparent(&tracing::Span::none(), run, "call", 1);
        let parts: Vec<&str> = header.split('-').collect();
        assert_eq!(parts.len(), 4, "{header}");
        assert_eq!(parts[0], "00");
        assert_eq!(
            parts[1],
            format!("{:032x}", ulid::Ulid::from_string(run).unwrap().0)
        );
        assert_eq!(parts[2].len(), 16);
        assert_eq!(parts[3], "01");
        assert_ne!(header, traceparent(&tracing::Span::none(), run, "call", 2));
        assert_eq!(header, traceparent(&tracing::Span::none(), run, "call", 1));
    }
}
