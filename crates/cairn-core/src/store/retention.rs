//! Retention: deleting what Cairn no longer needs, and what the reaper did.
//!
//! * Finished runs past their window, with everything that hangs off them: steps,
//!   attempts, events, dead letters, LLM usage and the schedule ticks that started them,
//!   each counted (the runs' trigger and foreign keys would delete the same; see
//!   [`REAP_RUNS`]); runs, steps and ticks that pointed at them forget them.
//! * Ticks that started no run (skipped, failed), past the longest window.
//! * Expired sessions and API tokens; workers silent for long.
//!
//! Everything is deleted in bounded batches, each its own short transaction, taking
//! only rows no one else holds (`for update skip locked`): the reaper never waits for a
//! worker, and a worker waits at most one batch for the reaper. Runs are found through
//! `runs_reapable` (finished, unpinned runs by status and finish time), the rest through
//! an index on their age (migration 0013). A run is never deleted unless it is final
//! and not pinned (checked under its row lock) and has no child run still going.
//!
//! One reaper works at a time in a cluster: it holds the session advisory lock
//! [`reaper_lock_try`] takes for the whole pass; the others skip theirs.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};

use super::Result;
use crate::state::RunStatus;

/// Settings of every reaper transaction:
///
/// * it gives up on a lock it would wait for longer than 5 s (the pass then ends with
///   the error, and the next one starts over): nothing the reaper deletes should be
///   locked for long, and the reaper must not queue others behind it;
/// * its statements read every table through an index (`enable_seqscan = off`), as
///   workers' do, whatever the statistics were when a statement was planned: the
///   scheduler's connections keep a generic plan after a few executions, and one made
///   while a table was analyzed empty would read it whole on every batch as it grows.
///
/// Not checked: its two columns share a name, which the macros cannot read.
const BATCH_SETTINGS: &str =
    "select set_config('lock_timeout', '5s', true), set_config('enable_seqscan', 'off', true)";

/// Takes the cluster's reaper lock on this session, unless another session holds it.
/// The lock lasts until [`reaper_unlock`] or the connection closes.
pub async fn reaper_lock_try(conn: &mut PgConnection) -> Result<bool> {
    Ok(
        sqlx::query_scalar!(
            r#"select pg_try_advisory_lock(hashtext('cairn.reaper')) as "locked!""#
        )
        .fetch_one(conn)
        .await?,
    )
}

/// Gives the reaper lock back.
pub async fn reaper_unlock(conn: &mut PgConnection) -> Result<()> {
    sqlx::query!("select pg_advisory_unlock(hashtext('cairn.reaper'))")
        .fetch_one(conn)
        .await?;
    Ok(())
}

/// The tables a run's deletion deletes rows from, as counted in [`RunsReaped::rows`]
/// (in the order [`REAP_RUNS`] counts them).
pub const RUN_TABLES: &[&str] = &[
    "runs",
    "steps",
    "step_attempts",
    "run_events",
    "dead_letters",
    "llm_usage",
    "schedule_ticks",
];

/// The statement of [`runs_reap_batch`]: locks up to `$3` runs of status `$1` that
/// finished before `$2` and are not pinned, oldest first, skipping those locked
/// elsewhere and those with a child run still going (it would lock the parent when it
/// finishes, while the batch waits for the child's row), and deletes them with every row that hangs off them, counting each
/// table's. (`for update` re-reads a row changed since the statement began, such as by
/// an operator's retry or pin, and leaves it out unless it still qualifies.) The
/// children are deleted here rather than by the runs' trigger and foreign keys, which
/// then find nothing left, so that their rows can be counted; every delete finds its
/// rows by key alone.
///
/// Not checked: its counts are unnamed scalar subqueries, which the macros cannot
/// name, nor read as not null, without the text changing.
pub(super) const REAP_RUNS: &str = "with doomed as materialized (
             select id from runs r
              where status = $1 and finished_at < $2 and not pinned
                -- A subplan looking children up by key for each candidate, never an
                -- anti-join the planner may turn into a read of every child.
                and (select c.id from runs c
                      where c.parent_run_id = r.id and c.finished_at is null limit 1) is null
              order by finished_at
              limit $3
                for update skip locked),
         attempts as (delete from step_attempts
                       where run_id = any (array(select id from doomed)) returning 1),
         steps as (delete from steps where run_id = any (array(select id from doomed)) returning 1),
         events as (delete from run_events
                     where run_id = any (array(select id from doomed)) returning 1),
         letters as (delete from dead_letters
                      where run_id = any (array(select id from doomed)) returning 1),
         usage as (delete from llm_usage where run_id = any (array(select id from doomed)) returning 1),
         ticks as (delete from schedule_ticks
                    where run_id = any (array(select id from doomed)) returning 1),
         gone as (delete from runs where id = any (array(select id from doomed)) returning 1)
         select (select count(*) from gone), (select count(*) from steps),
                (select count(*) from attempts), (select count(*) from events),
                (select count(*) from letters), (select count(*) from usage),
                (select count(*) from ticks)";

