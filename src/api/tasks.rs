//! `/api/tasks`: submit runs, list them, and show one with its steps, attempts and events.

use axum::Json;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{Operator, Viewer};
use super::extract::{AppJson, AppQuery, OptionalJson};
use super::{ApiError, AppState};
use crate::engine;
use crate::engine::Submission;
use crate::engine::submit::{BATCH_MAX, Item, ItemRejected, KEY_MAX_LEN, Outcome, Rejected};
use crate::state::RunStatus;
use crate::store;
use crate::store::runs::{RunListParams, RunRow};
use crate::workflow::Definition;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, submit))
        .routes(routes!(show))
        .routes(routes!(events))
        .routes(routes!(map_items))
        .routes(routes!(retry))
        .routes(routes!(replay))
        .routes(routes!(cancel))
        .routes(routes!(terminate))
        .routes(routes!(pin))
        .routes(routes!(unpin))
        .routes(routes!(bulk))
        .merge(
            // A thousand tasks need more room than one.
            OpenApiRouter::new()
                .routes(routes!(submit_batch))
                .layer(DefaultBodyLimit::max(BATCH_MAX_BODY)),
        )
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskState {
    task_id: String,
    status: RunStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    replay_of: Option<String>,
}

fn by(p: &crate::auth::Principal) -> String {
    p.name.clone()
}

/// Retries a dead (or cancelled) run from its failed step; its checkpoints stay.
#[utoipa::path(post, path = "/api/tasks/{id}/retry", tag = "tasks", params(("id" = String, Path)),
    responses((status = 200, body = TaskState), (status = 404, body = super::error::ErrorBody),
              (status = 409, body = super::error::ErrorBody, description = "the run is not dead or cancelled")))]
async fn retry(
    State(state): State<AppState>,
    Operator(p): Operator,
    Path(id): Path<String>,
) -> Result<Json<TaskState>, ApiError> {
    match engine::ops::retry(&state.pool, &id, &by(&p)).await? {
        Some(run) => Ok(Json(TaskState {
            task_id: run.id,
            status: run.status,
            replay_of: None,
        })),
        None => match store::runs::run_get(&state.pool, &id).await? {
            None => Err(ApiError::NotFound(format!("no task with id `{id}`"))),
            Some(run) => Err(ApiError::Conflict {
                message: format!(
                    "only dead or cancelled runs can be retried; this one is {}",
                    run.status
                ),
                details: None,
            }),
        },
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReplayRequest {
    /// Re-execute this step and everything downstream; other checkpoints are copied.
    from_step: Option<String>,
    /// A different input.
    #[schema(value_type = Option<Object>)]
    input: Option<Value>,
    /// Use the workflow's current definition rather than the run's.
    #[serde(default)]
    latest_definition: bool,
}

/// Starts a new run replaying this one, optionally from a step and with a new input.
#[utoipa::path(post, path = "/api/tasks/{id}/replay", tag = "tasks", params(("id" = String, Path)),
    request_body = ReplayRequest,
    responses((status = 201, body = TaskState), (status = 404, body = super::error::ErrorBody),
              (status = 422, body = super::error::ErrorBody)))]
async fn replay(
    State(state): State<AppState>,
    _: Operator,
    Path(id): Path<String>,
    // The body is optional: no body replays the whole run as it was.
    OptionalJson(req): OptionalJson<ReplayRequest>,
) -> Result<(StatusCode, Json<TaskState>), ApiError> {
    let params = engine::ops::ReplayParams {
        from_step: req.from_step,
        input: req.input,
        latest_definition: req.latest_definition,
    };
    use engine::ops::ReplayRejected as R;
    match engine::ops::replay(&state.pool, &state.workflows, &id, &params).await? {
        Ok(run) => Ok((
            StatusCode::CREATED,
            Json(TaskState {
                task_id: run.id,
                status: run.status,
                replay_of: Some(id),
            }),
        )),
        Err(R::NotFound) => Err(ApiError::NotFound(format!("no task with id `{id}`"))),
        Err(R::WorkflowGone(w)) => Err(ApiError::Unprocessable {
            message: format!("workflow `{w}` is no longer loaded; replay without latestDefinition"),
            details: None,
        }),
        Err(R::UnknownStep(s)) => Err(ApiError::Unprocessable {
            message: format!("the workflow has no step `{s}`"),
            details: None,
        }),
        Err(R::Input(errors)) => {
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            Err(ApiError::Unprocessable {
                message: format!("input does not match the workflow: {}", text.join("; ")),
                details: Some(json!(errors)),
            })
        }
    }
}

