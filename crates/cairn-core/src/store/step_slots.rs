//! Concurrency limits on steps: the slots of a key, and the steps waiting for one.
//!
//! Taking and releasing a key's slots are serialised by an advisory lock on the key for
//! the rest of the transaction, so two steps never both see the same free slot. Waiting
//! steps are served in the order they first asked: a step takes a slot only when fewer
//! steps wait ahead of it than slots are free. A slot whose holder died expires and is
//! cleared by the next take of its key.

use std::time::Duration;

use sqlx::PgConnection;

use super::Result;

/// The advisory lock of a key's slots, for the rest of the transaction.
async fn lock_key(conn: &mut PgConnection, key: &str) -> Result<()> {
    sqlx::query!(
        "select pg_advisory_xact_lock(hashtextextended($1::text, 1571))",
        key
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Takes one of `key`'s `limit` slots for step `step_id` of run `run_id`, for at most
/// `hold` (the step's timeout and a margin). `true`: taken (or held already). `false`: the
/// step waits in line; [`slot_release`] of another holder wakes its run.
pub async fn slot_take(
    conn: &mut PgConnection,
    key: &str,
    limit: i32,
    run_id: &str,
    step_id: &str,
    hold: Duration,
) -> Result<bool> {
    lock_key(conn, key).await?;
    sqlx::query!(
        "delete from step_slots where key = $1 and expires_at < clock_timestamp()",
        key
    )
    .execute(&mut *conn)
    .await?;
    forget_ended(conn, key).await?;
    let taken = sqlx::query_scalar!(
        r#"with me as (select seq from step_slot_waiters where run_id = $2 and step_id = $3),
               held as (select count(*) as n from step_slots where key = $1),
               ahead as (select count(*) as n from step_slot_waiters w
                          where w.key = $1
                            and (not exists (select 1 from me) or w.seq < (select seq from me)))
         insert into step_slots (key, run_id, step_id, expires_at)
         select $1, $2, $3, clock_timestamp() + make_interval(secs => $5::float8 / 1000)
          where (select n from held) + (select n from ahead) < $4
         on conflict (run_id, step_id) do update set key = excluded.key,
                                                     expires_at = excluded.expires_at
         returning true as "taken!""#,
        key,
        run_id,
        step_id,
        limit as i64,
        hold.as_millis() as i64,
    )
    .fetch_optional(&mut *conn)
    .await?
    .is_some();
    if taken {
        sqlx::query!(
            "delete from step_slot_waiters where run_id = $1 and step_id = $2",
            run_id,
            step_id
        )
        .execute(&mut *conn)
        .await?;
    } else {
        sqlx::query!(
            "insert into step_slot_waiters (key, run_id, step_id) values ($1, $2, $3)
             on conflict (run_id, step_id) do nothing",
            key,
            run_id,
            step_id
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(taken)
}

/// Releases the slot step `step_id` of run `run_id` holds of `key`; returns the first
/// waiting step (its run and step), whose turn has come, if any.
pub async fn slot_release(
    conn: &mut PgConnection,
    key: &str,
    run_id: &str,
    step_id: &str,
) -> Result<Option<(String, String)>> {
    lock_key(conn, key).await?;
    forget_ended(conn, key).await?;
    sqlx::query!(
        "delete from step_slots where run_id = $1 and step_id = $2",
        run_id,
        step_id
    )
    .execute(&mut *conn)
    .await?;
    let next = sqlx::query!(
        "select run_id, step_id from step_slot_waiters where key = $1 order by seq limit 1",
        key
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(next.map(|n| (n.run_id, n.step_id)))
}

/// Forgets the waiters of `key` whose runs ended (cancelled while they waited): they
/// would hold back the steps behind them for good.
async fn forget_ended(conn: &mut PgConnection, key: &str) -> Result<()> {
    sqlx::query!(
        "delete from step_slot_waiters w
          where w.key = $1
            and not exists (select 1 from runs r where r.id = w.run_id
                               and r.status not in ('succeeded', 'dead', 'cancelled'))",
        key
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}