/// What one batch of [`runs_reap_batch`] deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunsReaped {
    pub runs: u64,
    /// Rows deleted per table of [`RUN_TABLES`] (the runs included).
    pub rows: Vec<(String, i64)>,
}

/// Deletes up to `limit` runs of final `status` that finished before `finished_before`
/// and are not pinned, oldest first, with everything that hangs off them, in one
/// transaction.
pub async fn runs_reap_batch(
    conn: &mut PgConnection,
    status: RunStatus,
    finished_before: DateTime<Utc>,
    limit: i64,
) -> Result<RunsReaped> {
    debug_assert!(status.is_final());
    let mut tx = conn.begin().await?;
    sqlx::query(BATCH_SETTINGS).execute(&mut *tx).await?;
    let counts: (i64, i64, i64, i64, i64, i64, i64) = sqlx::query_as(REAP_RUNS)
        .bind(status)
        .bind(finished_before)
        .bind(limit)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    let (runs, steps, attempts, events, letters, usage, ticks) = counts;
    let rows = RUN_TABLES
        .iter()
        .zip([runs, steps, attempts, events, letters, usage, ticks])
        .filter(|(_, n)| *n > 0)
        .map(|(t, n)| ((*t).to_owned(), n))
        .collect();
    Ok(RunsReaped {
        runs: u64::try_from(runs).unwrap_or(0),
        rows,
    })
}

/// Deletes up to `limit` ticks that started no run (skipped, failed, or whose run was
/// deleted by hand) handled before `before`, oldest first. Returns how many.
pub async fn ticks_reap_batch(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64> {
    reap(
        conn,
        sqlx::query!(
            "delete from schedule_ticks where id = any (array(
                 select id from schedule_ticks where run_id is null and handled_at < $1
                  order by handled_at limit $2 for update skip locked))",
            before,
            limit
        ),
    )
    .await
}

/// Deletes up to `limit` sessions that expired before `now`. Returns how many.
pub async fn sessions_reap_batch(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<u64> {
    reap(
        conn,
        sqlx::query!(
            "delete from sessions where token_hash = any (array(
                 select token_hash from sessions where expires_at < $1
                  order by expires_at limit $2 for update skip locked))",
            now,
            limit
        ),
    )
    .await
}

/// Deletes up to `limit` API tokens that expired before `now` (they no longer work;
/// tokens that never expire stay). Returns how many.
pub async fn tokens_reap_batch(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<u64> {
    reap(
        conn,
        sqlx::query!(
            "delete from api_tokens where id = any (array(
                 select id from api_tokens where expires_at < $1
                  order by expires_at limit $2 for update skip locked))",
            now,
            limit
        ),
    )
    .await
}

/// Deletes up to `limit` workers whose last heartbeat is older than `before` (stopped
/// or dead: a live worker beats every few seconds). Returns how many.
pub async fn workers_reap_batch(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64> {
    reap(
        conn,
        sqlx::query!(
            "delete from workers where id = any (array(
                 select id from workers where last_heartbeat_at < $1
                  order by last_heartbeat_at limit $2 for update skip locked))",
            before,
            limit
        ),
    )
    .await
}

/// Deletes up to `limit` notifications delivered (or skipped) before `before`, oldest
/// first. Returns how many.
pub async fn notifications_reap_batch(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64> {
    reap(
        conn,
        sqlx::query!(
            "delete from notifications where id = any (array(
                 select id from notifications
                  where state in ('delivered', 'skipped') and finished_at < $1
                  order by finished_at limit $2 for update skip locked))",
            before,
            limit
        ),
    )
    .await
}

