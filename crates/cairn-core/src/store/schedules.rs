//! `schedules` and `schedule_ticks`: recurring runs, each schedule's cursor (the earliest
//! tick not yet handled), and one row per handled tick — the exactly-once guard.
//!
//! A scheduler claims a due schedule with `for update skip locked`, so schedulers never
//! wait on each other; inside that transaction it inserts each tick's row with `on
//! conflict do nothing` and starts the tick's run only when its insert happened. The
//! run, the tick row and the cursor move commit together.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use super::Result;
#[cfg(doc)]
use crate::state::RunStatus;
use crate::state::{TickKind, TickOutcome};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScheduleRow {
    pub id: String,
    pub name: String,
    pub workflow: String,
    pub cron: String,
    pub timezone: String,
    pub input: Value,
    pub enabled: bool,
    pub misfire_policy: String,
    pub max_lateness_ms: i64,
    pub overlap_policy: String,
    pub source: String,
    pub spec_hash: Option<String>,
    pub next_fire_at: Option<DateTime<Utc>>,
    pub last_fired_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The priority of the runs it starts.
    pub priority: i16,
}

/// The settings of a schedule, as written by [`schedule_insert`] and
/// [`schedule_file_update`].
#[derive(Debug, Clone)]
pub struct ScheduleParams<'a> {
    pub name: &'a str,
    pub workflow: &'a str,
    pub cron: &'a str,
    pub timezone: &'a str,
    pub input: &'a Value,
    pub enabled: bool,
    pub misfire_policy: &'a str,
    pub max_lateness_ms: i64,
    pub overlap_policy: &'a str,
    /// `file` or `api`.
    pub source: &'a str,
    pub spec_hash: Option<&'a str>,
    pub next_fire_at: Option<DateTime<Utc>>,
    /// The priority of the runs it starts (0 to 1000).
    pub priority: i16,
}

/// Inserts a schedule. A taken name violates `schedules_name`.
pub async fn schedule_insert(
    conn: &mut PgConnection,
    id: &str,
    p: &ScheduleParams<'_>,
) -> Result<ScheduleRow> {
    Ok(sqlx::query_as!(
        ScheduleRow,
        "insert into schedules (id, name, workflow, cron, timezone, input, enabled, misfire_policy,
                                max_lateness_ms, overlap_policy, source, spec_hash, next_fire_at,
                                priority)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         returning id, name, workflow, cron, timezone, input, enabled, misfire_policy, max_lateness_ms,
                overlap_policy, source, spec_hash, next_fire_at, last_fired_at, created_at,
                updated_at, priority",
        id,
        p.name,
        p.workflow,
        p.cron,
        p.timezone,
        p.input,
        p.enabled,
        p.misfire_policy,
        p.max_lateness_ms,
        p.overlap_policy,
        p.source,
        p.spec_hash,
        p.next_fire_at,
        p.priority
    )
    .fetch_one(&mut *conn)
        .await?)
}

/// A schedule by id or by name.
pub async fn schedule_get(pool: &PgPool, id_or_name: &str) -> Result<Option<ScheduleRow>> {
    Ok(sqlx::query_as!(
        ScheduleRow,
        "select id, name, workflow, cron, timezone, input, enabled, misfire_policy, max_lateness_ms,
                overlap_policy, source, spec_hash, next_fire_at, last_fired_at, created_at,
                updated_at, priority from schedules where id = $1 or name = $1",
        id_or_name
    )
    .fetch_optional(pool)
    .await?)
}

/// Every schedule, by name.
pub async fn schedule_list(pool: &PgPool) -> Result<Vec<ScheduleRow>> {
    Ok(sqlx::query_as!(
        ScheduleRow,
        "select id, name, workflow, cron, timezone, input, enabled, misfire_policy, max_lateness_ms,
                overlap_policy, source, spec_hash, next_fire_at, last_fired_at, created_at,
                updated_at, priority from schedules order by name"
    )
    .fetch_all(pool)
    .await?)
}