/// Cancels a run: queued and parked runs at once, running ones at the next step boundary.
#[utoipa::path(post, path = "/api/tasks/{id}/cancel", tag = "tasks", params(("id" = String, Path)),
    responses((status = 200, body = TaskState), (status = 404, body = super::error::ErrorBody),
              (status = 409, body = super::error::ErrorBody, description = "already finished")))]
async fn cancel(
    State(state): State<AppState>,
    Operator(p): Operator,
    Path(id): Path<String>,
) -> Result<Json<TaskState>, ApiError> {
    let stopped = engine::ops::cancel(&state.pool, &id, &by(&p)).await?;
    stopped_state(id, stopped)
}

/// The answer to a cancel or a terminate.
fn stopped_state(
    id: String,
    stopped: Option<crate::store::runs::Cancelled>,
) -> Result<Json<TaskState>, ApiError> {
    use crate::store::runs::Cancelled;
    match stopped {
        None => Err(ApiError::NotFound(format!("no task with id `{id}`"))),
        Some(Cancelled::Now) => Ok(Json(TaskState {
            task_id: id,
            status: RunStatus::Cancelled,
            replay_of: None,
        })),
        Some(Cancelled::Requested) => Ok(Json(TaskState {
            task_id: id,
            status: RunStatus::Running,
            replay_of: None,
        })),
        Some(Cancelled::AlreadyFinished(s)) => Err(ApiError::Conflict {
            message: format!("the run already finished ({s})"),
            details: None,
        }),
    }
}

/// Terminates a run: queued and parked runs are cancelled at once; a running run's
/// steps are stopped at once, not at the next step boundary (their attempts are recorded
/// `terminated`), and it is `cancelled` as soon as its worker has stopped them. Child runs
/// are terminated with it.
#[utoipa::path(post, path = "/api/tasks/{id}/terminate", tag = "tasks", params(("id" = String, Path)),
    responses((status = 200, body = TaskState), (status = 404, body = super::error::ErrorBody),
              (status = 409, body = super::error::ErrorBody, description = "already finished")))]
async fn terminate(
    State(state): State<AppState>,
    Operator(p): Operator,
    Path(id): Path<String>,
) -> Result<Json<TaskState>, ApiError> {
    let stopped = engine::ops::terminate(&state.pool, &id, &by(&p)).await?;
    stopped_state(id, stopped)
}

/// A run's pin, as pinning or unpinning left it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PinState {
    task_id: String,
    status: RunStatus,
    pinned: bool,
    /// The runs whose pin this request changed: the run and its child runs,
    /// transitively (empty when they already were as asked).
    changed: Vec<String>,
}

async fn set_pin(
    state: &AppState,
    p: &crate::auth::Principal,
    id: String,
    pinned: bool,
) -> Result<Json<PinState>, ApiError> {
    match store::retention::run_pin(&state.pool, &id, pinned, &by(p)).await? {
        None => Err(ApiError::NotFound(format!("no task with id `{id}`"))),
        Some(done) => Ok(Json(PinState {
            task_id: id,
            status: done.status,
            pinned,
            changed: done.changed,
        })),
    }
}

/// Pins a run and its child runs: retention never deletes them (see `GET
/// /api/retention`). A run in any status may be pinned; pinning a pinned run changes
/// nothing.
#[utoipa::path(post, path = "/api/tasks/{id}/pin", tag = "tasks", params(("id" = String, Path)),
    responses((status = 200, body = PinState), (status = 404, body = super::error::ErrorBody)))]
async fn pin(
    State(state): State<AppState>,
    Operator(p): Operator,
    Path(id): Path<String>,
) -> Result<Json<PinState>, ApiError> {
    set_pin(&state, &p, id, true).await
}

/// Unpins a run and its child runs (also those pinned by their workflow's `retain =
/// "forever"`): retention deletes them once they are past their status's window.
#[utoipa::path(post, path = "/api/tasks/{id}/unpin", tag = "tasks", params(("id" = String, Path)),
    responses((status = 200, body = PinState), (status = 404, body = super::error::ErrorBody)))]
async fn unpin(
    State(state): State<AppState>,
    Operator(p): Operator,
    Path(id): Path<String>,
) -> Result<Json<PinState>, ApiError> {
    set_pin(&state, &p, id, false).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events after this id.
    after: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    #[schema(value_type = Vec<Object>)]
    items: Vec<Value>,
}

