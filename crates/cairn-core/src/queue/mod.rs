//! The seam to apalis: the one job type Cairn queues, "advance run X", and the consumer
//! that hands leased runs to the engine. No apalis type leaves this module.
//!
//! `apalis.jobs` carries wake-ups only, queued by apalis-postgres inside the
//! transactions that need them. Workflow state, retries and backoff live in Cairn's own
//! tables (see [`crate::engine`]). Workers are apalis workers over Cairn's own fetch
//! (see [`consume`]): taking a wake-up deletes it and leases its run in the same
//! statement, so the run's lease — not the job — is what keeps a run from being lost
//! when its worker dies (the rescuer requeues runs whose lease expired).
//!
//! A run may be woken twice, or woken while another worker holds it: the second wake-up
//! leases nothing and is simply gone.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use apalis::prelude::{
    BackendBuilder, Monitor, TaskBuilder, TaskId, WorkerBuilder, WorkerBuilderExt, WorkerContext,
};
use apalis_postgres::PostgresStorage;
use chrono::{DateTime, Utc};
use futures::{SinkExt, StreamExt, sink, stream};
use serde_json::Value;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::store::{self, runs::Acquired};

/// The apalis queue (`apalis.jobs.job_type`) that carries Cairn's wake-ups.
pub const QUEUE: &str = "cairn.runs";

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Apalis(#[from] apalis_postgres::Error),
    #[error("encoding a job: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("queue consumer stopped: {0}")]
    Consumer(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("listening for new jobs: {0}")]
    Listen(#[from] sqlx::Error),
}

impl store::connect::Transient for QueueError {
    fn unavailable(&self) -> Option<&'static str> {
        QueueError::unavailable(self)
    }
}

impl QueueError {
    /// Why this error means the database is away right now
    /// ([`store::connect::unavailable`]).
    pub fn unavailable(&self) -> Option<&'static str> {
        match self {
            QueueError::Apalis(apalis_postgres::Error::Database(e)) | QueueError::Listen(e) => {
                store::connect::unavailable(e)
            }
            QueueError::Store(e) => e.unavailable(),
            _ => None,
        }
    }
}

/// A wake-up for a run: now, or at a given time.
#[derive(Debug, Clone)]
pub struct Wake {
    pub run_id: String,
    pub at: Option<DateTime<Utc>>,
}

impl Wake {
    pub fn now(run_id: impl Into<String>) -> Wake {
        Wake {
            run_id: run_id.into(),
            at: None,
        }
    }
}

/// Ids for `n` wake-ups that a statement of the store queues along with the runs it
/// creates (`store::runs::NewWakes`), made as [`enqueue`] makes its own.
pub fn wake_ids(n: usize) -> Vec<String> {
    (0..n)
        .map(|_| TaskId::from_ulid(ulid::Ulid::generate()).to_string())
        .collect()
}

/// Creates apalis' tables (schema `apalis`) if they are missing.
/// Brings a database up to date: Cairn's migrations, then apalis' (in its own `apalis`
/// schema), then Cairn's changes to apalis' tables — its per-job insert notification
/// replaced by a per-statement one ([`store::jobs::jobs_notify_install`]) and its job
/// indexes trimmed ([`store::jobs::jobs_indexes_trim`]). In that order, because each
/// step needs the one before. Safe to run from several processes at once: each step
/// takes an advisory lock.
pub async fn migrate(pool: &PgPool) -> Result<(), QueueError> {
    store::migrate(pool).await?;
    PostgresStorage::setup(pool).await?;
    store::jobs::jobs_notify_install(pool).await?;
    store::jobs::jobs_indexes_trim(pool).await?;
    Ok(())
}

/// Queues wake-ups inside the caller's transaction, so a run and its job commit
/// together or not at all. A wake-up due now is queued with its run's priority as a
/// head start ([`store::jobs::jobs_push`]).
pub async fn enqueue(conn: &mut PgConnection, wakes: &[Wake]) -> Result<(), QueueError> {
    let job_ids = wake_ids(wakes.len());
    let run_ids: Vec<String> = wakes.iter().map(|w| w.run_id.clone()).collect();
    let at: Vec<Option<DateTime<Utc>>> = wakes.iter().map(|w| w.at).collect();
    store::jobs::jobs_push(conn, QUEUE, &job_ids, &run_ids, &at).await?;
    Ok(())
}

/// How a consumer fetches.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The worker's id: the owner of the leases it takes.
    pub name: String,
    /// Runs advanced at once.
    pub concurrency: usize,
    /// How long a lease lasts before it must be renewed (the worker's heartbeat does).
    pub lease: Duration,
    /// Fallback poll when no notification arrives (scheduled jobs never notify).
    pub poll_interval: Duration,
    /// How long in-flight jobs may take to finish after shutdown begins.
    pub shutdown_timeout: Duration,
}

/// The runs a consumer holds: leased by its fetch and not yet done with (their handler
/// has not returned, or they wait for a slot). The worker's heartbeat extends exactly
/// these leases; a run leased to the worker but not in here — its fetch committed while
/// the answer was lost, or its handler gave up on it — is left to expire.
#[derive(Debug, Clone, Default)]
pub struct Held(Arc<std::sync::Mutex<HashSet<String>>>);

