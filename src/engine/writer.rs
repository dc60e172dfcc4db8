//! Group commit for step transitions.
//!
//! A worker advances many runs at once, and each of their transitions (a step's start,
//! its checkpoint, the run's success) is a fenced write. Written one commit each, every
//! transition waits for its own WAL flush. The writer instead writes the transitions
//! that are waiting at the same moment as one multi-row statement, its own transaction:
//! each run still waits until its transition is committed (so a checkpoint is durable
//! before the next step runs), but one statement and one flush serve them all. Nothing
//! waits to fill a batch: a batch is whatever queued up while the previous one was being
//! written.
//!
//! A run whose lease was lost gets [`StoreError::LeaseLost`] without disturbing the
//! others (the fence writes nothing and raises nothing). If the shared transaction fails
//! as a whole, every transition in it is retried on its own.

use std::sync::Arc;

use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::store::steps::{Checkpoint, Transition};
use crate::store::{self, Lease, StoreError};

/// Transitions written in one statement, at most.
const MAX_BATCH: usize = 256;
/// Statements being written at once. One: while it executes and commits, the next
/// batch gathers, and larger batches cost the database less per transition than two
/// statements in parallel do (at 64 runs in flight a worker and batches of 64, one
/// writer drained 3,400–3,900 runs/s and ran 7,700–8,100 chain steps/s in the bench,
/// two 2,800–2,900 and 6,900–7,400).
const WRITERS: usize = 1;

/// Sends transitions to the writer tasks; they stop when it is dropped.
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
}

struct Job {
    lease: Lease,
    transition: OwnedTransition,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// A [`Transition`] that can wait in a queue.
struct OwnedTransition {
    checkpoint: Option<(String, i32, Value)>,
    run_output: Option<Value>,
    begin: Option<(String, i32)>,
}

impl OwnedTransition {
    fn new(t: Transition<'_>) -> OwnedTransition {
        OwnedTransition {
            checkpoint: t
                .checkpoint
                .map(|c| (c.step_id.to_owned(), c.attempt, c.output.clone())),
            run_output: t.run_output.cloned(),
            begin: t.begin.map(|(step, attempt)| (step.to_owned(), attempt)),
        }
    }

    fn borrow(&self) -> Transition<'_> {
        Transition {
            checkpoint: self
                .checkpoint
                .as_ref()
                .map(|(step_id, attempt, output)| Checkpoint {
                    step_id,
                    attempt: *attempt,
                    output,
                }),
            run_output: self.run_output.as_ref(),
            begin: self
                .begin
                .as_ref()
                .map(|(step, attempt)| (step.as_str(), *attempt)),
        }
    }
}

impl Writer {
    /// Starts the writer tasks on the current runtime.
    pub(crate) fn start(pool: PgPool) -> Writer {
        let (jobs, rx) = mpsc::channel(MAX_BATCH * WRITERS * 4);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..WRITERS {
            tokio::spawn(write_loop(pool.clone(), rx.clone()));
        }
        Writer { jobs }
    }

    /// Writes `t` for the run `lease` holds; returns once it is committed.
    pub(crate) async fn write(&self, lease: &Lease, t: Transition<'_>) -> Result<(), StoreError> {
        let (done, committed) = oneshot::channel();
        let job = Job {
            lease: lease.clone(),
            transition: OwnedTransition::new(t),
            done,
        };
        let stopped = || StoreError::Database(sqlx::Error::PoolClosed);
        self.jobs.send(job).await.map_err(|_| stopped())?;
        committed.await.map_err(|_| stopped())?
    }
}

async fn write_loop(pool: PgPool, rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let mut batch = Vec::new();
        {
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(job) => batch.push(job),
                None => return,
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
        }
        write_batch(&pool, batch).await;
    }
}

async fn write_batch(pool: &PgPool, batch: Vec<Job>) {
    if batch.len() > 1 {
        match write_together(pool, &batch).await {
            Ok(results) => {
                for (job, result) in batch.into_iter().zip(results) {
                    let _ = job.done.send(result);
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, transitions = batch.len(),
                    "a shared transition transaction failed; writing each on its own");
            }
        }
    }
    for job in batch {
        let result = write_one(pool, &job).await;
        let _ = job.done.send(result);
    }
}

/// One statement for the whole batch, which is its own transaction: one round trip,
/// no `BEGIN` and `COMMIT` of their own. `Err` when the statement (its commit included)
/// failed, and nothing of it is committed; otherwise each transition's own outcome.
async fn write_together(
    pool: &PgPool,
    batch: &[Job],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let mut conn = pool.acquire().await?;
    let transitions: Vec<_> = batch
        .iter()
        .map(|job| (&job.lease, job.transition.borrow()))
        .collect();
    store::steps::step_transitions(&mut conn, &transitions).await
}