/// Deletes up to `limit` notifications given up before `before`, oldest first.
/// Returns how many.
pub async fn notifications_failed_reap_batch(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64> {
    reap(
        conn,
        sqlx::query!(
            "delete from notifications where id = any (array(
                 select id from notifications where state = 'failed' and finished_at < $1
                  order by finished_at limit $2 for update skip locked))",
            before,
            limit
        ),
    )
    .await
}

/// Runs one batch's `delete` (its parameters bound) in a transaction of its own, with
/// [`BATCH_SETTINGS`].
async fn reap(
    conn: &mut PgConnection,
    delete: sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<u64> {
    let mut tx = conn.begin().await?;
    sqlx::query(BATCH_SETTINGS).execute(&mut *tx).await?;
    let n = delete.execute(&mut *tx).await?.rows_affected();
    tx.commit().await?;
    Ok(n)
}

/// Passes kept in `retention_passes`; older ones are deleted as new ones are recorded.
pub const PASSES_KEPT: i64 = 1000;

/// One pass of the reaper, as recorded.
#[derive(Debug, Clone)]
pub struct PassInsert<'a> {
    pub reaper: &'a str,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub settings: &'a Value,
    pub runs: &'a Value,
    pub deleted: &'a Value,
    pub batches: i32,
    pub complete: bool,
    pub error: Option<&'a str>,
}

/// Records a pass and forgets all but the latest [`PASSES_KEPT`].
pub async fn pass_insert(conn: &mut PgConnection, p: &PassInsert<'_>) -> Result<i64> {
    let mut tx = conn.begin().await?;
    let id: i64 = sqlx::query_scalar!(
        "insert into retention_passes (reaper, started_at, finished_at, duration_ms, settings,
                                       runs, deleted, batches, complete, error)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         returning id",
        p.reaper,
        p.started_at,
        p.finished_at,
        p.duration_ms,
        p.settings,
        p.runs,
        p.deleted,
        p.batches,
        p.complete,
        p.error
    )
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query!(
        "delete from retention_passes
          where id <= (select id from retention_passes order by id desc offset $1 limit 1)",
        PASSES_KEPT
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PassRow {
    pub id: i64,
    pub reaper: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub settings: Value,
    pub runs: Value,
    pub deleted: Value,
    pub batches: i32,
    pub complete: bool,
    pub error: Option<String>,
}

/// The latest `limit` passes, newest first.
pub async fn pass_list(pool: &PgPool, limit: i64) -> Result<Vec<PassRow>> {
    Ok(sqlx::query_as!(
        PassRow,
        "select id, reaper, started_at, finished_at, duration_ms, settings, runs, deleted,
                batches, complete, error
           from retention_passes order by id desc limit $1",
        limit
    )
    .fetch_all(pool)
    .await?)
}

/// What [`run_pin`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinOutcome {
    /// The run's status.
    pub status: RunStatus,
    /// The runs whose pin changed: the run and its child runs, transitively (each gets
    /// a `run_pinned` or `run_unpinned` event). Empty when nothing changed.
    pub changed: Vec<String>,
}

/// Pins (or unpins) a run and its child runs, transitively: pinned runs are never
/// deleted by retention. `None` when there is no such run.
pub async fn run_pin(
    pool: &PgPool,
    id: &str,
    pinned: bool,
    by: &str,
) -> Result<Option<PinOutcome>> {
    let kind = if pinned { "run_pinned" } else { "run_unpinned" };
    let row = sqlx::query!(
        r#"with recursive tree as (
             select id from runs where id = $1
             union
             select r.id from runs r join tree t on r.parent_run_id = t.id),
         changed as (
             update runs set pinned = $2
              where id = any (array(select id from tree order by id)) and pinned <> $2
             returning id),
         events as (
             insert into run_events (run_id, kind, data)
             select id, $3, jsonb_build_object('by', $4::text, 'run', $1::text)
               from changed order by id)
         select (select status from runs where id = $1) as "status?: RunStatus",
                array(select id from changed order by id) as "changed!""#,
        id,
        pinned,
        kind,
        by
    )
    .fetch_one(pool)
    .await?;
    Ok(row.status.map(|status| PinOutcome {
        status,
        changed: row.changed,
    }))
}
