//! `steps` and `step_attempts`: each step's checkpoint and every attempt at it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};

use super::events::event_append;
use super::{FENCE, Lease, Result, fence_failure, lease_fence};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StepRow {
    pub run_id: String,
    pub step_id: String,
    pub status: String,
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
    pub child_status: Option<String>,
    pub child_output: Option<Value>,
    pub child_error: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRow {
    pub step_id: String,
    pub attempt: i32,
    pub worker_id: String,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub retry_delay_ms: Option<i64>,
}

pub async fn step_list(pool: &PgPool, run_id: &str) -> Result<Vec<StepRow>> {
    Ok(sqlx::query_as(
        "select s.run_id, s.step_id, s.status, s.attempts, s.attempt_floor, s.output, s.error,
                s.next_attempt_at, s.wake_at, s.started_at, s.finished_at, s.child_run_id,
                c.status as child_status, c.output as child_output, c.error as child_error
           from steps s left join runs c on c.id = s.child_run_id
          where s.run_id = $1",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await?)
}

pub async fn attempt_list(pool: &PgPool, run_id: &str) -> Result<Vec<AttemptRow>> {
    Ok(sqlx::query_as(
        "select step_id, attempt, worker_id, status, started_at, finished_at, error, retry_delay_ms
           from step_attempts where run_id = $1 order by started_at, step_id, attempt",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await?)
}

/// Records the start of attempt `attempt` of a step (committed before the step runs, so
/// a crash mid-attempt is visible and counted). One fenced statement: the step, its
/// attempt row and its `step_started` event.
pub async fn step_begin(
    conn: &mut PgConnection,
    lease: &Lease,
    step_id: &str,
    attempt: i32,
) -> Result<()> {
    let sql = format!(
        "with {FENCE},
         s as (update steps set status = 'running', attempts = $4, next_attempt_at = null,
                      started_at = coalesce(started_at, clock_timestamp())
                where run_id = $1 and step_id = $3 and exists (select from fence)),
         a as (insert into step_attempts (run_id, step_id, attempt, worker_id)
               select $1, $3, $4, $5 from fence),
         e as (insert into run_events (run_id, kind, step_id, data)
               select $1, 'step_started', $3, $6 from fence)
         select count(*) from fence"
    );
    let fenced: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(&lease.run_id)
        .bind(lease.token)
        .bind(step_id)
        .bind(attempt)
        .bind(&lease.owner)
        .bind(json!({ "attempt": attempt, "worker": lease.owner }))
        .fetch_one(&mut *conn)
        .await?;
    if fenced == 1 {
        Ok(())
    } else {
        Err(fence_failure(conn, lease).await)
    }
}

/// Commits a step's checkpoint: its output, final. One fenced statement: the step, its
/// attempt and its `step_succeeded` event; with `run_output`, the step was the run's
/// last and the run succeeds in the same statement (`run_succeeded` after it).
pub async fn step_succeed(
    conn: &mut PgConnection,
    lease: &Lease,
    step_id: &str,
    attempt: i32,
    output: &Value,
    run_output: Option<&Value>,
) -> Result<()> {
    let sql = format!(
        "with {FENCE},
         s as (update steps set status = 'succeeded', output = $5, error = null,
                      finished_at = clock_timestamp()
                where run_id = $1 and step_id = $3 and exists (select from fence)),
         a as (update step_attempts set status = 'succeeded', finished_at = clock_timestamp()
                where run_id = $1 and step_id = $3 and attempt = $4
                  and exists (select from fence)),
         r as (update runs set status = 'succeeded', output = $6, finished_at = clock_timestamp(),
                      lease_owner = null, lease_expires_at = null
                where id = $1 and $6::jsonb is not null and exists (select from fence)),
         e as (insert into run_events (run_id, kind, step_id, data)
               select $1, kind, step, data from fence,
                      (values (1, 'step_succeeded', $3::text, jsonb_build_object('attempt', $4)),
                              (2, 'run_succeeded', null, '{{}}'::jsonb)) as v (ord, kind, step, data)
                where ord = 1 or $6::jsonb is not null
                order by ord)
         select count(*) from fence"
    );
    let fenced: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(&lease.run_id)
        .bind(lease.token)
        .bind(step_id)
        .bind(attempt)
        .bind(output)
        .bind(run_output)
        .fetch_one(&mut *conn)
        .await?;
    if fenced == 1 {
        Ok(())
    } else {
        Err(fence_failure(conn, lease).await)
    }
}

async fn attempt_insert(
    conn: &mut PgConnection,
    lease: &Lease,
    step_id: &str,
    attempt: i32,
) -> Result<()> {
    sqlx::query(
        "insert into step_attempts (run_id, step_id, attempt, worker_id) values ($1, $2, $3, $4)",
    )
    .bind(&lease.run_id)
    .bind(step_id)
    .bind(attempt)
    .bind(&lease.owner)
    .execute(conn)
    .await?;
    Ok(())
}

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
    sqlx::query(
        "update step_attempts set status = 'failed', finished_at = clock_timestamp(), error = $4,
                retry_delay_ms = $5
          where run_id = $1 and step_id = $2 and attempt = $3",
    )
    .bind(&lease.run_id)
    .bind(step_id)
    .bind(attempt)
    .bind(error)
    .bind(delay_ms)
    .execute(&mut *conn)
    .await?;
    let next: Option<DateTime<Utc>> = match delay_ms {
        Some(ms) => {
            let at: DateTime<Utc> = sqlx::query_scalar(
                "update steps set status = 'retry_scheduled', error = $3,
                        next_attempt_at = clock_timestamp() + make_interval(secs => $4::float8 / 1000)
                  where run_id = $1 and step_id = $2
                 returning next_attempt_at",
            )
            .bind(&lease.run_id)
            .bind(step_id)
            .bind(error)
            .bind(ms)
            .fetch_one(&mut *conn)
            .await?;
            Some(at)
        }
        None => {
            sqlx::query(
                "update steps set status = 'failed', error = $3, finished_at = clock_timestamp()
                  where run_id = $1 and step_id = $2",
            )
            .bind(&lease.run_id)
            .bind(step_id)
            .bind(error)
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

/// Starts a durable timer: the step waits until the returned time.
pub async fn step_sleep(
    conn: &mut PgConnection,
    lease: &Lease,
    step_id: &str,
    attempt: i32,
    duration: Duration,
) -> Result<DateTime<Utc>> {
    lease_fence(conn, lease).await?;
    let wake_at: DateTime<Utc> = sqlx::query_scalar(
        "update steps set status = 'waiting', attempts = $3, next_attempt_at = null,
                wake_at = clock_timestamp() + make_interval(secs => $4::float8 / 1000),
                started_at = coalesce(started_at, clock_timestamp())
          where run_id = $1 and step_id = $2
         returning wake_at",
    )
    .bind(&lease.run_id)
    .bind(step_id)
    .bind(attempt)
    .bind(duration.as_millis() as i64)
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
    sqlx::query(
        "update steps set status = 'skipped', output = 'null'::jsonb, finished_at = clock_timestamp()
          where run_id = $1 and step_id = $2",
    )
    .bind(&lease.run_id)
    .bind(step_id)
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
    child_run_id: Option<&str>,
) -> Result<DateTime<Utc>> {
    lease_fence(conn, lease).await?;
    let wake_at: DateTime<Utc> = sqlx::query_scalar(
        "update steps set status = 'waiting', attempts = $3, next_attempt_at = null, child_run_id = $5,
                wake_at = clock_timestamp() + make_interval(secs => $4::float8 / 1000),
                started_at = coalesce(started_at, clock_timestamp())
          where run_id = $1 and step_id = $2
         returning wake_at",
    )
    .bind(&lease.run_id)
    .bind(step_id)
    .bind(attempt)
    .bind(timeout.as_millis() as i64)
    .bind(child_run_id)
    .fetch_one(&mut *conn)
    .await?;
    attempt_insert(conn, lease, step_id, attempt).await?;
    event_append(
        conn,
        &lease.run_id,
        "step_waiting",
        Some(step_id),
        json!({ "attempt": attempt, "timeoutAt": wake_at, "childRunId": child_run_id }),
    )
    .await?;
    Ok(wake_at)
}

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
    Ok(sqlx::query_scalar(
        "select exists (select 1 from steps s left join runs c on c.id = s.child_run_id
                         where s.run_id = $1 and s.step_id = any($2)
                           and (s.status <> 'waiting' or c.status in ('succeeded', 'dead', 'cancelled')))",
    )
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
    NotWaiting(String),
    UnknownRun,
    UnknownStep,
}

/// Completes a waiting `wait` step with an external result. Takes the run's lock first,
/// like every fenced write, so it never interleaves with the worker's transitions.
pub async fn step_deliver(
    conn: &mut PgConnection,
    run_id: &str,
    step_id: &str,
    result: &Value,
) -> Result<Delivery> {
    let run_status: Option<String> =
        sqlx::query_scalar("select status from runs where id = $1 for update")
            .bind(run_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(run_status) = run_status else {
        return Ok(Delivery::UnknownRun);
    };
    let step: Option<(String, Option<String>, i32)> = sqlx::query_as(
        "select status, child_run_id, attempts from steps where run_id = $1 and step_id = $2 for update",
    )
    .bind(run_id)
    .bind(step_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((status, child, attempt)) = step else {
        return Ok(Delivery::UnknownStep);
    };
    if status == "succeeded" && child.is_none() {
        return Ok(Delivery::Duplicate);
    }
    if status != "waiting" || child.is_some() {
        return Ok(Delivery::NotWaiting(status));
    }
    sqlx::query(
        "update steps set status = 'succeeded', output = $3, error = null, finished_at = clock_timestamp()
          where run_id = $1 and step_id = $2",
    )
    .bind(run_id)
    .bind(step_id)
    .bind(result)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "update step_attempts set status = 'succeeded', finished_at = clock_timestamp()
          where run_id = $1 and step_id = $2 and attempt = $3 and status = 'running'",
    )
    .bind(run_id)
    .bind(step_id)
    .bind(attempt)
    .execute(&mut *conn)
    .await?;
    if run_status == "waiting" {
        sqlx::query("update runs set status = 'queued', wake_at = null where id = $1")
            .bind(run_id)
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
