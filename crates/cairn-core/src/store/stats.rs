//! Read-only aggregates for the overview page, `/metrics` and stuck-run detection.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool, Postgres, Transaction};

use super::Result;

/// A read-only transaction whose statements are cancelled after `timeout`: for
/// aggregates served to anyone who asks (`/metrics`), which must stay cheap however
/// large the tables grow.
pub async fn stats_begin(
    pool: &PgPool,
    timeout: Duration,
) -> Result<Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await?;
    sqlx::query!("set transaction read only")
        .execute(&mut *tx)
        .await?;
    // `set local` takes no parameters; `set_config(…, true)` is its bindable form.
    sqlx::query!(
        "select set_config('statement_timeout', $1, true)",
        format!("{}ms", timeout.as_millis())
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok(tx)
}

/// Runs per status.
pub async fn runs_by_status(
    db: impl PgExecutor<'_>,
) -> Result<Vec<(crate::state::RunStatus, i64)>> {
    let rows = sqlx::query!(
        r#"select status, count(*) as "count!" from runs group by status order by status"#
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.status, r.count)).collect())
}

/// Queued runs per workflow and the age of the oldest, in seconds.
pub async fn queue_depth(db: impl PgExecutor<'_>) -> Result<Vec<(String, i64, f64)>> {
    let rows = sqlx::query!(
        r#"select workflow, count(*) as "depth!",
                extract(epoch from clock_timestamp() - min(updated_at))::float8 as "age!"
           from runs where status = 'queued' group by workflow order by workflow"#
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.workflow, r.depth, r.age))
        .collect())
}

/// Runs that finished per time bucket since `since`: (bucket start, succeeded, dead).
pub async fn throughput(
    pool: &PgPool,
    since: DateTime<Utc>,
    bucket_secs: f64,
) -> Result<Vec<(DateTime<Utc>, i64, i64)>> {
    let rows = sqlx::query!(
        r#"select to_timestamp(floor(extract(epoch from finished_at) / $2::float8) * $2::float8) as "bucket!",
                count(*) filter (where status = 'succeeded') as "succeeded!",
                count(*) filter (where status = 'dead') as "dead!"
           from runs where finished_at >= $1
          group by 1 order by 1"#,
        since,
        bucket_secs
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.bucket, r.succeeded, r.dead))
        .collect())
}

/// Workers with a heartbeat within `secs`.
pub async fn workers_alive(db: impl PgExecutor<'_>, secs: f64) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"select count(*) as "alive!" from workers
          where stopped_at is null and last_heartbeat_at > clock_timestamp() - make_interval(secs => $1)"#,
        secs
    )
    .fetch_one(db)
    .await?)
}

/// A run held by a worker that stopped renewing its lease.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StuckRow {
    pub run_id: String,
    pub workflow: String,
    pub worker: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Seconds since the lease expired (negative: not yet expired, but its worker's
    /// heartbeat is stale).
    pub lease_expired_secs: f64,
}

/// Running runs whose lease expired or whose worker's heartbeat is older than `secs`.
pub async fn stuck_runs(db: impl PgExecutor<'_>, secs: f64) -> Result<Vec<StuckRow>> {
    Ok(sqlx::query_as!(
        StuckRow,
        r#"select r.id as run_id, r.workflow, r.lease_owner as worker, r.lease_expires_at,
                coalesce(extract(epoch from clock_timestamp() - r.lease_expires_at)::float8, 0)
                    as "lease_expired_secs!"
           from runs r left join workers w on w.id = r.lease_owner
          where r.status = 'running'
            and (r.lease_expires_at < clock_timestamp()
                 or w.id is null or w.stopped_at is not null
                 or w.last_heartbeat_at < clock_timestamp() - make_interval(secs => $1))
          order by r.lease_expires_at limit 500"#,
        secs
    )
    .fetch_all(db)
    .await?)
}

/// Whether every migration Cairn ships has been applied.
pub async fn migrations_current(pool: &PgPool) -> Result<bool> {
    // Not checked: sqlx's own table, which the database the statements are checked
    // against lacks (scripts/sqlx-prepare.sh migrates it with psql).
    let applied: Vec<i64> =
        sqlx::query_scalar("select version from _sqlx_migrations where success")
            .fetch_all(pool)
            .await?;
    Ok(super::MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .all(|m| applied.contains(&m.version)))
}
