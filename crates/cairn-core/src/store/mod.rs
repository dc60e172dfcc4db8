//! Every SQL statement Cairn runs, one file per aggregate.
//!
//! Functions are named entity-first (`run_insert`, `step_succeed`). Those that belong to
//! a larger transaction take `&mut PgConnection`, so the engine can put a checkpoint, its
//! event and the next queue job in one commit. Every write made on behalf of a leased run
//! is *fenced*: it first proves, in the same transaction, that the caller's lease is
//! still the current one and unexpired ([`Lease`]); otherwise it fails with
//! [`StoreError::LeaseLost`] and the transaction commits nothing.

pub mod concurrency;
pub mod connect;
pub mod dead_letters;
pub mod definitions;
pub mod events;
pub mod jobs;
pub mod maps;
pub mod notifications;
#[cfg(test)]
mod plans;
pub mod projects;
pub mod rate_limits;
pub mod retention;
pub mod run_ids;
pub mod runs;
pub mod schedules;
pub mod stats;
pub mod step_slots;
pub mod step_sql;
pub mod steps;
pub mod usage;
pub mod users;
pub mod workers;

use std::time::Duration;

use sqlx::PgConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("lease on run {0} is no longer held by this worker")]
    LeaseLost(String),
    #[error("run {0} was cancelled")]
    CancelRequested(String),
    #[error("{0}")]
    Invalid(String),
    /// A row was to be written for a run or step that does not exist.
    #[error("{0} does not exist")]
    Missing(String),
    /// Runs were to be inserted with a definition that is not stored.
    #[error("workflow definition {0} is not stored")]
    DefinitionMissing(String),
}

impl StoreError {
    /// The name of the violated constraint, when the database rejected a write.
    pub fn constraint(&self) -> Option<&str> {
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => db.constraint(),
            _ => None,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A pool of one connection to `pool`'s database, with `pool`'s settings, for a
/// long-lived `LISTEN` (a `PgListener` holds its connection for good): so that a
/// listener never takes one of the connections `pool` is sized for.
pub fn listen_pool(pool: &PgPool) -> PgPool {
    pool_options(1)
        .min_connections(0)
        .connect_lazy_with((*pool.connect_options()).clone())
}

/// Closes `pool` on the way out, waiting a few seconds at most: its connections are
/// closed rather than dropped (the server otherwise logs each as lost), including one a
/// dropped `PgListener` is still handing back from a task of its own, and a database
/// that is away cannot hold the exit.
pub async fn close(pool: PgPool) {
    let _ = tokio::time::timeout(Duration::from_secs(5), pool.close()).await;
}

/// Pool options shared by every pool: a connection that sat idle for a while is
/// checked with a round trip before it is handed out (and replaced when it is dead); one
/// in steady use is not, which saves a round trip on every acquire. A connection that
/// breaks while in use fails that use, with or without the check.
pub(super) fn pool_options(max_connections: u32) -> PgPoolOptions {
    const CHECK_AFTER_IDLE: Duration = Duration::from_secs(1);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                // `false` discards the connection; the pool opens another.
                Ok(meta.idle_for < CHECK_AFTER_IDLE || sqlx::Connection::ping(conn).await.is_ok())
            })
        })
}

/// Opens a pool. `max_connections` bounds what one process holds.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool> {
    let options: PgConnectOptions = url.parse()?;
    let pool = pool_options(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.application_name("cairn"))
        .await?;
    Ok(pool)
}

/// Opens a pool for the API, whose statements are cancelled after `statement_timeout`
/// (set for each connection as it opens): a request's query cannot hold a connection,
/// or the locks it took, for longer. Workers' pools have no such limit: a step's query
/// may rightly run long.
///
/// Its statements are planned for each execution (`plan_cache_mode =
/// force_custom_plan`). A plan is made from the table's size on disk as it is then, so a
/// plan made for each request reads a table that has grown since it was last analyzed
/// by key; a generic plan kept by the connection (the default after five executions)
/// would go on scanning whole a `steps` or `run_events` that was analyzed empty. The
/// API's statements are few per request, so planning them costs little.
pub async fn connect_api(
    url: &str,
    max_connections: u32,
    statement_timeout: Duration,
) -> Result<PgPool> {
    let options: PgConnectOptions = url.parse()?;
    let pool = pool_options(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.application_name("cairn").options([
            (
                "statement_timeout",
                format!("{}ms", statement_timeout.as_millis()),
            ),
            ("plan_cache_mode", "force_custom_plan".to_owned()),
        ]))
        .await?;
    Ok(pool)
}

