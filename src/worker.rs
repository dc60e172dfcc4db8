//! A worker process: consumes wake-ups from the queue and advances runs with the
//! [`Engine`], while two background loops keep it honest:
//!
//! * the **heartbeat** records the worker as alive and extends the leases of the runs it
//!   is advancing (every third of the lease time);
//! * the **rescuer** requeues runs whose lease expired — their worker was killed or
//!   stalled — so they resume elsewhere within one lease time.
//!
//! Any number of workers may run against one database; they coordinate only through
//! Postgres (`SKIP LOCKED` claims, leases).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::engine::{self, Engine, EngineConfig};
use crate::queue::{self, ConsumerConfig};
use crate::{store, telemetry};

/// How often a busy worker wakes event listeners, at most.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(25);

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Connect(#[from] store::connect::ConnectError),
    #[error(transparent)]
    Queue(#[from] queue::QueueError),
}

/// Worker settings (the `cairn worker` flags fill them in; `--help` says what each means).
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub concurrency: usize,
    pub lease: Duration,
    pub poll_interval: Duration,
    pub shutdown_grace: Duration,
    pub env: BTreeMap<String, String>,
    /// The model `llm` steps call, if any.
    pub llm: Option<crate::step::LlmConfig>,
    /// What `http` steps may reach beyond public addresses.
    pub egress_allow: crate::step::EgressAllow,
    /// Size limits on responses and stored outputs.
    pub limits: crate::step::Limits,
    /// A pool of its own for `sql` steps (a least-privileged role); `None`: the
    /// worker's pool.
    pub step_pool: Option<PgPool>,
    /// Derives the per-delivery keys of `wait` steps (`CAIRN_WEBHOOK_SECRET`).
    pub webhook_secret: Option<String>,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            concurrency: 128,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(200),
            shutdown_grace: Duration::from_secs(20),
            env: BTreeMap::new(),
            llm: None,
            egress_allow: Default::default(),
            limits: Default::default(),
            step_pool: None,
            webhook_secret: None,
        }
    }
}

/// Runs a worker until `shutdown` is cancelled and its in-flight runs are finished or
/// handed back.
pub async fn run(
    pool: PgPool,
    settings: WorkerSettings,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let id = telemetry::process_id();
    let host = telemetry::hostname();
    // The database may go away between the service's connect and here: wait for it.
    let register = store::connect::retrying("registering the worker", None, || {
        store::workers::worker_register(
            &pool,
            store::workers::WorkerRegisterParams {
                id: &id,
                hostname: &host,
                pid: std::process::id() as i32,
                version: crate::VERSION,
                concurrency: settings.concurrency as i32,
            },
        )
    });
    tokio::select! {
        registered = register => registered?,
        _ = shutdown.cancelled() => return Ok(()),
    }
    tracing::info!(worker = %id, concurrency = settings.concurrency, lease = ?settings.lease, "worker started");

    let engine = std::sync::Arc::new(Engine::new(
        pool.clone(),
        EngineConfig {
            worker_id: id.clone(),
            lease_ttl: settings.lease,
            shutdown_grace: settings.shutdown_grace,
            env: settings.env.clone(),
            llm: settings.llm.clone(),
            egress_allow: settings.egress_allow.clone(),
            limits: settings.limits,
            step_pool: settings.step_pool.clone(),
            webhook_secret: settings.webhook_secret.clone(),
        },
        shutdown.clone(),
    ));

    // The background loops outlive the consumer's own shutdown: in-flight runs still
    // need their leases renewed while they finish.
    let stopped = CancellationToken::new();
    let announcer = tokio::spawn(announce_loop(
        pool.clone(),
        engine.announcements(),
        stopped.clone(),
    ));
    let held = queue::Held::default();
    let terminations = tokio::spawn(terminate_loop(
        pool.clone(),
        engine.clone(),
        stopped.clone(),
    ));
    let heartbeat = tokio::spawn(heartbeat_loop(
        pool.clone(),
        engine.clone(),
        held.clone(),
        id.clone(),
        settings.lease,
        stopped.clone(),
    ));
    let rescuer = tokio::spawn(rescue_loop(pool.clone(), settings.lease, stopped.clone()));

    let handler = {
        let engine = engine.clone();
        move |run: store::runs::Acquired| {
            let engine = engine.clone();
            async move {
                let run_id = run.run.id.clone();
                match engine.advance(run).await {
                    Ok(outcome) => tracing::debug!(run = %run_id, ?outcome, "advanced run"),
                    // The engine handed the run back, or left its lease to expire (the
                    // rescuer then requeues it); it resumes from its last checkpoint.
                    Err(e) => tracing::error!(run = %run_id, error = %e, "advancing run failed"),
                }
            }
        }
    };
    if let Err(e) = store::steps::steps_warm_up(&pool).await {
        tracing::warn!(error = %e, "preparing the worker's connections failed");
    }
    let result = queue::consume(
        &pool,
        ConsumerConfig {
            name: id.clone(),
            concurrency: settings.concurrency,
            lease: settings.lease,
            poll_interval: settings.poll_interval,
            shutdown_timeout: settings.shutdown_grace + Duration::from_secs(5),
        },
        held,
        handler,
        shutdown,
    )
    .await;
    match engine::release_held(&pool, &id).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(runs = n, "handed back runs taken but not started"),
        Err(e) => {
            tracing::warn!(error = %e, "could not hand back runs taken but not started; they resume when their lease expires")
        }
    }

    stopped.cancel();
    let _ = heartbeat.await;
    let _ = terminations.await;
    let _ = rescuer.await;
    let _ = announcer.await;
    if let Err(e) = store::workers::worker_stop(&pool, &id).await {
        tracing::warn!(error = %e, "could not record the worker's stop");
    }
    tracing::info!(worker = %id, "worker stopped");
    result.map_err(WorkerError::from)
}

