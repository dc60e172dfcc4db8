//! `notifications`: the outbox of alerts. Rows are written by triggers in the
//! transaction that records the event (migration `…_notifications.sql`); the notifier
//! claims due rows, delivers them outside any transaction, and records the outcome.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Result;
use crate::state::NotificationState;

/// Where new notifications are announced (the dead letter's trigger, a resend).
pub const CHANNEL: &str = "cairn_notifications";

/// One notification as the notifier and the API read it. `url` (a workflow's own
/// target) is for delivery only: the API never serves it.
#[derive(Debug, Clone)]
pub struct NotificationRow {
    pub id: i64,
    pub event: String,
    pub run_id: Option<String>,
    pub workflow: String,
    pub step_id: Option<String>,
    pub schedule_id: Option<String>,
    pub error: String,
    pub step_attempts: i32,
    pub url: Option<String>,
    pub state: NotificationState,
    pub deliveries: i32,
    /// `deliveries` when the current round of attempts began (0, or at the last resend).
    pub round_start: i32,
    /// Times an operator sent it again.
    pub resends: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub last_status: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Claims up to `limit` notifications due at `now`: counts the delivery and moves
/// `next_attempt_at` to `now + hold` (the delivery's deadline, with room), so no other
/// notifier takes them while this one delivers, and they are due again should this one
/// die before it records the outcome. Rows another notifier is claiming are skipped.
pub async fn notification_claim_due(
    pool: &PgPool,
    now: DateTime<Utc>,
    hold_secs: f64,
    limit: i64,
) -> Result<Vec<NotificationRow>> {
    Ok(sqlx::query_as!(
        NotificationRow,
        "update notifications n
            set deliveries = n.deliveries + 1,
                next_attempt_at = $1 + make_interval(secs => $2)
          where n.id = any (array(
                select id from notifications
                 where state = 'pending' and next_attempt_at <= $1
                 order by next_attempt_at, id limit $3 for update skip locked))
        returning n.id, n.event, n.run_id, n.workflow, n.step_id, n.schedule_id, n.error,
                  n.step_attempts, n.url, n.state, n.deliveries, n.round_start, n.resends,
                  n.next_attempt_at,
                  n.last_error, n.last_status, n.created_at, n.delivered_at, n.finished_at",
        now,
        hold_secs,
        limit
    )
    .fetch_all(pool)
    .await?)
}

/// The endpoint took it (2xx).
pub async fn notification_delivered(
    pool: &PgPool,
    id: i64,
    status: i32,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query!(
        "update notifications
            set state = 'delivered', delivered_at = $3, finished_at = $3, last_status = $2,
                last_error = null
          where id = $1 and state = 'pending'",
        id,
        status,
        now
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A delivery failed: due again at `retry_at`, or, without one, given up as
/// `final_state` (`Failed`, or `Skipped` when there was nothing to deliver to).
pub async fn notification_failed(
    pool: &PgPool,
    id: i64,
    status: Option<i32>,
    error: &str,
    retry_at: Option<DateTime<Utc>>,
    final_state: NotificationState,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query!(
        "update notifications
            set last_status = $2, last_error = $3,
                next_attempt_at = coalesce($4, next_attempt_at),
                state = case when $4::timestamptz is null then $5::text else state end,
                finished_at = case when $4::timestamptz is null then $6::timestamptz end
          where id = $1 and state = 'pending'",
        id,
        status,
        error,
        retry_at,
        final_state as NotificationState,
        now
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The earliest time a pending notification is due, if any.
pub async fn notification_next_due(pool: &PgPool) -> Result<Option<DateTime<Utc>>> {
    Ok(sqlx::query_scalar!(
        "select min(next_attempt_at) from notifications where state = 'pending'"
    )
    .fetch_one(pool)
    .await?)
}

/// What [`notification_resend`] found.
#[derive(Debug)]
pub enum Resent {
    /// Pending again, due at once.
    Pending(NotificationRow),
    /// Still pending, or delivered: there is nothing to send again.
    Not(NotificationRow),
    NotFound,
}

/// Makes a `failed` or `skipped` notification pending again, due at `now`, with a fresh
/// round of attempts, and wakes the notifiers.
pub async fn notification_resend(pool: &PgPool, id: i64, now: DateTime<Utc>) -> Result<Resent> {
    let mut tx = pool.begin().await?;
    let Some(state) = sqlx::query_scalar!(
        r#"select state as "state: NotificationState" from notifications where id = $1 for update"#,
        id
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(Resent::NotFound);
    };
    let resend = state.can_resend();
    let row = sqlx::query_as!(
        NotificationRow,
        "update notifications
            set state = case when $2 then 'pending' else state end,
                finished_at = case when $2 then null else finished_at end,
                next_attempt_at = case when $2 then $3 else next_attempt_at end,
                round_start = case when $2 then deliveries else round_start end,
                resends = resends + $2::boolean::int
          where id = $1
        returning id, event, run_id, workflow, step_id, schedule_id, error, step_attempts, url,
                  state, deliveries, round_start, resends, next_attempt_at, last_error,
                  last_status, created_at, delivered_at, finished_at",
        id,
        resend,
        now
    )
    .fetch_one(&mut *tx)
    .await?;
    if resend {
        sqlx::query!("select pg_notify($1, '')", CHANNEL)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(if resend {
        Resent::Pending(row)
    } else {
        Resent::Not(row)
    })
}

/// Filters for [`notification_list`].
#[derive(Debug, Clone, Default)]
pub struct NotificationFilter {
    pub state: Option<NotificationState>,
    pub run_id: Option<String>,
    pub workflow: Option<String>,
}

/// Newest first; `before` is an id cursor (ids grow with time).
pub async fn notification_list(
    pool: &PgPool,
    f: &NotificationFilter,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<NotificationRow>> {
    Ok(sqlx::query_as!(
        NotificationRow,
        "select id, event, run_id, workflow, step_id, schedule_id, error, step_attempts, url,
                state, deliveries, round_start, resends, next_attempt_at, last_error,
                last_status, created_at, delivered_at, finished_at
           from notifications
          where ($1::text is null or state = $1)
            and ($2::text is null or run_id = $2)
            and ($3::text is null or workflow = $3)
            and ($4::bigint is null or id < $4)
          order by id desc limit $5",
        f.state as Option<NotificationState>,
        f.run_id.as_deref(),
        f.workflow.as_deref(),
        before,
        limit
    )
    .fetch_all(pool)
    .await?)
}
