//! `run_events`: the append-only history of each run.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use super::{Result, StoreError};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub id: i64,
    pub run_id: String,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub step_id: Option<String>,
    pub data: Value,
}

/// The statement of [`event_append`].
#[cfg(test)] // Read by the plan test (`plans.rs`); the statement runs from the file.
pub(super) const EVENT_APPEND: &str = include_str!("sql/event_append.sql");

pub async fn event_append(
    conn: &mut PgConnection,
    run_id: &str,
    kind: &str,
    step_id: Option<&str>,
    data: Value,
) -> Result<()> {
    // The run must exist (`run_events` has no foreign key: see migration 0007).
    let appended = sqlx::query_file!(
        "src/store/sql/event_append.sql",
        run_id,
        kind,
        step_id,
        data
    )
    .execute(conn)
    .await?;
    if appended.rows_affected() == 0 {
        return Err(StoreError::Missing(format!("run {run_id}")));
    }
    Ok(())
}

/// The statement of [`event_list`].
#[cfg(test)] // Read by the plan test (`plans.rs`); the statement runs from the file.
pub(super) const EVENT_LIST: &str = include_str!("sql/event_list.sql");

/// A run's events in order, after `after_id` (0 for all).
pub async fn event_list(pool: &PgPool, run_id: &str, after_id: i64) -> Result<Vec<EventRow>> {
    Ok(
        sqlx::query_file_as!(EventRow, "src/store/sql/event_list.sql", run_id, after_id)
            .fetch_all(pool)
            .await?,
    )
}

/// An event with its run's workflow, for live feeds.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FeedRow {
    pub id: i64,
    pub run_id: String,
    pub workflow: String,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub step_id: Option<String>,
    pub data: Value,
}

/// Events after `after_id`, in id order, optionally of one run or one workflow.
pub async fn event_feed(
    pool: &PgPool,
    after_id: i64,
    run_id: Option<&str>,
    workflow: Option<&str>,
    limit: i64,
) -> Result<Vec<FeedRow>> {
    Ok(sqlx::query_as!(
        FeedRow,
        "select e.id, e.run_id, r.workflow, e.at, e.kind, e.step_id, e.data
           from run_events e join runs r on r.id = e.run_id
          where e.id > $1 and ($2::text is null or e.run_id = $2)
            and ($3::text is null or r.workflow = $3)
          order by e.id limit $4",
        after_id,
        run_id,
        workflow,
        limit
    )
    .fetch_all(pool)
    .await?)
}

/// The newest event id (0 when there is none).
pub async fn event_last_id(pool: &PgPool) -> Result<i64> {
    Ok(
        sqlx::query_scalar!(r#"select coalesce(max(id), 0) as "max!" from run_events"#)
            .fetch_one(pool)
            .await?,
    )
}

/// The channel every event is announced on (`NOTIFY cairn_events`).
pub const CHANNEL: &str = "cairn_events";

/// Wakes event listeners: events were appended on connections that do not notify (see
/// [`super::connect_quiet`]). Listeners re-read after their cursor.
pub async fn event_announce(pool: &PgPool) -> Result<()> {
    sqlx::query!("select pg_notify($1, '{\"id\": 0}')", CHANNEL)
        .fetch_one(pool)
        .await?;
    Ok(())
}

/// A connection listening for event announcements.
pub async fn event_listener(pool: &PgPool) -> Result<sqlx::postgres::PgListener> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
