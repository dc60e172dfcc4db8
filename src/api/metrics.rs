//! `/metrics`: Prometheus text exposition, computed from the database on each scrape so
//! every API replica reports the same numbers. Names are prefixed `cairn_`.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::workers::HEARTBEAT_STALE;
use super::{ApiError, AppState};
use crate::store;

const DURATION_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let pool = &state.pool;
    let mut out = String::new();
    let w = &mut out;
    let fmt = |e: std::fmt::Error| ApiError::internal(e);

    writeln!(
        w,
        "# HELP cairn_runs Runs by status.\n# TYPE cairn_runs gauge"
    )
    .map_err(fmt)?;
    for (status, n) in store::stats::runs_by_status(pool).await? {
        writeln!(w, "cairn_runs{{status=\"{}\"}} {n}", esc(&status)).map_err(fmt)?;
    }
    writeln!(
        w,
        "# HELP cairn_queue_depth Queued runs per workflow.\n# TYPE cairn_queue_depth gauge"
    )
    .map_err(fmt)?;
    let queue = store::stats::queue_depth(pool).await?;
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
    let steps = store::stats::step_stats(pool, DURATION_BOUNDS).await?;
    writeln!(w, "# HELP cairn_step_attempts_total Step attempts by outcome.\n# TYPE cairn_step_attempts_total counter").map_err(fmt)?;
    for (status, n) in &steps.attempts_by_status {
        writeln!(
            w,
            "cairn_step_attempts_total{{status=\"{}\"}} {n}",
            esc(status)
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
        store::dead_letters::dead_letter_count(pool).await?
    )
    .map_err(fmt)?;
    writeln!(
        w,
        "# HELP cairn_workers_alive Workers with a recent heartbeat.\n# TYPE cairn_workers_alive gauge\ncairn_workers_alive {}",
        store::stats::workers_alive(pool, HEARTBEAT_STALE.as_secs_f64()).await?
    )
    .map_err(fmt)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}
