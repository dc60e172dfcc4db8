//! The one writer of run and step transitions.
//!
//! Every change the engine makes to a run's state goes through [`Writer`]: the hot ones
//! (a step's start, its checkpoint, a run's success) group-committed as below, the rest
//! (skips, timers, waits, child runs, failures, parking, finishing, releasing) each in
//! a transaction of its own — always fenced by the run's lease, always with the events
//! and queue wake-ups that belong to it. A `wait` step's result delivered through the
//! webhook is written here too ([`deliver`]), so no transition is written elsewhere.
//!
//! # Group commit
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
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::submit::{self, Item, Outcome, Rejected, Submission, Submitted, submit_in};
use super::{EngineError, Result};
use crate::queue::{self, Wake};
use crate::state::RunStatus;
use crate::store::runs::{Cancelled, RunOrigin, RunRow};
use crate::store::steps::{Awaiting, Checkpoint, Delivery, DeliveryTarget, Transition};
use crate::store::{self, Lease, StoreError};
use crate::telemetry::metrics;
use crate::workflow::{Definition, InputError};

/// Transitions written in one statement, at most.
const MAX_BATCH: usize = 256;
/// Statements being written at once. One: while it executes and commits, the next
/// batch gathers, and larger batches cost the database less per transition than two
/// statements in parallel do (at 64 runs in flight a worker and batches of 64, one
/// writer drained 3,400–3,900 runs/s and ran 7,700–8,100 chain steps/s in the bench,
/// two 2,800–2,900 and 6,900–7,400).
const WRITERS: usize = 1;

/// Writes a worker's transitions; its group-commit tasks stop when it is dropped.
pub(crate) struct Writer {
    pool: PgPool,
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
        Writer { pool, jobs }
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

    /// The run's last checkpoint and its success (`t`), and for a child run its
    /// parent's wake-up in the same transaction (so not group-committed).
    pub(crate) async fn finish_run(
        &self,
        lease: &Lease,
        t: Transition<'_>,
        parent: Option<&str>,
    ) -> Result<()> {
        match parent {
            Some(parent) => {
                let mut tx = self.pool.begin().await?;
                store::steps::step_transition(&mut tx, lease, t).await?;
                wake(&mut tx, Some(parent)).await?;
                tx.commit().await?;
            }
            None => self.write(lease, t).await?,
        }
        Ok(())
    }

