//! `runs`: one row per workflow run, with its status, lease and wake time.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};

use super::events::event_append;
use super::steps::StepRow;
use super::{Lease, Result, StoreError, lease_fence};
use crate::state::RunStatus;

/// `sqlx::query_as!` into [`RunRow`]s of `$before <every RunRow column> $after` — a
/// `select` or a `returning` — checked when compiling like any query. The column list
/// lives here, once, for the checked statements; [`RUN_COLUMNS`] is its copy for the
/// statements assembled at start-up (the macros take only literal text). Both are read
/// into `RunRow`: this one when compiling, that one by every lease.
macro_rules! query_runs {
    ($before:literal, $after:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            $crate::store::runs::RunRow,
            $before
                + " id, workflow, definition_hash, status, input, output, error,
                    idempotency_key, request_hash, lease_owner, lease_expires_at, wake_at,
                    created_at, started_at, finished_at, updated_at, replay_of,
                    cancel_requested_at, user_id, project_id, parent_run_id, parent_step_id,
                    pinned, concurrency_key, admitted, priority "
                + $after
            $(, $arg)*
        )
    };
}
pub(super) use query_runs;

pub const RUN_COLUMNS: &str = "id, workflow, definition_hash, status, input, output, error, \
     idempotency_key, request_hash, lease_owner, lease_expires_at, wake_at, created_at, \
     started_at, finished_at, updated_at, replay_of, cancel_requested_at, user_id, project_id, \
     parent_run_id, parent_step_id, pinned, concurrency_key, admitted, priority";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub id: String,
    pub workflow: String,
    pub definition_hash: String,
    pub status: RunStatus,
    pub input: Value,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub idempotency_key: Option<String>,
    pub request_hash: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub wake_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub replay_of: Option<String>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub user_id: Option<i64>,
    pub project_id: Option<i64>,
    pub parent_run_id: Option<String>,
    pub parent_step_id: Option<String>,
    /// Never deleted by retention (see [`super::retention`]).
    pub pinned: bool,
    /// The key of its workflow's concurrency limit (see [`super::concurrency`]).
    pub concurrency_key: Option<String>,
    /// Whether it may start: it holds a slot of its key, or has no key.
    pub admitted: bool,
    /// Its head start in the queue, in minutes ([`PRIORITY_MAX`]).
    pub priority: i16,
}

/// The highest priority a run may have: queued as if `PRIORITY_MAX` minutes earlier.
pub const PRIORITY_MAX: i16 = 1000;

/// Who and what a run is for.
#[derive(Debug, Clone, Default)]
pub struct RunOrigin {
    /// The user who asked for it.
    pub user_id: Option<i64>,
    /// The project it is about: it becomes one of the project's analyses.
    pub project_id: Option<i64>,
    /// The run and `workflow` step that started it.
    pub parent: Option<(String, String)>,
    /// Its priority, 0 to [`PRIORITY_MAX`]: its wake-ups due at once are queued as if
    /// that many minutes earlier. Child runs are given their parent's.
    pub priority: i16,
}

pub struct RunInsertParams<'a> {
    pub id: &'a str,
    pub workflow: &'a str,
    pub definition_hash: &'a str,
    pub input: &'a Value,
    pub idempotency_key: Option<&'a str>,
    pub request_hash: &'a str,
    pub step_ids: &'a [String],
    /// The run this one replays.
    pub replay_of: Option<&'a str>,
    pub origin: &'a RunOrigin,
    /// Pin the run (its workflow says `retain = "forever"`). A child run of a pinned
    /// parent is pinned whatever this says.
    pub pinned: bool,
    /// Its concurrency key and limit: the run is inserted waiting for a slot, and
    /// must be admitted ([`super::concurrency::concurrency_admit`]) to start.
    pub concurrency: Option<(&'a str, i32)>,
}

pub enum RunInserted {
    Created(RunRow),
    /// The idempotency key was already used: the run it created.
    Existing(RunRow),
}

/// Inserts a queued run and its pending steps, unless its idempotency key exists.
pub async fn run_insert(conn: &mut PgConnection, p: RunInsertParams<'_>) -> Result<RunInserted> {
    let pinned = p.pinned || parent_pinned(conn, p.origin).await?;
    let created = query_runs!(
        "insert into runs (id, workflow, definition_hash, input, idempotency_key, request_hash, replay_of,
                           user_id, project_id, parent_run_id, parent_step_id, pinned,
                           concurrency_key, concurrency_limit, concurrency_seq, admitted,
                           priority)
         select $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                case when $13::text is not null then nextval('runs_concurrency_seq') end,
                $13::text is null, $15
          where exists (select from workflow_definitions where hash = $3)
         on conflict (idempotency_key) where idempotency_key is not null do nothing
         returning",
        "",
        p.id,
        p.workflow,
        p.definition_hash,
        p.input,
        p.idempotency_key,
        p.request_hash,
        p.replay_of,
        p.origin.user_id,
        p.origin.project_id,
        p.origin.parent.as_ref().map(|p| p.0.as_str()),
        p.origin.parent.as_ref().map(|p| p.1.as_str()),
        pinned,
        p.concurrency.map(|c| c.0),
        p.concurrency.map(|c| c.1),
        p.origin.priority
    )
        .fetch_optional(&mut *conn)
        .await?;
    let Some(run) = created else {
        if !definition_stored(conn, p.definition_hash).await? {
            return Err(StoreError::DefinitionMissing(p.definition_hash.to_owned()));
        }
        let existing = query_runs!(
            "select",
            "from runs where idempotency_key = $1",
            p.idempotency_key
        )
        .fetch_one(&mut *conn)
        .await?;
        return Ok(RunInserted::Existing(existing));
    };
    sqlx::query!(
        "insert into steps (run_id, step_id) select $1, unnest($2::text[])",
        p.id,
        p.step_ids
    )
    .execute(&mut *conn)
    .await?;
    event_append(
        conn,
        p.id,
        "run_queued",
        None,
        json!({ "workflow": p.workflow, "definition": p.definition_hash, "replayOf": p.replay_of }),
    )
    .await?;
    Ok(RunInserted::Created(run))
}

