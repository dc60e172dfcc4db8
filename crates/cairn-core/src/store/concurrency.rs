//! Concurrency limits per key: which runs of a key may start.
//!
//! A workflow with `[concurrency] key = "…", limit = N` gives each run a key when it is
//! submitted. A run holds one of its key's N slots from its admission until it is
//! finished; a run inserted with a key waits, `queued` and not admitted, and the lease
//! statement does not take it (`runs::lease_statement`). Admission is the only way in:
//! it takes the key's waiting runs in submission order while slots are free, marks them
//! admitted and queues their wake-ups, in the caller's transaction. It is called where
//! slots may have freed up or runs begun to wait — after a submit, after a keyed run
//! finished, after a cancel or a retry — and, as a safety net for an admission lost to
//! a crash between a run's end and its admission, by every worker's rescuer
//! ([`concurrency_admit_due`]).
//!
//! Admissions of one key are serialised by an advisory lock on the key, held to the end
//! of the transaction: two finishing runs of the same key never both see the same free
//! slot. No waiting run polls: it is woken once it holds a slot.

use sqlx::{PgConnection, PgPool};

use super::Result;

/// The advisory lock of a key's admissions, for the rest of the transaction.
async fn lock_key(conn: &mut PgConnection, workflow: &str, key: &str) -> Result<()> {
    sqlx::query!(
        "select pg_advisory_xact_lock(hashtextextended($1::text || chr(31) || $2::text, 1489))",
        workflow,
        key
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Admits the runs of `workflow`'s `key` that wait for a slot, oldest submission first,
/// as long as slots are free, and queues their wake-ups on `queue`; returns their ids.
/// Run it inside a transaction: the key's lock lasts until it ends. The limit is the one
/// the oldest waiting run's definition declared.
pub async fn concurrency_admit(
    conn: &mut PgConnection,
    workflow: &str,
    key: &str,
    queue: &str,
) -> Result<Vec<String>> {
    lock_key(conn, workflow, key).await?;
    let admitted = sqlx::query_scalar!(
        r#"with room as (
             select greatest(0,
                      coalesce((select concurrency_limit from runs
                                 where workflow = $1 and concurrency_key = $2
                                   and not admitted and status = 'queued'
                                 order by concurrency_seq limit 1), 0)
                      - (select count(*) from runs
                          where workflow = $1 and concurrency_key = $2 and admitted
                            and status in ('queued', 'running', 'waiting', 'sleeping', 'retrying'))
                    ) as free),
           next as (
             select id from runs
              where workflow = $1 and concurrency_key = $2 and not admitted and status = 'queued'
              order by concurrency_seq
              limit (select free from room)
                for update),
           taken as (
             update runs set admitted = true
              where id = any (array(select id from next)) and not admitted
             returning id, priority),
           events as (
             insert into run_events (run_id, kind, data)
             select id, 'run_admitted', jsonb_build_object('concurrencyKey', $2::text)
               from taken),
           jobs as (
             insert into apalis.jobs (id, job_type, job, metadata, run_at)
             select gen_random_uuid()::text, $3,
                    convert_to(json_build_object('run_id', id)::text, 'utf8'), ''::hstore,
                    now() - make_interval(mins => priority)
               from taken)
           select id as "id!" from taken order by id"#,
        workflow,
        key,
        queue
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(admitted)
}

/// A key whose waiting runs could be admitted now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueKey {
    pub workflow: String,
    pub key: String,
}

/// Up to `max` keys that have runs waiting and a free slot: what admission would have
/// started had it run after the slot freed up. Reads only the two partial indexes of
/// keyed runs, so it costs next to nothing when no run waits.
pub async fn concurrency_due(pool: &PgPool, max: i64) -> Result<Vec<DueKey>> {
    let rows = sqlx::query!(
        r#"select w.workflow as "workflow!", w.concurrency_key as "key!"
             from (select distinct workflow, concurrency_key from runs
                    where concurrency_key is not null and not admitted and status = 'queued') w
            where (select count(*) from runs h
                    where h.workflow = w.workflow and h.concurrency_key = w.concurrency_key
                      and h.admitted
                      and h.status in ('queued', 'running', 'waiting', 'sleeping', 'retrying'))
                  < (select o.concurrency_limit from runs o
                      where o.workflow = w.workflow and o.concurrency_key = w.concurrency_key
                        and not o.admitted and o.status = 'queued'
                      order by o.concurrency_seq limit 1)
            limit $1"#,
        max
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| DueKey {
            workflow: r.workflow,
            key: r.key,
        })
        .collect())
}

/// The key and limit state of one key: how many runs hold a slot and how many wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUse {
    pub holding: i64,
    pub waiting: i64,
}

/// How many runs of `workflow`'s `key` hold a slot and how many wait for one.
pub async fn concurrency_use(pool: &PgPool, workflow: &str, key: &str) -> Result<KeyUse> {
    let row = sqlx::query!(
        r#"select
             (select count(*) from runs
               where workflow = $1 and concurrency_key = $2 and admitted
                 and status in ('queued', 'running', 'waiting', 'sleeping', 'retrying')) as "holding!",
             (select count(*) from runs
               where workflow = $1 and concurrency_key = $2 and not admitted
                 and status = 'queued') as "waiting!""#,
        workflow,
        key
    )
    .fetch_one(pool)
    .await?;
    Ok(KeyUse {
        holding: row.holding,
        waiting: row.waiting,
    })
}
