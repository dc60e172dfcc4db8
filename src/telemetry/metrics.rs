//! The Prometheus metrics a process counts for itself, and where it shows them.
//!
//! Counters are incremented where things happen (a run's submit committed, a run
//! finished, an attempt ended, a retry scheduled), never counted from rows: rows are
//! deleted by retention, and a counter must only ever go up. Each process counts what it
//! does — workers their runs and steps, the API its requests and submits — so each
//! serves its own `/metrics` (`cairn worker --metrics-listen`, the API's `/metrics`),
//! and Prometheus adds them up across processes.
//!
//! The rest of Cairn calls the one-line functions below, named after what happened;
//! the metric names and labels live here alone. Nothing is recorded until [`install`]
//! is called (by a process that serves its metrics): without a recorder every call is a
//! no-op, so a worker nobody scrapes keeps no histograms in memory.
//!
//! Labels are bounded: workflow names come from definitions, step kinds and statuses
//! from fixed lists, HTTP routes from the router's path templates (never raw paths).

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use ::metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Upper bounds of the duration histograms' buckets, in seconds: from a fast built-in
/// step to a run that waited on the outside world for an hour.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// How often histograms are folded in although nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

// Every metric's name, one place.
pub const RUNS_SUBMITTED: &str = "cairn_runs_submitted_total";
pub const RUNS_FINISHED: &str = "cairn_runs_finished_total";
pub const DEAD_LETTERS: &str = "cairn_dead_letters_total";
pub const STEP_ATTEMPTS: &str = "cairn_step_attempts_total";
pub const STEP_RETRIES: &str = "cairn_step_retries_total";
pub const STEP_DURATION: &str = "cairn_step_duration_seconds";
pub const RUN_DURATION: &str = "cairn_run_duration_seconds";
pub const PICKUP_LATENCY: &str = "cairn_run_pickup_latency_seconds";
pub const HTTP_REQUESTS: &str = "cairn_http_requests_total";
pub const HTTP_DURATION: &str = "cairn_http_request_duration_seconds";
pub const QUEUE_DEPTH: &str = "cairn_queue_depth";
pub const QUEUE_OLDEST_AGE: &str = "cairn_queue_oldest_age_seconds";
pub const WORKERS_ALIVE: &str = "cairn_workers_alive";
pub const RUNS_STUCK: &str = "cairn_runs_stuck";
pub const BUILD_INFO: &str = "cairn_build_info";
pub const NOTIFICATION_DELIVERIES: &str = "cairn_notification_deliveries_total";

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

/// `n` runs of `workflow` were queued (their transaction committed).
pub fn runs_submitted(workflow: &str, n: usize) {
    if n > 0 {
        counter!(RUNS_SUBMITTED, "workflow" => workflow.to_owned()).increment(n as u64);
    }
}

/// One advance of a run, from the moment a worker leased it: records the pickup when
/// this is the run's first lease, and the run's end if the advance finished it.
#[derive(Debug)]
pub struct RunTimer {
    workflow: String,
    /// How long before the lease the run was submitted.
    age_at_lease: Duration,
    leased: Instant,
}

impl RunTimer {
    /// A run of `workflow`, submitted at `created_at`, leased at `db_now` (the database's
    /// clock, as `created_at`); `started_at` is when it first ran, which is `db_now` on
    /// its first lease.
    pub fn leased(
        workflow: &str,
        created_at: DateTime<Utc>,
        started_at: Option<DateTime<Utc>>,
        db_now: DateTime<Utc>,
    ) -> RunTimer {
        let age_at_lease = (db_now - created_at).to_std().unwrap_or_default();
        if started_at == Some(db_now) {
            histogram!(PICKUP_LATENCY, "workflow" => workflow.to_owned())
                .record(age_at_lease.as_secs_f64());
        }
        RunTimer {
            workflow: workflow.to_owned(),
            age_at_lease,
            leased: Instant::now(),
        }
    }

    /// The advance committed the run's end as `status` (`succeeded`, `dead`,
    /// `cancelled`), or did not finish it (`None`). A dead run wrote a dead letter.
    pub fn ended(self, status: Option<&'static str>) {
        let Some(status) = status else { return };
        let took = self.age_at_lease + self.leased.elapsed();
        counter!(RUNS_FINISHED, "workflow" => self.workflow.clone(), "status" => status)
            .increment(1);
        histogram!(RUN_DURATION, "workflow" => self.workflow.clone(), "status" => status)
            .record(took.as_secs_f64());
        if status == "dead" {
            counter!(DEAD_LETTERS, "workflow" => self.workflow).increment(1);
        }
    }
}

/// One attempt of a step that runs in the worker (every kind but `sleep`, `wait` and
/// `workflow`, which wait rather than run).
#[derive(Debug)]
pub struct AttemptTimer {
    workflow: String,
    kind: &'static str,
    started: Instant,
}

impl AttemptTimer {
    /// An attempt of a `kind` step of `workflow` starts now.
    pub fn started(workflow: &str, kind: &'static str) -> AttemptTimer {
        AttemptTimer {
            workflow: workflow.to_owned(),
            kind,
            started: Instant::now(),
        }
    }

    /// It ended, successfully or not.
    pub fn ended(self, succeeded: bool) {
        let outcome = if succeeded { "succeeded" } else { "failed" };
        let kind = self.kind;
        counter!(STEP_ATTEMPTS, "workflow" => self.workflow.clone(), "kind" => kind, "outcome" => outcome)
            .increment(1);
        histogram!(STEP_DURATION, "workflow" => self.workflow, "kind" => kind)
            .record(self.started.elapsed().as_secs_f64());
    }
}

/// A failed attempt of a `kind` step of `workflow` was scheduled to be tried again.
pub fn step_retry_scheduled(workflow: &str, kind: &'static str) {
    counter!(STEP_RETRIES, "workflow" => workflow.to_owned(), "kind" => kind).increment(1);
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