/// Whether the run that starts runs of `origin` is pinned: its child runs are pinned
/// too. Read only for child runs, by key.
async fn parent_pinned(conn: &mut PgConnection, origin: &RunOrigin) -> Result<bool> {
    let Some((parent, _)) = &origin.parent else {
        return Ok(false);
    };
    Ok(
        sqlx::query_scalar!("select pinned from runs where id = $1", parent)
            .fetch_optional(conn)
            .await?
            .unwrap_or(false),
    )
}

/// Whether definition `hash` is stored. (Runs have no foreign key to it: the statements
/// inserting them check it once, not once per run; see migration 0009.)
async fn definition_stored(conn: &mut PgConnection, hash: &str) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"select exists (select from workflow_definitions where hash = $1) as "stored!""#,
        hash
    )
    .fetch_one(conn)
    .await?)
}

pub async fn run_get(pool: &PgPool, id: &str) -> Result<Option<RunRow>> {
    Ok(query_runs!("select", "from runs where id = $1", id)
        .fetch_optional(pool)
        .await?)
}

/// Filters for [`run_list`]; results are newest first.
#[derive(Debug, Clone, Default)]
pub struct RunListParams {
    pub status: Option<RunStatus>,
    pub workflow: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    /// Text found (case-insensitively) in the id, workflow or error.
    pub text: Option<String>,
    /// Keyset cursor: the (created_at, id) of the last row of the previous page.
    pub before: Option<(DateTime<Utc>, String)>,
    pub limit: i64,
}

pub async fn run_list(pool: &PgPool, p: &RunListParams) -> Result<Vec<RunRow>> {
    let (before_at, before_id) = match &p.before {
        Some((at, id)) => (Some(*at), Some(id.as_str())),
        None => (None, None),
    };
    Ok(query_runs!(
        "select",
        "from runs
          where ($1::text is null or status = $1)
            and ($2::text is null or workflow = $2)
            and ($3::timestamptz is null or created_at >= $3)
            and ($4::timestamptz is null or (created_at, id) < ($4, $5))
            and ($7::text is null or strpos(lower(id || ' ' || workflow || ' ' || coalesce(error, '')), lower($7)) > 0)
          order by created_at desc, id desc
          limit $6",
        p.status as Option<RunStatus>,
        p.workflow.as_deref(),
        p.created_after,
        before_at,
        before_id,
        p.limit,
        p.text.as_deref()
    )
    .fetch_all(pool)
    .await?)
}