async fn write_one(pool: &PgPool, job: &Job) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await?;
    store::steps::step_transition(&mut conn, &job.lease, job.transition.borrow()).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::state::StepStatus;

    use serde_json::json;

    use super::*;
    use crate::engine::{Submitted, submit};
    use crate::workflow::Definition;

    async fn leased_run(pool: &PgPool, def: &Definition, owner: &str) -> Lease {
        let Ok(Ok(Submitted::Created(run))) = submit(pool, def, &json!({}), None).await else {
            panic!("the run was not created");
        };
        store::runs::run_lease_acquire(pool, &run.id, owner, Duration::from_secs(30))
            .await
            .expect("acquire")
            .expect("the lease is free")
            .lease
    }

    /// One shared transaction: a run whose lease was lost gets `LeaseLost`, and the
    /// transitions of the others in the same batch commit all the same.
    #[sqlx::test(migrations = false)]
    async fn a_lost_lease_in_a_batch_leaves_the_others_committed(pool: PgPool) {
        crate::queue::migrate(&pool).await.expect("migrate");
        let def = Definition::parse(
            "one",
            "one.toml",
            "[[steps]]\nid = \"s\"\nkind = \"sql\"\nquery = \"select 1\"\n",
        )
        .expect("valid");
        let kept = leased_run(&pool, &def, "w").await;
        let mut lost = leased_run(&pool, &def, "w").await;
        lost.token += 1;
        let job = |lease: &Lease| {
            let (done, _) = oneshot::channel();
            Job {
                lease: lease.clone(),
                transition: OwnedTransition::new(Transition {
                    begin: Some(("s", 1)),
                    ..Transition::default()
                }),
                done,
            }
        };
        let results = write_together(&pool, &[job(&kept), job(&lost)])
            .await
            .expect("the shared transaction commits");
        assert!(results[0].is_ok(), "{:?}", results[0]);
        assert!(
            matches!(results[1], Err(StoreError::LeaseLost(_))),
            "{:?}",
            results[1]
        );
        let statuses: Vec<(String, StepStatus, i64)> = sqlx::query_as(
            "select s.run_id, s.status,
                    (select count(*) from step_attempts a where a.run_id = s.run_id)
               from steps s where s.run_id = any($1) order by s.run_id = $2 desc",
        )
        .bind([kept.run_id.clone(), lost.run_id.clone()])
        .bind(&kept.run_id)
        .fetch_all(&pool)
        .await
        .expect("read steps");
        assert_eq!(statuses[0].1, StepStatus::Running);
        assert_eq!(statuses[0].2, 1);
        assert_eq!(
            statuses[1].1,
            StepStatus::Pending,
            "nothing written for the lost lease"
        );
        assert_eq!(statuses[1].2, 0);
    }

    /// Steps, attempts and events are tied to their run by the statements that write
    /// them, not by foreign keys: an attempt is written only for a step the run has, an
    /// event only for a run that exists, and deleting a run deletes them with it.
    #[sqlx::test(migrations = false)]
    async fn rows_are_written_only_for_existing_runs_and_steps_and_deleted_with_their_run(
        pool: PgPool,
    ) {
        crate::queue::migrate(&pool).await.expect("migrate");
        let def = Definition::parse(
            "one",
            "one.toml",
            "[[steps]]\nid = \"s\"\nkind = \"pass\"\n",
        )
        .expect("valid");
        let lease = leased_run(&pool, &def, "w").await;
        let begin = |step: &'static str| {
            let (done, _) = oneshot::channel();
            Job {
                lease: lease.clone(),
                transition: OwnedTransition::new(Transition {
                    begin: Some((step, 1)),
                    ..Transition::default()
                }),
                done,
            }
        };
        let results = write_together(&pool, &[begin("s"), begin("not-a-step")])
            .await
            .expect("the shared statement commits");
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let attempts: Vec<String> =
            sqlx::query_scalar("select step_id from step_attempts where run_id = $1")
                .bind(&lease.run_id)
                .fetch_all(&pool)
                .await
                .expect("attempts");
        assert_eq!(
            attempts,
            ["s"],
            "no attempt for a step the run does not have"
        );

        let mut conn = pool.acquire().await.expect("connection");
        let refused =
            store::events::event_append(&mut conn, "no-such-run", "run_cancelled", None, json!({}))
                .await;
        assert!(
            matches!(refused, Err(StoreError::Missing(_))),
            "{refused:?}"
        );
        let count = |sql: &'static str, run: String| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(sql)
                    .bind(run)
                    .fetch_one(&pool)
                    .await
                    .expect("count")
            }
        };
        let events = "select count(*) from run_events where run_id = $1";
        assert_eq!(count(events, "no-such-run".into()).await, 0);
        assert!(count(events, lease.run_id.clone()).await > 0);

        sqlx::query("delete from runs where id = $1")
            .bind(&lease.run_id)
            .execute(&pool)
            .await
            .expect("delete the run");
        for sql in [
            "select count(*) from steps where run_id = $1",
            "select count(*) from step_attempts where run_id = $1",
            events,
        ] {
            assert_eq!(count(sql, lease.run_id.clone()).await, 0, "{sql}");
        }
    }
}
