//! `/api/schedules`: list, create, show, edit, pause, resume, trigger, backfill and
//! remove recurring runs. Schedules from workflow files (`source: "file"`) are synced by
//! the schedulers; they can be paused, resumed, triggered and backfilled here but are
//! edited and removed in their file.

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
use crate::scheduler::{self, Backfilled, Triggered};
use crate::store::schedules::{self as store, ScheduleParams, ScheduleRow, TickRow};
use crate::workflow::schedule::{DEFAULT_MAX_LATENESS, ScheduleError, parse_timezone};
use crate::workflow::{CronSchedule, MisfirePolicy, OverlapPolicy};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, remove))
        .routes(routes!(backfill))
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
    /// The priority of the runs it starts (0 to 1000).
    priority: i16,
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
            priority: s.priority,
        }
    }
}

/// One handled tick.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TickView {
    /// The cron time it stands for (for manual triggers, when triggered).
    tick_at: DateTime<Utc>,
    /// Why the tick row exists; `late` stands for missed ticks.
    kind: crate::state::TickKind,
    outcome: crate::state::TickOutcome,
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
    /// The priority of the runs it starts: 0 (default) to 1000 minutes of head start.
    #[schema(minimum = 0, maximum = 1000)]
    priority: Option<i64>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// A schedule's settings checked: what [`settings`] answers.
struct Settings {
    workflow: String,
    cron_expr: String,
    cron: CronSchedule,
    timezone: String,
    input: Value,
    misfire: MisfirePolicy,
    overlap: OverlapPolicy,
    max_lateness: Duration,
    priority: i16,
}

/// A schedule's settings as a request gives them, over `base` (the defaults when
/// creating, the schedule as it is when editing).
struct Given<'a> {
    workflow: &'a str,
    cron: &'a str,
    timezone: &'a str,
    input: &'a Value,
    misfire_policy: &'a str,
    overlap_policy: &'a str,
    /// `None`: the base's, already checked.
    max_lateness: Option<&'a str>,
    base_max_lateness: Duration,
    priority: i64,
    /// Whether to check that the workflow is loaded and the input matches it (on create,
    /// and when either changes: an edit of the timing alone does not trip on them).
    check_workflow: bool,
}

/// Problems with a request's fields, each naming its field, answered together as one 422.
#[derive(Default)]
struct Problems(Vec<Value>);

impl Problems {
    fn add(&mut self, field: &str, message: String) {
        self.0.push(json!({ "field": field, "message": message }));
    }

    fn into_error(self) -> ApiError {
        let summary: Vec<String> = self
            .0
            .iter()
            .filter_map(|p| p["message"].as_str().map(str::to_owned))
            .collect();
        ApiError::Unprocessable {
            message: format!("invalid schedule: {}", summary.join("; ")),
            details: Some(Value::Array(self.0)),
        }
    }
}

