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
    Ok(sqlx::query_as!(
        DeadLetterRow,
        "select id, run_id, workflow, step_id, error, attempts, input, created_at
           from dead_letters where run_id = $1 order by id",
        run_id
    )
    .fetch_all(pool)
    .await?)
}

/// Filters for [`dead_letter_list`] and [`dead_letter_ids_matching`].
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    pub workflow: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
}

/// Newest first; `before` is the (created_at, id) keyset cursor.
pub async fn dead_letter_list(
    pool: &PgPool,
    f: &DeadLetterFilter,
    before: Option<(DateTime<Utc>, i64)>,
    limit: i64,
) -> Result<Vec<DeadLetterRow>> {
    Ok(sqlx::query_as!(
        DeadLetterRow,
        "select id, run_id, workflow, step_id, error, attempts, input, created_at
           from dead_letters
          where ($1::text is null or workflow = $1)
            and ($2::timestamptz is null or created_at >= $2)
            and ($3::timestamptz is null or created_at < $3)
            and ($4::timestamptz is null or (created_at, id) < ($4, $5::bigint))
          order by created_at desc, id desc limit $6",
        f.workflow.as_deref(),
        f.created_after,
        f.created_before,
        before.map(|b| b.0),
        before.map(|b| b.1),
        limit
    )
    .fetch_all(pool)
    .await?)
}

pub async fn dead_letter_get(pool: &PgPool, id: i64) -> Result<Option<DeadLetterRow>> {
    Ok(sqlx::query_as!(
        DeadLetterRow,
        "select id, run_id, workflow, step_id, error, attempts, input, created_at
           from dead_letters where id = $1",
        id
    )
    .fetch_optional(pool)
    .await?)
}

pub async fn dead_letter_ids_matching(
    pool: &PgPool,
    f: &DeadLetterFilter,
    limit: i64,
) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar!(
        "select id from dead_letters
          where ($1::text is null or workflow = $1)
            and ($2::timestamptz is null or created_at >= $2)
            and ($3::timestamptz is null or created_at < $3)
          order by created_at, id limit $4",
        f.workflow.as_deref(),
        f.created_after,
        f.created_before,
        limit
    )
    .fetch_all(pool)
    .await?)
}

/// Removes dead letters (the runs stay `dead`); returns how many were removed.
pub async fn dead_letter_purge(db: impl sqlx::PgExecutor<'_>, ids: &[i64]) -> Result<u64> {
    Ok(
        sqlx::query!("delete from dead_letters where id = any($1)", ids)
            .execute(db)
            .await?
            .rows_affected(),
    )
}

pub async fn dead_letter_count(db: impl sqlx::PgExecutor<'_>) -> Result<i64> {
    Ok(
        sqlx::query_scalar!(r#"select count(*) as "count!" from dead_letters"#)
            .fetch_one(db)
            .await?,
    )
}
