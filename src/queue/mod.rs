//! The seam to apalis: the one job type Cairn queues, "advance run X", and the consumer
//! that hands those jobs to the engine. No apalis type leaves this module.
//!
//! apalis-postgres carries wake-ups only. Workflow state, retries and backoff live in
//! Cairn's own tables (see [`crate::engine`]): apalis' own retries have no delay and
//! its `RetryAfterError` loops hot, so the engine answers every job with success and
//! schedules follow-up jobs itself, in the same transaction as the state they act on.
//!
//! Delivery is at least once: a job may arrive twice or arrive for a run another worker
//! holds. The engine's lease makes that harmless.

use std::future::Future;
use std::time::Duration;

use apalis::prelude::{
    BackendExt, Monitor, Strategy, TaskBuilder, TaskId, WorkerBuilder, WorkerBuilderExt,
};
use apalis_postgres::{Config, PostgresStorage};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

/// The apalis queue (`apalis.jobs.job_type`) that carries Cairn's wake-ups.
pub const QUEUE: &str = "cairn.runs";

/// How many times apalis itself re-delivers a job whose handler failed (an
/// infrastructure error, e.g. the database went away mid-job).
const MAX_DELIVERIES: usize = 5;

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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunJob {
    run_id: String,
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

/// Creates apalis' tables (schema `apalis`) if they are missing.
pub async fn setup(pool: &PgPool) -> Result<(), QueueError> {
    PostgresStorage::setup(pool).await?;
    Ok(())
}

/// Queues wake-ups inside the caller's transaction, so a run and its job commit
/// together or not at all.
pub async fn enqueue(conn: &mut PgConnection, wakes: &[Wake]) -> Result<(), QueueError> {
    let mut tasks = Vec::with_capacity(wakes.len());
    for wake in wakes {
        let bytes = serde_json::to_vec(&RunJob {
            run_id: wake.run_id.clone(),
        })?;
        let mut builder = TaskBuilder::new(bytes)
            .task_id(TaskId::from_ulid(ulid::Ulid::generate()))
            .max_attempts(MAX_DELIVERIES);
        if let Some(at) = wake.at {
            // apalis stores whole seconds and runs jobs strictly after `run_at`:
            // rounding up means a job never arrives before its time.
            let ms = at.timestamp_millis().max(0) as u64;
            builder = builder.run_at_timestamp(ms.div_ceil(1000));
        }
        tasks.push(builder.build());
    }
    apalis_postgres::queries::push_tasks(conn, QUEUE, tasks).await?;
    Ok(())
}

/// Deletes acknowledged wake-ups: those worker `name` handled and, with `orphans`,
/// those of workers apalis has not seen for a minute. Batches of 5,000 until none are
/// left, so one pass never holds many row locks.
pub async fn prune_done(pool: &PgPool, name: &str, orphans: bool) -> Result<u64, QueueError> {
    const BATCH: i64 = 5_000;
    let mut total = 0;
    loop {
        let n = crate::store::jobs::jobs_prune_done(pool, QUEUE, name, BATCH).await?;
        total += n;
        if n < BATCH as u64 {
            break;
        }
    }
    if orphans {
        loop {
            let n = crate::store::jobs::jobs_prune_orphaned(pool, QUEUE, BATCH).await?;
            total += n;
            if n < BATCH as u64 {
                break;
            }
        }
    }
    Ok(total)
}

/// How a consumer fetches.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Unique per process (apalis does not reject duplicates).
    pub name: String,
    /// Jobs handled at once.
    pub concurrency: usize,
    /// Fallback poll when no notification arrives (scheduled jobs never notify).
    pub poll_interval: Duration,
    /// apalis heartbeat; three missed ones make another worker re-deliver its jobs.
    pub heartbeat: Duration,
    /// How long in-flight jobs may take to finish after shutdown begins.
    pub shutdown_timeout: Duration,
}

/// Consumes wake-ups until `shutdown` is cancelled, calling `handle(run_id)` for each.
/// A handler error makes apalis deliver the job again (a few times).
pub async fn consume<H, F>(
    pool: &PgPool,
    config: ConsumerConfig,
    handle: H,
    shutdown: CancellationToken,
) -> Result<(), QueueError>
where
    H: Fn(String) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<(), String>> + Send + 'static,
{
    let storage_config = Config::default()
        .queue(QUEUE)
        .batch_size(config.concurrency.clamp(1, 100))
        .heartbeat_interval(config.heartbeat)
        .missed_heartbeats(3);
    let backend = PostgresStorage::<RunJob>::new(pool)
        .with_config(storage_config)
        .with_pubsub()
        .poll_with_strategy(Strategy::new().interval(config.poll_interval));
    let name = config.name.clone();
    let concurrency = config.concurrency.max(1);
    let asked_to_stop = shutdown.clone();
    Monitor::new()
        .register(move |_| {
            let handle = handle.clone();
            WorkerBuilder::new(name.as_str())
                .backend(backend.clone())
                .concurrency(concurrency)
                .build(move |job: RunJob| {
                    let handle = handle.clone();
                    async move { handle(job.run_id).await.map_err(JobError) }
                })
        })
        .shutdown_timeout(config.shutdown_timeout)
        .run_with_signal(async move {
            shutdown.cancelled().await;
            Ok(())
        })
        .await
        .map_err(|e| QueueError::Consumer(e.to_string()))?;
    // apalis stops a worker whose backend failed (e.g. its heartbeat could not reach
    // the database) and the monitor then returns as if asked to: a process that stops
    // consuming must say so, so that its supervisor restarts it.
    if asked_to_stop.is_cancelled() {
        Ok(())
    } else {
        Err(QueueError::Consumer(
            "apalis stopped the worker (its backend failed; see the log above)".into(),
        ))
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
