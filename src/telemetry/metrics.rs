//! The Prometheus metrics a process counts for itself, and where it shows them.
//!
//! Counters are incremented where things happen (a run's submit committed, a run
//! finished, an attempt ended, a retry scheduled), never counted from rows: rows are
//! deleted by retention, and a counter must only ever go up. Each process counts what it
//! does — workers their runs and steps, the API its requests and submits — so each
//! serves its own `/metrics` (`cairn worker --metrics-listen`, the API's `/metrics`),
//! and Prometheus adds them up across processes.
//!
//! The rest of Cairn calls one-line functions named after what happened: the engine's
//! (and every metric's name) are `cairn_core::telemetry::metrics`, re-exported here; the
//! server's own (requests, the queue and fleet gauges, notifications) are below, with
//! the exporter. Nothing is recorded until [`install`] is called (by a process that
//! serves its metrics): without a recorder every call is a no-op, so a worker nobody
//! scrapes keeps no histograms in memory.
//!
//! Labels are bounded: workflow names come from definitions, step kinds and statuses
//! from fixed lists, HTTP routes from the router's path templates (never raw paths).

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use ::metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use cairn_core::telemetry::metrics::*;

/// Upper bounds of the duration histograms' buckets, in seconds: from a fast built-in
/// step to a run that waited on the outside world for an hour.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// How often histograms are folded in although nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The recorder's handle once [`install`]ed.
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
/// Reads this process's CPU, memory and file descriptors (`process_*`) at each render.
static PROCESS: OnceLock<Mutex<metrics_process::Collector>> = OnceLock::new();

/// Starts recording this process's metrics; later calls return the same handle. Spawns
/// the recorder's upkeep when called inside a Tokio runtime.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        let builder = match builder.set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            DURATION_BUCKETS,
        ) {
            Ok(b) => b,
            // Only an empty bucket list is refused.
            Err(_) => PrometheusBuilder::new(),
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if let Err(e) = ::metrics::set_global_recorder(recorder) {
            tracing::warn!(error = %e, "another metrics recorder is installed; Cairn's metrics stay empty");
        }
        describe();
        let process = metrics_process::Collector::default();
        process.describe();
        let _ = PROCESS.set(Mutex::new(process));
        gauge!(BUILD_INFO, "version" => crate::VERSION).set(1.0);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let upkeep = handle.clone();
            rt.spawn(async move {
                let mut every = tokio::time::interval(UPKEEP_EVERY);
                loop {
                    every.tick().await;
                    upkeep.run_upkeep();
                }
            });
        }
        handle
    })
}

/// This process's metrics in Prometheus' text format, process metrics read now.
pub fn render() -> String {
    let handle = install();
    if let Some(process) = PROCESS.get()
        && let Ok(process) = process.lock()
    {
        process.collect();
    }
    handle.render()
}

fn describe() {
    describe_counter!(
        RUNS_SUBMITTED,
        "Runs queued, by workflow (counted when committed)."
    );
    describe_counter!(
        RUNS_FINISHED,
        "Runs finished by a worker, by workflow and final status (succeeded, dead, cancelled)."
    );
    describe_counter!(
        DEAD_LETTERS,
        "Dead letters written (runs that died), by workflow."
    );
    describe_counter!(
        STEP_ATTEMPTS,
        "Step attempts that ran to an end, by workflow, step kind and outcome (succeeded, failed)."
    );
    describe_counter!(
        STEP_RETRIES,
        "Failed attempts scheduled for another try, by workflow and step kind."
    );
    describe_histogram!(
        STEP_DURATION,
        ::metrics::Unit::Seconds,
        "How long step attempts ran, by workflow and step kind."
    );
    describe_histogram!(
        RUN_DURATION,
        ::metrics::Unit::Seconds,
        "From submit to finish, by workflow and final status."
    );
    describe_histogram!(
        PICKUP_LATENCY,
        ::metrics::Unit::Seconds,
        "From submit to a worker's first lease on the run, by workflow."
    );
    describe_counter!(
        HTTP_REQUESTS,
        "API requests answered, by method, route and status."
    );
    describe_histogram!(
        HTTP_DURATION,
        ::metrics::Unit::Seconds,
        "Time to answer API requests (to the response's head), by method and route."
    );
    describe_gauge!(
        QUEUE_DEPTH,
        "Queued runs per workflow (read from the database, cached briefly)."
    );
    describe_gauge!(
        QUEUE_OLDEST_AGE,
        ::metrics::Unit::Seconds,
        "Age of the oldest queued run per workflow (0 when none is queued)."
    );
    describe_gauge!(WORKERS_ALIVE, "Workers with a recent heartbeat.");
    describe_gauge!(
        RUNS_STUCK,
        "Running runs whose lease expired or whose worker stopped heartbeating (at most 500 counted)."
    );
    describe_gauge!(BUILD_INFO, "Always 1; the version this process runs.");
    describe_counter!(
        NOTIFICATION_DELIVERIES,
        "Notifications the notifier handled, by event and outcome (delivered; retried: not delivered, tried again later; failed: given up; skipped: nothing to send it to)."
    );
}

/// The notifier handled a notification of `event` (`run.dead`, …): `outcome` is
/// `delivered`, `retried`, `failed` or `skipped`.
pub fn notification_handled(event: &str, outcome: &'static str) {
    let event = match event {
        "run.dead" | "schedule.tick_failed" => event.to_owned(),
        _ => "other".to_owned(),
    };
    counter!(NOTIFICATION_DELIVERIES, "event" => event, "outcome" => outcome).increment(1);
}

/// The API answered a request to `route` (the router's path template) with `status`.
pub fn http_request(method: &str, route: &str, status: u16, took: Duration) {
    let method = match method {
        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => method.to_owned(),
        _ => "other".to_owned(),
    };
    counter!(HTTP_REQUESTS, "method" => method.clone(), "route" => route.to_owned(), "status" => status.to_string())
        .increment(1);
    histogram!(HTTP_DURATION, "method" => method, "route" => route.to_owned())
        .record(took.as_secs_f64());
}

/// `workflow` has `depth` queued runs, the oldest queued `oldest_age` ago.
pub fn set_queue(workflow: &str, depth: i64, oldest_age: f64) {
    gauge!(QUEUE_DEPTH, "workflow" => workflow.to_owned()).set(depth as f64);
    gauge!(QUEUE_OLDEST_AGE, "workflow" => workflow.to_owned()).set(oldest_age.max(0.0));
}

/// `alive` workers heartbeat; `stuck` running runs have lost theirs.
pub fn set_fleet(alive: i64, stuck: i64) {
    gauge!(WORKERS_ALIVE).set(alive as f64);
    gauge!(RUNS_STUCK).set(stuck as f64);
}

/// Serves [`render`] at `/metrics` on `listener` until `shutdown`: a worker's or a
/// scheduler's own metrics (`--metrics-listen`), for the monitoring network only.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    install();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], render())
        }),
    );
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics listening");
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
