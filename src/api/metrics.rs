//! `/metrics`: Prometheus text exposition, computed from the database so every API
//! replica reports the same numbers. Names are prefixed `cairn_`.
//!
//! The aggregates scan whole tables, so a scrape must not be something anyone can
//! repeat at will: on the main listener it needs a viewer (or it is served on a
//! listener of its own, `--metrics-listen`), one rendering serves every scrape for
//! [`CACHE_FOR`] (concurrent scrapes wait for the one rendering), and its queries are
//! cancelled past [`QUERY_TIMEOUT`].

use std::fmt::Write;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use sqlx::PgPool;
use tokio::time::Instant;

use super::auth::Viewer;
use super::workers::HEARTBEAT_STALE;
use super::{ApiError, AppState};
use crate::store;

/// How long one rendering answers scrapes. Prometheus scrapes every 15 s or more, and
/// several replicas of Prometheus (or a dashboard) share it.
const CACHE_FOR: Duration = Duration::from_secs(5);
/// `statement_timeout` of a rendering's queries.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The last rendering and when it was made. The lock is held while rendering, so
/// scrapes that arrive meanwhile wait for it instead of running the queries again.
#[derive(Debug, Default)]
pub struct Cache(tokio::sync::Mutex<Option<(Instant, Bytes)>>);

const DURATION_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `/metrics` on the main listener: for viewers.
pub async fn metrics(State(state): State<AppState>, _: Viewer) -> Result<Response, ApiError> {
    scrape(&state).await
}

/// `/metrics` on its own listener, which only the network can reach.
pub async fn metrics_open(State(state): State<AppState>) -> Result<Response, ApiError> {
    scrape(&state).await
}

async fn scrape(state: &AppState) -> Result<Response, ApiError> {
    let mut cached = state.metrics.0.lock().await;
    let text = match &*cached {
        Some((at, text)) if at.elapsed() < CACHE_FOR => text.clone(),
        _ => {
            let text = Bytes::from(render(&state.pool).await?);
            *cached = Some((Instant::now(), text.clone()));
            text
        }
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

async fn render(pool: &PgPool) -> Result<String, ApiError> {
    let mut tx = store::stats::stats_begin(pool, QUERY_TIMEOUT).await?;
    let mut out = String::new();
    let w = &mut out;
    let fmt = |e: std::fmt::Error| ApiError::internal(e);

    writeln!(
        w,
        "# HELP cairn_runs Runs by status.\n# TYPE cairn_runs gauge"
    )
    .map_err(fmt)?;
    for (status, n) in store::stats::runs_by_status(&mut *tx).await? {
        writeln!(w, "cairn_runs{{status=\"{}\"}} {n}", esc(status.as_str())).map_err(fmt)?;
    }
    writeln!(
        w,
        "# HELP cairn_queue_depth Queued runs per workflow.\n# TYPE cairn_queue_depth gauge"
    )
    .map_err(fmt)?;
    let queue = store::stats::queue_depth(&mut *tx).await?;
    for (wf, depth, _) in &queue {
        writeln!(w, "cairn_queue_depth{{workflow=\"{}\"}} {depth}", esc(wf)).map_err(fmt)?;
    }
    writeln!(
        w,
        "# HELP cairn_queue_oldest_age_seconds Age of the oldest queued run per workflow.\n# TYPE cairn_queue_oldest_age_seconds gauge"
    )
    .map_err(fmt)?;
    for (wf, _, age) in &queue {
        writeln!(
            w,
            "cairn_queue_oldest_age_seconds{{workflow=\"{}\"}} {age:.3}",
            esc(wf)
        )
        .map_err(fmt)?;
    }
    let steps = store::stats::step_stats(&mut tx, DURATION_BOUNDS).await?;
    writeln!(w, "# HELP cairn_step_attempts_total Step attempts by outcome.\n# TYPE cairn_step_attempts_total counter").map_err(fmt)?;
    for (status, n) in &steps.attempts_by_status {
        writeln!(
            w,
            "cairn_step_attempts_total{{status=\"{}\"}} {n}",
            esc(status.as_str())
        )
        .map_err(fmt)?;
    }
    writeln!(w, "# HELP cairn_step_retries_total Failed attempts that were scheduled for retry.\n# TYPE cairn_step_retries_total counter\ncairn_step_retries_total {}", steps.retries).map_err(fmt)?;
    writeln!(w, "# HELP cairn_step_duration_seconds Duration of finished step attempts.\n# TYPE cairn_step_duration_seconds histogram").map_err(fmt)?;
    for (bound, n) in DURATION_BOUNDS.iter().zip(&steps.duration_buckets) {
        writeln!(
            w,
            "cairn_step_duration_seconds_bucket{{le=\"{bound}\"}} {n}"
        )
        .map_err(fmt)?;
    }
    writeln!(
        w,
        "cairn_step_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        steps.duration_count
    )
    .map_err(fmt)?;
    writeln!(
        w,
        "cairn_step_duration_seconds_sum {:.6}",
        steps.duration_sum
    )
    .map_err(fmt)?;
    writeln!(
        w,
        "cairn_step_duration_seconds_count {}",
        steps.duration_count
    )
    .map_err(fmt)?;
    writeln!(
        w,
        "# HELP cairn_dead_letters Dead letters waiting for an operator.\n# TYPE cairn_dead_letters gauge\ncairn_dead_letters {}",
        store::dead_letters::dead_letter_count(&mut *tx).await?
    )
    .map_err(fmt)?;
    writeln!(
        w,
        "# HELP cairn_workers_alive Workers with a recent heartbeat.\n# TYPE cairn_workers_alive gauge\ncairn_workers_alive {}",
        store::stats::workers_alive(&mut *tx, HEARTBEAT_STALE.as_secs_f64()).await?
    )
    .map_err(fmt)?;
    // Read-only: ending it either way changes nothing.
    tx.rollback().await.map_err(ApiError::internal)?;
    Ok(out)
}