/// Checks a schedule's settings — the same rules for creating and editing — adding
/// each problem to `problems`; `None` when there was any.
fn settings(state: &AppState, g: &Given<'_>, problems: &mut Problems) -> Option<Settings> {
    let before = problems.0.len();
    let timezone = g.timezone.trim().to_owned();
    // The expression and the zone are checked apart, so both are reported.
    let mut cron = match CronSchedule::parse(g.cron, "UTC") {
        Ok(c) => Some(c),
        Err(e) => {
            problems.add("cron", e.to_string());
            None
        }
    };
    if let Err(e) = parse_timezone(&timezone) {
        problems.add("timezone", e.to_string());
    } else if cron.is_some() {
        cron = CronSchedule::parse(g.cron, &timezone).ok();
    }
    let misfire = g
        .misfire_policy
        .parse()
        .map_err(|e: ScheduleError| problems.add("misfirePolicy", e.to_string()))
        .ok();
    let overlap = g
        .overlap_policy
        .parse()
        .map_err(|e: ScheduleError| problems.add("overlapPolicy", e.to_string()))
        .ok();
    let max_lateness = match g.max_lateness {
        None => g.base_max_lateness,
        Some(s) => match humantime::parse_duration(s.trim()) {
            Ok(d) if d >= Duration::from_secs(1) => d,
            Ok(_) => {
                problems.add("maxLateness", "maxLateness must be at least 1s".into());
                g.base_max_lateness
            }
            Err(e) => {
                problems.add(
                    "maxLateness",
                    format!("`{s}` is not a duration such as 30s or 5m: {e}"),
                );
                g.base_max_lateness
            }
        },
    };
    match state.workflows.get(g.workflow) {
        _ if !g.check_workflow => {}
        None => problems.add(
            "workflow",
            format!(
                "no workflow named `{}`; known workflows: {}",
                g.workflow,
                state.workflows.names().join(", ")
            ),
        ),
        Some(def) => {
            if let Err(errors) = def.workflow.validate_input(g.input) {
                for e in errors {
                    problems.add("input", e.to_string());
                }
            }
        }
    }
    if problems.0.len() > before {
        return None;
    }
    let max = crate::store::runs::PRIORITY_MAX;
    let priority = match i16::try_from(g.priority) {
        Ok(p) if (0..=max).contains(&p) => Some(p),
        _ => {
            problems.add(
                "priority",
                format!(
                    "priority is 0 to {max} (minutes of head start in the queue), not {}",
                    g.priority
                ),
            );
            None
        }
    };
    Some(Settings {
        priority: priority?,
        workflow: g.workflow.to_owned(),
        cron_expr: g.cron.trim().to_owned(),
        cron: cron?,
        timezone,
        input: g.input.clone(),
        misfire: misfire?,
        overlap: overlap?,
        max_lateness,
    })
}

impl Settings {
    fn params<'a>(&'a self, name: &'a str, enabled: bool, source: &'a str) -> ScheduleParams<'a> {
        ScheduleParams {
            name,
            workflow: &self.workflow,
            cron: &self.cron_expr,
            timezone: &self.timezone,
            input: &self.input,
            enabled,
            misfire_policy: self.misfire.as_str(),
            max_lateness_ms: i64::try_from(self.max_lateness.as_millis()).unwrap_or(i64::MAX),
            overlap_policy: self.overlap.as_str(),
            source,
            spec_hash: None,
            next_fire_at: self.cron.next_after(Utc::now()),
            priority: self.priority,
        }
    }
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
    let mut problems = Problems::default();
    if !valid_name(&req.name) {
        problems.add(
            "name",
            format!("name must be 1 to {MAX_NAME_LEN} letters, digits, `_`, `-` or `.`"),
        );
    }
    let empty = json!({});
    let given = Given {
        workflow: &req.workflow,
        cron: &req.cron,
        timezone: req.timezone.as_deref().unwrap_or("UTC"),
        input: req.input.as_ref().unwrap_or(&empty),
        misfire_policy: req
            .misfire_policy
            .as_deref()
            .unwrap_or(MisfirePolicy::FireOnce.as_str()),
        overlap_policy: req
            .overlap_policy
            .as_deref()
            .unwrap_or(OverlapPolicy::Allow.as_str()),
        max_lateness: req.max_lateness.as_deref(),
        base_max_lateness: DEFAULT_MAX_LATENESS,
        priority: req.priority.unwrap_or(0),
        check_workflow: true,
    };
    let checked = settings(&state, &given, &mut problems);
    let Some(checked) = checked.filter(|_| problems.0.is_empty()) else {
        return Err(problems.into_error());
    };

    let now = Utc::now();
    let params = checked.params(&req.name, req.enabled.unwrap_or(true), "api");
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