/// Wakes event listeners (the API's live feed) after the engine wrote events: at most
/// once per [`ANNOUNCE_EVERY`], so a busy worker's transitions never wait on
/// notifications (see `store::connect_quiet`).
async fn announce_loop(
    pool: PgPool,
    written: Arc<tokio::sync::Notify>,
    stopped: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stopped.cancelled() => break,
            _ = written.notified() => {}
        }
        if let Err(e) = store::events::event_announce(&pool).await {
            tracing::warn!(error = %e, "announcing events failed");
        }
        tokio::select! {
            _ = stopped.cancelled() => break,
            _ = tokio::time::sleep(ANNOUNCE_EVERY) => {}
        }
    }
    // What the last runs wrote while stopping.
    let _ = store::events::event_announce(&pool).await;
}

async fn heartbeat_loop(
    pool: PgPool,
    engine: Arc<Engine>,
    held: queue::Held,
    id: String,
    lease: Duration,
    stopped: CancellationToken,
) {
    let period = (lease / 3).max(Duration::from_millis(200));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ids = held.ids();
        if let Err(e) = store::workers::worker_heartbeat(&pool, &id, lease, &ids).await {
            tracing::warn!(error = %e, "heartbeat failed");
        }
        // A termination whose notification was missed (the listener reconnecting).
        match store::runs::runs_terminating(&pool, &ids).await {
            Ok(runs) => {
                for run in runs {
                    engine.terminate(&run);
                }
            }
            Err(e) => tracing::warn!(error = %e, "checking for terminated runs failed"),
        }
    }
}

/// Stops the runs an operator terminates, as soon as the API says so
/// (`store::runs::TERMINATE_CHANNEL`); the heartbeat catches what a lost connection let
/// pass.
async fn terminate_loop(pool: PgPool, engine: Arc<Engine>, stopped: CancellationToken) {
    let pool = store::listen_pool(&pool);
    listen_for_terminations(&pool, &engine, &stopped).await;
    // Closed before the worker returns (and before `cairn dev` stops its database), not
    // while the database goes away.
    store::close(pool).await;
}

async fn listen_for_terminations(pool: &PgPool, engine: &Engine, stopped: &CancellationToken) {
    let mut listener = loop {
        let opened = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
            listener.listen(store::runs::TERMINATE_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        tokio::select! {
            _ = stopped.cancelled() => return,
            opened = opened => match opened {
                Ok(listener) => break listener,
                Err(e) => tracing::warn!(error = %e, "listening for terminated runs failed; retrying"),
            },
        }
        tokio::select! {
            _ = stopped.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    };
    loop {
        tokio::select! {
            _ = stopped.cancelled() => return,
            received = listener.recv() => match received {
                Ok(n) => {
                    engine.terminate(n.payload());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "listening for terminated runs failed; retrying");
                    tokio::select! {
                        _ = stopped.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            },
        }
    }
}

/// Requeues runs whose lease expired, and admits runs to concurrency slots left free.
async fn rescue_loop(pool: PgPool, lease: Duration, stopped: CancellationToken) {
    let period = (lease / 4).clamp(Duration::from_millis(250), Duration::from_secs(5));
    loop {
        // Jitter spreads several workers' scans apart.
        let wait = period.mul_f64(0.75 + fastrand::f64() * 0.5);
        tokio::select! {
            _ = stopped.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if let Err(e) = engine::rescue_expired(&pool, 500).await {
            tracing::warn!(error = %e, "rescuing expired leases failed");
        }
        // An admission lost between a keyed run's end and its own (a crash, the
        // database away) is made here: runs never wait on a free slot for long.
        if let Err(e) = engine::admit_due(&pool, 100).await {
            tracing::warn!(error = %e, "admitting runs waiting for a concurrency slot failed");
        }
    }
}