/// A run's event history, in order.
#[utoipa::path(get, path = "/api/tasks/{id}/events", tag = "tasks", params(("id" = String, Path), EventsQuery),
    responses((status = 200, body = EventList), (status = 404, body = super::error::ErrorBody)))]
async fn events(
    State(state): State<AppState>,
    _: Viewer,
    Path(id): Path<String>,
    AppQuery(q): AppQuery<EventsQuery>,
) -> Result<Json<EventList>, ApiError> {
    if store::runs::run_get(&state.pool, &id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no task with id `{id}`")));
    }
    let items = store::events::event_list(&state.pool, &id, q.after.unwrap_or(0))
        .await?
        .iter()
        .map(|e| json!({ "id": e.id, "at": e.at, "kind": e.kind, "stepId": e.step_id, "data": e.data }))
        .collect();
    Ok(Json(EventList { items }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MapItemsQuery {
    /// Only items after this index (`next` of the previous page); from the first
    /// when absent.
    #[param(minimum = 0, maximum = 2147483647)]
    after: Option<i64>,
    /// At most this many (default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MapItemList {
    items: Vec<store::maps::MapItemRow>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<i32>,
}

/// The items of a run's `map` step in item order, each with its state and its child run.
#[utoipa::path(get, path = "/api/tasks/{id}/steps/{step}/items", tag = "tasks",
    params(("id" = String, Path), ("step" = String, Path), MapItemsQuery),
    responses((status = 200, body = MapItemList), (status = 400, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody)))]
async fn map_items(
    State(state): State<AppState>,
    _: Viewer,
    Path((id, step)): Path<(String, String)>,
    AppQuery(q): AppQuery<MapItemsQuery>,
) -> Result<Json<MapItemList>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 500"));
    }
    let after = match q.after {
        None => -1,
        Some(after) => i32::try_from(after)
            .ok()
            .filter(|a| *a >= 0)
            .ok_or_else(|| ApiError::bad_request("after must be an item index (0 or more)"))?,
    };
    let is_map = store::steps::step_list(&state.pool, &id)
        .await?
        .iter()
        .any(|s| s.step_id == step && s.map_total.is_some());
    if !is_map {
        return Err(ApiError::NotFound(format!(
            "task `{id}` has no map step `{step}` with items"
        )));
    }
    let mut items = store::maps::map_item_list(&state.pool, &id, &step, after, limit + 1).await?;
    let next = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|i| i.index)
    } else {
        None
    };
    Ok(Json(MapItemList { items, next }))
}

/// Which runs a bulk action applies to.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunFilterBody {
    status: Option<String>,
    workflow: Option<String>,
    /// Created within this long (e.g. `1h`).
    since: Option<String>,
    /// Created before this long ago (e.g. `10m`).
    until: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunBulkRequest {
    #[serde(default)]
    filter: RunFilterBody,
    /// Count and list, change nothing.
    #[serde(default)]
    dry_run: bool,
}

/// Longest look-back a filter takes: far enough for any history, near enough for every
/// timestamp it yields to be one Postgres can store.
const AGO_MAX: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 24 * 3600);

/// A duration as the API documents them: one or more of a number (at most 9 digits)
/// and a unit — `ms`, `s`, `m`, `h`, `d`, `w` or `y` — as in `90s`, `1h30m`, `7d`.
pub(super) fn span(what: &str, s: &str) -> Result<std::time::Duration, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "{what} `{s}` is not a duration such as 30m, 1h30m or 7d"
        ))
    };
    if s.is_empty() {
        return Err(bad());
    }
    let mut rest = s;
    let mut total = std::time::Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return Err(bad());
        }
        let (n, tail) = rest.split_at(digits);
        let unit = ["ms", "s", "m", "h", "d", "w", "y"]
            .into_iter()
            .find(|u| tail.starts_with(u) && !(*u == "m" && tail.starts_with("ms")))
            .ok_or_else(bad)?;
        let n: u64 = n.parse().map_err(|_| bad())?;
        let secs: f64 = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "w" => 604_800.0,
            _ => 31_557_600.0,
        };
        total = total.saturating_add(std::time::Duration::from_secs_f64(n as f64 * secs));
        rest = &tail[unit.len()..];
    }
    Ok(total)
}

/// The time `s` (see [`span`]) before now. Look-backs longer than 100 years are taken as
/// 100 years: all history, and a time Postgres can store.
pub(super) fn ago(what: &str, s: &str) -> Result<DateTime<Utc>, ApiError> {
    let d = span(what, s)?.min(AGO_MAX);
    let d = chrono::Duration::from_std(d)
        .map_err(|_| ApiError::bad_request(format!("{what} is too long")))?;
    Ok(Utc::now() - d)
}