/// A freshly acquired lease and what the run looked like.
#[derive(Debug, Clone)]
pub struct Acquired {
    pub run: RunRow,
    /// The run's steps as the new owner finds them (attempts a previous owner left
    /// running are abandoned, their steps pending again).
    pub steps: Vec<StepRow>,
    pub lease: Lease,
    /// The database clock when the lease was taken.
    pub db_now: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
pub(super) struct AcquireRow {
    #[sqlx(flatten)]
    run: RunRow,
    steps: sqlx::types::Json<Vec<StepRow>>,
    lease_token: i64,
    db_now: DateTime<Utc>,
}

impl AcquireRow {
    pub(super) fn into_acquired(self, owner: &str, ttl: std::time::Duration) -> Acquired {
        Acquired {
            lease: Lease {
                run_id: self.run.id.clone(),
                owner: owner.to_owned(),
                token: self.lease_token,
                ttl,
            },
            run: self.run,
            steps: self.steps.0,
            db_now: self.db_now,
        }
    }
}

/// The statement that leases the runs named by the CTE `wanted` (column `run_id`,
/// duplicates allowed) to owner `$2` for `$3` seconds: those not finished and not
/// leased by a live worker. Attempts that a previous owner left running are marked
/// abandoned (their steps are pending again), and every change gets its event — one
/// statement for any number of runs, which also returns each run's steps as they are
/// after it (`steps`, the rows of [`super::steps::step_list`] as JSON). Rows are locked
/// in id order, so two callers leasing overlapping sets wait for each other instead of
/// deadlocking. Callers build it once.
pub(super) fn lease_statement(wanted: &str) -> String {
    let cols = RUN_COLUMNS
        .split(", ")
        .map(|c| format!("r.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "with wanted as ({wanted}),
         old as (select id, status, lease_owner, lease_expires_at, admitted from runs
                  where id = any (array(select run_id from wanted))
                  order by id
                    for update),
         -- Decided on `old`, the rows as they are once locked, never on this statement's
         -- snapshot: a run that was being parked when the statement began is running
         -- in the snapshot and waiting once its park commits, and its wake-up, deleted
         -- above, must lease it.
         eligible as materialized (
               select id, status, lease_owner from old
                where admitted  -- a run waiting for a concurrency slot is not taken
                  and (status in ('queued', 'retrying', 'sleeping', 'waiting')
                       or (status = 'running' and lease_expires_at <= clock_timestamp()))),
         -- Every write finds its rows by key alone (`= any (array(...))`, the only index
         -- condition it has), filtered by a hashed subplan at most, and joins nothing: with a join, the planner may read the
         -- table on either side, and one side is a whole read of the table, the other
         -- a lookup of the whole key array for each row.
         r as (update runs r
                  set status = 'running', lease_owner = $2, lease_token = r.lease_token + 1,
                      lease_expires_at = clock_timestamp() + make_interval(secs => $3),
                      started_at = coalesce(r.started_at, now()), wake_at = null
                where r.id = any (array(select id from eligible))
               returning {cols}, r.lease_token,
                         (select e.status from eligible e where e.id = r.id) as previous_status,
                         (select e.lease_owner from eligible e where e.id = r.id) as previous_owner,
                         now() as db_now),
         abandoned as (
               update step_attempts a
                  set status = 'abandoned', finished_at = clock_timestamp(),
                      error = 'abandoned: worker ' || a.worker_id || ' stopped before the attempt finished'
                where a.run_id = any (array(select id from r)) and a.status = 'running'
                  and ((a.run_id, a.step_id) in (
                          select s.run_id, s.step_id from steps s
                           where s.run_id = any (array(select id from r)) and s.status = 'running'))
                      is true
               returning a.run_id, a.step_id, a.attempt),
         pending as (update steps set status = 'pending'
                      where run_id = any (array(select id from r)) and status = 'running'),
         events as (
               insert into run_events (run_id, kind, step_id, data)
               select run_id, kind, step_id, data from (
                   select run_id, 1 as ord, 'step_abandoned' as kind, step_id,
                          jsonb_build_object('attempt', attempt) as data
                     from abandoned
                   union all
                   select id, 2, 'run_running', null,
                          jsonb_build_object('worker', $2::text, 'from', previous_status,
                                             'previousWorker', previous_owner)
                     from r) as e
                order by run_id, ord, step_id)
         select r.*,
                (select coalesce(jsonb_agg(to_jsonb(st)), '[]'::jsonb) from (
                     select s.run_id, s.step_id,
                            case when s.status = 'running' then 'pending' else s.status end
                                as status,
                            s.attempts, s.attempt_floor, s.output, s.error, s.next_attempt_at,
                            s.wake_at, s.started_at, s.finished_at, s.child_run_id,
                            c.status as child_status, c.output as child_output,
                            c.error as child_error, s.map_total, s.map_done, s.map_failed,
                            s.map_running, {map_news} as map_news
                       from steps s
                            -- `limit 1` keeps this a lookup by key for each step,
                            -- never flattened into a join the planner may order badly.
                            left join lateral (select c.status, c.output, c.error from runs c
                                                where c.id = s.child_run_id limit 1) c on true
                      where s.run_id = r.id) st) as steps
           from r",
        map_news = super::steps::map_news!(),
    )
}

/// The statement of [`run_lease_acquire`].
pub(super) static ACQUIRE: LazyLock<String> =
    LazyLock::new(|| lease_statement("select $1::text as run_id"));

/// Takes the lease on a run that is not finished and not leased by a live worker (see
/// [`lease_statement`]).
pub async fn run_lease_acquire(
    pool: &PgPool,
    run_id: &str,
    owner: &str,
    ttl: std::time::Duration,
) -> Result<Option<Acquired>> {
    // Assembled at start-up by `lease_statement`, shared with the fetch: not checked.
    let row: Option<AcquireRow> = sqlx::query_as(sqlx::AssertSqlSafe(ACQUIRE.as_str()))
        .bind(run_id)
        .bind(owner)
        .bind(ttl.as_secs_f64())
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|row| row.into_acquired(owner, ttl)))
}

/// Parks a run until `wake_at` (status `retrying`, `sleeping` or `waiting`), giving up
/// the lease. The caller enqueues the wake-up in the same transaction.
pub async fn run_park(
    conn: &mut PgConnection,
    lease: &Lease,
    status: RunStatus,
    wake_at: DateTime<Utc>,
) -> Result<()> {
    lease_fence(conn, lease).await?;
    sqlx::query!(
        "update runs set status = $2, wake_at = $3, lease_owner = null, lease_expires_at = null
          where id = $1",
        &lease.run_id,
        status as RunStatus,
        wake_at
    )
    .execute(&mut *conn)
    .await?;
    event_append(
        conn,
        &lease.run_id,
        &format!("run_{status}"),
        None,
        json!({ "wakeAt": wake_at }),
    )
    .await
}

/// Gives a run back to the queue (graceful shutdown); the caller enqueues it again.
pub async fn run_release(conn: &mut PgConnection, lease: &Lease, reason: &str) -> Result<()> {
    lease_fence(conn, lease).await?;
    sqlx::query!(
        "update runs set status = 'queued', lease_owner = null, lease_expires_at = null where id = $1",
        &lease.run_id
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "update step_attempts set status = 'abandoned', finished_at = clock_timestamp(), error = $2
          where run_id = $1 and status = 'running'
            and step_id in (select step_id from steps where run_id = $1 and status = 'running')",
        &lease.run_id,
        format!("abandoned: {reason}")
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "update steps set status = 'pending' where run_id = $1 and status = 'running'",
        &lease.run_id
    )
    .execute(&mut *conn)
    .await?;
    event_append(
        conn,
        &lease.run_id,
        "run_released",
        None,
        json!({ "worker": lease.owner, "reason": reason }),
    )
    .await
}

