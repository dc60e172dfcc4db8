//! `steps` and `step_attempts`: each step's checkpoint and every attempt at it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};

use super::events::event_append;
use super::{Lease, Result, StoreError, fence_failure, lease_fence};
use crate::state::{AttemptStatus, RunStatus, StepStatus};

#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub struct StepRow {
    pub run_id: String,
    pub step_id: String,
    pub status: StepStatus,
    pub attempts: i32,
    pub attempt_floor: i32,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub wake_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// A `workflow` step's child run, and how it stands.
    pub child_run_id: Option<String>,
    pub child_status: Option<RunStatus>,
    pub child_output: Option<Value>,
    pub child_error: Option<String>,
    /// A `map` step's progress (see [`super::maps`]); `map_total` is null until its list
    /// is written.
    pub map_total: Option<i32>,
    pub map_done: i32,
    pub map_failed: i32,
    pub map_running: i32,
    /// A `map` step has items whose child runs finished and that it has not taken in.
    pub map_news: bool,
}

/// The `map_news` column of a step row `s`: a lookup of the step's items in flight (a
/// partial index of at most `max_parallel` rows), each child by key.
macro_rules! map_news {
    () => {
        "case when s.map_running > 0 then exists (
             select 1 from map_items m
                  -- `limit 1`: a lookup by key for each item, never a join to order.
                  cross join lateral (select c.status from runs c
                                       where c.id = m.child_run_id limit 1) c
              where m.run_id = s.run_id and m.step_id = s.step_id and m.status = 'running'
                and c.status in ('succeeded', 'dead', 'cancelled')) else false end"
    };
}
pub(super) use map_news;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRow {
    pub step_id: String,
    pub attempt: i32,
    pub worker_id: String,
    pub status: AttemptStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub retry_delay_ms: Option<i64>,
}

/// The statement of [`step_list`]. Not checked: `map_news` is an expression the
/// macros read as nullable, and its alias would have to change to say otherwise.
pub(super) const STEP_LIST: &str = concat!(
    "select s.run_id, s.step_id, s.status, s.attempts, s.attempt_floor, s.output, s.error,
                s.next_attempt_at, s.wake_at, s.started_at, s.finished_at, s.child_run_id,
                c.status as child_status, c.output as child_output, c.error as child_error,
                s.map_total, s.map_done, s.map_failed, s.map_running, ",
    map_news!(),
    " as map_news
           from steps s left join runs c on c.id = s.child_run_id
          where s.run_id = $1"
);

pub async fn step_list(pool: &PgPool, run_id: &str) -> Result<Vec<StepRow>> {
    Ok(sqlx::query_as(STEP_LIST)
        .bind(run_id)
        .fetch_all(pool)
        .await?)
}

pub async fn attempt_list(pool: &PgPool, run_id: &str) -> Result<Vec<AttemptRow>> {
    Ok(sqlx::query_as!(
        AttemptRow,
        "select step_id, attempt, worker_id, status, started_at, finished_at, error, retry_delay_ms
           from step_attempts where run_id = $1 order by started_at, step_id, attempt",
        run_id
    )
    .fetch_all(pool)
    .await?)
}

/// A step's checkpoint: its output, final.
#[derive(Debug, Clone, Copy)]
pub struct Checkpoint<'a> {
    pub step_id: &'a str,
    pub attempt: i32,
    pub output: &'a Value,
}

/// What one fenced statement records for a run, in this order: a step's checkpoint,
/// the run's success (after its last checkpoint), the start of a step's next attempt.
/// A checkpoint and the start of the step that follows it commit together, so a chain
/// costs one statement per step; the checkpoint is still committed before the next
/// step runs.
#[derive(Debug, Default, Clone, Copy)]
pub struct Transition<'a> {
    pub checkpoint: Option<Checkpoint<'a>>,
    /// The run's output: the run succeeds. Only with the run's last checkpoint.
    pub run_output: Option<&'a Value>,
    /// A step and the attempt that starts now.
    pub begin: Option<(&'a str, i32)>,
}

/// Records a [`Transition`] in one fenced statement, with its events. Everything it
/// records happens at one instant: a checkpoint's end is the next attempt's start.
pub async fn step_transition(
    conn: &mut PgConnection,
    lease: &Lease,
    t: Transition<'_>,
) -> Result<()> {
    step_transitions(conn, &[(lease, t)])
        .await?
        .pop()
        .unwrap_or_else(|| Err(StoreError::LeaseLost(lease.run_id.clone())))
}