/// Creation times a filter bounds: (created after, created before).
pub(super) type CreatedRange = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// A bulk filter's `since` and `until` (durations back from now) as the range of
/// creation times they bound.
pub(super) fn created_range(
    since: Option<&str>,
    until: Option<&str>,
) -> Result<CreatedRange, ApiError> {
    Ok((
        since.map(|s| ago("since", s)).transpose()?,
        until.map(|s| ago("until", s)).transpose()?,
    ))
}

/// A `status` filter, read as a run status (a 400 naming the states otherwise).
fn parse_status(s: Option<&str>) -> Result<Option<RunStatus>, ApiError> {
    s.map(|s| {
        s.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "unknown status `{s}`; expected one of: {}",
                RunStatus::expected()
            ))
        })
    })
    .transpose()
}

/// Retries, cancels or replays every run matching a filter, in batches; `dryRun` only counts.
#[utoipa::path(post, path = "/api/tasks/bulk/{action}", tag = "tasks",
    params(("action" = String, Path, description = "retry, cancel or replay")), request_body = RunBulkRequest,
    responses((status = 200, body = engine::ops::BulkOutcome), (status = 400, body = super::error::ErrorBody)))]
async fn bulk(
    State(state): State<AppState>,
    Operator(p): Operator,
    Path(action): Path<String>,
    AppJson(req): AppJson<RunBulkRequest>,
) -> Result<Json<engine::ops::BulkOutcome>, ApiError> {
    use engine::ops::BulkAction;
    let action = match action.as_str() {
        "retry" => BulkAction::Retry,
        "cancel" => BulkAction::Cancel,
        "replay" => BulkAction::Replay,
        other => {
            return Err(ApiError::NotFound(format!(
                "no bulk action `{other}`; use retry, cancel or replay"
            )));
        }
    };
    let status = parse_status(req.filter.status.as_deref())?;
    let f = &req.filter;
    if f.status.is_none() && f.workflow.is_none() && f.since.is_none() && f.until.is_none() {
        return Err(ApiError::bad_request(
            "give at least one of filter.status, filter.workflow, filter.since, filter.until",
        ));
    }
    let (created_after, created_before) =
        created_range(req.filter.since.as_deref(), req.filter.until.as_deref())?;
    let filter = store::runs::RunFilter {
        status,
        workflow: req.filter.workflow,
        created_after,
        created_before,
    };
    let outcome = engine::ops::bulk(
        &state.pool,
        &state.workflows,
        action,
        &filter,
        req.dry_run,
        &by(&p),
    )
    .await?;
    Ok(Json(outcome))
}

/// Largest body of `POST /api/tasks/batch` (other requests: [`super::MAX_BODY`]).
pub const BATCH_MAX_BODY: usize = 8 * 1024 * 1024;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SubmitRequest {
    /// The workflow's name.
    workflow: String,
    /// A JSON object matching the workflow's `[input]`.
    #[serde(default)]
    #[schema(value_type = Object)]
    input: Value,
    /// 0 (the default) to 1000: the run is queued as if that many minutes earlier, so
    /// it is taken before the runs queued less than that before it.
    #[schema(minimum = 0, maximum = 1000)]
    priority: Option<i64>,
}