/// The statement of [`run_release_held`]. Runs are locked in id order, as the heartbeat
/// (still beating) locks the same runs.
#[cfg(test)] // Read by the plan test (`plans.rs`); the statement runs from the file.
pub(super) const RELEASE_HELD: &str = include_str!("sql/release_held.sql");

/// Hands back every run `owner` still leases, as [`run_release`] does one: a worker
/// calls it once its consumer has stopped and no handler is left, for runs it claimed
/// but never started. Returns their ids; the caller queues their wake-ups in the same
/// transaction.
pub async fn run_release_held(
    conn: &mut PgConnection,
    owner: &str,
    reason: &str,
) -> Result<Vec<String>> {
    Ok(
        sqlx::query_file_scalar!("src/store/sql/release_held.sql", owner, reason)
            .fetch_all(&mut *conn)
            .await?,
    )
}

pub async fn run_succeed(conn: &mut PgConnection, lease: &Lease, output: &Value) -> Result<()> {
    lease_fence(conn, lease).await?;
    sqlx::query!(
        "update runs set status = 'succeeded', output = $2, finished_at = clock_timestamp(),
                lease_owner = null, lease_expires_at = null
          where id = $1",
        &lease.run_id,
        output
    )
    .execute(&mut *conn)
    .await?;
    event_append(conn, &lease.run_id, "run_succeeded", None, json!({})).await
}

/// Marks the run dead and parks it in `dead_letters` with every attempt of the failed
/// step.
pub async fn run_dead(
    conn: &mut PgConnection,
    lease: &Lease,
    step_id: &str,
    error: &str,
) -> Result<()> {
    lease_fence(conn, lease).await?;
    sqlx::query!(
        "update runs set status = 'dead', error = $2, finished_at = clock_timestamp(),
                lease_owner = null, lease_expires_at = null
          where id = $1",
        &lease.run_id,
        format!("step {step_id}: {error}")
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "insert into dead_letters (run_id, workflow, step_id, error, attempts, input)
         select r.id, r.workflow, $2, $3,
                coalesce((select jsonb_agg(jsonb_build_object(
                              'attempt', a.attempt, 'status', a.status, 'worker', a.worker_id,
                              'startedAt', a.started_at, 'finishedAt', a.finished_at,
                              'error', a.error, 'retryDelayMs', a.retry_delay_ms)
                              order by a.attempt)
                            from step_attempts a where a.run_id = r.id and a.step_id = $2),
                         '[]'::jsonb),
                r.input
           from runs r where r.id = $1",
        &lease.run_id,
        step_id,
        error
    )
    .execute(&mut *conn)
    .await?;
    event_append(
        conn,
        &lease.run_id,
        "run_dead",
        Some(step_id),
        json!({ "error": error }),
    )
    .await
}

/// The statement of [`runs_rescue_expired`].
#[cfg(test)] // Read by the plan test (`plans.rs`); the statement runs from the file.
pub(super) const RESCUE: &str = include_str!("sql/rescue.sql");

/// Requeues runs whose lease expired (their worker died or stalled); returns their ids
/// so the caller can enqueue them in the same transaction.
pub async fn runs_rescue_expired(conn: &mut PgConnection, limit: i64) -> Result<Vec<String>> {
    let rescued: Vec<(String, Option<String>)> =
        sqlx::query_file!("src/store/sql/rescue.sql", limit)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|row| (row.id, row.lease_owner))
            .collect();
    for (id, owner) in &rescued {
        event_append(
            conn,
            id,
            "lease_expired",
            None,
            json!({ "previousWorker": owner }),
        )
        .await?;
    }
    Ok(rescued.into_iter().map(|(id, _)| id).collect())
}

/// Filters for [`run_ids_matching`] (bulk operations).
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub status: Option<RunStatus>,
    pub workflow: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
}

/// Ids of runs matching `f`, oldest first, at most `limit`.
pub async fn run_ids_matching(pool: &PgPool, f: &RunFilter, limit: i64) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar!(
        "select id from runs
          where ($1::text is null or status = $1)
            and ($2::text is null or workflow = $2)
            and ($3::timestamptz is null or created_at >= $3)
            and ($4::timestamptz is null or created_at < $4)
          order by created_at, id
          limit $5",
        f.status as Option<RunStatus>,
        f.workflow.as_deref(),
        f.created_after,
        f.created_before,
        limit
    )
    .fetch_all(pool)
    .await?)
}

