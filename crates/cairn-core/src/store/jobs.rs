//! apalis' job rows (`apalis.jobs`), as far as Cairn looks after them. Workers take
//! their wake-ups with [`jobs_claim_runs`], which deletes the jobs it takes and leases
//! their runs in the same statement: a wake-up carries nothing worth keeping once its
//! run is leased (the run's history is in `run_events`, and a run whose worker dies is
//! requeued by the rescuer when its lease expires).

use std::sync::LazyLock;
use std::time::Duration;

use sqlx::PgPool;

use super::Result;
use super::runs::{AcquireRow, Acquired, lease_statement};

/// The statement of [`jobs_claim_runs`], built once.
pub(super) static CLAIM: LazyLock<String> = LazyLock::new(|| {
    lease_statement(
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
    )
});

/// A pool of one connection, to `pool`'s database with `pool`'s settings, for
/// [`jobs_claim_runs`] alone. Its commits do not wait for their WAL flush
/// (`synchronous_commit = off`), which is safe for a fetch: whatever a run's worker
/// writes next is committed synchronously, and flushing that commit flushes the fetch
/// before it; a fetch lost to a database crash before then leaves its wake-ups queued
/// and its runs unleased, as if it had not happened. Its own connection also means a
/// fetch never waits for one of the pool's.
pub fn jobs_claim_pool(pool: &PgPool) -> PgPool {
    let options = (*pool.connect_options())
        .clone()
        .options([("synchronous_commit", "off")]);
    super::pool_options(1)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(options)
}

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
    // Assembled at start-up by `lease_statement`, shared with leasing: not checked.
    let rows: Vec<AcquireRow> = sqlx::query_as(sqlx::AssertSqlSafe(CLAIM.as_str()))
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

/// The statement of [`jobs_push`].
#[cfg(test)] // Read by the plan test (`plans.rs`); the statement runs from the file.
pub(super) const PUSH: &str = include_str!("sql/push.sql");

