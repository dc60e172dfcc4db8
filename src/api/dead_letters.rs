//! `/api/dead-letters`: runs that died, with every attempt; redrive and purge, one or by
//! filter.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{Operator, Viewer};
use super::extract::{AppJson, AppQuery};
use super::tasks::ago;
use super::{ApiError, AppState};
use crate::engine::ops::{BATCH, BULK_LIMIT, BulkOutcome};
use crate::store::dead_letters::{DeadLetterFilter, DeadLetterRow};
use crate::{engine, store};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(redrive))
        .routes(routes!(purge))
        .routes(routes!(bulk))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    id: i64,
    run_id: String,
    workflow: String,
    step_id: String,
    error: String,
    /// Every attempt of the failed step: attempt, status, worker, startedAt, finishedAt, error, retryDelayMs.
    #[schema(value_type = Vec<Object>)]
    attempts: Value,
    #[schema(value_type = Object)]
    input: Value,
    created_at: DateTime<Utc>,
}

impl From<DeadLetterRow> for DeadLetter {
    fn from(d: DeadLetterRow) -> Self {
        DeadLetter {
            id: d.id,
            run_id: d.run_id,
            workflow: d.workflow,
            step_id: d.step_id,
            error: d.error,
            attempts: d.attempts,
            input: d.input,
            created_at: d.created_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    workflow: Option<String>,
    /// Dead within this long (e.g. `1h`).
    #[param(pattern = r"^([0-9]{1,9}(ms|s|m|h|d|w|y))+$")]
    since: Option<String>,
    /// At most this many (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// `nextCursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterList {
    items: Vec<DeadLetter>,
    next_cursor: Option<String>,
}

/// Dead letters, newest first.
#[utoipa::path(get, path = "/api/dead-letters", tag = "dead-letters", params(ListQuery),
    responses((status = 200, body = DeadLetterList), (status = 400, body = super::error::ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    _: Viewer,
    AppQuery(q): AppQuery<ListQuery>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 500"));
    }
    let before = match q.cursor.as_ref().filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => {
            let parsed = c.split_once('_').and_then(|(m, id)| {
                Some((
                    DateTime::from_timestamp_micros(m.parse().ok()?)?,
                    id.parse().ok()?,
                ))
            });
            Some(parsed.ok_or_else(|| ApiError::Unprocessable {
                message: "unknown cursor: pass the nextCursor of a previous page".into(),
                details: None,
            })?)
        }
    };
    let filter = DeadLetterFilter {
        workflow: q.workflow,
        created_after: q.since.as_deref().map(|s| ago("since", s)).transpose()?,
        created_before: None,
    };
    let rows =
        store::dead_letters::dead_letter_list(&state.pool, &filter, before, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    let page: Vec<DeadLetterRow> = rows.into_iter().take(limit as usize).collect();
    let next_cursor = if more {
        page.last()
            .map(|d| format!("{}_{}", d.created_at.timestamp_micros(), d.id))
    } else {
        None
    };
    Ok(Json(DeadLetterList {
        items: page.into_iter().map(DeadLetter::from).collect(),
        next_cursor,
    }))
}

async fn get(state: &AppState, id: i64) -> Result<DeadLetterRow, ApiError> {
    store::dead_letters::dead_letter_get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no dead letter {id}")))
}

/// One dead letter with every attempt and the input.
#[utoipa::path(get, path = "/api/dead-letters/{id}", tag = "dead-letters", params(("id" = i64, Path)),
    responses((status = 200, body = DeadLetter), (status = 404, body = super::error::ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    _: Viewer,
    Path(id): Path<i64>,
) -> Result<Json<DeadLetter>, ApiError> {
    Ok(Json(get(&state, id).await?.into()))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Redriven {
    task_id: String,
    status: crate::state::RunStatus,
}

/// Resumes the dead run from its failed step (the dead letter is cleared).
#[utoipa::path(post, path = "/api/dead-letters/{id}/redrive", tag = "dead-letters", params(("id" = i64, Path)),
    responses((status = 200, body = Redriven), (status = 404, body = super::error::ErrorBody),
              (status = 409, body = super::error::ErrorBody)))]
async fn redrive(
    State(state): State<AppState>,
    Operator(p): Operator,
    Path(id): Path<i64>,
) -> Result<Json<Redriven>, ApiError> {
    let dl = get(&state, id).await?;
    match engine::ops::retry(&state.pool, &dl.run_id, &p.name).await? {
        Some(run) => Ok(Json(Redriven {
            task_id: run.id,
            status: run.status,
        })),
        None => Err(ApiError::Conflict {
            message: "the run is no longer dead".into(),
            details: None,
        }),
    }
}

/// Removes the dead letter; the run stays `dead`.
#[utoipa::path(post, path = "/api/dead-letters/{id}/purge", tag = "dead-letters", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = super::error::ErrorBody)))]
async fn purge(
    State(state): State<AppState>,
    _: Operator,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    let n = store::dead_letters::dead_letter_purge(&state.pool, &[id]).await?;
    if n == 0 {
        return Err(ApiError::NotFound(format!("no dead letter {id}")));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterFilterBody {
    workflow: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeadLetterBulkRequest {
    #[serde(default)]
    filter: DeadLetterFilterBody,
    #[serde(default)]
    dry_run: bool,
}

/// Redrives or purges every dead letter matching a filter, in batches; `dryRun` only counts.
#[utoipa::path(post, path = "/api/dead-letters/bulk/{action}", tag = "dead-letters",
    params(("action" = String, Path, description = "redrive or purge")), request_body = DeadLetterBulkRequest,
    responses((status = 200, body = BulkOutcome), (status = 404, body = super::error::ErrorBody)))]
async fn bulk(
    State(state): State<AppState>,
    Operator(p): Operator,
    Path(action): Path<String>,
    AppJson(req): AppJson<DeadLetterBulkRequest>,
) -> Result<Json<BulkOutcome>, ApiError> {
    let redrive = match action.as_str() {
        "redrive" => true,
        "purge" => false,
        other => {
            return Err(ApiError::NotFound(format!(
                "no bulk action `{other}`; use redrive or purge"
            )));
        }
    };
    let (created_after, created_before) =
        super::tasks::created_range(req.filter.since.as_deref(), req.filter.until.as_deref())?;
    let filter = DeadLetterFilter {
        workflow: req.filter.workflow,
        created_after,
        created_before,
    };
    let ids =
        store::dead_letters::dead_letter_ids_matching(&state.pool, &filter, BULK_LIMIT).await?;
    let mut outcome = BulkOutcome {
        matched: ids.len(),
        ids: ids.iter().take(100).map(ToString::to_string).collect(),
        processed: 0,
        dry_run: req.dry_run,
    };
    if req.dry_run {
        return Ok(Json(outcome));
    }
    for batch in ids.chunks(BATCH) {
        if redrive {
            for id in batch {
                if let Some(dl) = store::dead_letters::dead_letter_get(&state.pool, *id).await?
                    && engine::ops::retry(&state.pool, &dl.run_id, &p.name)
                        .await?
                        .is_some()
                {
                    outcome.processed += 1;
                }
            }
        } else {
            outcome.processed +=
                store::dead_letters::dead_letter_purge(&state.pool, batch).await? as usize;
        }
    }
    Ok(Json(outcome))
}