/// Puts a dead or cancelled run back in the queue at its failed steps: they get a fresh
/// attempt budget, checkpoints stay, its dead letters are cleared. `None` when the run
/// is not dead or cancelled. The caller enqueues the wake-up.
pub async fn run_retry(conn: &mut PgConnection, run_id: &str, by: &str) -> Result<Option<RunRow>> {
    let run = query_runs!(
        "update runs set status = 'queued', error = null, finished_at = null, wake_at = null,
                cancel_requested_at = null,
                -- A keyed run waits for a slot again, behind those already waiting.
                admitted = concurrency_key is null,
                concurrency_seq = case when concurrency_key is not null
                                       then nextval('runs_concurrency_seq') end
          where id = $1 and status in ('dead', 'cancelled')
         returning",
        "",
        run_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(run) = run else {
        return Ok(None);
    };
    let reset: Vec<String> = sqlx::query_scalar!(
        "update steps set status = 'pending', attempt_floor = attempts, error = null,
                finished_at = null, next_attempt_at = null, wake_at = null
          where run_id = $1 and status in ('failed', 'cancelled', 'running', 'retry_scheduled', 'waiting')
         returning step_id",
        run_id
    )
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query!("delete from dead_letters where run_id = $1", run_id)
        .execute(&mut *conn)
        .await?;
    event_append(
        conn,
        run_id,
        "run_retried",
        None,
        json!({ "by": by, "steps": reset }),
    )
    .await?;
    Ok(Some(run))
}

/// What [`run_cancel`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancelled {
    /// The run was not running: it is cancelled now.
    Now,
    /// A worker is running it: it stops at the next step boundary.
    Requested,
    /// It had already finished, with this status.
    AlreadyFinished(RunStatus),
}

/// Cancels a run: at once unless a worker holds it, else at its next step boundary.
/// `None` when there is no such run.
pub async fn run_cancel(
    conn: &mut PgConnection,
    run_id: &str,
    by: &str,
) -> Result<Option<Cancelled>> {
    run_stop(conn, run_id, by, Stop::Cancel).await
}

/// How an operator stops a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A running run stops at its next step boundary.
    Cancel,
    /// A running run's steps are stopped at once: its worker is told on
    /// [`TERMINATE_CHANNEL`] (and finds it at its next heartbeat,
    /// [`runs_terminating`]); their attempts are recorded `terminated`.
    Terminate,
}

/// Where the worker advancing a run learns that an operator terminated it: the payload
/// is the run's id.
pub const TERMINATE_CHANNEL: &str = "cairn_terminate";

/// [`run_cancel`], stopping a running run's steps at once; its child runs are
/// terminated too.
pub async fn run_terminate(
    conn: &mut PgConnection,
    run_id: &str,
    by: &str,
) -> Result<Option<Cancelled>> {
    run_stop(conn, run_id, by, Stop::Terminate).await
}

fn run_stop<'a>(
    conn: &'a mut PgConnection,
    run_id: &'a str,
    by: &'a str,
    how: Stop,
) -> futures::future::BoxFuture<'a, Result<Option<Cancelled>>> {
    Box::pin(run_stop_inner(conn, run_id, by, how))
}

async fn run_stop_inner(
    conn: &mut PgConnection,
    run_id: &str,
    by: &str,
    how: Stop,
) -> Result<Option<Cancelled>> {
    let status = sqlx::query_scalar!(
        r#"select status as "status: RunStatus" from runs where id = $1 for update"#,
        run_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(status) = status else {
        return Ok(None);
    };
    match status {
        RunStatus::Queued | RunStatus::Retrying | RunStatus::Sleeping | RunStatus::Waiting => {
            sqlx::query!(
                "update runs set status = 'cancelled', finished_at = clock_timestamp(), wake_at = null,
                        cancel_requested_at = coalesce(cancel_requested_at, now())
                  where id = $1",
                run_id
            )
            .execute(&mut *conn)
            .await?;
            cancel_steps(conn, run_id).await?;
            event_append(conn, run_id, "run_cancelled", None, json!({ "by": by })).await?;
            cancel_children(conn, run_id, by, how).await?;
            Ok(Some(Cancelled::Now))
        }
        RunStatus::Running if how == Stop::Terminate => {
            sqlx::query!(
                "update runs set cancel_requested_at = coalesce(cancel_requested_at, now()),
                        terminate_requested_at = coalesce(terminate_requested_at, now())
                  where id = $1",
                run_id
            )
            .execute(&mut *conn)
            .await?;
            event_append(
                conn,
                run_id,
                "run_terminate_requested",
                None,
                json!({ "by": by }),
            )
            .await?;
            // Sent when the transaction commits: the worker finds the request written.
            sqlx::query!("select pg_notify($1, $2)", TERMINATE_CHANNEL, run_id)
                .execute(&mut *conn)
                .await?;
            cancel_children(conn, run_id, by, how).await?;
            Ok(Some(Cancelled::Requested))
        }
        RunStatus::Running => {
            sqlx::query!(
                "update runs set cancel_requested_at = coalesce(cancel_requested_at, now()) where id = $1",
                run_id
            )
            .execute(&mut *conn)
            .await?;
            event_append(
                conn,
                run_id,
                "run_cancel_requested",
                None,
                json!({ "by": by }),
            )
            .await?;
            cancel_children(conn, run_id, by, how).await?;
            Ok(Some(Cancelled::Requested))
        }
        finished @ (RunStatus::Succeeded | RunStatus::Dead | RunStatus::Cancelled) => {
            Ok(Some(Cancelled::AlreadyFinished(finished)))
        }
    }
}

/// Cancelling (terminating) a run cancels (terminates) the child runs its `workflow`
/// steps started.
fn cancel_children<'a>(
    conn: &'a mut PgConnection,
    run_id: &'a str,
    by: &'a str,
    how: Stop,
) -> futures::future::BoxFuture<'a, Result<()>> {
    Box::pin(async move {
        // In id order, as every statement that locks several runs takes them.
        let children = sqlx::query_scalar!(
            "select id from runs where parent_run_id = $1 and status not in ('succeeded', 'dead', 'cancelled')
              order by id",
            run_id
        )
        .fetch_all(&mut *conn)
        .await?;
        for child in children {
            let by = format!("{by} (parent {run_id} cancelled)");
            run_stop(conn, &child, &by, how).await?;
        }
        Ok(())
    })
}

