//! `/api/workers` (live workers and stuck runs) and `/api/overview` (the numbers an
//! operator checks first).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Viewer;
use super::extract::AppQuery;
use super::{ApiError, AppState};
use crate::store;

/// A worker whose heartbeat is older than this is presumed dead.
pub const HEARTBEAT_STALE: Duration = Duration::from_secs(60);

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(workers))
        .routes(routes!(overview))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerView {
    id: String,
    hostname: String,
    pid: i32,
    version: String,
    concurrency: i32,
    started_at: DateTime<Utc>,
    last_heartbeat_at: DateTime<Utc>,
    heartbeat_age_ms: i64,
    in_flight: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StuckRun {
    run_id: String,
    workflow: String,
    worker: Option<String>,
    lease_expires_at: Option<DateTime<Utc>>,
    /// How long ago the lease expired (negative: it has not yet, but its worker is silent).
    lease_expired_ago_ms: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerList {
    items: Vec<WorkerView>,
    /// Runs held by a worker that stopped renewing; the rescuer requeues them once their
    /// lease expires.
    stuck: Vec<StuckRun>,
}

/// Live workers (heartbeat within a minute) and runs stuck with a dead worker.
#[utoipa::path(get, path = "/api/workers", tag = "workers", responses((status = 200, body = WorkerList)))]
async fn workers(State(state): State<AppState>, _: Viewer) -> Result<Json<WorkerList>, ApiError> {
    let now = Utc::now();
    let items = store::workers::worker_list(&state.pool, HEARTBEAT_STALE)
        .await?
        .into_iter()
        .filter(|w| w.stopped_at.is_none())
        .map(|w| WorkerView {
            heartbeat_age_ms: (now - w.last_heartbeat_at).num_milliseconds().max(0),
            id: w.id,
            hostname: w.hostname,
            pid: w.pid,
            version: w.version,
            concurrency: w.concurrency,
            started_at: w.started_at,
            last_heartbeat_at: w.last_heartbeat_at,
            in_flight: w.in_flight,
        })
        .collect();
    let stuck = store::stats::stuck_runs(&state.pool, HEARTBEAT_STALE.as_secs_f64())
        .await?
        .into_iter()
        .map(|s| StuckRun {
            run_id: s.run_id,
            workflow: s.workflow,
            worker: s.worker,
            lease_expires_at: s.lease_expires_at,
            lease_expired_ago_ms: (s.lease_expired_secs * 1000.0) as i64,
        })
        .collect();
    Ok(Json(WorkerList { items, stuck }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OverviewQuery {
    /// How far back the throughput chart goes (default 24h; from 1m to 90d).
    #[param(pattern = r"^([0-9]{1,9}(ms|s|m|h|d|w|y))+$")]
    window: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueView {
    workflow: String,
    depth: i64,
    oldest_queued_age_ms: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusCount {
    status: crate::state::RunStatus,
    count: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Bucket {
    at: DateTime<Utc>,
    succeeded: i64,
    dead: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    runs_by_status: Vec<StatusCount>,
    queue: Vec<QueueView>,
    dead_letters: i64,
    workers_alive: i64,
    bucket_seconds: i64,
    throughput: Vec<Bucket>,
}

/// Runs by status, queue depth and oldest-queued age per workflow, dead letters, live
/// workers, and runs finished over time.
#[utoipa::path(get, path = "/api/overview", tag = "workers", params(OverviewQuery),
    responses((status = 200, body = Overview), (status = 400, body = super::error::ErrorBody)))]
async fn overview(
    State(state): State<AppState>,
    _: Viewer,
    AppQuery(q): AppQuery<OverviewQuery>,
) -> Result<Json<Overview>, ApiError> {
    let window = match &q.window {
        Some(w) => super::tasks::span("window", w)?,
        None => Duration::from_secs(24 * 3600),
    };
    let window = window.clamp(Duration::from_secs(60), Duration::from_secs(90 * 24 * 3600));
    // About 48 buckets, in whole minutes.
    let bucket = ((window.as_secs() / 48).max(60) / 60) * 60;
    let since = Utc::now() - chrono::Duration::from_std(window).map_err(ApiError::internal)?;
    let pool = &state.pool;
    Ok(Json(Overview {
        runs_by_status: store::stats::runs_by_status(pool)
            .await?
            .into_iter()
            .map(|(status, count)| StatusCount { status, count })
            .collect(),
        queue: store::stats::queue_depth(pool)
            .await?
            .into_iter()
            .map(|(workflow, depth, age)| QueueView {
                workflow,
                depth,
                oldest_queued_age_ms: (age * 1000.0) as i64,
            })
            .collect(),
        dead_letters: store::dead_letters::dead_letter_count(pool).await?,
        workers_alive: store::stats::workers_alive(pool, HEARTBEAT_STALE.as_secs_f64()).await?,
        bucket_seconds: bucket as i64,
        throughput: store::stats::throughput(pool, since, bucket as f64)
            .await?
            .into_iter()
            .map(|(at, succeeded, dead)| Bucket {
                at,
                succeeded,
                dead,
            })
            .collect(),
    }))
}