impl Held {
    /// The run ids held now.
    pub fn ids(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|runs| runs.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn add(&self, run_id: &str) {
        if let Ok(mut runs) = self.0.lock() {
            runs.insert(run_id.to_owned());
        }
    }

    fn remove(&self, run_id: &str) {
        if let Ok(mut runs) = self.0.lock() {
            runs.remove(run_id);
        }
    }
}

/// apalis' notification channel, on which inserts of jobs due at once are announced
/// (once per statement: `store::jobs::jobs_notify_install`).
const INSERTED: &str = "apalis::job::insert";

/// Consumes wake-ups until `shutdown` is cancelled, calling `handle` with each run whose
/// lease it took. `held` names the runs taken and not yet handled to the end.
///
/// apalis drives the workers (concurrency, shutdown, graceful draining); the fetch is
/// Cairn's own ([`store::jobs::jobs_claim_runs`]): when slots are free it takes as many
/// due wake-ups as there are free slots (under load, half the slots' worth more, leased
/// ahead), deletes them and leases their runs in one statement, so a wake-up costs no
/// acknowledgement, no separate lease round trip and no cleanup afterwards. It fetches again as soon as its runs are handed out, on every
/// notification of a new job, and at least every `poll_interval`. Runs it leased but
/// could not hand out before shutdown are handed back by the caller
/// (`engine::release_held`).
pub async fn consume<H, F>(
    pool: &PgPool,
    config: ConsumerConfig,
    held: Held,
    handle: H,
    shutdown: CancellationToken,
) -> Result<(), QueueError>
where
    H: Fn(Acquired) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    // The fetch's connection is opened, and its statement planned, before the worker
    // listens for work: the first runs it takes wait for neither. Neither is needed to
    // start, though: with the database away, the fetch retries on its own and the
    // listener is opened once the database is back.
    let claim_pool = store::jobs::jobs_claim_pool(pool);
    if let Err(e) =
        store::jobs::jobs_claim_runs(&claim_pool, QUEUE, &config.name, config.lease, 0).await
    {
        tracing::warn!(error = %e, "preparing the fetch failed");
    }
    let inserted = Arc::new(Notify::new());
    // The listener holds its connection for good: one of its own, so that every
    // connection of `pool` stays the engine's (with `--db-pool 1`, the listener held the
    // only one and no run could advance).
    let listen_pool = store::listen_pool(pool);
    let listener = match listen(&listen_pool).await {
        Ok(listener) => Some(listener),
        Err(e) => {
            tracing::warn!(error = %e, "listening for new jobs failed; polling meanwhile");
            None
        }
    };
    let listening = AbortOnDropHandle::new(tokio::spawn(relay_notifications(
        listen_pool.clone(),
        listener,
        inserted.clone(),
    )));

    let concurrency = config.concurrency.max(1);
    let slots = Arc::new(Slots {
        taken: AtomicUsize::new(0),
        freed: Notify::new(),
    });
    // Leased runs go to apalis through this channel one at a time, as its slots free up.
    let (to_worker, from_fetch) = mpsc::channel::<Acquired>(1);
    // No run is taken once shutdown begins: runs handed back while stopping must go to
    // other workers.
    let fetch_stop = shutdown.child_token();
    let fetching = tokio::spawn(
        Fetch {
            pool: claim_pool.clone(),
            owner: config.name.clone(),
            lease: config.lease,
            concurrency,
            slots: slots.clone(),
            held: held.clone(),
            inserted,
            poll_interval: config.poll_interval,
        }
        .run(to_worker, fetch_stop.clone()),
    );
    let leased = Arc::new(std::sync::Mutex::new(Some(ReceiverStream::new(from_fetch))));
    let backend = BackendBuilder::new()
        .database(leased)
        .fetcher(|leased: &mut Leased, _: &(), _: &WorkerContext| {
            // apalis builds the stream once per worker start; a second start would
            // find it taken and end at once.
            let runs = leased.lock().ok().and_then(|mut runs| runs.take());
            stream::iter(runs)
                .flatten()
                .map(|run| Ok::<_, QueueError>(Some(TaskBuilder::new(run).build())))
        })
        // Wake-ups are queued inside the transactions that need them ([`enqueue`]),
        // never through the worker's backend.
        .sink(|_: &mut Leased, _: &()| {
            sink::drain().sink_map_err(|never: std::convert::Infallible| match never {})
        })
        .build()
        .map_err(|e| QueueError::Consumer(e.to_string()))?;