/// Closes a cancelled run's steps: attempts still running are `terminated` when an
/// operator terminated the run (each with a `step_terminated` event), `abandoned`
/// otherwise; unfinished steps are `cancelled`.
async fn cancel_steps(conn: &mut PgConnection, run_id: &str) -> Result<()> {
    sqlx::query!(
        "with run as (select terminate_requested_at is not null as terminated from runs where id = $1),
              closed as (
                update step_attempts
                   set status = case when (select terminated from run) then 'terminated' else 'abandoned' end,
                       finished_at = clock_timestamp(),
                       error = case when (select terminated from run)
                                    then 'terminated: an operator stopped the run'
                                    else 'abandoned: the run was cancelled' end
                 where run_id = $1 and status = 'running'
                returning step_id, attempt, status)
         insert into run_events (run_id, kind, step_id, data)
         select $1, 'step_terminated', step_id, jsonb_build_object('attempt', attempt)
           from closed where status = 'terminated'
          order by step_id",
        run_id
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "update steps set status = 'cancelled', finished_at = clock_timestamp(), next_attempt_at = null
          where run_id = $1 and status in ('pending', 'running', 'retry_scheduled', 'waiting')",
        run_id
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Completes a cancellation the lease holder observed: the run becomes `cancelled` and
/// nothing of it runs again.
pub async fn run_cancel_finish(conn: &mut PgConnection, lease: &Lease) -> Result<()> {
    let done = sqlx::query!(
        "update runs set status = 'cancelled', finished_at = clock_timestamp(),
                lease_owner = null, lease_expires_at = null
          where id = $1 and lease_token = $2 and status = 'running'",
        lease.run_id,
        lease.token
    )
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() != 1 {
        return Err(super::StoreError::LeaseLost(lease.run_id.clone()));
    }
    cancel_steps(conn, &lease.run_id).await?;
    event_append(
        conn,
        &lease.run_id,
        "run_cancelled",
        None,
        json!({ "worker": lease.owner }),
    )
    .await?;
    cancel_children(conn, &lease.run_id, &lease.owner, Stop::Cancel).await
}

/// Those of `ids` an operator asked to terminate: a worker's check, at each heartbeat,
/// for a request whose notification it missed.
pub async fn runs_terminating(pool: &sqlx::PgPool, ids: &[String]) -> Result<Vec<String>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar!(
        "select id from runs where id = any($1) and terminate_requested_at is not null",
        ids
    )
    .fetch_all(pool)
    .await?)
}

/// Makes the given steps of a new run into copies of another run's checkpoints.
pub async fn steps_copy_checkpoints(
    conn: &mut PgConnection,
    from_run: &str,
    to_run: &str,
    step_ids: &[String],
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar!(
        "update steps t set status = o.status, output = o.output, started_at = o.started_at,
                finished_at = o.finished_at
           from steps o
          where o.run_id = $1 and t.run_id = $2 and t.step_id = o.step_id
            and o.step_id = any($3) and o.status in ('succeeded', 'skipped')
         returning t.step_id",
        from_run,
        to_run,
        step_ids
    )
    .fetch_all(conn)
    .await?)
}

/// The run whose `workflow` step started this one.
pub async fn run_get_parent(conn: &mut PgConnection, run_id: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar!("select parent_run_id from runs where id = $1", run_id)
            .fetch_optional(conn)
            .await?
            .flatten(),
    )
}

/// [`run_insert_many`]'s statement, with `more` (further CTEs) after its own. It returns
/// the inserted runs' ids, or a single null when definition `$6` is not stored (and
/// inserts nothing then).
fn insert_statement(more: &str) -> String {
    format!(
        "with new as (
             insert into runs (id, workflow, definition_hash, input, idempotency_key,
                               request_hash, user_id, project_id, parent_run_id, parent_step_id,
                               pinned, concurrency_key, concurrency_limit, concurrency_seq,
                               admitted, priority)
             select r.id, $5, $6, r.input, r.idempotency_key, r.request_hash, $7, $8, $9, $10,
                    $15, r.concurrency_key,
                    case when r.concurrency_key is not null then $17::integer end,
                    case when r.concurrency_key is not null
                         then nextval('runs_concurrency_seq') end,
                    r.concurrency_key is null, $18
               from unnest($1::text[], $2::jsonb[], $3::text[], $4::text[], $16::text[])
                       with ordinality
                    as r (id, input, idempotency_key, request_hash, concurrency_key, ord)
              where exists (select from workflow_definitions where hash = $6)
              order by r.ord
             on conflict (idempotency_key) where idempotency_key is not null do nothing
             returning id, concurrency_key
         ), new_steps as (
             insert into steps (run_id, step_id)
             select new.id, s.step_id from new cross join unnest($11::text[]) as s (step_id)
         ), new_events as (
             insert into run_events (run_id, kind, data)
             select new.id, 'run_queued', $12 from new
         ){more}
         select id from new
         union all
         select null where not exists (select from workflow_definitions where hash = $6)"
    )
}

