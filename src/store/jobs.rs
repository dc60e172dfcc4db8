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

/// Marks Cairn's version of `apalis.get_jobs` (kept in the function's source).
const FETCH_MARK: &str = "cairn: fetch planned as index scans";

/// Replaces `apalis.get_jobs` with the same statement written so that it plans well.
///
/// apalis' version joins the jobs it picked back to `apalis.jobs` with `UPDATE … FROM`
/// a CTE whose `LIMIT` is a function argument. Planned without the argument's value,
/// the CTE is taken to return a tenth of the table, and every fetch becomes a hash join
/// over a sequential scan of the whole table: with a million runs queued, workers spent
/// their time in `get_jobs` and drained at a quarter of their empty-queue rate. Written
/// as `id = any(array(…))`, both sides are index scans whatever the limit. Arguments,
/// the rows changed and the rows returned are the same. Runs after apalis' migrations;
/// concurrent callers are serialised, and an installed replacement is left alone.
pub async fn jobs_fetch_install(pool: &PgPool) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("select pg_advisory_xact_lock(hashtext('cairn.jobs_fetch_install'))")
        .execute(&mut *tx)
        .await?;
    let source: Option<String> = sqlx::query_scalar(
        "select p.prosrc from pg_proc p join pg_namespace n on n.oid = p.pronamespace
          where n.nspname = 'apalis' and p.proname = 'get_jobs'",
    )
    .fetch_optional(&mut *tx)
    .await?;
    if source.is_some_and(|s| s.contains(FETCH_MARK)) {
        return Ok(());
    }
    let sql = format!(
        "create or replace function apalis.get_jobs(
             worker_id text, v_job_type text, v_job_count integer default 5)
         returns setof apalis.jobs language sql volatile as $$
             -- {FETCH_MARK}
             update apalis.jobs j
                set status = 'Queued', lock_by = worker_id, lock_at = now()
              where j.id = any (array(
                    select id from apalis.jobs
                     where (status = 'Pending'
                            or (status = 'Failed' and attempts < max_attempts))
                       and run_at < now()
                       and job_type = v_job_type
                     order by priority desc, run_at asc
                     limit v_job_count
                       for update skip locked))
             returning j.*;
         $$"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The replacement is in place after migrating, and migrating again keeps it.
    #[sqlx::test(migrations = false)]
    async fn migrating_installs_the_fetch_once(pool: PgPool) {
        crate::store::migrate(&pool).await.expect("migrate");
        crate::store::migrate(&pool).await.expect("migrate again");
        let source: String = sqlx::query_scalar(
            "select p.prosrc from pg_proc p join pg_namespace n on n.oid = p.pronamespace
              where n.nspname = 'apalis' and p.proname = 'get_jobs'",
        )
        .fetch_one(&pool)
        .await
        .expect("get_jobs exists");
        assert!(source.contains(FETCH_MARK), "{source}");
        assert!(source.contains("any (array("), "{source}");
    }
}