/// Opens a pool for workers, whose transitions are many and always the same few
/// statements:
///
/// * sessions append events without notifying listeners (`cairn.notify_events = off`);
///   workers announce with [`events::event_announce`] instead, throttled;
/// * prepared statements use their generic plan from the first execution
///   (`plan_cache_mode = force_generic_plan`): Cairn's hot statements look rows up by
///   key, so re-planning them for every call's values only costs CPU (16–21 % of the
///   database's CPU per step in the bench). `sql` steps run users' queries with the
///   default back on (`store::step_sql`);
/// * sequential scans are planned only where no index serves (`enable_seqscan = off`):
///   a generic plan is made once per connection and kept until the table's statistics
///   change, and one made while a table was small would go on scanning it as it grows
///   (autovacuum's `ANALYZE` is what replans; without it, nothing does). Even on small
///   tables the index path is the faster one for these lookups: the fetch took 0.44
///   instead of 0.79 ms in a database of a few hundred runs. `sql` steps switch it
///   back on;
/// * every connection is kept open from the start, so the first runs a fresh worker
///   picks up do not wait for connections to be set up (in the bench, the first
///   pickups after the workers started took up to 200 ms).
pub async fn connect_quiet(url: &str, max_connections: u32) -> Result<PgPool> {
    let options: PgConnectOptions = url.parse()?;
    let pool = pool_options(max_connections)
        .min_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(options.application_name("cairn").options([
            ("cairn.notify_events", "off"),
            ("plan_cache_mode", "force_generic_plan"),
            ("enable_seqscan", "off"),
        ]));
    // All at once: opened one after another, they kept a fresh worker from its first
    // run for as many connection set-ups in a row.
    let opened =
        futures::future::try_join_all((0..max_connections.max(1)).map(|_| pool.acquire())).await?;
    drop(opened);
    Ok(pool)
}

/// A pool of up to `max_connections` to `pool`'s database, with `pool`'s settings,
/// whose sessions queue runs and append events without notifying anyone
/// (`cairn.notify_jobs = off`, `cairn.notify_events = off`): its user announces what it
/// committed with [`jobs::jobs_announce`]. A transaction that notifies holds a
/// database-wide lock from its commit's start to its end, WAL flush included, so
/// notifying commits cannot share a flush. Connections open on first use. Its
/// statements keep the server's default planning even when `pool` plans every
/// execution ([`connect_api`]): the submit reads no table that grows, and planning it
/// for each batch cost a fifth of the API's submit rate.
pub fn connect_unannounced(pool: &PgPool, max_connections: u32) -> PgPool {
    let options = (*pool.connect_options()).clone().options([
        ("cairn.notify_jobs", "off"),
        ("cairn.notify_events", "off"),
        ("plan_cache_mode", "auto"),
    ]);
    pool_options(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(options)
}

/// Applies Cairn's own migrations (`migrations/`). A database is brought fully up to
/// date by `queue::migrate`, which also sets up apalis' tables: use that.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Cairn's own migrations (`migrations/`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Proof of ownership of a run, checked by every fenced write.
#[derive(Debug, Clone)]
pub struct Lease {
    pub run_id: String,
    pub owner: String,
    pub token: i64,
    pub ttl: Duration,
}

/// The statement of [`lease_fence`]. Not checked: its columns are unnamed expressions,
/// which the macros cannot name without the text changing. The run is found by its key
/// alone and its status tested in the answer: with `status = 'running'` among the
/// conditions, the partial indexes on running runs (`runs_lease_expiry`,
/// `runs_lease_owner`) are as cheap to a generic plan as the primary key, and a
/// worker whose plan took one read every running run for each fence.
pub(super) const LEASE_FENCE: &str =
    "select coalesce(status = 'running' and lease_expires_at > clock_timestamp(), false),
            status = 'running' and cancel_requested_at is not null
           from runs where id = $1 and lease_token = $2
            for no key update";

/// Checks that `lease` is current and unexpired; locks the run row for the rest of the
/// transaction, so transitions of one run are serialised. The lock writes no new row
/// version: leases are extended by the worker's heartbeat, not by every transition.
pub async fn lease_fence(conn: &mut PgConnection, lease: &Lease) -> Result<()> {
    let state: Option<(bool, bool)> = sqlx::query_as(LEASE_FENCE)
        .bind(&lease.run_id)
        .bind(lease.token)
        .fetch_optional(&mut *conn)
        .await?;
    match state {
        // Still ours, but an operator asked to cancel: the caller stops and finishes the
        // cancellation with [`runs::run_cancel_finish`].
        Some((_, true)) => Err(StoreError::CancelRequested(lease.run_id.clone())),
        Some((true, false)) => Ok(()),
        _ => Err(StoreError::LeaseLost(lease.run_id.clone())),
    }
}

/// Why a fenced statement wrote nothing for a run: the lease is lost, or the run is
/// being cancelled.
async fn fence_failure(conn: &mut PgConnection, lease: &Lease) -> StoreError {
    match lease_fence(conn, lease).await {
        Err(e) => e,
        // Held again (cannot happen: tokens only grow); report it as lost all the same.
        Ok(()) => StoreError::LeaseLost(lease.run_id.clone()),
    }
}

/// A readiness probe: the database answers.
pub async fn ping(pool: &PgPool) -> Result<()> {
    sqlx::query_scalar!("select 1").fetch_one(pool).await?;
    Ok(())
}
