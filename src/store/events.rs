//! `run_events`: the append-only history of each run.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use super::Result;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub id: i64,
    pub run_id: String,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub step_id: Option<String>,
    pub data: Value,
}

pub async fn event_append(
    conn: &mut PgConnection,
    run_id: &str,
    kind: &str,
    step_id: Option<&str>,
    data: Value,
) -> Result<()> {
    sqlx::query("insert into run_events (run_id, kind, step_id, data) values ($1, $2, $3, $4)")
        .bind(run_id)
        .bind(kind)
        .bind(step_id)
        .bind(data)
        .execute(conn)
        .await?;
    Ok(())
}

/// A run's events in order, after `after_id` (0 for all).
pub async fn event_list(pool: &PgPool, run_id: &str, after_id: i64) -> Result<Vec<EventRow>> {
    Ok(sqlx::query_as(
        "select id, run_id, at, kind, step_id, data from run_events
          where run_id = $1 and id > $2 order by id",
    )
    .bind(run_id)
    .bind(after_id)
    .fetch_all(pool)
    .await?)
}