/// Pauses or resumes a schedule. Resuming a paused schedule moves its cursor to
/// `resume_at` (the next tick from now), so the ticks of the pause never fire; pausing,
/// or resuming one that is not paused, leaves the cursor alone.
pub async fn schedule_set_enabled(
    pool: &PgPool,
    id: &str,
    enabled: bool,
    resume_at: Option<DateTime<Utc>>,
) -> Result<Option<ScheduleRow>> {
    Ok(sqlx::query_as!(
        ScheduleRow,
        "update schedules
            set enabled = $2, updated_at = now(),
                next_fire_at = case when $2 and not enabled then $3 else next_fire_at end
          where id = $1
         returning id, name, workflow, cron, timezone, input, enabled, misfire_policy, max_lateness_ms,
                overlap_policy, source, spec_hash, next_fire_at, last_fired_at, created_at,
                updated_at, priority",
        id,
        enabled,
        resume_at
    )
    .fetch_optional(pool)
        .await?)
}

/// A schedule by id, locked for the rest of the transaction (a backfill holds it so
/// that no scheduler handles its ticks meanwhile).
pub async fn schedule_lock(conn: &mut PgConnection, id: &str) -> Result<Option<ScheduleRow>> {
    Ok(sqlx::query_as!(
        ScheduleRow,
        "select id, name, workflow, cron, timezone, input, enabled, misfire_policy, max_lateness_ms,
                overlap_policy, source, spec_hash, next_fire_at, last_fired_at, created_at,
                updated_at, priority from schedules where id = $1 for update",
        id
    )
    .fetch_optional(&mut *conn)
    .await?)
}

/// Rewrites an API schedule's settings (all but its name and source). The cursor moves
/// to `p.next_fire_at` only with `move_cursor` (its timing changed, or it was resumed),
/// so an edit of the input alone keeps the ticks already due.
pub async fn schedule_update(
    pool: &PgPool,
    id: &str,
    p: &ScheduleParams<'_>,
    move_cursor: bool,
) -> Result<Option<ScheduleRow>> {
    Ok(sqlx::query_as!(
        ScheduleRow,
        "update schedules
            set workflow = $2, cron = $3, timezone = $4, input = $5, enabled = $6,
                misfire_policy = $7, max_lateness_ms = $8, overlap_policy = $9,
                next_fire_at = case when $10 then $11 else next_fire_at end,
                priority = $12, updated_at = now()
          where id = $1
         returning id, name, workflow, cron, timezone, input, enabled, misfire_policy, max_lateness_ms,
                overlap_policy, source, spec_hash, next_fire_at, last_fired_at, created_at,
                updated_at, priority",
        id,
        p.workflow,
        p.cron,
        p.timezone,
        p.input,
        p.enabled,
        p.misfire_policy,
        p.max_lateness_ms,
        p.overlap_policy,
        move_cursor,
        p.next_fire_at,
        p.priority
    )
    .fetch_optional(pool)
        .await?)
}

