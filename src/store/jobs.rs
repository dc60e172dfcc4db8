//! apalis' job rows (`apalis.jobs`), as far as Cairn looks after them. Workers take
//! their wake-ups with [`jobs_claim_runs`], which deletes the jobs it takes and leases
//! their runs in the same statement: a wake-up carries nothing worth keeping once its
//! run is leased (the run's history is in `run_events`, and a run whose worker dies is
//! requeued by the rescuer when its lease expires).

use std::time::Duration;

use sqlx::PgPool;

use super::Result;
use super::runs::{AcquireRow, Acquired, lease_statement};

/// Takes up to `limit` due wake-ups of `queue` — highest priority, then oldest first,
/// skipping those another worker is taking — deletes them, and leases their runs to
/// `owner` for `ttl` (see [`lease_statement`]), all in one statement. Returns the runs
/// leased: fewer than the jobs taken when a run is finished, held by a live worker or
/// woken twice, since such a wake-up has nothing left to do. The job ids are selected
/// into an array first so that both the pick and the delete are index scans whatever
/// `limit` is.
pub async fn jobs_claim_runs(
    pool: &PgPool,
    queue: &str,
    owner: &str,
    ttl: Duration,
    limit: i64,
) -> Result<Vec<Acquired>> {
    let sql = lease_statement(
        "delete from apalis.jobs j
          where j.id = any (array(
                select id from apalis.jobs
                 where job_type = $1
                   and (status = 'Pending' or (status = 'Failed' and attempts < max_attempts))
                   and run_at <= now()
                 order by priority desc, run_at asc
                 limit $4
                   for update skip locked))
         returning convert_from(j.job, 'utf8')::jsonb ->> 'run_id' as run_id",
    );
    let rows: Vec<AcquireRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(queue)
        .bind(owner)
        .bind(ttl.as_secs_f64())
        .bind(limit)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| row.into_acquired(owner, ttl))
        .collect())
}