/// Queues wake-ups of `queue`, as apalis' own insert would (payload `{"run_id": …}`,
/// `Pending`, apalis' defaults), in the caller's transaction: the job `job_ids[i]` for
/// the run `run_ids[i]`, due at `at[i]`. A wake-up due at once (`None`) is queued as if
/// `priority` minutes earlier, its run's priority, so that workers, which take the
/// earliest first, take it ahead of the runs queued less than that before it.
pub async fn jobs_push(
    conn: &mut sqlx::PgConnection,
    queue: &str,
    job_ids: &[String],
    run_ids: &[String],
    at: &[Option<chrono::DateTime<chrono::Utc>>],
) -> Result<()> {
    if job_ids.len() != run_ids.len() || job_ids.len() != at.len() {
        return Err(super::StoreError::Invalid(format!(
            "jobs_push: {} job ids, {} run ids, {} times",
            job_ids.len(),
            run_ids.len(),
            at.len()
        )));
    }
    if job_ids.is_empty() {
        return Ok(());
    }
    // The times are nullable elements, which the statement's `timestamptz[]` allows.
    sqlx::query_file!(
        "src/store/sql/push.sql",
        queue,
        job_ids,
        run_ids,
        at as &[Option<chrono::DateTime<chrono::Utc>>]
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Marks Cairn's version of apalis' insert notification (kept in the function's name).
const NOTIFY_FUNCTION: &str = "apalis.cairn_notify_new_jobs";

/// Replaces apalis' insert notification (a row-level trigger: one `NOTIFY` per job,
/// carrying its id) with a statement-level one: one `NOTIFY` per queue a statement
/// inserted due jobs into. A worker only needs to know that there is something to take,
/// and its fetch takes a batch; a batch of 500 submitted runs sent 500 notifications,
/// each to be queued, de-duplicated and delivered to every listening worker, all while
/// the committing transaction held the database-wide notification lock. Same channel,
/// payload `{"job_type": …}`. Sessions with `cairn.notify_jobs = off` skip it and
/// announce after their commit instead ([`jobs_announce`]). Runs after apalis'
/// migrations; concurrent callers are serialised, and an installed replacement is left
/// alone.
pub async fn jobs_notify_install(pool: &PgPool) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query!("select pg_advisory_xact_lock(hashtext('cairn.jobs_notify_install'))")
        .execute(&mut *tx)
        .await?;
    let installed = sqlx::query_scalar!(
        r#"select exists (select from pg_trigger t join pg_proc p on p.oid = t.tgfoid
                         where t.tgrelid = 'apalis.jobs'::regclass
                           and t.tgname = 'notify_workers'
                           and p.oid = to_regproc($1)
                           and pg_get_triggerdef(t.oid) like '%cairn.notify_jobs%') as "installed!""#,
        NOTIFY_FUNCTION
    )
    .fetch_one(&mut *tx)
    .await?;
    if installed {
        return Ok(());
    }
    let statements = [
        format!(
            "create or replace function {NOTIFY_FUNCTION}() returns trigger
             language plpgsql as $$
             begin
                 perform pg_notify('apalis::job::insert',
                                   json_build_object('job_type', job_type)::text)
                    from (select distinct job_type from inserted where run_at <= now()) q;
                 return null;
             end $$"
        ),
        "drop trigger if exists notify_workers on apalis.jobs".to_owned(),
        format!(
            "create trigger notify_workers after insert on apalis.jobs
             referencing new table as inserted
             for each statement
             when (current_setting('cairn.notify_jobs', true) is distinct from 'off')
             execute function {NOTIFY_FUNCTION}()"
        ),
    ];
    // DDL naming the function, its name a constant: assembled, so not checked.
    for sql in statements {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Wakes the workers of `queue` and the event listeners, for runs queued (and events
/// appended) by sessions that do not notify (see [`super::connect_unannounced`]). The
/// notifications of a transaction are sent once it commits, and Postgres commits
/// notifying transactions one at a time, WAL flush included; this statement writes
/// nothing, so its commit has nothing to flush.
pub async fn jobs_announce(pool: &PgPool, queue: &str) -> Result<()> {
    sqlx::query!(
        "select pg_notify('apalis::job::insert', json_build_object('job_type', $1::text)::text),
                pg_notify($2, '{\"id\": 0}')",
        queue,
        super::events::CHANNEL
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Trims the indexes apalis' migrations leave on `apalis.jobs`, each of which every
/// queued run's wake-up job is inserted into:
///
/// * `unique_job_id` repeats the primary key, and `lidx` repeats
///   `idx_apalis_jobs_lock_by`, which a later apalis migration added beside it;
/// * `idx_apalis_jobs_lock_by` indexes every job by the worker holding it, and a queued
///   job has none: the entries of all queued jobs pile up under the null key. Jobs are
///   only looked up by a worker they are held by (apalis' keep-alive and re-enqueueing
///   of orphans: `lock_by = …`), which a partial index on `lock_by is not null`
///   serves.
///
/// That is three of a new job's six index insertions, about a tenth of the database's
/// CPU per run for batches of submitted runs in `cairn-bench`. Changes only what is
/// still to change (nothing, the second time), serialised like [`jobs_notify_install`].
pub async fn jobs_indexes_trim(pool: &PgPool) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query!("select pg_advisory_xact_lock(hashtext('cairn.jobs_indexes_trim'))")
        .execute(&mut *tx)
        .await?;
    let found = sqlx::query!(
        r#"select to_regclass('apalis.unique_job_id') is not null as "unique_id!",
                to_regclass('apalis.lidx') is not null as "lidx!",
                exists (select from pg_index
                         where indexrelid = to_regclass('apalis.idx_apalis_jobs_lock_by')
                           and indpred is null) as "lock_by_full!""#
    )
    .fetch_one(&mut *tx)
    .await?;
    let (unique_id, lidx, lock_by_full) = (found.unique_id, found.lidx, found.lock_by_full);
    let mut statements = Vec::new();
    if unique_id {
        statements.push("drop index apalis.unique_job_id");
    }
    if lidx {
        statements.push("drop index apalis.lidx");
    }
    if lock_by_full {
        statements.extend([
            "drop index apalis.idx_apalis_jobs_lock_by",
            "create index idx_apalis_jobs_lock_by on apalis.jobs (lock_by)
              where lock_by is not null",
        ]);
    }
    // DDL, chosen by what is found: a list of statements, so not checked.
    for sql in statements {
        sqlx::query(sql).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use sqlx::postgres::PgListener;

    use super::*;
    use crate::queue::{self, Wake};

    /// A wake-up due now is queued `priority` minutes early, and the claim takes the
    /// earliest first: a high priority run goes ahead of runs queued just before it,
    /// never ahead of a run that has waited longer than its head start.
    #[sqlx::test(migrations = false)]
    async fn priority_is_a_head_start_and_starves_nothing(pool: PgPool) {
        crate::queue::migrate(&pool).await.expect("migrate");
        let def = crate::workflow::Definition::parse(
            "one",
            "one.toml",
            "[[steps]]\nid = \"s\"\nkind = \"pass\"\n",
        )
        .expect("valid");
        let submit = |priority: i16| {
            let (pool, def) = (pool.clone(), def.clone());
            async move {
                let origin = crate::store::runs::RunOrigin {
                    priority,
                    ..Default::default()
                };
                crate::engine::submit::queue_one(&pool, &def, &origin).await
            }
        };
        let old = submit(0).await;
        // `old` has waited 10 minutes.
        sqlx::query(
            "update apalis.jobs set run_at = run_at - interval '10 minutes'
              where convert_from(job, 'utf8')::jsonb ->> 'run_id' = $1",
        )
        .bind(&old)
        .execute(&pool)
        .await
        .expect("age the job");
        let plain = submit(0).await;
        let urgent = submit(5).await;
        let later = submit(0).await;
        let mut order = Vec::new();
        for _ in 0..4 {
            let claimed = jobs_claim_runs(&pool, queue::QUEUE, "w", Duration::from_secs(60), 1)
                .await
                .expect("claim");
            order.extend(claimed.into_iter().map(|a| a.run.id));
        }
        assert_eq!(order, [old, urgent, plain, later]);
    }

    /// After migrating (twice: the second changes nothing), `apalis.jobs` has one index
    /// per purpose, and the one by worker leaves out jobs no worker holds.
    #[sqlx::test(migrations = false)]
    async fn migrating_trims_the_job_indexes_once(pool: PgPool) {
        crate::queue::migrate(&pool).await.expect("migrate");
        crate::queue::migrate(&pool).await.expect("migrate again");
        let indexes: Vec<(String, String)> = sqlx::query_as(
            "select indexname::text, indexdef from pg_indexes
              where schemaname = 'apalis' and tablename = 'jobs' order by indexname",
        )
        .fetch_all(&pool)
        .await
        .expect("indexes");
        let names: Vec<&str> = indexes.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "idx_apalis_jobs_fetch_partial",
                "idx_apalis_jobs_lock_by",
                "idx_jobs_idempotency_key",
                "jobs_pkey"
            ]
        );
        assert!(
            indexes[1].1.ends_with("WHERE (lock_by IS NOT NULL)"),
            "{}",
            indexes[1].1
        );
    }

    /// After migrating (twice: the second leaves it alone), a statement inserting three
    /// due jobs and one for later sends one notification, naming the queue.
    #[sqlx::test(migrations = false)]
    async fn a_statement_of_new_jobs_notifies_once(pool: PgPool) {
        crate::queue::migrate(&pool).await.expect("migrate");
        crate::queue::migrate(&pool).await.expect("migrate again");
        let triggers: i64 = sqlx::query_scalar(
            "select count(*) from pg_trigger
              where tgrelid = 'apalis.jobs'::regclass and not tgisinternal",
        )
        .fetch_one(&pool)
        .await
        .expect("count triggers");
        assert_eq!(triggers, 1);

        let mut listener = PgListener::connect_with(&pool).await.expect("listener");
        listener
            .listen("apalis::job::insert")
            .await
            .expect("listen");
        let mut tx = pool.begin().await.expect("begin");
        let later = chrono::Utc::now() + chrono::Duration::hours(1);
        queue::enqueue(
            &mut tx,
            &[
                Wake::now("a"),
                Wake::now("b"),
                Wake::now("c"),
                Wake {
                    run_id: "d".into(),
                    at: Some(later),
                },
            ],
        )
        .await
        .expect("enqueue");
        tx.commit().await.expect("commit");
        // Delivered in commit order: whatever the insert sent comes before this.
        sqlx::query("select pg_notify('apalis::job::insert', 'end')")
            .execute(&pool)
            .await
            .expect("notify");
        let first = listener.recv().await.expect("first notification");
        let payload: serde_json::Value =
            serde_json::from_str(first.payload()).expect("JSON payload");
        assert_eq!(payload, serde_json::json!({ "job_type": queue::QUEUE }));
        let second = listener.recv().await.expect("second notification");
        assert_eq!(
            second.payload(),
            "end",
            "one notification for the statement"
        );
    }
}