/// A submission's priority, checked.
fn priority(p: Option<i64>) -> Result<i16, ApiError> {
    let max = store::runs::PRIORITY_MAX;
    match p {
        None => Ok(0),
        Some(p) if (0..=i64::from(max)).contains(&p) => Ok(p as i16),
        Some(p) => Err(ApiError::Unprocessable {
            message: format!(
                "priority is 0 to {max} (minutes of head start in the queue), not {p}"
            ),
            details: None,
        }),
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubmitResponse {
    task_id: String,
    status: RunStatus,
    workflow: String,
}

/// A run as lists show it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskSummary {
    id: String,
    workflow: String,
    status: RunStatus,
    error: Option<String>,
    idempotency_key: Option<String>,
    worker: Option<String>,
    lease_expires_at: Option<DateTime<Utc>>,
    wake_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    replay_of: Option<String>,
    cancel_requested_at: Option<DateTime<Utc>>,
    /// Kept by retention whatever its age (an operator's pin, or its workflow's
    /// `retain = "forever"`).
    pinned: bool,
    /// The key of its workflow's `[concurrency]` limit, if it has one.
    concurrency_key: Option<String>,
    /// Queued, and waiting for a slot of its concurrency key (other runs of the key
    /// hold them all); it starts, in submission order, once one frees up.
    waiting_for_slot: bool,
    /// Its head start in the queue, in minutes (0 to 1000).
    priority: i16,
    /// The run whose `workflow` or `map` step started it.
    parent_run_id: Option<String>,
}

impl From<&RunRow> for TaskSummary {
    fn from(r: &RunRow) -> Self {
        TaskSummary {
            id: r.id.clone(),
            workflow: r.workflow.clone(),
            status: r.status,
            error: r.error.clone(),
            idempotency_key: r.idempotency_key.clone(),
            worker: r.lease_owner.clone(),
            lease_expires_at: r.lease_expires_at,
            wake_at: r.wake_at,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            updated_at: r.updated_at,
            replay_of: r.replay_of.clone(),
            cancel_requested_at: r.cancel_requested_at,
            pinned: r.pinned,
            concurrency_key: r.concurrency_key.clone(),
            waiting_for_slot: !r.admitted && r.status == RunStatus::Queued,
            priority: r.priority,
            parent_run_id: r.parent_run_id.clone(),
        }
    }
}

/// The workflow called `name`.
fn workflow_named<'a>(state: &'a AppState, name: &str) -> Result<&'a Definition, ApiError> {
    state.workflows.get(name).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no workflow named `{name}`; known workflows: {}",
            state.workflows.names().join(", ")
        ))
    })
}

/// Queues a run. The run and its queue job commit together before the answer.
#[utoipa::path(post, path = "/api/tasks", tag = "tasks", request_body = SubmitRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, description = "Submitting again with the same key returns the same run")),
    responses(
        (status = 201, body = SubmitResponse),
        (status = 200, body = SubmitResponse, description = "the run an earlier request with this key created"),
        (status = 404, body = super::error::ErrorBody, description = "unknown workflow"),
        (status = 409, body = super::error::ErrorBody, description = "key reused for a different request"),
        (status = 413, body = super::error::ErrorBody),
        (status = 422, body = super::error::ErrorBody, description = "input does not match the schema")))]
async fn submit(
    State(state): State<AppState>,
    Operator(who): Operator,
    headers: HeaderMap,
    AppJson(req): AppJson<SubmitRequest>,
) -> Result<Response, ApiError> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v
                .to_str()
                .map_err(|_| ApiError::bad_request("Idempotency-Key must be visible ASCII"))?
                .trim();
            if k.is_empty() || k.len() > KEY_MAX_LEN {
                return Err(ApiError::bad_request(format!(
                    "Idempotency-Key must be 1 to {KEY_MAX_LEN} characters"
                )));
            }
            Some(k)
        }
    };
    let def = workflow_named(&state, &req.workflow)?;
    let origin = store::runs::RunOrigin {
        user_id: who.user_id,
        project_id: None,
        parent: None,
        priority: priority(req.priority)?,
    };
    // Written together with other submissions arriving meanwhile (see Submitter).
    let one = [Item {
        input: &req.input,
        idempotency_key: key,
    }];
    let submission = Submission::of(def, &one).from(&origin);
    let submitted = match state.submits.submit(&state.workflows, submission).await? {
        Ok(mut submitted) => submitted
            .pop()
            .ok_or_else(|| ApiError::Internal("a submit of one run answered nothing".into()))?,
        Err(rejected) => {
            // The key was checked above: what is left is the input's problems.
            let errors = rejected.input_errors();
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            return Err(ApiError::Unprocessable {
                message: format!(
                    "input does not match workflow `{}`: {}",
                    req.workflow,
                    text.join("; ")
                ),
                details: Some(json!(errors)),
            });
        }
    };
    let status = match submitted.outcome {
        Outcome::Created => StatusCode::CREATED,
        Outcome::Existing => StatusCode::OK,
        Outcome::KeyConflict => {
            return Err(ApiError::Conflict {
                message: "this Idempotency-Key was already used for a different request".into(),
                details: Some(json!({ "taskId": submitted.run_id })),
            });
        }
    };
    let location = HeaderValue::from_str(&format!("/api/tasks/{}", submitted.run_id));
    let mut response = (
        status,
        Json(SubmitResponse {
            task_id: submitted.run_id,
            status: submitted.status,
            workflow: def.workflow.name.clone(),
        }),
    )
        .into_response();
    if let Ok(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BatchSubmitRequest {
    /// The workflow's name; every task is a run of it.
    workflow: String,
    /// 1 to 1,000 runs to queue, answered in this order.
    #[schema(min_items = 1, max_items = 1000)]
    tasks: Vec<BatchTask>,
    /// Every run's priority, as in `POST /api/tasks`.
    #[schema(minimum = 0, maximum = 1000)]
    priority: Option<i64>,
}

/// One run of a batch.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BatchTask {
    /// A JSON object matching the workflow's `[input]`.
    #[serde(default)]
    #[schema(value_type = Object)]
    input: Value,
    /// What the `Idempotency-Key` header is to `POST /api/tasks`, for this run.
    idempotency_key: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchSubmitResponse {
    workflow: String,
    /// One per task of the request, in its order.
    tasks: Vec<BatchTaskResult>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchTaskResult {
    /// The run queued for this task; for `existing` and `conflict`, the run its
    /// idempotency key made before.
    task_id: String,
    /// That run's status.
    status: RunStatus,
    outcome: BatchTaskOutcome,
}

/// What became of one task of a batch.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum BatchTaskOutcome {
    /// Queued by this request.
    Created,
    /// Its idempotency key was used before (or earlier in this batch) for the same
    /// workflow and input: nothing new was queued.
    Existing,
    /// Its idempotency key was used before for a different request: nothing was
    /// queued for this task.
    Conflict,
}

/// How many invalid tasks a 422's message names (`details` lists all).
const NAMED_IN_MESSAGE: usize = 5;

/// Queues up to 1,000 runs of one workflow in one transaction: all runs, their steps,
/// events and queue jobs commit together, or, when any task is invalid, nothing is
/// written and every invalid task is named. Idempotency keys work per task as on
/// `POST /api/tasks`; a conflicting key leaves the other tasks queued.
#[utoipa::path(post, path = "/api/tasks/batch", tag = "tasks", request_body = BatchSubmitRequest,
    responses(
        (status = 201, body = BatchSubmitResponse, description = "at least one run was queued"),
        (status = 200, body = BatchSubmitResponse, description = "every task's idempotency key was used before: nothing was queued"),
        (status = 404, body = super::error::ErrorBody, description = "unknown workflow"),
        (status = 413, body = super::error::ErrorBody, description = "more than 1,000 tasks, or a body over 8 MiB"),
        (status = 422, body = super::error::ErrorBody, description = "no tasks, or invalid ones: `details` is `[{ index, errors: [{ field, message }] }]`")))]