    /// A step whose `if` is false: skipped, with a `null` output.
    pub(crate) async fn skip(&self, lease: &Lease, step_id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        store::steps::step_skip(&mut tx, lease, step_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A waiting step done with `output` (a timer that fired, a child that succeeded).
    pub(crate) async fn succeed_waiting(
        &self,
        lease: &Lease,
        step_id: &str,
        attempt: i32,
        output: &Value,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        store::steps::step_succeed(&mut tx, lease, step_id, attempt, output, None).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A `sleep` step's timer set; when it fires.
    pub(crate) async fn sleep(
        &self,
        lease: &Lease,
        step_id: &str,
        attempt: i32,
        duration: Duration,
    ) -> Result<DateTime<Utc>> {
        let mut tx = self.pool.begin().await?;
        let wake_at = store::steps::step_sleep(&mut tx, lease, step_id, attempt, duration).await?;
        tx.commit().await?;
        Ok(wake_at)
    }

    /// A step held back until `until` (its rate limit, or no free slot), without an
    /// attempt.
    pub(crate) async fn delay(
        &self,
        lease: &Lease,
        step_id: &str,
        until: DateTime<Utc>,
        why: store::steps::Delay<'_>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        store::steps::step_delay(&mut tx, lease, step_id, until, why).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A `wait` step waiting for its delivery; when it times out.
    pub(crate) async fn wait(
        &self,
        lease: &Lease,
        step_id: &str,
        attempt: i32,
        timeout: Duration,
    ) -> Result<DateTime<Utc>> {
        let mut tx = self.pool.begin().await?;
        let wake_at = store::steps::step_wait(
            &mut tx,
            lease,
            step_id,
            attempt,
            timeout,
            Awaiting::Callback,
        )
        .await?;
        tx.commit().await?;
        Ok(wake_at)
    }

    /// A `workflow` step's child run created (`def` with `input`, from `origin`) and the
    /// step waiting for it, in one transaction; when the step times out. Nothing is
    /// written when the child's input is refused.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn spawn_child(
        &self,
        lease: &Lease,
        step_id: &str,
        attempt: i32,
        timeout: Duration,
        def: &Definition,
        input: &Value,
        origin: &RunOrigin,
    ) -> Result<Result<(Submitted, DateTime<Utc>), Vec<InputError>>> {
        let mut tx = self.pool.begin().await?;
        store::lease_fence(&mut tx, lease).await?;
        let one = [Item::input(input)];
        let created = match submit_in(&mut tx, Submission::of(def, &one).from(origin)).await? {
            Ok(mut created) => match created.pop() {
                Some(run) if run.outcome == Outcome::Created => run,
                _ => {
                    return Err(EngineError::Definition {
                        run: lease.run_id.clone(),
                        hash: def.hash.clone(),
                        reason: "child run not created".into(),
                    });
                }
            },
            Err(rejected) => return Ok(Err(rejected.input_errors())),
        };
        let wake_at = store::steps::step_wait(
            &mut tx,
            lease,
            step_id,
            attempt,
            timeout,
            Awaiting::Child(&created.run_id),
        )
        .await?;
        tx.commit().await?;
        metrics::runs_submitted(&def.workflow.name, 1);
        Ok(Ok((created, wake_at)))
    }

    /// Writes a `map` step's list, [`store::maps::CHUNK`] items per transaction; items
    /// already written (by an attempt a crash cut short) are skipped.
    pub(crate) async fn map_items(
        &self,
        lease: &Lease,
        step_id: &str,
        items: &[Value],
    ) -> Result<()> {
        for (n, chunk) in items.chunks(store::maps::CHUNK).enumerate() {
            let first = i32::try_from(n * store::maps::CHUNK).unwrap_or(i32::MAX);
            let mut tx = self.pool.begin().await?;
            store::maps::map_items_insert(&mut tx, lease, step_id, first, chunk).await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// One turn of a `map` step, in one transaction (see [`MapTurn`]): takes in the items
    /// whose child runs ended, then fails the step (`fail_fast` and an item failed),
    /// succeeds it (every item ended), or starts the next items while there is room,
    /// each child's input made by `input` (an `Err` fails the item).
    pub(crate) async fn map_turn(
        &self,
        lease: &Lease,
        turn: MapTurn<'_>,
        input: &mut (dyn FnMut(i32, &Value) -> Result<Value, String> + Send),
    ) -> Result<MapTurned> {
        let step_id = turn.step_id;
        let mut tx = self.pool.begin().await?;
        let mut wake_at = None;
        if let Some((timeout, total)) = turn.begin {
            wake_at = Some(
                store::steps::step_wait(
                    &mut tx,
                    lease,
                    step_id,
                    turn.attempt,
                    timeout,
                    Awaiting::Items(total),
                )
                .await?,
            );
            store::maps::map_ready(&mut tx, lease, step_id, total).await?;
        }
        let mut counts = store::maps::map_collect(&mut tx, lease, step_id).await?;
        let mut submitted = 0;
        loop {
            if turn.fail_fast && counts.failed > 0 {
                let (index, error) = store::maps::map_first_failure(&mut tx, lease, step_id)
                    .await?
                    .unwrap_or((-1, "failed".into()));
                let why = format!("item {index} failed: {error}");
                let children = store::maps::map_stop(
                    &mut tx,
                    lease,
                    step_id,
                    "cancelled: another item failed and the map fails fast",
                )
                .await?;
                for child in &children {
                    store::runs::run_cancel(
                        &mut tx,
                        child,
                        &format!("map {} of run {} failed", step_id, lease.run_id),
                    )
                    .await?;
                }
                store::steps::step_fail(&mut tx, lease, step_id, turn.attempt, &why, None).await?;
                tx.commit().await?;
                metrics::runs_submitted(&turn.child.workflow.name, submitted);
                if !children.is_empty() {
                    admit_after(&self.pool).await;
                }
                return Ok(MapTurned::Failed(why));
            }
            if counts.finished() {
                let output = store::maps::map_output(&mut tx, lease, step_id).await?;
                store::steps::step_succeed(&mut tx, lease, step_id, turn.attempt, &output, None)
                    .await?;
                tx.commit().await?;
                metrics::runs_submitted(&turn.child.workflow.name, submitted);
                return Ok(MapTurned::Succeeded(output));
            }
            let room = i64::from(turn.max_parallel) - i64::from(counts.running);
            if room <= 0 {
                break;
            }
            let next = store::maps::map_next(&mut tx, lease, step_id, room).await?;
            if next.is_empty() {
                break;
            }
            let mut started = Vec::new();
            let mut refused = Vec::new();
            let mut inputs: Vec<(i32, Value)> = Vec::with_capacity(next.len());
            for (index, item) in next {
                match input(index, &item) {
                    Ok(v) => inputs.push((index, v)),
                    Err(e) => refused.push((index, e)),
                }
            }
            // The turn's items are one submission. Should the child's input schema
            // refuse some, they are named, and the others submitted without them.
            while !inputs.is_empty() {
                let items: Vec<Item> = inputs.iter().map(|(_, v)| Item::input(v)).collect();
                let children = Submission::of(turn.child, &items).from(turn.origin);
                match submit_in(&mut tx, children).await? {
                    Ok(created) => {
                        for ((index, _), run) in inputs.iter().zip(created) {
                            if run.outcome == Outcome::Created {
                                started.push((*index, run.run_id));
                            } else {
                                refused.push((*index, "the child run was not created".into()));
                            }
                        }
                        inputs.clear();
                    }
                    Err(Rejected::Items(bad)) => {
                        let mut out = vec![false; inputs.len()];
                        for r in &bad {
                            let text: Vec<String> =
                                r.input.iter().map(ToString::to_string).collect();
                            out[r.index] = true;
                            refused.push((
                                inputs[r.index].0,
                                format!(
                                    "input for workflow `{}` is invalid: {}",
                                    turn.child.workflow.name,
                                    text.join("; ")
                                ),
                            ));
                        }
                        let mut keep = out.iter().map(|o| !o);
                        inputs.retain(|_| keep.next().unwrap_or(false));
                    }
                    // A turn starts at most `max_parallel` (≤ 1,000) items.
                    Err(other) => {
                        for (index, _) in inputs.drain(..) {
                            refused.push((index, format!("the child run was refused: {other:?}")));
                        }
                    }
                }
            }
            submitted += started.len();
            counts = store::maps::map_started(&mut tx, lease, step_id, &started, &refused).await?;
        }
        tx.commit().await?;
        metrics::runs_submitted(&turn.child.workflow.name, submitted);
        Ok(MapTurned::Waiting { counts, wake_at })
    }

    /// Stops a `map` step whose time ran out: its items in flight fail and their child
    /// runs are cancelled.
    pub(crate) async fn map_stop(&self, lease: &Lease, step_id: &str, why: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let children = store::maps::map_stop(&mut tx, lease, step_id, why).await?;
        for child in &children {
            store::runs::run_cancel(&mut tx, child, why).await?;
        }
        tx.commit().await?;
        if !children.is_empty() {
            admit_after(&self.pool).await;
        }
        Ok(())
    }

    /// Stores a definition runs are about to pin (an inline map step's items').
    pub(crate) async fn store_definition(&self, def: &Definition) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        submit::store_definition(&mut conn, def).await
    }

    /// Cancels a child run whose parent stopped waiting for it.
    pub(crate) async fn cancel_child(&self, child_id: &str, by: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        store::runs::run_cancel(&mut tx, child_id, by).await?;
        tx.commit().await?;
        admit_after(&self.pool).await;
        Ok(())
    }

    /// A failed attempt: retried after `retry_in`, or failed for good (`None`); when the
    /// next attempt is due, if there is one.
    pub(crate) async fn fail(
        &self,
        lease: &Lease,
        step_id: &str,
        attempt: i32,
        message: &str,
        retry_in: Option<Duration>,
    ) -> Result<Option<DateTime<Utc>>> {
        let mut tx = self.pool.begin().await?;
        let next =
            store::steps::step_fail(&mut tx, lease, step_id, attempt, message, retry_in).await?;
        tx.commit().await?;
        Ok(next)
    }

    /// A step failed for good before it ran (a broken condition, template or child
    /// input): its attempt recorded, with the error.
    pub(crate) async fn fail_at_start(
        &self,
        lease: &Lease,
        step_id: &str,
        attempt: i32,
        error: &str,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        store::steps::step_begin(&mut tx, lease, step_id, attempt).await?;
        store::steps::step_fail(&mut tx, lease, step_id, attempt, error, None).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The run is dead (`step_id` names the step, or what failed: `definition`,
    /// `output`), its parent woken.
    pub(crate) async fn dead(
        &self,
        lease: &Lease,
        step_id: &str,
        error: &str,
        parent: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        store::runs::run_dead(&mut tx, lease, step_id, error).await?;
        wake(&mut tx, parent).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The run succeeded with `output`, its parent woken.
    pub(crate) async fn succeed(
        &self,
        lease: &Lease,
        output: &Value,
        parent: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        store::runs::run_succeed(&mut tx, lease, output).await?;
        wake(&mut tx, parent).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Parks the run as `status` until `at`, with its wake-up queued — unless one of the
    /// `watch`ed steps (waiting on the outside world) has news, then nothing is written
    /// and `false` comes back. The park holds the run's lock: a callback or a child's end
    /// either committed before (seen here) or wakes the run after.
    pub(crate) async fn park(
        &self,
        lease: &Lease,
        status: RunStatus,
        at: DateTime<Utc>,
        watch: &[String],
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        store::runs::run_park(&mut tx, lease, status, at).await?;
        if store::steps::steps_have_news(&mut tx, &lease.run_id, watch).await? {
            return Ok(false);
        }
        queue::enqueue(
            &mut tx,
            &[Wake {
                run_id: lease.run_id.clone(),
                at: Some(at),
            }],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Gives the run back to the queue, to be taken again at `at` (now when `None`).
    pub(crate) async fn release(
        &self,
        lease: &Lease,
        reason: &str,
        at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        store::runs::run_release(&mut tx, lease, reason).await?;
        let wake = Wake {
            run_id: lease.run_id.clone(),
            at,
        };
        queue::enqueue(&mut tx, &[wake]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// An operator's cancel, honoured at a step boundary.
    pub(crate) async fn cancel_finish(&self, lease: &Lease) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        store::runs::run_cancel_finish(&mut tx, lease).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// One turn of a `map` step ([`Writer::map_turn`]).
pub(crate) struct MapTurn<'a> {
    pub(crate) step_id: &'a str,
    /// The step's attempt: the one that begins now when `begin` is set.
    pub(crate) attempt: i32,
    /// A new attempt: how long it may take, and the list's size.
    pub(crate) begin: Option<(Duration, i32)>,
    pub(crate) max_parallel: u32,
    pub(crate) fail_fast: bool,
    /// The items' workflow, and where their runs come from.
    pub(crate) child: &'a Definition,
    pub(crate) origin: &'a RunOrigin,
}

/// How a turn of a `map` step left it.
pub(crate) enum MapTurned {
    /// Items are running: the step waits for them (until `wake_at`, set when the attempt
    /// began now).
    Waiting {
        counts: store::maps::MapCounts,
        wake_at: Option<DateTime<Utc>>,
    },
    Succeeded(Value),
    /// An item failed and the map fails fast; the step has failed for good.
    Failed(String),
}

/// Queues a wake-up for the parent run, in the transaction that finishes its child.
async fn wake(conn: &mut PgConnection, parent: Option<&str>) -> Result<()> {
    if let Some(parent) = parent {
        queue::enqueue(conn, &[Wake::now(parent)]).await?;
    }
    Ok(())
}

/// Admits the runs of `workflow`'s concurrency `key` that wait for a slot, as far as
/// slots are free (see [`store::concurrency`]); returns how many.
pub async fn admit(pool: &PgPool, workflow: &str, key: &str) -> Result<usize> {
    let mut tx = pool.begin().await?;
    let admitted =
        store::concurrency::concurrency_admit(&mut tx, workflow, key, queue::QUEUE).await?;
    tx.commit().await?;
    Ok(admitted.len())
}

/// Admits waiting runs of every key with a free slot, up to `max_keys` keys: after
/// operations that may free slots of keys not known here (a cancel's cascade to child
/// runs), and periodically, for an admission lost between a run's end and its own.
pub async fn admit_due(pool: &PgPool, max_keys: i64) -> Result<usize> {
    let mut admitted = 0;
    for due in store::concurrency::concurrency_due(pool, max_keys).await? {
        admitted += admit(pool, &due.workflow, &due.key).await?;
    }
    Ok(admitted)
}

/// Most keys [`admit_after`] looks at.
const ADMIT_AFTER_KEYS: i64 = 100;

/// [`admit_due`] after an operator's cancel or retry committed, which may have freed
/// slots (or queued a run for one). A failure is logged, not returned: what the operator
/// asked for is done, and the rescuers' periodic admission catches up.
async fn admit_after(pool: &PgPool) {
    if let Err(e) = admit_due(pool, ADMIT_AFTER_KEYS).await {
        tracing::warn!(error = %e, "admitting runs waiting for a concurrency slot failed");
    }
}

/// Takes a slot of the step concurrency `key` for step `step_id` of the run `lease`
/// holds (see [`store::step_slots`]); `false`: the step waits in line.
pub(crate) async fn slot_take(
    pool: &PgPool,
    lease: &Lease,
    step_id: &str,
    key: &str,
    limit: i32,
    hold: Duration,
) -> Result<bool> {
    let mut tx = pool.begin().await?;
    store::lease_fence(&mut tx, lease).await?;
    let taken =
        store::step_slots::slot_take(&mut tx, key, limit, &lease.run_id, step_id, hold).await?;
    tx.commit().await?;
    Ok(taken)
}

/// Releases the slot of `key` that step `step_id` of run `run_id` held, and wakes the
/// step first in line for one, if any.
pub(crate) async fn slot_release(
    pool: &PgPool,
    key: &str,
    run_id: &str,
    step_id: &str,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    if let Some((run, step)) =
        store::step_slots::slot_release(&mut tx, key, run_id, step_id).await?
    {
        store::steps::step_slot_free(&mut tx, &run, &step).await?;
        queue::enqueue(&mut tx, &[Wake::now(run)]).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Hands back to the queue every run worker `owner` still leases — runs its fetch took
/// but never started before it stopped — so they continue at once elsewhere rather than
/// when their lease expires. Call only once no handler of `owner` is running.
pub async fn release_held(pool: &PgPool, owner: &str) -> Result<usize> {
    let mut tx = pool.begin().await?;
    let ids =
        store::runs::run_release_held(&mut tx, owner, "the worker stopped before starting it")
            .await?;
    if !ids.is_empty() {
        let wakes: Vec<Wake> = ids.iter().map(Wake::now).collect();
        queue::enqueue(&mut tx, &wakes).await?;
    }
    tx.commit().await?;
    Ok(ids.len())
}

/// Queues wake-ups for runs whose lease expired; returns how many were rescued.
pub async fn rescue_expired(pool: &PgPool, batch: i64) -> Result<usize> {
    let mut tx = pool.begin().await?;
    let ids = store::runs::runs_rescue_expired(&mut tx, batch).await?;
    if !ids.is_empty() {
        let wakes: Vec<Wake> = ids.iter().map(Wake::now).collect();
        queue::enqueue(&mut tx, &wakes).await?;
    }
    tx.commit().await?;
    if !ids.is_empty() {
        tracing::info!(count = ids.len(), runs = ?ids, "requeued runs whose worker lost its lease");
    }
    Ok(ids.len())
}

/// Retries a dead or cancelled run from its failed steps, queued at once. `None`: no
/// such run, or it is not dead or cancelled (see [`store::runs::run_retry`]).
pub(crate) async fn retry(pool: &PgPool, run_id: &str, by: &str) -> Result<Option<RunRow>> {
    let mut tx = pool.begin().await?;
    let run = store::runs::run_retry(&mut tx, run_id, by).await?;
    if run.is_some() {
        queue::enqueue(&mut tx, &[Wake::now(run_id)]).await?;
    }
    tx.commit().await?;
    if run.as_ref().is_some_and(|r| r.concurrency_key.is_some()) {
        admit_after(pool).await;
    }
    Ok(run)
}

/// [`retry`] for each of `ids` (sorted, so its locks are taken in id order), in one
/// transaction; how many were retried.
pub(crate) async fn retry_many(pool: &PgPool, ids: &[String], by: &str) -> Result<usize> {
    let mut tx = pool.begin().await?;
    let mut wakes = Vec::new();
    for id in ids {
        if store::runs::run_retry(&mut tx, id, by).await?.is_some() {
            wakes.push(Wake::now(id));
        }
    }
    queue::enqueue(&mut tx, &wakes).await?;
    tx.commit().await?;
    admit_after(pool).await;
    Ok(wakes.len())
}

/// Cancels a run (and the child runs it started); a parent waiting on it is woken.
pub(crate) async fn cancel(pool: &PgPool, run_id: &str, by: &str) -> Result<Option<Cancelled>> {
    stop(pool, run_id, by, store::runs::Stop::Cancel).await
}

/// [`cancel`], stopping the steps running now at once (see [`store::runs::Stop`]).
pub(crate) async fn terminate(pool: &PgPool, run_id: &str, by: &str) -> Result<Option<Cancelled>> {
    stop(pool, run_id, by, store::runs::Stop::Terminate).await
}

async fn stop(
    pool: &PgPool,
    run_id: &str,
    by: &str,
    how: store::runs::Stop,
) -> Result<Option<Cancelled>> {
    let mut tx = pool.begin().await?;
    let outcome = match how {
        store::runs::Stop::Cancel => store::runs::run_cancel(&mut tx, run_id, by).await?,
        store::runs::Stop::Terminate => store::runs::run_terminate(&mut tx, run_id, by).await?,
    };
    if outcome == Some(Cancelled::Now)
        && let Some(parent) = store::runs::run_get_parent(&mut tx, run_id).await?
    {
        queue::enqueue(&mut tx, &[Wake::now(parent)]).await?;
    }
    tx.commit().await?;
    if outcome.is_some() {
        admit_after(pool).await;
    }
    Ok(outcome)
}

/// Cancels each of `ids` (sorted, as [`retry_many`]) in one transaction; how many were
/// cancelled or asked to stop.
pub(crate) async fn cancel_many(pool: &PgPool, ids: &[String], by: &str) -> Result<usize> {
    let mut tx = pool.begin().await?;
    let mut cancelled = 0;
    for id in ids {
        if matches!(
            store::runs::run_cancel(&mut tx, id, by).await?,
            Some(Cancelled::Now | Cancelled::Requested)
        ) {
            cancelled += 1;
        }
    }
    tx.commit().await?;
    admit_after(pool).await;
    Ok(cancelled)
}

/// How a delivered result for a `wait` step went.
#[derive(Debug)]
pub enum Delivered<E> {
    /// Stored, and the run woken.
    Accepted,
    /// The step had this result already: nothing written.
    Duplicate,
    /// No such run or step.
    Unknown,
    /// The step is not waiting for a result; it is in this state.
    NotWaiting(crate::state::StepStatus),
    /// `check` refused the delivery.
    Refused(E),
}

/// Delivers `result` to the `wait` step `step_id` of run `run_id` (the webhook): with
/// the run and the step locked, `check` judges the delivery against the step as it
/// stands (its credentials are per attempt); an accepted result is the step's
/// checkpoint and the run's wake-up, in one transaction.
pub async fn deliver<E>(
    pool: &PgPool,
    run_id: &str,
    step_id: &str,
    result: &Value,
    check: impl FnOnce(&DeliveryTarget) -> std::result::Result<(), E>,
) -> Result<Delivered<E>> {
    let mut tx = pool.begin().await?;
    let Some(target) = store::steps::step_lock_for_delivery(&mut tx, run_id, step_id).await? else {
        return Ok(Delivered::Unknown);
    };
    if let Err(e) = check(&target) {
        return Ok(Delivered::Refused(e));
    }
    let delivered =
        match store::steps::step_deliver(&mut tx, run_id, step_id, &target, result).await? {
            Delivery::Accepted => {
                queue::enqueue(&mut tx, &[Wake::now(run_id)]).await?;
                Delivered::Accepted
            }
            Delivery::Duplicate => Delivered::Duplicate,
            Delivery::NotWaiting(status) => return Ok(Delivered::NotWaiting(status)),
        };
    tx.commit().await?;
    Ok(delivered)
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
    use crate::engine::submit::queue_one;
    use crate::workflow::Definition;

    async fn leased_run(pool: &PgPool, def: &Definition, owner: &str) -> Lease {
        let run = queue_one(pool, def, &RunOrigin::default()).await;
        store::runs::run_lease_acquire(pool, &run, owner, Duration::from_secs(30))
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
