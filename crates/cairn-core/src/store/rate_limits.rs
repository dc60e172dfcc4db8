//! Rate limits per key, shared by every worker through one row per key.
//!
//! The pacing is the generic cell rate algorithm with no burst: a key's row holds the
//! earliest time its next call may start; a call may start when that time has come, and
//! taking it moves the time one interval past now. Checking and taking are one
//! statement, so two workers can never both take the same moment. Calls are spaced
//! evenly, so any minute holds at most `per_minute` of them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Result;

/// Takes a call of `key`, spaced `interval` from the previous one: `None` when it may
/// start now, else the time from which it may.
pub async fn rate_take(
    pool: &PgPool,
    key: &str,
    interval: Duration,
) -> Result<Option<DateTime<Utc>>> {
    let secs = interval.as_secs_f64();
    let taken = sqlx::query_scalar!(
        "insert into rate_limits as r (key, next_at)
         values ($1, clock_timestamp() + make_interval(secs => $2))
         on conflict (key) do update
            set next_at = clock_timestamp() + make_interval(secs => $2)
          where r.next_at <= clock_timestamp()
         returning next_at",
        key,
        secs
    )
    .fetch_optional(pool)
    .await?;
    if taken.is_some() {
        return Ok(None);
    }
    let next: Option<DateTime<Utc>> =
        sqlx::query_scalar!("select next_at from rate_limits where key = $1", key)
            .fetch_optional(pool)
            .await?;
    // Gone meanwhile (only a crash empties the table): the next try takes it.
    Ok(Some(next.unwrap_or_else(Utc::now)))
}

/// Holds every call of `key` back for `wait` from now at least: the provider asked for
/// it (`Retry-After`).
pub async fn rate_hold(pool: &PgPool, key: &str, wait: Duration) -> Result<()> {
    sqlx::query!(
        "insert into rate_limits as r (key, next_at)
         values ($1, clock_timestamp() + make_interval(secs => $2))
         on conflict (key) do update set next_at = greatest(r.next_at, excluded.next_at)",
        key,
        wait.as_secs_f64()
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Forgets the keys no call has used for `idle`: templated keys (one per tenant, say)
/// would otherwise pile up. Returns how many.
pub async fn rate_limits_forget_idle(pool: &PgPool, idle: Duration) -> Result<u64> {
    Ok(sqlx::query!(
        "delete from rate_limits where next_at < clock_timestamp() - make_interval(secs => $1)",
        idle.as_secs_f64()
    )
    .execute(pool)
    .await?
    .rows_affected())
}