    let name = config.name.clone();
    let asked_to_stop = shutdown.clone();
    let monitored = Monitor::new()
        .register(move |_| {
            let handle = handle.clone();
            let slots = slots.clone();
            let held = held.clone();
            WorkerBuilder::new(name.as_str())
                .backend(backend.clone())
                .concurrency(concurrency)
                .build(move |run: Acquired| {
                    let handle = handle.clone();
                    let slot = SlotGuard {
                        slots: slots.clone(),
                        held: held.clone(),
                        run_id: run.run.id.clone(),
                    };
                    async move {
                        handle(run).await;
                        drop(slot);
                        Ok::<(), JobError>(())
                    }
                })
        })
        .shutdown_timeout(config.shutdown_timeout)
        .run_with_signal(async move {
            shutdown.cancelled().await;
            Ok(())
        })
        .await
        .map_err(|e| QueueError::Consumer(e.to_string()));
    // The fetch stops between statements, never inside one, so that every run it
    // leased is known to be leased when the caller hands the leftovers back.
    fetch_stop.cancel();
    let _ = fetching.await;
    claim_pool.close().await;
    // The relay is stopped before its pool closes (a listener whose pool closes under it
    // reports an error), and the pool is closed, not dropped: its connection is then
    // closed before the caller returns.
    listening.abort();
    let _ = listening.await;
    store::close(listen_pool).await;
    monitored?;
    if asked_to_stop.is_cancelled() {
        Ok(())
    } else {
        Err(QueueError::Consumer(
            "apalis stopped the worker unasked (see the log above)".into(),
        ))
    }
}

type Leased = Arc<std::sync::Mutex<Option<ReceiverStream<Acquired>>>>;

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(INSERTED).await?;
    Ok(listener)
}

/// Wakes the fetch on every notification of a job of [`QUEUE`] that is due now, once
/// `listener` is open (opened here when the worker started without it). `recv`
/// reconnects by itself after a lost connection; what was announced meanwhile is found
/// by the fallback poll.
async fn relay_notifications(pool: PgPool, listener: Option<PgListener>, inserted: Arc<Notify>) {
    let mut listener = match listener {
        Some(listener) => listener,
        None => loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            match listen(&pool).await {
                Ok(listener) => break listener,
                Err(e) => {
                    tracing::warn!(error = %e, "listening for new jobs failed; polling meanwhile")
                }
            }
        },
    };
    loop {
        match listener.recv().await {
            Ok(n) => {
                let ours = serde_json::from_str::<Value>(n.payload())
                    .ok()
                    .and_then(|v| {
                        v.get("job_type")
                            .and_then(Value::as_str)
                            .map(|t| t == QUEUE)
                    })
                    .unwrap_or(true);
                if ours {
                    inserted.notify_one();
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "listening for new jobs failed; polling meanwhile");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Runs leased and not finished, against the worker's concurrency.
struct Slots {
    taken: AtomicUsize,
    freed: Notify,
}

/// Frees a run's slot, and lets its lease go from the heartbeat, when its handler is
/// done (or dropped).
struct SlotGuard {
    slots: Arc<Slots>,
    held: Held,
    run_id: String,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.held.remove(&self.run_id);
        self.slots.taken.fetch_sub(1, Ordering::SeqCst);
        self.slots.freed.notify_one();
    }
}

/// Most runs one fetch leases (see [`Fetch::run`]).
const FETCH_MAX: usize = 64;

/// Cairn's fetch: leases as many runs as there are free slots (and half as many ahead),
/// hands them to apalis one by one, and waits — for a slot, a notification or the poll
/// — when there is nothing to take.
struct Fetch {
    pool: PgPool,
    owner: String,
    lease: Duration,
    concurrency: usize,
    slots: Arc<Slots>,
    held: Held,
    inserted: Arc<Notify>,
    poll_interval: Duration,
}

impl Fetch {
    async fn run(self, to_worker: mpsc::Sender<Acquired>, stop: CancellationToken) {
        // Up to half the slots' worth of runs are leased ahead, so that under load
        // wake-ups are taken in batches instead of one per finished run. Those runs
        // wait in memory for a slot (their leases are renewed with the others). A fetch
        // takes at most FETCH_MAX: at high concurrency, a few hundred runs leased in one
        // statement then started together made the worker's work come in waves.
        let ahead = self.concurrency / 2;
        let capacity = self.concurrency + ahead;
        let least = ahead.min(FETCH_MAX);
        loop {
            let taken = self.slots.taken.load(Ordering::SeqCst);
            let free = capacity.saturating_sub(taken);
            if free == 0 || free < least {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.slots.freed.notified() => continue,
                }
            }
            if stop.is_cancelled() {
                return;
            }
            let claimed = store::jobs::jobs_claim_runs(
                &self.pool,
                QUEUE,
                &self.owner,
                self.lease,
                free.min(FETCH_MAX) as i64,
            )
            .await;
            match claimed {
                Ok(runs) if !runs.is_empty() => {
                    self.slots.taken.fetch_add(runs.len(), Ordering::SeqCst);
                    for run in &runs {
                        self.held.add(&run.run.id);
                    }
                    for run in runs {
                        tokio::select! {
                            // Not started: the caller hands it back with the others.
                            _ = stop.cancelled() => return,
                            sent = to_worker.send(run) => if sent.is_err() { return },
                        }
                    }
                }
                Ok(_) => {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = self.inserted.notified() => {}
                        _ = tokio::time::sleep(self.poll_interval) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "fetching wake-ups failed; trying again");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(self.poll_interval.max(Duration::from_millis(500))) => {}
                    }
                }
            }
        }
    }
}

#[derive(Debug)]
struct JobError(String);

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JobError {}