/// What an edit changes: any setting but the name; absent fields stay as they are.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateSchedule {
    workflow: Option<String>,
    /// 5 fields (`0 6 * * *`), or 6 with seconds first.
    cron: Option<String>,
    /// IANA zone name.
    timezone: Option<String>,
    /// The input of every run. Checked against the workflow's `[input]` when it or the
    /// workflow changes.
    #[schema(value_type = Option<Object>)]
    input: Option<Value>,
    /// `false` pauses, `true` resumes (from the next tick; paused ticks never fire).
    enabled: Option<bool>,
    /// `fire_once` or `skip`.
    misfire_policy: Option<String>,
    /// `allow`, `skip` or `cancel_previous`.
    overlap_policy: Option<String>,
    /// A duration such as `30s` or `5m`, at least `1s`.
    max_lateness: Option<String>,
    /// The priority of the runs it starts, 0 to 1000.
    #[schema(minimum = 0, maximum = 1000)]
    priority: Option<i64>,
}

impl UpdateSchedule {
    /// Whether it changes anything but `enabled` (all a file schedule takes here).
    fn edits_settings(&self) -> bool {
        self.workflow.is_some()
            || self.cron.is_some()
            || self.timezone.is_some()
            || self.input.is_some()
            || self.misfire_policy.is_some()
            || self.overlap_policy.is_some()
            || self.max_lateness.is_some()
            || self.priority.is_some()
    }
}

/// Edits a schedule: the fields given change, checked as on create; the others stay. A
/// new expression or zone (or a resume) moves the next fire time to the first tick from
/// now under the new settings. Schedules from workflow files take `enabled` only.
#[utoipa::path(patch, path = "/api/schedules/{id}", tag = "schedules",
    params(("id" = String, Path, description = "id or name")), request_body = UpdateSchedule,
    responses(
        (status = 200, body = ScheduleDetail, description = "the schedule as it is now, as `GET /api/schedules/{id}` shows it"),
        (status = 400, body = super::error::ErrorBody, description = "a field that is not a setting (the name cannot change) or of the wrong type"),
        (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody, description = "the schedule comes from a workflow file: edit its `[[schedules]]` entry"),
        (status = 422, body = super::error::ErrorBody, description = "bad expression, zone, policy, workflow or input; `details` lists each problem")))]
async fn update(
    State(state): State<AppState>,
    _: Operator,
    Path(id): Path<String>,
    AppJson(req): AppJson<UpdateSchedule>,
) -> Result<Json<ScheduleDetail>, ApiError> {
    let s = find(&state, &id).await?;
    if s.source == "file" && req.edits_settings() {
        return Err(ApiError::Conflict {
            message: format!(
                "schedule `{}` comes from a `[[schedules]]` entry in workflow `{}`: edit the entry (the schedulers apply it on their next start); here it can only be paused or resumed",
                s.name, s.workflow
            ),
            details: None,
        });
    }
    let given = Given {
        workflow: req.workflow.as_deref().unwrap_or(&s.workflow),
        cron: req.cron.as_deref().unwrap_or(&s.cron),
        timezone: req.timezone.as_deref().unwrap_or(&s.timezone),
        input: req.input.as_ref().unwrap_or(&s.input),
        misfire_policy: req.misfire_policy.as_deref().unwrap_or(&s.misfire_policy),
        overlap_policy: req.overlap_policy.as_deref().unwrap_or(&s.overlap_policy),
        max_lateness: req.max_lateness.as_deref(),
        base_max_lateness: Duration::from_millis(u64::try_from(s.max_lateness_ms).unwrap_or(0)),
        priority: req.priority.unwrap_or(i64::from(s.priority)),
        check_workflow: req.input.is_some() || req.workflow.is_some(),
    };
    let mut problems = Problems::default();
    let Some(checked) = settings(&state, &given, &mut problems) else {
        return Err(problems.into_error());
    };
    let enabled = req.enabled.unwrap_or(s.enabled);
    let retimed = checked.cron_expr != s.cron || checked.timezone != s.timezone;
    let resumed = enabled && !s.enabled;
    let params = checked.params(&s.name, enabled, &s.source);
    let row = store::schedule_update(&state.pool, &s.id, &params, retimed || resumed)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no schedule with id or name `{id}`")))?;
    let ticks = store::schedule_ticks_recent(&state.pool, &row.id, RECENT_TICKS).await?;
    Ok(Json(ScheduleDetail {
        schedule: ScheduleView::new(row, Utc::now()),
        recent_ticks: ticks.into_iter().map(TickView::from).collect(),
    }))
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
    status: crate::state::RunStatus,
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
            task_id: run.run_id.clone(),
            status: run.status,
        }),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/tasks/{}", run.run_id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// A range of fire times to start runs for.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackfillRequest {
    /// The first instant of the range (RFC 3339), included.
    from: DateTime<Utc>,
    /// The end of the range (RFC 3339), excluded; after `from`.
    to: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackfillResponse {
    /// The runs this request started, in fire-time order.
    runs: Vec<String>,
    /// How many runs this request started.
    count: usize,
    /// Fire times in the range.
    fire_times: usize,
    /// Fire times handled before (by a scheduler or an earlier backfill): no run started.
    already_handled: usize,
}