async fn submit_batch(
    State(state): State<AppState>,
    Operator(who): Operator,
    AppJson(req): AppJson<BatchSubmitRequest>,
) -> Result<Response, ApiError> {
    let def = workflow_named(&state, &req.workflow)?;
    let origin = store::runs::RunOrigin {
        user_id: who.user_id,
        project_id: None,
        parent: None,
        priority: priority(req.priority)?,
    };
    let items: Vec<Item> = req
        .tasks
        .iter()
        .map(|t| Item {
            input: &t.input,
            idempotency_key: t.idempotency_key.as_deref().map(str::trim),
        })
        .collect();
    // The definitions its `workflow` steps start are stored with it for the workers.
    let submission = Submission::of(def, &items).from(&origin);
    let submitted = match state.submits.submit(&state.workflows, submission).await? {
        Ok(submitted) => submitted,
        Err(Rejected::Empty) => {
            return Err(ApiError::Unprocessable {
                message: format!("`tasks` is empty: send 1 to {BATCH_MAX} tasks"),
                details: None,
            });
        }
        Err(Rejected::TooMany(n)) => {
            return Err(ApiError::PayloadTooLarge(format!(
                "a batch holds at most {BATCH_MAX} tasks; this one has {n}: split it"
            )));
        }
        Err(Rejected::Items(rejected)) => {
            return Err(batch_invalid(&req.workflow, items.len(), &rejected));
        }
    };
    let created = submitted.iter().any(|s| s.outcome == Outcome::Created);
    let tasks = submitted
        .into_iter()
        .map(|s| BatchTaskResult {
            task_id: s.run_id,
            status: s.status,
            outcome: match s.outcome {
                Outcome::Created => BatchTaskOutcome::Created,
                Outcome::Existing => BatchTaskOutcome::Existing,
                Outcome::KeyConflict => BatchTaskOutcome::Conflict,
            },
        })
        .collect();
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(BatchSubmitResponse {
            workflow: def.workflow.name.clone(),
            tasks,
        }),
    )
        .into_response())
}