/// The columns of [`run_insert_many`]: one entry per run in each slice, all of the
/// same length, plus what the runs share.
#[derive(Clone, Copy)]
pub struct RunInsertManyParams<'a> {
    pub workflow: &'a str,
    pub definition_hash: &'a str,
    /// Every run gets one pending `steps` row per id.
    pub step_ids: &'a [&'a str],
    pub origin: &'a RunOrigin,
    pub ids: &'a [&'a str],
    pub inputs: &'a [&'a Value],
    /// No two equal keys in one call (the caller resolves repeats first).
    pub idempotency_keys: &'a [Option<&'a str>],
    pub request_hashes: &'a [&'a str],
    /// When given, each created run's wake-up is queued by the same statement.
    pub wakes: Option<NewWakes<'a>>,
    /// Pin the runs (their workflow says `retain = "forever"`); children of a pinned
    /// parent are pinned whatever this says.
    pub pinned: bool,
    /// Each run's concurrency key, when its workflow has a limit (empty otherwise):
    /// a keyed run gets no wake-up here, it waits to be admitted
    /// ([`super::concurrency::concurrency_admit`]).
    pub concurrency_keys: &'a [Option<&'a str>],
    /// The workflow's concurrency limit, for the keyed runs.
    pub concurrency_limit: Option<i32>,
}

/// Wake-ups [`run_insert_many`] queues with the runs it creates: an apalis job of
/// `queue` each, due now, whose payload is `{"run_id": …}` (what `queue::enqueue`
/// writes and the fetch reads), with the id at the run's index in `job_ids`.
#[derive(Clone, Copy)]
pub struct NewWakes<'a> {
    pub queue: &'a str,
    pub job_ids: &'a [&'a str],
}

/// What [`run_insert_many`] did.
#[derive(Debug, Default)]
pub struct RunsInserted {
    /// The ids of the runs it inserted.
    pub created: Vec<String>,
    /// For each idempotency key that was already used: the run it created.
    pub existing: Vec<RunRow>,
}

/// The statement of [`run_insert_many`]: one statement, hence one round trip and,
/// outside a transaction, its own commit.
pub(super) static INSERT_MANY: LazyLock<String> = LazyLock::new(|| {
    insert_statement(
        ", new_jobs as (
         insert into apalis.jobs (id, job_type, job, metadata, run_at)
         select w.job_id, $13, convert_to(json_build_object('run_id', new.id)::text, 'utf8'),
                ''::hstore, now() - make_interval(mins => $18::smallint)
           from new join unnest($1::text[], $14::text[]) as w (run_id, job_id)
                on w.run_id = new.id
          where $13::text is not null and new.concurrency_key is null
     )",
    )
});

