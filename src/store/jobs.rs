//! apalis' job rows (`apalis.jobs`), as far as Cairn looks after them: a finished
//! wake-up carries nothing worth keeping (the run's history is in `run_events`), so
//! workers delete their own acknowledged jobs. That keeps the queue's table and
//! apalis' per-worker acknowledgement scan small.

use sqlx::PgPool;

use super::Result;

/// Deletes up to `limit` acknowledged (`Done`) jobs of `queue` that worker `lock_by`
/// handled; returns how many. Uses apalis' `lock_by` index.
pub async fn jobs_prune_done(pool: &PgPool, queue: &str, lock_by: &str, limit: i64) -> Result<u64> {
    let done = sqlx::query(
        "delete from apalis.jobs
          where id in (select id from apalis.jobs
                        where lock_by = $2 and job_type = $1 and status = 'Done'
                        limit $3
                          for update skip locked)",
    )
    .bind(queue)
    .bind(lock_by)
    .bind(limit)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes up to `limit` acknowledged jobs of `queue` whose worker has not been seen
/// by apalis for a minute (it stopped or died before pruning its own).
pub async fn jobs_prune_orphaned(pool: &PgPool, queue: &str, limit: i64) -> Result<u64> {
    let done = sqlx::query(
        "delete from apalis.jobs
          where id in (select j.id from apalis.jobs j
                        where j.job_type = $1 and j.status = 'Done'
                          and not exists (select from apalis.workers w
                                           where w.id = j.lock_by
                                             and w.last_seen > now() - interval '1 minute')
                        limit $2
                          for update skip locked)",
    )
    .bind(queue)
    .bind(limit)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
