//! `dead_letters`: runs that died, with everything needed to understand and redrive them.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

use super::Result;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadLetterRow {
    pub id: i64,
    pub run_id: String,
    pub workflow: String,
    pub step_id: String,
    pub error: String,
    pub attempts: Value,
    pub input: Value,
    pub created_at: DateTime<Utc>,
}

pub async fn dead_letter_list_for_run(pool: &PgPool, run_id: &str) -> Result<Vec<DeadLetterRow>> {
    Ok(sqlx::query_as(
        "select id, run_id, workflow, step_id, error, attempts, input, created_at
           from dead_letters where run_id = $1 order by id",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await?)
}
