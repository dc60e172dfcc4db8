//! `/api/notifications`: the alerts Cairn sent (or is sending) about dead runs, with
//! their delivery state, so an operator can see that the pager was told, or why not,
//! and send one that was given up again once its target is fixed. The notifier runs in
//! the schedulers (see [`crate::scheduler::notifier`]); this reads the outbox and puts
//! a resent notification back in it. A workflow's own target URL is never served: such URLs often
//! carry a credential.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{Operator, Viewer};
use super::extract::AppQuery;
use super::{ApiError, AppState};
use crate::state::NotificationState;
use crate::store::notifications::{self as store, NotificationFilter, NotificationRow, Resent};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(notification_list))
        .routes(routes!(notification_resend))
}

/// Notifications listed at most per page.
pub const LIST_MAX: i64 = 500;

/// One notification and where its delivery stands.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Also the `Idempotency-Key` of its POSTs.
    id: String,
    /// `run.dead` or `schedule.tick_failed`.
    event: String,
    task_id: Option<String>,
    workflow: String,
    step: Option<String>,
    schedule_id: Option<String>,
    error: String,
    /// Attempts of the step that failed (`run.dead`).
    attempts: i32,
    /// True when the workflow's `[notify] url` is the target, not the cluster's.
    workflow_url: bool,
    /// `pending` (to be delivered at `nextAttemptAt`), `delivered`, `skipped`
    /// (nothing to send it to, or the event is not sent), `failed` (given up).
    state: NotificationState,
    /// POSTs made so far, over every round.
    deliveries: i32,
    /// Times an operator sent it again (each starts a new round of attempts).
    resends: i32,
    next_attempt_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    /// The HTTP status of the last answer, if there was one.
    last_status: Option<i32>,
    created_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

impl From<NotificationRow> for Notification {
    fn from(n: NotificationRow) -> Self {
        Notification {
            id: n.id.to_string(),
            next_attempt_at: (n.state == NotificationState::Pending).then_some(n.next_attempt_at),
            event: n.event,
            task_id: n.run_id,
            workflow: n.workflow,
            step: n.step_id,
            schedule_id: n.schedule_id,
            error: n.error,
            attempts: n.step_attempts,
            workflow_url: n.url.is_some(),
            state: n.state,
            deliveries: n.deliveries,
            resends: n.resends,
            last_error: n.last_error,
            last_status: n.last_status,
            created_at: n.created_at,
            delivered_at: n.delivered_at,
            finished_at: n.finished_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationPage {
    /// Newest first.
    items: Vec<Notification>,
    /// Pass as `before` for the next page; null on the last.
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct NotificationQuery {
    /// Only this state: `pending`, `delivered`, `skipped` or `failed`.
    #[param(pattern = "^(pending|delivered|skipped|failed)$")]
    state: Option<String>,
    /// Only this run's.
    task_id: Option<String>,
    workflow: Option<String>,
    /// The `nextCursor` of the previous page.
    #[param(pattern = "^[0-9]{1,18}$")]
    before: Option<String>,
    /// At most this many (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

/// Recent notifications (alerts about dead runs and failed schedule ticks) with their
/// delivery state: attempts, last error, when delivered.
#[utoipa::path(get, path = "/api/notifications", tag = "notifications", params(NotificationQuery),
    responses((status = 200, body = NotificationPage), (status = 400, body = super::error::ErrorBody)))]
async fn notification_list(
    State(state): State<AppState>,
    _: Viewer,
    AppQuery(q): AppQuery<NotificationQuery>,
) -> Result<Json<NotificationPage>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=LIST_MAX).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {LIST_MAX}"
        )));
    }
    let only = match q.state.as_deref() {
        None => None,
        Some(s) => Some(s.parse::<NotificationState>().map_err(|_| {
            ApiError::bad_request(format!(
                "state must be one of {}",
                NotificationState::expected()
            ))
        })?),
    };
    let before = match &q.before {
        None => None,
        Some(c) => Some(c.parse::<i64>().map_err(|_| {
            ApiError::bad_request("before must be the nextCursor of a previous page")
        })?),
    };
    let filter = NotificationFilter {
        state: only,
        run_id: q.task_id,
        workflow: q.workflow,
    };
    let rows = store::notification_list(&state.pool, &filter, before, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    let items: Vec<Notification> = rows
        .into_iter()
        .take(limit as usize)
        .map(Notification::from)
        .collect();
    let next_cursor = more.then(|| items.last().map(|n| n.id.clone())).flatten();
    Ok(Json(NotificationPage { items, next_cursor }))
}

/// Sends a notification that was given up (`failed`) or `skipped` again: it is
/// `pending` once more, due at once, with a fresh round of attempts. For after its
/// target was fixed (the endpoint is back, the egress policy allows it, a URL is set).
#[utoipa::path(post, path = "/api/notifications/{id}/resend", tag = "notifications",
    params(("id" = String, Path, pattern = "^[0-9]{1,18}$", description = "The notification's id")),
    responses(
        (status = 200, body = Notification, description = "pending again"),
        (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody, description = "it is pending or was delivered")))]
async fn notification_resend(
    State(state): State<AppState>,
    Operator(who): Operator,
    Path(id): Path<String>,
) -> Result<Json<Notification>, ApiError> {
    let not_found = || ApiError::NotFound(format!("no notification {id}"));
    let Ok(number) = id.parse::<i64>() else {
        return Err(not_found());
    };
    match store::notification_resend(&state.pool, number, Utc::now()).await? {
        Resent::Pending(n) => {
            tracing::info!(notification = n.id, event = %n.event, by = %who.name,
                "notification sent again");
            Ok(Json(Notification::from(n)))
        }
        Resent::Not(n) => Err(ApiError::Conflict {
            message: format!(
                "notification {id} is {}: only failed or skipped ones are sent again",
                n.state
            ),
            details: None,
        }),
        Resent::NotFound => Err(not_found()),
    }
}
