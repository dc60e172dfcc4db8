//! The metrics the engine records: every metric's name, in one place (the server's
//! exporter describes them and the alert rules use them), and the one-line functions the
//! engine calls where things happen, named after what happened.
//!
//! Counters are incremented where things happen (a run's submit committed, a run
//! finished, an attempt ended, a retry scheduled), never counted from rows: rows are
//! deleted by retention, and a counter must only ever go up. Everything here goes
//! through the `metrics` facade: until a process installs a recorder (the server's
//! `telemetry::metrics::install`, in a process that serves its metrics) every call is a
//! no-op, so a worker nobody scrapes keeps no histograms in memory.
//!
//! Labels are bounded: workflow names come from definitions, step kinds and statuses
//! from fixed lists.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use ::metrics::{counter, histogram};

use crate::state::RunStatus;

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

    /// The advance committed the run's end as `status` (succeeded, dead, cancelled),
    /// or did not finish it (`None`). A dead run wrote a dead letter.
    pub fn ended(self, status: Option<RunStatus>) {
        let Some(status) = status else { return };
        let took = self.age_at_lease + self.leased.elapsed();
        let label = status.as_str();
        counter!(RUNS_FINISHED, "workflow" => self.workflow.clone(), "status" => label)
            .increment(1);
        histogram!(RUN_DURATION, "workflow" => self.workflow.clone(), "status" => label)
            .record(took.as_secs_f64());
        if status == RunStatus::Dead {
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
