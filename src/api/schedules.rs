//! `/api/schedules`: list, create, show, pause, resume, trigger and remove recurring
//! runs. Schedules from workflow files (`source: "file"`) are synced by the schedulers;
//! they can be paused, resumed and triggered here but are removed from their file.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{Operator, Viewer};
use super::extract::AppJson;
use super::{ApiError, AppState};
use crate::scheduler::{self, Triggered};
use crate::store::schedules::{self as store, ScheduleParams, ScheduleRow, TickRow};
use crate::workflow::schedule::{DEFAULT_MAX_LATENESS, parse_timezone};
use crate::workflow::{CronSchedule, MisfirePolicy, OverlapPolicy};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, remove))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(trigger))
}

/// How many fire times a view lists.
const UPCOMING: usize = 3;
const RECENT_TICKS: i64 = 20;
const MAX_NAME_LEN: usize = 100;

/// A schedule.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleView {
    id: String,
    /// Unique; accepted wherever the id is.
    name: String,
    workflow: String,
    /// 5 fields, or 6 with seconds first.
    cron: String,
    /// IANA zone the expression is read in.
    timezone: String,
    #[schema(value_type = Object)]
    input: Value,
    enabled: bool,
    /// `fire_once` or `skip`.
    misfire_policy: String,
    /// `allow`, `skip` or `cancel_previous`.
    overlap_policy: String,
    /// How late a tick may start and still be on time, e.g. `1m`.
    max_lateness: String,
    /// The next three fire times (none while paused).
    next_fire_times: Vec<DateTime<Utc>>,
    last_fired_at: Option<DateTime<Utc>>,
    /// `file` (a `[[schedules]]` entry) or `api`.
    source: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl ScheduleView {
    fn new(s: ScheduleRow, now: DateTime<Utc>) -> ScheduleView {
        let next_fire_times = scheduler::upcoming(&s, now, UPCOMING);
        ScheduleView {
            max_lateness: humantime::format_duration(Duration::from_millis(
                u64::try_from(s.max_lateness_ms).unwrap_or(0),
            ))
            .to_string(),
            id: s.id,
            name: s.name,
            workflow: s.workflow,
            cron: s.cron,
            timezone: s.timezone,
            input: s.input,
            enabled: s.enabled,
            misfire_policy: s.misfire_policy,
            overlap_policy: s.overlap_policy,
            next_fire_times,
            last_fired_at: s.last_fired_at,
            source: s.source,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// One handled tick.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TickView {
    /// The cron time it stands for (for manual triggers, when triggered).
    tick_at: DateTime<Utc>,
    /// `on_time`, `late` (stands for missed ticks) or `manual`.
    kind: String,
    /// `fired`, `skipped_overlap`, `skipped_misfire` or `failed`.
    outcome: String,
    task_id: Option<String>,
    /// For `late` ticks: how many missed ticks it stands for.
    missed: i32,
    error: Option<String>,
    /// The scheduler process (or API caller) that handled it.
    handled_by: String,
    handled_at: DateTime<Utc>,
}

impl From<TickRow> for TickView {
    fn from(t: TickRow) -> Self {
        TickView {
            tick_at: t.tick_at,
            kind: t.kind,
            outcome: t.outcome,
            task_id: t.run_id,
            missed: t.missed,
            error: t.error,
            handled_by: t.scheduler,
            handled_at: t.handled_at,
        }
    }
}

/// A schedule with its latest ticks.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleDetail {
    #[serde(flatten)]
    schedule: ScheduleView,
    /// The latest 20, newest first.
    recent_ticks: Vec<TickView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleList {
    items: Vec<ScheduleView>,
}

async fn find(state: &AppState, id: &str) -> Result<ScheduleRow, ApiError> {
    store::schedule_get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no schedule with id or name `{id}`")))
}

/// Every schedule, by name, with its next three fire times.
#[utoipa::path(get, path = "/api/schedules", tag = "schedules",
    responses((status = 200, body = ScheduleList)))]