/// The earliest and latest instants a backfill range may name.
fn backfill_bounds() -> (DateTime<Utc>, DateTime<Utc>) {
    (
        DateTime::<Utc>::UNIX_EPOCH,
        chrono::NaiveDate::from_ymd_opt(10_000, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map_or(DateTime::<Utc>::MAX_UTC, |t| t.and_utc()),
    )
}

/// Starts one run for every fire time of the schedule in `[from, to)` that was not
/// handled yet — whatever its overlap policy, and also while paused — all in one
/// transaction. A fire time never starts two runs: repeating a backfill, or
/// backfilling what the scheduler fired, starts nothing more. Ranges of more than
/// 1,000 fire times are refused (422).
#[utoipa::path(post, path = "/api/schedules/{id}/backfill", tag = "schedules",
    params(("id" = String, Path, description = "id or name")), request_body = BackfillRequest,
    responses(
        (status = 200, body = BackfillResponse, description = "the runs started (none when every fire time was handled before)"),
        (status = 400, body = super::error::ErrorBody, description = "a time that is not RFC 3339, or a field other than `from` and `to`"),
        (status = 404, body = super::error::ErrorBody),
        (status = 422, body = super::error::ErrorBody, description = "no range: `from` is not before `to`, a time lies outside the years 1970 to 9999, or the range holds more than 1,000 fire times (`details` names the field); or the workflow is not loaded or the schedule's input no longer matches it. Nothing was started")))]
async fn backfill(
    State(state): State<AppState>,
    Operator(p): Operator,
    Path(id): Path<String>,
    AppJson(req): AppJson<BackfillRequest>,
) -> Result<Json<BackfillResponse>, ApiError> {
    // Well-formed times that make no range are the rules a schema cannot state: 422,
    // naming the field, as the API answers those everywhere.
    let refuse = |field: &str, message: String| ApiError::Unprocessable {
        details: Some(json!([{ "field": field, "message": message }])),
        message,
    };
    let (earliest, latest) = backfill_bounds();
    for (field, at) in [("from", req.from), ("to", req.to)] {
        if at < earliest || at > latest {
            return Err(refuse(
                field,
                format!("`{field}` must lie between 1970 and 9999"),
            ));
        }
    }
    if req.from >= req.to {
        return Err(refuse(
            "to",
            "`from` must be before `to` (the range is [from, to))".into(),
        ));
    }
    let by = format!("api:{}", p.name);
    let done = scheduler::backfill(
        &state.pool,
        &state.workflows,
        &id,
        req.from,
        req.to,
        &by,
        Utc::now(),
    )
    .await?;
    match done {
        Backfilled::Done(r) => Ok(Json(BackfillResponse {
            count: r.runs.len(),
            runs: r.runs,
            fire_times: r.fire_times,
            already_handled: r.already_handled,
        })),
        Backfilled::NotFound => Err(ApiError::NotFound(format!(
            "no schedule with id or name `{id}`"
        ))),
        Backfilled::TooMany => Err(refuse(
            "to",
            format!(
                "the range holds more than {} fire times; backfill it in shorter ranges",
                scheduler::BACKFILL_MAX
            ),
        )),
        Backfilled::Failed(message) => Err(ApiError::Unprocessable {
            message: format!("nothing was started: {message}"),
            details: None,
        }),
    }
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