/// The 422 for a batch with invalid tasks: fields are paths within the task
/// (`input`, `input.name`, `idempotencyKey`).
fn batch_invalid(workflow: &str, total: usize, rejected: &[ItemRejected]) -> ApiError {
    let details: Vec<Value> = rejected
        .iter()
        .map(|r| {
            let mut errors: Vec<Value> = r
                .input
                .iter()
                .map(|e| {
                    let field = if e.field.is_empty() {
                        "input".to_owned()
                    } else {
                        format!("input.{}", e.field)
                    };
                    json!({ "field": field, "message": e.message })
                })
                .collect();
            if let Some(message) = &r.idempotency_key {
                errors.push(json!({ "field": "idempotencyKey", "message": message }));
            }
            json!({ "index": r.index, "errors": errors })
        })
        .collect();
    let named: Vec<String> = details
        .iter()
        .take(NAMED_IN_MESSAGE)
        .map(|d| {
            let errors: Vec<String> = d["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    format!(
                        "{}: {}",
                        e["field"].as_str().unwrap_or_default(),
                        e["message"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            format!("task {}: {}", d["index"], errors.join(", "))
        })
        .collect();
    let more = rejected.len().saturating_sub(NAMED_IN_MESSAGE);
    let more = if more > 0 {
        format!("; and {more} more")
    } else {
        String::new()
    };
    ApiError::Unprocessable {
        message: format!(
            "{} of {total} tasks do not match workflow `{workflow}`, nothing was queued: {}{more}",
            rejected.len(),
            named.join("; ")
        ),
        details: Some(Value::Array(details)),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only runs in this state.
    #[param(pattern = "^(queued|running|waiting|sleeping|retrying|succeeded|dead|cancelled)$")]
    status: Option<String>,
    /// Only runs of this workflow.
    workflow: Option<String>,
    /// A duration such as `1h` or `30m`: runs created within it.
    #[param(pattern = r"^([0-9]{1,9}(ms|s|m|h|d|w|y))+$")]
    since: Option<String>,
    /// Text to find in the run's id, workflow or error.
    q: Option<String>,
    /// Only runs whose id starts with this (1 to 26 letters and digits; letters are read
    /// as upper case, as run ids are written). Not with `q`. Served by a range scan of
    /// the ids, so it finds a run from the first few characters of its id at once.
    #[param(pattern = "^[0-9A-Za-z]{1,26}$")]
    id_prefix: Option<String>,
    /// At most this many (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// `nextCursor` of the previous page.
    cursor: Option<String>,
}

fn encode_cursor(r: &RunRow) -> String {
    format!("{}_{}", r.created_at.timestamp_micros(), r.id)
}

fn decode_cursor(c: &str) -> Option<(DateTime<Utc>, String)> {
    let (micros, id) = c.split_once('_')?;
    let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    Some((at, id.to_owned()))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskList {
    items: Vec<TaskSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
}

/// Lists runs, newest first, a keyset-paginated page at a time. With `idPrefix`, the
/// runs whose id starts with it (how `ctl` resolves a shortened run id).
#[utoipa::path(get, path = "/api/tasks", tag = "tasks", params(ListQuery),
    responses((status = 200, body = TaskList), (status = 400, body = super::error::ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    _: Viewer,
    AppQuery(q): AppQuery<ListQuery>,
) -> Result<Json<TaskList>, ApiError> {
    let status = parse_status(q.status.as_deref())?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 500"));
    }
    let created_after = q.since.as_deref().map(|s| ago("since", s)).transpose()?;
    let before = match q.cursor.as_ref().filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(decode_cursor(c).ok_or_else(|| ApiError::Unprocessable {
            message: "unknown cursor: pass the nextCursor of a previous page".into(),
            details: None,
        })?),
    };
    let text = q.q.filter(|t| !t.trim().is_empty());
    let rows = match q.id_prefix {
        None => {
            store::runs::run_list(
                &state.pool,
                &RunListParams {
                    status,
                    workflow: q.workflow,
                    created_after,
                    text,
                    before,
                    limit: limit + 1,
                },
            )
            .await?
        }
        Some(prefix) => {
            if prefix.is_empty()
                || prefix.len() > 26
                || !prefix.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return Err(ApiError::bad_request(
                    "idPrefix must be 1 to 26 letters and digits (the start of a run id)",
                ));
            }
            if text.is_some() {
                return Err(ApiError::Unprocessable {
                    message: "give either idPrefix or q, not both".into(),
                    details: None,
                });
            }
            let prefix = prefix.to_ascii_uppercase();
            store::run_ids::run_list_by_id_prefix(
                &state.pool,
                &store::run_ids::RunPrefixParams {
                    prefix: &prefix,
                    status,
                    workflow: q.workflow.as_deref(),
                    created_after,
                    before_id: before.as_ref().map(|(_, id)| id.as_str()),
                    limit: limit + 1,
                },
            )
            .await?
        }
    };
    let has_more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    let next = if has_more {
        page.last().map(encode_cursor)
    } else {
        None
    };
    let items: Vec<TaskSummary> = page.iter().map(TaskSummary::from).collect();
    Ok(Json(TaskList {
        items,
        next_cursor: next,
    }))
}

/// A run with its steps (each with every attempt), outputs, errors, events and dead letter.
#[utoipa::path(get, path = "/api/tasks/{id}", tag = "tasks", params(("id" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = super::error::ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    _: Viewer,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let run = store::runs::run_get(&state.pool, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no task with id `{id}`")))?;
    let steps = store::steps::step_list(&state.pool, &id).await?;
    let attempts = store::steps::attempt_list(&state.pool, &id).await?;
    let events = store::events::event_list(&state.pool, &id, 0).await?;
    let dead_letters = store::dead_letters::dead_letter_list_for_run(&state.pool, &id).await?;
    let definition = store::definitions::definition_get(&state.pool, &run.definition_hash).await?;

    // Steps in definition order, each with its kind, needs and attempts.
    let def_steps: Vec<Value> = definition
        .as_ref()
        .and_then(|d| d.get("steps"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let order: Vec<String> = def_steps
        .iter()
        .filter_map(|s| s.get("id").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let mut step_views: Vec<(usize, Value)> = steps
        .iter()
        .map(|s| {
            let def = def_steps
                .iter()
                .find(|d| d.get("id").and_then(Value::as_str) == Some(&s.step_id));
            let tries: Vec<Value> = attempts
                .iter()
                .filter(|a| a.step_id == s.step_id)
                .map(|a| {
                    json!({
                        "attempt": a.attempt,
                        "status": a.status,
                        "worker": a.worker_id,
                        "startedAt": a.started_at,
                        "finishedAt": a.finished_at,
                        "durationMs": a.finished_at.map(|f| (f - a.started_at).num_milliseconds()),
                        "error": a.error,
                        "retryDelayMs": a.retry_delay_ms,
                    })
                })
                .collect();
            let pos = order
                .iter()
                .position(|o| o == &s.step_id)
                .unwrap_or(usize::MAX);
            (
                pos,
                json!({
                    "id": s.step_id,
                    "kind": def.and_then(|d| d.get("kind")).cloned(),
                    "needs": def.and_then(|d| d.get("needs")).cloned().unwrap_or(json!([])),
                    "status": s.status,
                    "attemptCount": s.attempts,
                    "attempts": tries,
                    "output": s.output,
                    "error": s.error,
                    "nextAttemptAt": s.next_attempt_at,
                    "wakeAt": s.wake_at,
                    "startedAt": s.started_at,
                    "finishedAt": s.finished_at,
                    "childRunId": s.child_run_id,
                    "map": s.map_total.map(|_| json!({
                        "total": s.map_total,
                        "done": s.map_done,
                        "failed": s.map_failed,
                        "running": s.map_running,
                    })),
                }),
            )
        })
        .collect();
    step_views.sort_by_key(|(pos, _)| *pos);
    let events: Vec<Value> = events
        .iter()
        .map(|e| json!({ "id": e.id, "at": e.at, "kind": e.kind, "stepId": e.step_id, "data": e.data }))
        .collect();
    let dead_letter = dead_letters.last().map(|d| {
        json!({ "id": d.id, "stepId": d.step_id, "error": d.error, "attempts": d.attempts, "createdAt": d.created_at })
    });

    let mut body = serde_json::to_value(TaskSummary::from(&run)).map_err(ApiError::internal)?;
    body["definitionHash"] = json!(run.definition_hash);
    body["input"] = run.input.clone();
    body["output"] = run.output.clone().unwrap_or(Value::Null);
    body["steps"] = Value::Array(step_views.into_iter().map(|(_, v)| v).collect());
    body["events"] = Value::Array(events);
    body["deadLetter"] = dead_letter.unwrap_or(Value::Null);
    // The schedule and tick that started the run, when one did.
    body["schedule"] = store::schedules::run_schedule_get(&state.pool, &id)
        .await?
        .map_or(
            Value::Null,
            |s| json!({ "id": s.schedule_id, "name": s.name, "tickAt": s.tick_at, "kind": s.kind }),
        );
    Ok(Json(body))
}
