//! `/api/retention`: what the reaper keeps and for how long, and what its latest passes
//! deleted. The reaper runs in the schedulers, not here: the settings shown are those
//! its latest pass recorded (see [`crate::scheduler::reaper`]).

use std::collections::BTreeMap;

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
use crate::store::retention::PassRow;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(retention))
}

/// Retention as the reaper applies it. Windows are in seconds; null keeps that status
/// for ever.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSettings {
    /// Succeeded runs are deleted this long after they finished.
    succeeded: Option<u64>,
    /// Cancelled runs are deleted this long after they finished.
    cancelled: Option<u64>,
    /// Dead runs (with their dead letters) are deleted this long after they died.
    dead: Option<u64>,
    /// Schedule ticks that started no run are deleted this long after they were handled.
    ticks: Option<u64>,
    /// Workers silent this long are forgotten.
    workers: Option<u64>,
    /// Seconds between two passes.
    interval: Option<u64>,
    /// Rows deleted per transaction.
    batch: Option<u64>,
}

/// One pass of the reaper.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPass {
    id: i64,
    /// The scheduler process that ran it.
    reaper: String,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    duration_ms: i64,
    /// Runs deleted, by final status.
    runs: BTreeMap<String, u64>,
    /// Rows deleted, by table (runs and what hung off them, `schedule_ticks`,
    /// `sessions`, `api_tokens`, `workers`).
    deleted: BTreeMap<String, u64>,
    runs_deleted: u64,
    rows_deleted: u64,
    batches: i32,
    /// False when the pass stopped part-way (shutdown, or `error`); the next pass
    /// starts over.
    complete: bool,
    error: Option<String>,
    /// The settings this pass applied.
    settings: RetentionSettings,
}

impl From<PassRow> for RetentionPass {
    fn from(p: PassRow) -> Self {
        let counts = |v: serde_json::Value| -> BTreeMap<String, u64> {
            serde_json::from_value(v).unwrap_or_default()
        };
        let runs = counts(p.runs);
        let deleted = counts(p.deleted);
        RetentionPass {
            id: p.id,
            reaper: p.reaper,
            started_at: p.started_at,
            finished_at: p.finished_at,
            duration_ms: p.duration_ms,
            runs_deleted: runs.values().sum(),
            rows_deleted: deleted.values().sum(),
            runs,
            deleted,
            batches: p.batches,
            complete: p.complete,
            error: p.error,
            settings: serde_json::from_value(p.settings).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionView {
    /// The settings of the latest pass; null until a reaper (in `cairn scheduler` or
    /// `cairn dev`) has run one.
    settings: Option<RetentionSettings>,
    /// Where the reaper runs.
    reaper_runs_in: String,
    /// The latest passes, newest first.
    passes: Vec<RetentionPass>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RetentionQuery {
    /// Passes to list (default 10).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// How long finished runs are kept, and what the reaper's latest passes deleted.
#[utoipa::path(get, path = "/api/retention", tag = "retention", params(RetentionQuery),
    responses((status = 200, body = RetentionView), (status = 400, body = super::error::ErrorBody)))]
async fn retention(
    State(state): State<AppState>,
    _: Viewer,
    AppQuery(q): AppQuery<RetentionQuery>,
) -> Result<Json<RetentionView>, ApiError> {
    let limit = q.limit.unwrap_or(10);
    if !(1..=store::retention::PASSES_KEPT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {}",
            store::retention::PASSES_KEPT
        )));
    }
    let passes: Vec<RetentionPass> = store::retention::pass_list(&state.pool, limit)
        .await?
        .into_iter()
        .map(RetentionPass::from)
        .collect();
    let settings = passes.first().map(|p| p.settings.clone());
    Ok(Json(RetentionView {
        settings,
        reaper_runs_in: "cairn scheduler (and cairn dev): one pass at a time in the cluster".into(),
        passes,
    }))
}