/// Removes a schedule and its tick history; the runs it started keep their record.
pub async fn schedule_delete(pool: &PgPool, id: &str) -> Result<bool> {
    let done = sqlx::query!("delete from schedules where id = $1", id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Claims one enabled schedule whose cursor is at or before `now`, locking it for the
/// rest of the transaction; schedules another scheduler holds are skipped, and so are
/// `skip` (ones this pass already failed on).
pub async fn schedule_claim_due(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    skip: &[String],
) -> Result<Option<ScheduleRow>> {
    Ok(sqlx::query_as!(
        ScheduleRow,
        "select id, name, workflow, cron, timezone, input, enabled, misfire_policy, max_lateness_ms,
                overlap_policy, source, spec_hash, next_fire_at, last_fired_at, created_at,
                updated_at, priority from schedules
          where enabled and next_fire_at <= $1 and id <> all($2)
          order by next_fire_at
          limit 1
          for update skip locked",
        now,
        skip
    )
    .fetch_optional(&mut *conn)
    .await?)
}

/// Moves a claimed schedule's cursor; `fired_at` records that a run was started.
pub async fn schedule_advance(
    conn: &mut PgConnection,
    id: &str,
    next_fire_at: Option<DateTime<Utc>>,
    fired_at: Option<DateTime<Utc>>,
) -> Result<()> {
    sqlx::query!(
        "update schedules set next_fire_at = $2, last_fired_at = coalesce($3, last_fired_at)
          where id = $1",
        id,
        next_fire_at,
        fired_at
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records that a manual trigger started a run.
pub async fn schedule_fired(conn: &mut PgConnection, id: &str, at: DateTime<Utc>) -> Result<()> {
    sqlx::query!(
        "update schedules set last_fired_at = $2 where id = $1",
        id,
        at
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The earliest cursor of any enabled schedule: when a scheduler next has work.
pub async fn schedule_next_due(pool: &PgPool) -> Result<Option<DateTime<Utc>>> {
    Ok(
        sqlx::query_scalar!("select min(next_fire_at) from schedules where enabled")
            .fetch_one(pool)
            .await?,
    )
}

/// A new `schedule_ticks` row.
#[derive(Debug, Clone)]
pub struct TickInsertParams<'a> {
    pub schedule_id: &'a str,
    pub tick_at: DateTime<Utc>,
    pub kind: TickKind,
    pub missed: i32,
    pub scheduler: &'a str,
}

/// Claims a tick: inserts its row unless the tick was handled already, and returns the
/// row's id only when this call inserted it. Manual ticks always insert.
pub async fn schedule_tick_insert(
    conn: &mut PgConnection,
    p: &TickInsertParams<'_>,
) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar!(
        "insert into schedule_ticks (schedule_id, tick_at, kind, outcome, missed, scheduler)
         values ($1, $2, $3, 'fired', $4, $5)
         on conflict (schedule_id, tick_at) where kind <> 'manual' do nothing
         returning id",
        p.schedule_id,
        p.tick_at,
        p.kind as TickKind,
        p.missed,
        p.scheduler
    )
    .fetch_optional(&mut *conn)
    .await?)
}

/// Sets what a claimed tick did: `fired` with its run, `skipped_*`, or `failed` with
/// an error.
pub async fn schedule_tick_finish(
    conn: &mut PgConnection,
    tick_id: i64,
    outcome: TickOutcome,
    run_id: Option<&str>,
    error: Option<&str>,
) -> Result<()> {
    sqlx::query!(
        "update schedule_ticks set outcome = $2, run_id = $3, error = $4 where id = $1",
        tick_id,
        outcome as TickOutcome,
        run_id,
        error
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TickRow {
    pub id: i64,
    pub schedule_id: String,
    pub tick_at: DateTime<Utc>,
    pub kind: TickKind,
    pub outcome: TickOutcome,
    pub run_id: Option<String>,
    pub missed: i32,
    pub error: Option<String>,
    pub scheduler: String,
    pub handled_at: DateTime<Utc>,
}

/// A schedule's latest handled ticks, newest first.
pub async fn schedule_ticks_recent(
    pool: &PgPool,
    schedule_id: &str,
    limit: i64,
) -> Result<Vec<TickRow>> {
    Ok(sqlx::query_as!(
        TickRow,
        "select id, schedule_id, tick_at, kind, outcome, run_id, missed, error, scheduler, handled_at
           from schedule_ticks where schedule_id = $1
          order by id desc limit $2",
        schedule_id,
        limit
    )
    .fetch_all(pool)
    .await?)
}

/// Records on a run which schedule and tick started it.
pub async fn run_schedule_link(
    conn: &mut PgConnection,
    run_id: &str,
    schedule_id: &str,
    tick_at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query!(
        "update runs set schedule_id = $2, schedule_tick_at = $3 where id = $1",
        run_id,
        schedule_id,
        tick_at
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The schedule and tick that started a run.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunScheduleRow {
    pub schedule_id: String,
    pub tick_at: DateTime<Utc>,
    /// `None` once the schedule was removed.
    pub name: Option<String>,
    /// `on_time`, `late`, `manual` or `backfill`; `None` once the schedule was removed.
    pub kind: Option<String>,
}

pub async fn run_schedule_get(pool: &PgPool, run_id: &str) -> Result<Option<RunScheduleRow>> {
    // `kind` reads as text (the kind's name), not as `TickKind`.
    Ok(sqlx::query_as!(
        RunScheduleRow,
        r#"select r.schedule_id as "schedule_id!", r.schedule_tick_at as "tick_at!",
                  s.name as "name?", t.kind as "kind?: String"
           from runs r
           left join schedules s on s.id = r.schedule_id
           left join schedule_ticks t on t.run_id = r.id
          where r.id = $1 and r.schedule_id is not null and r.schedule_tick_at is not null"#,
        run_id
    )
    .fetch_optional(pool)
    .await?)
}

/// Ids of a schedule's active runs (in [`RunStatus::ACTIVE`], as the partial index `runs_schedule_active` lists them), oldest first.
pub async fn schedule_active_runs(
    conn: &mut PgConnection,
    schedule_id: &str,
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar!("select id from runs
          where schedule_id = $1 and status in ('queued', 'running', 'waiting', 'sleeping', 'retrying')
          order by created_at, id", schedule_id)
    .fetch_all(&mut *conn)
    .await?)
}

/// What [`schedule_cancel_active_runs`] did to each active run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CancelledRuns {
    /// Queued or parked runs, cancelled at once.
    pub cancelled: Vec<String>,
    /// Runs a worker holds: asked to stop at their next step boundary.
    pub requested: Vec<String>,
}

/// `cancel_previous`: cancels a schedule's active runs. Runs nobody holds (queued,
/// retrying, sleeping, waiting) become `cancelled` with their open steps; running runs
/// get `cancel_requested_at`, which their worker's next fenced write observes.
///
/// The same transitions as an operator's cancel, reached by schedule rather than by id.
pub async fn schedule_cancel_active_runs(
    conn: &mut PgConnection,
    schedule_id: &str,
    by: &str,
) -> Result<CancelledRuns> {
    // The same cancellation operators get (steps, attempts, child runs, events), one run
    // after another in this transaction: in id order, the order every statement that
    // locks several runs takes them in, so that none waits for another in a cycle.
    let active: Vec<String> = sqlx::query_scalar!("select id from runs
          where schedule_id = $1 and status in ('queued', 'waiting', 'sleeping', 'retrying', 'running')
          order by id", schedule_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = CancelledRuns {
        cancelled: Vec::new(),
        requested: Vec::new(),
    };
    for id in active {
        match super::runs::run_cancel(conn, &id, by).await? {
            Some(super::runs::Cancelled::Now) => out.cancelled.push(id),
            Some(super::runs::Cancelled::Requested) => out.requested.push(id),
            _ => {}
        }
    }
    Ok(out)
}

/// Serialises file syncs: schedulers starting together apply the files one at a time.
pub async fn schedule_sync_lock(conn: &mut PgConnection) -> Result<()> {
    sqlx::query!("select pg_advisory_xact_lock(hashtext('cairn.schedules.sync'))")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A schedule by name, locked for the rest of the transaction.
pub async fn schedule_get_for_update(
    conn: &mut PgConnection,
    name: &str,
) -> Result<Option<ScheduleRow>> {
    Ok(sqlx::query_as!(
        ScheduleRow,
        "select id, name, workflow, cron, timezone, input, enabled, misfire_policy, max_lateness_ms,
                overlap_policy, source, spec_hash, next_fire_at, last_fired_at, created_at,
                updated_at, priority from schedules where name = $1 for update",
        name
    )
    .fetch_optional(&mut *conn)
    .await?)
}

/// Rewrites a file schedule from its changed `[[schedules]]` entry. The cursor moves to
/// `p.next_fire_at` only with `move_cursor` (its timing changed, or it was resumed).
pub async fn schedule_file_update(
    conn: &mut PgConnection,
    id: &str,
    p: &ScheduleParams<'_>,
    move_cursor: bool,
) -> Result<()> {
    sqlx::query!(
        "update schedules
            set workflow = $2, cron = $3, timezone = $4, input = $5, enabled = $6,
                misfire_policy = $7, max_lateness_ms = $8, overlap_policy = $9, spec_hash = $10,
                next_fire_at = case when $11 then $12 else next_fire_at end,
                priority = $13, updated_at = now()
          where id = $1",
        id,
        p.workflow,
        p.cron,
        p.timezone,
        p.input,
        p.enabled,
        p.misfire_policy,
        p.max_lateness_ms,
        p.overlap_policy,
        p.spec_hash,
        move_cursor,
        p.next_fire_at,
        p.priority
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Deletes the file schedules whose names are not in `keep`; returns their names.
pub async fn schedule_file_delete_except(
    conn: &mut PgConnection,
    keep: &[String],
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar!(
        "delete from schedules where source = 'file' and name <> all($1) returning name",
        keep
    )
    .fetch_all(&mut *conn)
    .await?)
}