async fn list(State(state): State<AppState>, _: Viewer) -> Result<Json<ScheduleList>, ApiError> {
    let now = Utc::now();
    let items = store::schedule_list(&state.pool)
        .await?
        .into_iter()
        .map(|s| ScheduleView::new(s, now))
        .collect();
    Ok(Json(ScheduleList { items }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateSchedule {
    /// Unique: letters, digits, `_`, `-` and `.`, at most 100.
    name: String,
    workflow: String,
    /// 5 fields (`0 6 * * *`), or 6 with seconds first.
    cron: String,
    /// IANA zone name; default `UTC`.
    timezone: Option<String>,
    /// The input of every run; default `{}`. Checked against the workflow's `[input]`.
    #[schema(value_type = Option<Object>)]
    input: Option<Value>,
    /// Default `true`.
    enabled: Option<bool>,
    /// `fire_once` (default) or `skip`.
    misfire_policy: Option<String>,
    /// `allow` (default), `skip` or `cancel_previous`.
    overlap_policy: Option<String>,
    /// A duration such as `30s` or `5m`, at least `1s`; default `1m`.
    max_lateness: Option<String>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Creates a schedule; it fires from its next tick on.
#[utoipa::path(post, path = "/api/schedules", tag = "schedules", request_body = CreateSchedule,
    responses(
        (status = 201, body = ScheduleView),
        (status = 409, body = super::error::ErrorBody, description = "the name is taken"),
        (status = 422, body = super::error::ErrorBody, description = "bad expression, zone, policy, workflow or input; `details` lists each problem")))]
async fn create(
    State(state): State<AppState>,
    _: Operator,
    AppJson(req): AppJson<CreateSchedule>,
) -> Result<Response, ApiError> {
    let mut problems: Vec<Value> = Vec::new();
    let mut problem = |field: &str, message: String| {
        problems.push(json!({ "field": field, "message": message }));
    };
    if !valid_name(&req.name) {
        problem(
            "name",
            format!("name must be 1 to {MAX_NAME_LEN} letters, digits, `_`, `-` or `.`"),
        );
    }
    let timezone = req.timezone.as_deref().unwrap_or("UTC").trim().to_owned();
    // The expression and the zone are checked apart, so both are reported.
    let mut cron = match CronSchedule::parse(&req.cron, "UTC") {
        Ok(c) => Some(c),
        Err(e) => {
            problem("cron", e.to_string());
            None
        }
    };
    if let Err(e) = parse_timezone(&timezone) {
        problem("timezone", e.to_string());
    } else if cron.is_some() {
        cron = CronSchedule::parse(&req.cron, &timezone).ok();
    }
    let misfire = req
        .misfire_policy
        .as_deref()
        .map_or(Ok(MisfirePolicy::FireOnce), str::parse)
        .unwrap_or_else(|e| {
            problem("misfirePolicy", e.to_string());
            MisfirePolicy::FireOnce
        });
    let overlap = req
        .overlap_policy
        .as_deref()
        .map_or(Ok(OverlapPolicy::Allow), str::parse)
        .unwrap_or_else(|e| {
            problem("overlapPolicy", e.to_string());
            OverlapPolicy::Allow
        });
    let max_lateness = match req.max_lateness.as_deref() {
        None => DEFAULT_MAX_LATENESS,
        Some(s) => match humantime::parse_duration(s.trim()) {
            Ok(d) if d >= Duration::from_secs(1) => d,
            Ok(_) => {
                problem("maxLateness", "maxLateness must be at least 1s".into());
                DEFAULT_MAX_LATENESS
            }
            Err(e) => {
                problem(
                    "maxLateness",
                    format!("`{s}` is not a duration such as 30s or 5m: {e}"),
                );
                DEFAULT_MAX_LATENESS
            }
        },
    };
    let input = req.input.clone().unwrap_or_else(|| json!({}));
    match state.workflows.get(&req.workflow) {
        None => problem(
            "workflow",
            format!(
                "no workflow named `{}`; known workflows: {}",
                req.workflow,
                state.workflows.names().join(", ")
            ),
        ),
        Some(def) => {
            if let Err(errors) = def.workflow.validate_input(&input) {
                for e in errors {
                    problem("input", e.to_string());
                }
            }
        }
    }
    let Some(cron) = cron.filter(|_| problems.is_empty()) else {
        let summary: Vec<String> = problems
            .iter()
            .filter_map(|p| p["message"].as_str().map(str::to_owned))
            .collect();
        return Err(ApiError::Unprocessable {
            message: format!("invalid schedule: {}", summary.join("; ")),
            details: Some(Value::Array(problems)),
        });
    };

    let now = Utc::now();
    let params = ScheduleParams {
        name: &req.name,
        workflow: &req.workflow,
        cron: req.cron.trim(),
        timezone: &timezone,
        input: &input,
        enabled: req.enabled.unwrap_or(true),
        misfire_policy: misfire.as_str(),
        max_lateness_ms: i64::try_from(max_lateness.as_millis()).unwrap_or(i64::MAX),
        overlap_policy: overlap.as_str(),
        source: "api",
        spec_hash: None,
        next_fire_at: cron.next_after(now),
    };
    let id = ulid::Ulid::generate().to_string();
    let mut conn = state.pool.acquire().await?;
    let row = store::schedule_insert(&mut conn, &id, &params)
        .await
        .map_err(|e| match e.constraint() {
            Some("schedules_name") => ApiError::Conflict {
                message: format!("a schedule named `{}` exists", req.name),
                details: None,
            },
            _ => e.into(),
        })?;
    let mut response = (StatusCode::CREATED, Json(ScheduleView::new(row, now))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/schedules/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// A schedule with its latest ticks.
#[utoipa::path(get, path = "/api/schedules/{id}", tag = "schedules",
    params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = ScheduleDetail), (status = 404, body = super::error::ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    _: Viewer,
    Path(id): Path<String>,
) -> Result<Json<ScheduleDetail>, ApiError> {
    let s = find(&state, &id).await?;
    let ticks = store::schedule_ticks_recent(&state.pool, &s.id, RECENT_TICKS).await?;
    Ok(Json(ScheduleDetail {
        schedule: ScheduleView::new(s, Utc::now()),
        recent_ticks: ticks.into_iter().map(TickView::from).collect(),
    }))
}

async fn set_enabled(state: &AppState, id: &str, enabled: bool) -> Result<ScheduleView, ApiError> {
    let s = find(state, id).await?;
    let now = Utc::now();
    let resume_at = CronSchedule::parse(&s.cron, &s.timezone)
        .map_err(ApiError::internal)?
        .next_after(now);
    let row = store::schedule_set_enabled(&state.pool, &s.id, enabled, resume_at)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no schedule with id or name `{id}`")))?;
    Ok(ScheduleView::new(row, now))
}

/// Pauses a schedule: it fires nothing until resumed.
#[utoipa::path(post, path = "/api/schedules/{id}/pause", tag = "schedules",
    params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = ScheduleView), (status = 404, body = super::error::ErrorBody)))]
