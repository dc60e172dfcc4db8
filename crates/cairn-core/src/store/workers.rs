//! `workers`: live worker processes and their heartbeats. A heartbeat also extends the
//! leases of the runs the worker is advancing.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Result;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkerRow {
    pub id: String,
    pub hostname: String,
    pub pid: i32,
    pub version: String,
    pub concurrency: i32,
    pub started_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub in_flight: i64,
}

pub struct WorkerRegisterParams<'a> {
    pub id: &'a str,
    pub hostname: &'a str,
    pub pid: i32,
    pub version: &'a str,
    pub concurrency: i32,
}

/// Records a starting worker. Idempotent: a worker whose first try committed but lost
/// its answer (the database went away) tries again with the same id.
pub async fn worker_register(pool: &PgPool, p: WorkerRegisterParams<'_>) -> Result<()> {
    sqlx::query!(
        "insert into workers (id, hostname, pid, version, concurrency) values ($1, $2, $3, $4, $5)
         on conflict (id) do nothing",
        p.id,
        p.hostname,
        p.pid,
        p.version,
        p.concurrency
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The statement of [`worker_heartbeat`]: extends the leases of the runs `$3` that
/// `$1` still holds.
#[cfg(test)] // Read by the plan test (`plans.rs`); the statement runs from the file.
pub(super) const HEARTBEAT: &str = include_str!("sql/heartbeat.sql");

/// Records a heartbeat and extends the unexpired leases of `held`, the runs this worker
/// knows it holds; returns how many it extended.
///
/// Only the runs named are extended, never every run leased to the worker: a lease
/// the worker does not know of (its fetch committed but the answer was lost when the
/// database went away) must expire so that the rescuer requeues the run. Extending it
/// would keep the run `running`, untouched, for as long as the worker lives.
pub async fn worker_heartbeat(
    pool: &PgPool,
    id: &str,
    ttl: std::time::Duration,
    held: &[String],
) -> Result<u64> {
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "update workers set last_heartbeat_at = clock_timestamp() where id = $1",
        id
    )
    .execute(&mut *tx)
    .await?;
    // The runs are locked in id order, as every statement that locks several runs
    // does (the writer's batched transitions, leasing, handing back): an update alone
    // locks rows in whatever order its plan visits them, and deadlocked with a batch of
    // transitions of the same runs. The heartbeat waits for a locked run rather than
    // skipping it (`skip locked`): those locks last one short statement or transaction,
    // while a skipped run keeps its old expiry until the next beat, and a run the writer
    // touches at every beat could be skipped until its live lease expired.
    let extended = if held.is_empty() {
        0
    } else {
        sqlx::query_file!("src/store/sql/heartbeat.sql", id, ttl.as_secs_f64(), held)
            .execute(&mut *tx)
            .await?
            .rows_affected()
    };
    tx.commit().await?;
    Ok(extended)
}

pub async fn worker_stop(pool: &PgPool, id: &str) -> Result<()> {
    sqlx::query!(
        "update workers set stopped_at = clock_timestamp() where id = $1",
        id
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Workers seen within `since`, with how many runs each holds.
pub async fn worker_list(pool: &PgPool, since: std::time::Duration) -> Result<Vec<WorkerRow>> {
    Ok(sqlx::query_as!(
        WorkerRow,
        "select w.id, w.hostname, w.pid, w.version, w.concurrency, w.started_at,
                w.last_heartbeat_at, w.stopped_at,
                (select count(*) from runs r where r.lease_owner = w.id and r.status = 'running') as \"in_flight!\"
           from workers w
          where w.last_heartbeat_at > clock_timestamp() - make_interval(secs => $1)
          order by w.started_at",
        since.as_secs_f64()
    )
    .fetch_all(pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::engine::submit::queue_one;
    use crate::store::steps::{Transition, step_transitions};
    use crate::store::{Lease, StoreError, runs};
    use crate::workflow::Definition;

    /// Migrates and queues `n` runs of a one-step workflow; their ids.
    async fn one_step_runs(pool: &PgPool, n: usize) -> Vec<String> {
        crate::queue::migrate(pool).await.expect("migrate");
        let def = Definition::parse(
            "one",
            "one.toml",
            "[[steps]]\nid = \"s\"\nkind = \"pass\"\n",
        )
        .expect("valid");
        let mut ids = Vec::new();
        for _ in 0..n {
            ids.push(queue_one(pool, &def, &runs::RunOrigin::default()).await);
        }
        ids
    }

    /// A run leased to the worker that the worker does not know it holds — its fetch
    /// committed, but the answer was lost as the database restarted — is not extended:
    /// its lease expires and the rescuer requeues it. Extending every lease of the owner
    /// kept such runs `running` and untouched for as long as the worker lived.
    #[sqlx::test(migrations = false)]
    async fn a_heartbeat_extends_only_the_runs_the_worker_knows_it_holds(pool: PgPool) {
        let ids = one_step_runs(&pool, 2).await;
        for id in &ids {
            runs::run_lease_acquire(&pool, id, "w", Duration::from_secs(5))
                .await
                .expect("acquire")
                .expect("the lease is free");
        }
        let (known, lost) = (&ids[0], &ids[1]);
        worker_register(
            &pool,
            WorkerRegisterParams {
                id: "w",
                hostname: "h",
                pid: 1,
                version: "v",
                concurrency: 1,
            },
        )
        .await
        .expect("register");
        let extended = worker_heartbeat(
            &pool,
            "w",
            Duration::from_secs(600),
            std::slice::from_ref(known),
        )
        .await
        .expect("heartbeat");
        assert_eq!(extended, 1);
        let left = |id: String| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, f64>(
                    "select extract(epoch from lease_expires_at - clock_timestamp())::float8
                       from runs where id = $1",
                )
                .bind(id)
                .fetch_one(&pool)
                .await
                .expect("lease")
            }
        };
        assert!(
            left(known.clone()).await > 500.0,
            "the known run's lease is extended"
        );
        assert!(
            left(lost.clone()).await < 6.0,
            "the unknown run's lease is left to expire"
        );
    }

    /// A heartbeat and the writer's batched transitions lock the same runs at the same
    /// time, over and over: they must wait for each other, never deadlock. The runs are
    /// leased in reverse id order so that their rows lie in the table against the order
    /// the writer locks them in (an unordered update visits them in table order).
    #[sqlx::test(migrations = false)]
    async fn heartbeats_and_batched_transitions_of_the_same_runs_never_deadlock(pool: PgPool) {
        let mut ids = one_step_runs(&pool, 40).await;
        ids.sort();
        let ttl = Duration::from_secs(300);
        let mut leases: Vec<Lease> = Vec::new();
        for id in ids.iter().rev() {
            let acquired = runs::run_lease_acquire(&pool, id, "w", ttl)
                .await
                .expect("acquire")
                .expect("the lease is free");
            leases.push(acquired.lease);
        }
        leases.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        let leases = Arc::new(leases);

        const ROUNDS: usize = 100;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..2 {
            let pool = pool.clone();
            tasks.spawn(async move {
                for _ in 0..ROUNDS {
                    worker_heartbeat(&pool, "w", ttl, &[]).await?;
                }
                Ok::<_, StoreError>(())
            });
        }
        for _ in 0..3 {
            let (pool, leases) = (pool.clone(), leases.clone());
            tasks.spawn(async move {
                for _ in 0..ROUNDS {
                    let batch: Vec<(&Lease, Transition<'_>)> =
                        leases.iter().map(|l| (l, Transition::default())).collect();
                    let mut conn = pool.acquire().await?;
                    for result in step_transitions(&mut conn, &batch).await? {
                        result?;
                    }
                }
                Ok::<_, StoreError>(())
            });
        }
        let mut deadlocks = 0;
        while let Some(joined) = tasks.join_next().await {
            match joined.expect("the task ran to its end") {
                Ok(()) => {}
                Err(StoreError::Database(sqlx::Error::Database(e)))
                    if e.code().as_deref() == Some("40P01") =>
                {
                    deadlocks += 1;
                }
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!(deadlocks, 0, "tasks that ended in `deadlock detected`");
        let held: i64 = sqlx::query_scalar(
            "select count(*) from runs where lease_owner = 'w' and lease_expires_at > clock_timestamp()",
        )
        .fetch_one(&pool)
        .await
        .expect("count");
        assert_eq!(held, 40, "every lease is still held");
    }
}