/// The statement of [`step_transitions`].
#[cfg(test)] // Read by the plan test (`plans.rs`); the statement runs from the file.
pub(super) const TRANSITIONS: &str = include_str!("sql/transitions.sql");

/// Records the transitions of any number of runs (a run may appear more than once, for
/// different steps) in one statement. Each is fenced by its own lease: a lost lease or
/// a cancellation writes nothing of that run's transitions and gives that error in its
/// place, without disturbing the others. `Err` only when the statement itself failed.
/// Runs are locked in id order, so two writers sharing runs wait instead of deadlocking.
pub async fn step_transitions(
    conn: &mut PgConnection,
    batch: &[(&Lease, Transition<'_>)],
) -> Result<Vec<Result<()>>> {
    let n = batch.len();
    let mut run_ids = Vec::with_capacity(n);
    let mut tokens = Vec::with_capacity(n);
    let mut owners = Vec::with_capacity(n);
    let mut ck_steps = Vec::with_capacity(n);
    let mut ck_attempts = Vec::with_capacity(n);
    let mut ck_outputs = Vec::with_capacity(n);
    let mut run_outputs = Vec::with_capacity(n);
    let mut begin_steps = Vec::with_capacity(n);
    let mut begin_attempts = Vec::with_capacity(n);
    for (lease, t) in batch {
        run_ids.push(lease.run_id.as_str());
        tokens.push(lease.token);
        owners.push(lease.owner.as_str());
        ck_steps.push(t.checkpoint.map(|c| c.step_id));
        ck_attempts.push(t.checkpoint.map(|c| c.attempt));
        ck_outputs.push(t.checkpoint.map(|c| c.output));
        run_outputs.push(t.run_output);
        begin_steps.push(t.begin.map(|b| b.0));
        begin_attempts.push(t.begin.map(|b| b.1));
    }
    // The arrays of optional parts have nullable elements, which the statement's
    // arrays allow.
    let fenced: Vec<String> = sqlx::query_file_scalar!(
        "src/store/sql/transitions.sql",
        &run_ids as &[&str],
        &tokens,
        &owners as &[&str],
        &ck_steps as &[Option<&str>],
        &ck_attempts as &[Option<i32>],
        &ck_outputs as &[Option<&Value>],
        &run_outputs as &[Option<&Value>],
        &begin_steps as &[Option<&str>],
        &begin_attempts as &[Option<i32>]
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut results = Vec::with_capacity(n);
    for (lease, _) in batch {
        if fenced.contains(&lease.run_id) {
            results.push(Ok(()));
        } else {
            results.push(Err(fence_failure(conn, lease).await));
        }
    }
    Ok(results)
}

/// Executes the transition statement once, with no transitions, on every idle
/// connection of `pool` (a worker's are all open and idle at its start): each plans it
/// then, so the first runs a worker takes do not wait for that (a few milliseconds each
/// in the bench's pickup, before this). Never waits for a connection; writes nothing.
pub async fn steps_warm_up(pool: &PgPool) -> Result<()> {
    let mut conns = Vec::new();
    while let Some(conn) = pool.try_acquire() {
        conns.push(conn);
    }
    futures::future::try_join_all(conns.iter_mut().map(|conn| step_transitions(conn, &[]))).await?;
    Ok(())
}

/// Records the start of attempt `attempt` of a step (committed before the step runs, so
/// a crash mid-attempt is visible and counted), with its `step_started` event.
pub async fn step_begin(
    conn: &mut PgConnection,
    lease: &Lease,
    step_id: &str,
    attempt: i32,
) -> Result<()> {
    let begin = Some((step_id, attempt));
    step_transition(
        conn,
        lease,
        Transition {
            begin,
            ..Transition::default()
        },
    )
    .await
}

/// Commits a step's checkpoint with its `step_succeeded` event; with `run_output`, the
/// step was the run's last and the run succeeds too.
pub async fn step_succeed(
    conn: &mut PgConnection,
    lease: &Lease,
    step_id: &str,
    attempt: i32,
    output: &Value,
    run_output: Option<&Value>,
) -> Result<()> {
    let checkpoint = Some(Checkpoint {
        step_id,
        attempt,
        output,
    });
    let t = Transition {
        checkpoint,
        run_output,
        begin: None,
    };
    step_transition(conn, lease, t).await
}

async fn attempt_insert(
    conn: &mut PgConnection,
    lease: &Lease,
    step_id: &str,
    attempt: i32,
) -> Result<()> {
    // The step must exist (`step_attempts` has no foreign key: see migration 0007).
    let inserted = sqlx::query!(
        "insert into step_attempts (run_id, step_id, attempt, worker_id)
         select $1, $2, $3, $4
          where exists (select from steps where run_id = $1 and step_id = $2)",
        &lease.run_id,
        step_id,
        attempt,
        &lease.owner
    )
    .execute(conn)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(StoreError::Missing(format!(
            "step {step_id} of run {}",
            lease.run_id
        )));
    }
    Ok(())
}

/// The statement of [`step_fail`] that closes the attempt.
#[cfg(test)] // Read by the plan test (`plans.rs`); the statement runs from the file.
pub(super) const ATTEMPT_FAIL: &str = include_str!("sql/attempt_fail.sql");

/// Records a failed attempt. With `retry_in`, the step waits in `retry_scheduled` and
/// the time of the next attempt is returned; without, it has failed for good.
pub async fn step_fail(
    conn: &mut PgConnection,
    lease: &Lease,
    step_id: &str,
    attempt: i32,
    error: &str,
    retry_in: Option<Duration>,
) -> Result<Option<DateTime<Utc>>> {
    lease_fence(conn, lease).await?;
    let delay_ms = retry_in.map(|d| d.as_millis() as i64);
    sqlx::query_file!(
        "src/store/sql/attempt_fail.sql",
        lease.run_id,
        step_id,
        attempt,
        error,
        delay_ms
    )
    .execute(&mut *conn)
    .await?;
    let next: Option<DateTime<Utc>> = match delay_ms {
        Some(ms) => {
            let at = sqlx::query_scalar!(
                r#"update steps set status = 'retry_scheduled', error = $3,
                        next_attempt_at = clock_timestamp() + make_interval(secs => $4::float8 / 1000)
                  where run_id = $1 and step_id = $2
                 returning next_attempt_at as "next_attempt_at!""#,
                &lease.run_id,
                step_id,
                error,
                ms as f64
            )
            .fetch_one(&mut *conn)
            .await?;
            Some(at)
        }
        None => {
            sqlx::query!(
                "update steps set status = 'failed', error = $3, finished_at = clock_timestamp()
                  where run_id = $1 and step_id = $2",
                &lease.run_id,
                step_id,
                error
            )
            .execute(&mut *conn)
            .await?;
            None
        }
    };
    let (kind, data) = match next {
        Some(at) => (
            "step_retry_scheduled",
            json!({ "attempt": attempt, "error": error, "delayMs": delay_ms, "nextAttemptAt": at }),
        ),
        None => ("step_failed", json!({ "attempt": attempt, "error": error })),
    };
    event_append(conn, &lease.run_id, kind, Some(step_id), data).await?;
    Ok(next)
}

/// Holds a step back until `until` without an attempt: its rate limit's `key` has no
/// call to spare before then. The step is `retry_scheduled` at `until` (so the run parks
/// until then, holding no worker), with its attempts unchanged.
pub async fn step_delay(
    conn: &mut PgConnection,
    lease: &Lease,
    step_id: &str,
    until: DateTime<Utc>,
    why: Delay<'_>,
) -> Result<()> {
    lease_fence(conn, lease).await?;
    sqlx::query!(
        "update steps set status = 'retry_scheduled', next_attempt_at = $3
          where run_id = $1 and step_id = $2 and status in ('pending', 'retry_scheduled')",
        lease.run_id,
        step_id,
        until
    )
    .execute(&mut *conn)
    .await?;
    let (kind, data) = match why {
        Delay::RateLimit(key) => (
            "step_rate_limited",
            json!({ "rateLimit": key, "until": until }),
        ),
        Delay::Slot(key) => (
            "step_waiting_for_slot",
            json!({ "concurrencyKey": key, "until": until }),
        ),
    };
    event_append(conn, &lease.run_id, kind, Some(step_id), data).await?;
    Ok(())
}

/// Why a step is held back without an attempt ([`step_delay`]).
#[derive(Debug, Clone, Copy)]
pub enum Delay<'a> {
    /// Its rate limit's next call is later (the key).
    RateLimit(&'a str),
    /// Every slot of its concurrency key is taken (the key); it waits in line.
    Slot(&'a str),
}

/// Brings forward a step held back for a slot: its turn has come. The run is woken
/// with it, in the caller's transaction.
pub async fn step_slot_free(conn: &mut PgConnection, run_id: &str, step_id: &str) -> Result<()> {
    sqlx::query!(
        "update steps set next_attempt_at = clock_timestamp()
          where run_id = $1 and step_id = $2 and status = 'retry_scheduled'",
        run_id,
        step_id
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Starts a durable timer: the step waits until the returned time.
pub async fn step_sleep(
    conn: &mut PgConnection,
    lease: &Lease,
    step_id: &str,
    attempt: i32,
    duration: Duration,
) -> Result<DateTime<Utc>> {
    lease_fence(conn, lease).await?;
    let wake_at = sqlx::query_scalar!(
        r#"update steps set status = 'waiting', attempts = $3, next_attempt_at = null,
                wake_at = clock_timestamp() + make_interval(secs => $4::float8 / 1000),
                started_at = coalesce(started_at, clock_timestamp())
          where run_id = $1 and step_id = $2
         returning wake_at as "wake_at!""#,
        &lease.run_id,
        step_id,
        attempt,
        duration.as_millis() as f64
    )
    .fetch_one(&mut *conn)
    .await?;
    attempt_insert(conn, lease, step_id, attempt).await?;
    event_append(
        conn,
        &lease.run_id,
        "step_waiting",
        Some(step_id),
        json!({ "attempt": attempt, "wakeAt": wake_at }),
    )
    .await?;
    Ok(wake_at)
}

/// Skips a step whose `if` was false.
pub async fn step_skip(conn: &mut PgConnection, lease: &Lease, step_id: &str) -> Result<()> {
    lease_fence(conn, lease).await?;
    sqlx::query!(
        "update steps set status = 'skipped', output = 'null'::jsonb, finished_at = clock_timestamp()
          where run_id = $1 and step_id = $2",
        &lease.run_id,
        step_id
    )
    .execute(&mut *conn)
    .await?;
    event_append(
        conn,
        &lease.run_id,
        "step_skipped",
        Some(step_id),
        json!({}),
    )
    .await
}

/// Starts waiting: for a callback (`wait`) or for a child run (`workflow`, with the
/// child's id) until the returned time, when the attempt times out.
pub async fn step_wait(
    conn: &mut PgConnection,
    lease: &Lease,
    step_id: &str,
    attempt: i32,
    timeout: Duration,
    awaiting: Awaiting<'_>,
) -> Result<DateTime<Utc>> {
    lease_fence(conn, lease).await?;
    let child_run_id = match awaiting {
        Awaiting::Child(id) => Some(id),
        _ => None,
    };
    let wake_at = sqlx::query_scalar!(
        r#"update steps set status = 'waiting', attempts = $3, next_attempt_at = null, child_run_id = $5,
                wake_at = clock_timestamp() + make_interval(secs => $4::float8 / 1000),
                started_at = coalesce(started_at, clock_timestamp())
          where run_id = $1 and step_id = $2
         returning wake_at as "wake_at!""#,
        &lease.run_id,
        step_id,
        attempt,
        timeout.as_millis() as f64,
        child_run_id
    )
    .fetch_one(&mut *conn)
    .await?;
    attempt_insert(conn, lease, step_id, attempt).await?;
    event_append(
        conn,
        &lease.run_id,
        "step_waiting",
        Some(step_id),
        match awaiting {
            Awaiting::Items(items) => {
                json!({ "attempt": attempt, "timeoutAt": wake_at, "items": items })
            }
            _ => json!({ "attempt": attempt, "timeoutAt": wake_at, "childRunId": child_run_id }),
        },
    )
    .await?;
    Ok(wake_at)
}

/// What a step waits for ([`step_wait`]).
#[derive(Debug, Clone, Copy)]
pub enum Awaiting<'a> {
    /// A delivery through the webhook (`wait` steps).
    Callback,
    /// Its child run (`workflow` steps).
    Child(&'a str),
    /// Its items, this many (`map` steps).
    Items(i32),
}

/// The statement of [`steps_have_news`]. Not checked: its `exists` reads as nullable to
/// the macros, and only an alias in the text would say otherwise.
pub(super) const STEPS_HAVE_NEWS: &str = concat!(
    "select exists (select 1 from steps s
                         -- By key for each step, never a join the planner may order badly.
                         left join lateral (select c.status from runs c
                                             where c.id = s.child_run_id limit 1) c on true
                         where s.run_id = $1 and s.step_id = any($2)
                           and (s.status <> 'waiting' or c.status in ('succeeded', 'dead', 'cancelled')
                                or ",
    map_news!(),
    "))"
);

/// Whether any of `steps` (waiting for a callback or a child) has news: delivered, or its
/// child finished. Called under the run's lock before parking it.
pub async fn steps_have_news(
    conn: &mut PgConnection,
    run_id: &str,
    steps: &[String],
) -> Result<bool> {
    if steps.is_empty() {
        return Ok(false);
    }
    Ok(sqlx::query_scalar(STEPS_HAVE_NEWS)
        .bind(run_id)
        .bind(steps)
        .fetch_one(conn)
        .await?)
}

/// What [`step_deliver`] did with a callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The step took the result; the run must be woken.
    Accepted,
    /// The step had already taken a result: nothing changed.
    Duplicate,
    /// The step is not waiting for a callback (not yet, or it timed out).
    NotWaiting(StepStatus),
}

/// A step a callback is addressed to, read under the run's and the step's locks by
/// [`step_lock_for_delivery`]: what the callback's credentials are checked against and
/// what [`step_deliver`] then decides on, in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryTarget {
    pub run_status: RunStatus,
    pub status: StepStatus,
    pub child_run_id: Option<String>,
    pub attempts: i32,
}

/// Locks a run and one of its steps for a callback (the run's lock first, like every
/// fenced write, so it never interleaves with the worker's transitions). `None`: no
/// such run or step.
pub async fn step_lock_for_delivery(
    conn: &mut PgConnection,
    run_id: &str,
    step_id: &str,
) -> Result<Option<DeliveryTarget>> {
    let run_status = sqlx::query_scalar!(
        r#"select status as "status: RunStatus" from runs where id = $1 for update"#,
        run_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(run_status) = run_status else {
        return Ok(None);
    };
    let step = sqlx::query!(
        r#"select status as "status: StepStatus", child_run_id, attempts
             from steps where run_id = $1 and step_id = $2 for update"#,
        run_id,
        step_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(step.map(|s| DeliveryTarget {
        run_status,
        status: s.status,
        child_run_id: s.child_run_id,
        attempts: s.attempts,
    }))
}

/// Completes a waiting `wait` step with an external result; `target` is the step as
/// [`step_lock_for_delivery`] read it in this transaction.
pub async fn step_deliver(
    conn: &mut PgConnection,
    run_id: &str,
    step_id: &str,
    target: &DeliveryTarget,
    result: &Value,
) -> Result<Delivery> {
    let attempt = target.attempts;
    if target.status == StepStatus::Succeeded && target.child_run_id.is_none() {
        return Ok(Delivery::Duplicate);
    }
    if target.status != StepStatus::Waiting || target.child_run_id.is_some() {
        return Ok(Delivery::NotWaiting(target.status));
    }
    sqlx::query!(
        "update steps set status = 'succeeded', output = $3, error = null, finished_at = clock_timestamp()
          where run_id = $1 and step_id = $2",
        run_id,
        step_id,
        result
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "update step_attempts set status = 'succeeded', finished_at = clock_timestamp()
          where run_id = $1 and step_id = $2 and attempt = $3 and status = 'running'",
        run_id,
        step_id,
        attempt
    )
    .execute(&mut *conn)
    .await?;
    if target.run_status == RunStatus::Waiting {
        sqlx::query!(
            "update runs set status = 'queued', wake_at = null where id = $1",
            run_id
        )
        .execute(&mut *conn)
        .await?;
    }
    event_append(
        conn,
        run_id,
        "step_succeeded",
        Some(step_id),
        json!({ "attempt": attempt, "delivered": true }),
    )
    .await?;
    Ok(Delivery::Accepted)
}
