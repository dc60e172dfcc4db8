//! `/metrics`: this API process's metrics in Prometheus' text format (see
//! [`crate::telemetry::metrics`]) — its requests and submits, counted as they happen —
//! with the gauges only the database knows: queue depth and oldest-queued age per
//! workflow, live workers, stuck runs. Workers serve their own counters on their own
//! listener (`cairn worker --metrics-listen`).
//!
//! The gauges are read with indexed queries (queued runs by their status index, running
//! runs by their lease index, the small `workers` table), never a scan of the run
//! history, and still a scrape must not be something anyone can repeat at will: on the
//! main listener it needs a viewer (or it is served on a listener of its own,
//! `--metrics-listen`), one rendering serves every scrape for [`CACHE_FOR`] (concurrent
//! scrapes wait for the one rendering), and its queries are cancelled past
//! [`QUERY_TIMEOUT`].

use std::collections::BTreeSet;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::auth::Viewer;
use super::workers::HEARTBEAT_STALE;
use super::{ApiError, AppState};
use crate::store;
use crate::telemetry::metrics;

/// How long one rendering answers scrapes. Prometheus scrapes every 15 s or more, and
/// several replicas of Prometheus (or a dashboard) share it.
const CACHE_FOR: Duration = Duration::from_secs(5);
/// `statement_timeout` of a rendering's queries.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The last rendering and when it was made, and the workflows whose queue gauges were
/// ever set (a workflow whose queue emptied reads 0, not its last depth). The lock is
/// held while rendering, so scrapes that arrive meanwhile wait for it instead of
/// running the queries again.
#[derive(Debug, Default)]
pub struct Cache(tokio::sync::Mutex<Rendered>);

#[derive(Debug, Default)]
pub struct Rendered {
    last: Option<(Instant, Bytes)>,
    workflows: BTreeSet<String>,
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
    let text = match &cached.last {
        Some((at, text)) if at.elapsed() < CACHE_FOR => text.clone(),
        _ => {
            refresh_gauges(state, &mut cached.workflows).await?;
            let text = Bytes::from(metrics::render());
            cached.last = Some((Instant::now(), text.clone()));
            text
        }
    };
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response())
}

/// Sets the gauges the database knows; `seen` are the workflows whose queue gauges were
/// set before.
async fn refresh_gauges(state: &AppState, seen: &mut BTreeSet<String>) -> Result<(), ApiError> {
    let mut tx = store::stats::stats_begin(&state.pool, QUERY_TIMEOUT).await?;
    let queue = store::stats::queue_depth(&mut *tx).await?;
    let stale = HEARTBEAT_STALE.as_secs_f64();
    let alive = store::stats::workers_alive(&mut *tx, stale).await?;
    let stuck = store::stats::stuck_runs(&mut *tx, stale).await?.len();
    // Read-only: ending it either way changes nothing.
    tx.rollback().await.map_err(ApiError::internal)?;

    seen.extend(state.workflows.names().into_iter().map(str::to_owned));
    let mut empty = seen.clone();
    for (workflow, depth, age) in &queue {
        metrics::set_queue(workflow, *depth, *age);
        empty.remove(workflow);
        seen.insert(workflow.clone());
    }
    for workflow in &empty {
        metrics::set_queue(workflow, 0, 0.0);
    }
    metrics::set_fleet(alive, stuck as i64);
    Ok(())
}

/// Counts every answer of the router it wraps by method, route (the matched path
/// template, so `/api/tasks/{id}`, never a run id) and status.
pub async fn count_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        // Every path the router has no route for is the dashboard's.
        .map_or("dashboard", |p| p.as_str())
        .to_owned();
    let method = req.method().clone();
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    metrics::http_request(
        method.as_str(),
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