async fn pause(
    State(state): State<AppState>,
    _: Operator,
    Path(id): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    Ok(Json(set_enabled(&state, &id, false).await?))
}

/// Resumes a paused schedule from its next tick; ticks of the pause never fire.
#[utoipa::path(post, path = "/api/schedules/{id}/resume", tag = "schedules",
    params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = ScheduleView), (status = 404, body = super::error::ErrorBody)))]
async fn resume(
    State(state): State<AppState>,
    _: Operator,
    Path(id): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    Ok(Json(set_enabled(&state, &id, true).await?))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerResponse {
    task_id: String,
    status: String,
}

/// Starts a run of the schedule now (even while paused, and whatever its overlap
/// policy), recorded as a `manual` tick.
#[utoipa::path(post, path = "/api/schedules/{id}/trigger", tag = "schedules",
    params(("id" = String, Path, description = "id or name")),
    responses(
        (status = 201, body = TriggerResponse),
        (status = 404, body = super::error::ErrorBody),
        (status = 422, body = super::error::ErrorBody, description = "the workflow is not loaded or the schedule's input no longer matches it")))]
async fn trigger(
    State(state): State<AppState>,
    Operator(p): Operator,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let by = format!("api:{}", p.name);
    let triggered = scheduler::trigger(&state.pool, &state.workflows, &id, &by, Utc::now()).await?;
    let run = match triggered {
        Triggered::Run(run) => run,
        Triggered::NotFound => {
            return Err(ApiError::NotFound(format!(
                "no schedule with id or name `{id}`"
            )));
        }
        Triggered::Failed(message) => {
            return Err(ApiError::Unprocessable {
                message,
                details: None,
            });
        }
    };
    let mut response = (
        StatusCode::CREATED,
        Json(TriggerResponse {
            task_id: run.id.clone(),
            status: run.status.clone(),
        }),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/tasks/{}", run.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Removes a schedule created through the API, with its tick history (its runs stay).
#[utoipa::path(delete, path = "/api/schedules/{id}", tag = "schedules",
    params(("id" = String, Path, description = "id or name")),
    responses(
        (status = 204),
        (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody, description = "the schedule comes from a workflow file")))]
async fn remove(
    State(state): State<AppState>,
    _: Operator,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let s = find(&state, &id).await?;
    if s.source == "file" {
        return Err(ApiError::Conflict {
            message: format!(
                "schedule `{}` comes from a `[[schedules]]` entry in workflow `{}`; remove it from the file (the schedulers drop it on their next start), or pause it",
                s.name, s.workflow
            ),
            details: None,
        });
    }
    if store::schedule_delete(&state.pool, &s.id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "no schedule with id or name `{id}`"
        )))
    }
}
