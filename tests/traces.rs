//! Traces: a worker process with `OTEL_EXPORTER_OTLP_ENDPOINT` set sends its spans to a
//! tiny OTLP receiver (HTTP, JSON), one trace per run whatever its advances; the service
//! an `http` step calls receives the attempt's `traceparent` and so joins that trace.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use serde_json::{Value, json};
use sqlx::PgPool;

use common::{WorkerProcess, database_url, definition, migrate, wait_finished};

/// One exported span: trace, id, parent, name and string attributes.
#[derive(Debug, Clone)]
struct Span {
    trace: String,
    id: String,
    parent: String,
    name: String,
    attributes: Vec<(String, String)>,
}

impl Span {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Seen {
    spans: Vec<Span>,
    traceparents: Vec<String>,
}

type Shared = Arc<Mutex<Seen>>;

/// `POST /v1/traces`: an OTLP/HTTP JSON export request.
async fn receive(State(seen): State<Shared>, body: axum::body::Bytes) -> &'static str {
    let Ok(export) = serde_json::from_slice::<Value>(&body) else {
        return "not json";
    };
    let mut spans = Vec::new();
    for resource in export["resourceSpans"].as_array().into_iter().flatten() {
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for s in scope["spans"].as_array().into_iter().flatten() {
                let text = |v: &Value| v.as_str().unwrap_or_default().to_lowercase();
                let attributes = s["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        let value = &a["value"];
                        let v = value["stringValue"]
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| value.to_string());
                        (text(&a["key"]), v)
                    })
                    .collect();
                spans.push(Span {
                    trace: text(&s["traceId"]),
                    id: text(&s["spanId"]),
                    parent: text(&s["parentSpanId"]),
                    name: text(&s["name"]),
                    attributes,
                });
            }
        }
    }
    seen.lock().unwrap().spans.extend(spans);
    "{}"
}

/// `POST /agent`: what an agent service would see.
async fn agent(State(seen): State<Shared>, headers: HeaderMap) -> &'static str {
    let parent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    seen.lock().unwrap().traceparents.push(parent);
    "ok"
}

#[sqlx::test(migrations = false)]
async fn a_runs_spans_reach_the_otlp_receiver_and_the_services_it_calls(pool: PgPool) {
    migrate(&pool).await;
    let seen = Shared::default();
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .route("/agent", post(agent))
        .with_state(seen.clone());
    let addr = common::serve(app).await;

    let def = definition(
        "traced",
        &format!(
            r#"
[[steps]]
id = "call"
kind = "http"
method = "POST"
url = "http://{addr}/agent"

[[steps]]
id = "nap"
kind = "sleep"
needs = ["call"]
duration = "300ms"

[[steps]]
id = "after"
kind = "pass"
needs = ["nap"]
"#
        ),
    );
    let run = common::submit(&pool, &def, json!({})).await;
    let endpoint = format!("http://{addr}");
    let worker = WorkerProcess::spawn_with(
        &database_url(&pool),
        &["--poll-interval", "100ms"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "cairn-worker-test"),
        ],
    );
    let statuses = wait_finished(&pool, std::slice::from_ref(&run), Duration::from_secs(60)).await;
    assert_eq!(statuses[&run], "succeeded");

    let trace = format!("{:032x}", ulid::Ulid::from_string(&run).unwrap().0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans: Vec<Span> = seen
            .lock()
            .unwrap()
            .spans
            .iter()
            .filter(|s| s.trace == trace)
            .cloned()
            .collect();
        let attempts = spans.iter().filter(|s| s.name == "step.attempt").count();
        let advances = spans.iter().filter(|s| s.name == "run.advance").count();
        // Two attempts (`call`, `after`; the sleep is a timer), and at least two advances:
        // the one that slept and the one that woke.
        if attempts >= 2 && advances >= 2 {
            break spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the receiver saw {attempts} attempt and {advances} advance spans of trace {trace}; log: {}",
            std::fs::read_to_string(&worker.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(worker);

    let advances: Vec<&Span> = spans.iter().filter(|s| s.name == "run.advance").collect();
    // Every advance hangs from the run's one root, wherever and whenever it ran.
    let root = &advances[0].parent;
    assert!(!root.is_empty());
    assert!(advances.iter().all(|a| &a.parent == root), "{advances:?}");
    assert!(
        advances
            .iter()
            .all(|a| a.attribute("run") == Some(run.as_str()))
    );
    assert!(
        advances
            .iter()
            .all(|a| a.attribute("workflow") == Some("traced"))
    );

    let call = spans
        .iter()
        .find(|s| s.name == "step.attempt" && s.attribute("step") == Some("call"))
        .expect("the call attempt's span");
    assert!(
        advances.iter().any(|a| a.id == call.parent),
        "the attempt is a child of an advance: {call:?}"
    );
    assert_eq!(call.attribute("kind"), Some("http"));

    // The service got the attempt's span as its parent, in the run's trace.
    let traceparents = seen.lock().unwrap().traceparents.clone();
    assert_eq!(traceparents.len(), 1, "{traceparents:?}");
    assert_eq!(traceparents[0], format!("00-{trace}-{}-01", call.id));
}