/// Inserts many queued runs of one workflow with their pending steps and `run_queued`
/// events, skipping those whose idempotency key exists (returned in `existing`).
///
/// Runs, steps and events go in one statement, a row set per table built from arrays
/// (`unnest`), so a thousand runs cost one round trip rather than three thousand. The
/// runs that exist already are read by a second statement, and only when some key was
/// taken: a row another transaction committed while ours waited on its key is not
/// visible to the statement that waited.
pub async fn run_insert_many(
    conn: &mut PgConnection,
    p: RunInsertManyParams<'_>,
) -> Result<RunsInserted> {
    let n = p.ids.len();
    if p.inputs.len() != n || p.idempotency_keys.len() != n || p.request_hashes.len() != n {
        return Err(super::StoreError::Invalid(format!(
            "run_insert_many: {n} ids, {} inputs, {} keys, {} request hashes",
            p.inputs.len(),
            p.idempotency_keys.len(),
            p.request_hashes.len()
        )));
    }
    if n == 0 {
        return Ok(RunsInserted::default());
    }
    if p.wakes.is_some_and(|w| w.job_ids.len() != n) {
        return Err(super::StoreError::Invalid(format!(
            "run_insert_many: {n} ids, but job ids of another length"
        )));
    }
    // Assembled at start-up by `insert_statement` (macros take only literal text).
    let created: Vec<Option<String>> = sqlx::query_scalar(sqlx::AssertSqlSafe(
        INSERT_MANY.as_str(),
    ))
    .bind(p.ids)
    .bind(p.inputs)
    .bind(p.idempotency_keys)
    .bind(p.request_hashes)
    .bind(p.workflow)
    .bind(p.definition_hash)
    .bind(p.origin.user_id)
    .bind(p.origin.project_id)
    .bind(p.origin.parent.as_ref().map(|p| p.0.as_str()))
    .bind(p.origin.parent.as_ref().map(|p| p.1.as_str()))
    .bind(p.step_ids)
    .bind(json!({ "workflow": p.workflow, "definition": p.definition_hash, "replayOf": null }))
    .bind(p.wakes.map(|w| w.queue))
    .bind(p.wakes.map(|w| w.job_ids))
    .bind(p.pinned || parent_pinned(conn, p.origin).await?)
    .bind(p.concurrency_keys)
    .bind(p.concurrency_limit)
    .bind(p.origin.priority)
    .fetch_all(&mut *conn)
    .await?;
    // A null id: the definition is not stored, and nothing was inserted.
    let Some(created) = created.into_iter().collect::<Option<Vec<String>>>() else {
        return Err(StoreError::DefinitionMissing(p.definition_hash.to_owned()));
    };
    let mut existing = Vec::new();
    let keyed = p.idempotency_keys.iter().filter(|k| k.is_some()).count();
    if created.len() < n && keyed > 0 {
        let created_ids: std::collections::HashSet<&str> =
            created.iter().map(String::as_str).collect();
        let taken: Vec<&str> = p
            .ids
            .iter()
            .zip(p.idempotency_keys)
            .filter(|(id, _)| !created_ids.contains(**id))
            .filter_map(|(_, key)| *key)
            .collect();
        existing = query_runs!(
            "select",
            "from runs where idempotency_key = any($1)",
            &taken as &[&str]
        )
        .fetch_all(&mut *conn)
        .await?;
    }
    Ok(RunsInserted { created, existing })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params<'a>(
        ids: &'a [&'a str],
        inputs: &'a [&'a Value],
        keys: &'a [Option<&'a str>],
        hashes: &'a [&'a str],
        origin: &'a RunOrigin,
        definition_hash: &'a str,
    ) -> RunInsertManyParams<'a> {
        RunInsertManyParams {
            workflow: "w",
            definition_hash,
            step_ids: &[],
            origin,
            ids,
            inputs,
            idempotency_keys: keys,
            request_hashes: hashes,
            wakes: None,
            pinned: false,
            concurrency_keys: &[],
            concurrency_limit: None,
        }
    }

    /// Runs have no foreign keys (migration 0009): inserting runs of a definition that
    /// is not stored inserts nothing and says so, one run or many; deleting a user, a
    /// project or a run makes the runs that named them forget them.
    #[sqlx::test(migrations = false)]
    async fn runs_check_their_references_once_and_forget_deleted_ones(pool: PgPool) {
        crate::queue::migrate(&pool).await.expect("migrate");
        let mut conn = pool.acquire().await.expect("connection");
        let input = json!({});
        let origin = RunOrigin::default();
        let inputs = [&input];
        let many = run_insert_many(
            &mut conn,
            params(&["r0"], &inputs, &[None], &["h"], &origin, "nope"),
        )
        .await;
        assert!(
            matches!(many, Err(StoreError::DefinitionMissing(ref h)) if h == "nope"),
            "{many:?}"
        );
        let one = run_insert(
            &mut conn,
            RunInsertParams {
                id: "r1",
                workflow: "w",
                definition_hash: "nope",
                input: &input,
                idempotency_key: Some("k"),
                request_hash: "h",
                step_ids: &[],
                replay_of: None,
                origin: &origin,
                pinned: false,
                concurrency: None,
            },
        )
        .await;
        assert!(
            matches!(one, Err(StoreError::DefinitionMissing(_))),
            "{:?}",
            one.err()
        );
        let runs: i64 = sqlx::query_scalar("select count(*) from runs")
            .fetch_one(&pool)
            .await
            .expect("count");
        assert_eq!(runs, 0, "nothing was inserted");

        // With the definition stored: a parent, and a child naming a user, a project,
        // the parent and (as a replay) the parent.
        crate::store::definitions::definition_upsert(&mut conn, "d", "w", &json!({}), "")
            .await
            .expect("store the definition");
        let user = crate::store::users::user_create(&pool, "a@example.com", "A", "x", "admin")
            .await
            .expect("user");
        let project = crate::store::projects::project_create(&pool, "p", "", None)
            .await
            .expect("project");
        let created = run_insert_many(
            &mut conn,
            params(&["parent"], &inputs, &[None], &["h"], &origin, "d"),
        )
        .await
        .expect("parent");
        assert_eq!(created.created, ["parent"]);
        let child_origin = RunOrigin {
            user_id: Some(user.id),
            project_id: Some(project.id),
            parent: Some(("parent".into(), "s".into())),
            priority: 0,
        };
        let child = run_insert(
            &mut conn,
            RunInsertParams {
                id: "child",
                workflow: "w",
                definition_hash: "d",
                input: &input,
                idempotency_key: None,
                request_hash: "h",
                step_ids: &["s".to_owned()],
                replay_of: Some("parent"),
                origin: &child_origin,
                pinned: false,
                concurrency: None,
            },
        )
        .await
        .expect("child");
        assert!(matches!(child, RunInserted::Created(_)));
        sqlx::query("update steps set child_run_id = 'parent' where run_id = 'child'")
            .execute(&pool)
            .await
            .expect("point a step at the parent");

        let refs = || async {
            sqlx::query_as::<_, (Option<i64>, Option<i64>, Option<String>, Option<String>)>(
                "select user_id, project_id, parent_run_id, replay_of from runs where id = 'child'",
            )
            .fetch_one(&pool)
            .await
            .expect("child's references")
        };
        assert_eq!(
            refs().await,
            (
                Some(user.id),
                Some(project.id),
                Some("parent".into()),
                Some("parent".into())
            )
        );
        for sql in [
            "delete from users",
            "delete from projects",
            "delete from runs where id = 'parent'",
        ] {
            sqlx::query(sql).execute(&pool).await.expect(sql);
        }
        assert_eq!(refs().await, (None, None, None, None));
        let child_step: Option<String> =
            sqlx::query_scalar("select child_run_id from steps where run_id = 'child'")
                .fetch_one(&pool)
                .await
                .expect("child's step");
        assert_eq!(child_step, None);
    }
}
