//! The scheduler: turns schedules' cron ticks into runs, each tick exactly once, however
//! many `cairn scheduler` processes run.
//!
//! # Lifecycle
//!
//! [`run`] first [syncs](sync) the `[[schedules]]` of the workflow files into the
//! `schedules` table, then loops until its shutdown token is cancelled:
//!
//! 1. **a pass** ([`run_due`]): claim one due schedule at a time (`for update skip
//!    locked`: schedulers never wait on each other), [plan](plan) its due ticks against
//!    the clock, fire them, move its cursor, commit; until nothing is due;
//! 2. **sleep** until the earliest cursor of any enabled schedule, at most
//!    `poll_interval`, waking early on `NOTIFY cairn_schedules` (a schedule was added,
//!    retimed or resumed).
//!
//! # Exactly once
//!
//! Firing a tick inserts its `schedule_ticks` row with `on conflict do nothing` and
//! starts the run only if that insert happened, in the transaction that holds the
//! schedule's row lock and moves its cursor: the tick row, the run, its steps and its
//! queue job commit together or not at all. A scheduler killed mid-pass commits
//! nothing, and the tick stays due for the others.
//!
//! # Misfires and overlaps
//!
//! A tick handled more than the schedule's `max_lateness` after its time was missed;
//! missed ticks are handled together by the misfire policy: `fire_once` starts one run
//! for the latest of them (kind `late`), `skip` starts none (a `skipped_misfire` row
//! records them). When a tick fires while the schedule's previous run is still active
//! the overlap policy decides: `allow` starts another, `skip` records
//! `skipped_overlap`, `cancel_previous` cancels the active runs first. Paused schedules
//! fire nothing, and resuming one moves its cursor to the next tick from now.
//!
//! # Backfill
//!
//! An operator can start the runs of every fire time in a range ([`backfill`]); each
//! is a `backfill` tick under the same unique index, so neither a backfill nor a
//! scheduler starts a second run for a fire time the other handled.
//!
//! # Retention
//!
//! With [`SchedulerSettings::retention`] set (as `cairn scheduler` and `cairn dev` set
//! it), the process also runs the [reaper], which deletes finished runs past their
//! retention window; one reaper works at a time however many schedulers run.
//!
//! # Notifications
//!
//! With [`SchedulerSettings::notify`] set (as `cairn scheduler` and `cairn dev` set
//! it), the process also runs the [notifier], which delivers the alerts the database
//! writes when runs die; any number of notifiers share the work.
//!
//! Time is injected: a pass takes `now`, and the loop reads a [`Clock`].

pub mod backfill;
pub mod notifier;
pub mod plan;
pub mod reaper;
pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::engine::submit::{Item, Outcome, Submitted};
use crate::engine::{self, Submission};
use crate::store::StoreError;
use crate::store::schedules::{self as store, ScheduleRow, TickInsertParams};
use crate::telemetry::metrics;
use crate::workflow::schedule::ScheduleError;
use crate::workflow::{CronSchedule, MisfirePolicy, OverlapPolicy, Registry};

pub use backfill::{BACKFILL_MAX, Backfilled, backfill};
pub use sync::{SyncReport, sync};

/// The channel the `schedules` trigger notifies.
pub const CHANNEL: &str = "cairn_schedules";

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("schedule `{name}`: {source}")]
    Schedule {
        name: String,
        #[source]
        source: ScheduleError,
    },
    #[error(transparent)]
    Spec(#[from] ScheduleError),
    #[error("schedule `{name}` has {what} `{value}`, which this version does not know")]
    Unknown {
        name: String,
        what: &'static str,
        value: String,
    },
    #[error("submitting a run for schedule `{0}` returned an existing run")]
    NotCreated(String),
}

pub type Result<T, E = SchedulerError> = std::result::Result<T, E>;

impl SchedulerError {
    /// Why this error means the database is away right now
    /// ([`crate::store::connect::unavailable`]).
    pub fn unavailable(&self) -> Option<&'static str> {
        match self {
            SchedulerError::Store(e) => e.unavailable(),
            SchedulerError::Engine(e) => e.unavailable(),
            SchedulerError::Database(e) => crate::store::connect::unavailable(e),
            _ => None,
        }
    }
}

/// Where the scheduler reads the time.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Scheduler settings (the `cairn scheduler` flags fill them in).
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// This process, as recorded on the ticks it handles.
    pub id: String,
    /// The longest sleep between passes.
    pub poll_interval: Duration,
    /// Run the [reaper] beside the schedules, with these settings; `None`: no retention
    /// in this process.
    pub retention: Option<reaper::ReaperSettings>,
    /// Run the [notifier] beside the schedules, with these settings; `None`: this
    /// process delivers no notifications.
    pub notify: Option<notifier::NotifySettings>,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            id: format!("scheduler-{}", crate::telemetry::process_id()),
            poll_interval: Duration::from_secs(10),
            retention: None,
            notify: None,
        }
    }
}

pub use crate::state::{TickKind, TickOutcome};

/// What firing one tick did.
#[derive(Debug)]
pub enum Fired {
    Run(Submitted),
    /// Another scheduler handled this tick already.
    AlreadyHandled,
    /// The previous run was still active (`overlap_policy = skip`).
    SkippedOverlap,
    /// No run could start: the workflow is not loaded here, or the input no longer
    /// matches it. The tick is recorded as `failed` with this message.
    Failed(String),
}

/// Totals of one pass, for logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Schedules handled.
    pub schedules: usize,
    pub fired: usize,
    pub skipped: usize,
    pub failed: usize,
    /// Schedules whose handling failed and was rolled back (retried next pass).
    pub errors: usize,
}

fn parse_schedule(s: &ScheduleRow) -> Result<(CronSchedule, MisfirePolicy, OverlapPolicy)> {
    let cron =
        CronSchedule::parse(&s.cron, &s.timezone).map_err(|source| SchedulerError::Schedule {
            name: s.name.clone(),
            source,
        })?;
    let unknown = |what, value: &str| SchedulerError::Unknown {
        name: s.name.clone(),
        what,
        value: value.to_owned(),
    };
    let misfire = s
        .misfire_policy
        .parse()
        .map_err(|_| unknown("misfire policy", &s.misfire_policy))?;
    let overlap = s
        .overlap_policy
        .parse()
        .map_err(|_| unknown("overlap policy", &s.overlap_policy))?;
    Ok((cron, misfire, overlap))
}

/// The next `n` fire times of a schedule after `now` (empty when it is paused or its
/// expression no longer parses).
pub fn upcoming(s: &ScheduleRow, now: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    if !s.enabled {
        return Vec::new();
    }
    CronSchedule::parse(&s.cron, &s.timezone)
        .map(|c| c.upcoming(now, n))
        .unwrap_or_default()
}

/// Fires one tick of `s` inside the caller's transaction: claims the tick's row, applies
/// the overlap policy (not to manual or backfill ticks: an operator asked for these
/// runs), and submits the run with the schedule's input.
pub async fn fire(
    conn: &mut PgConnection,
    registry: &Registry,
    s: &ScheduleRow,
    tick_at: DateTime<Utc>,
    kind: TickKind,
    missed: u32,
    handler: &str,
) -> Result<Fired> {
    let tick = TickInsertParams {
        schedule_id: &s.id,
        tick_at,
        kind,
        missed: i32::try_from(missed).unwrap_or(i32::MAX),
        scheduler: handler,
    };
    let Some(tick_id) = store::schedule_tick_insert(conn, &tick).await? else {
        return Ok(Fired::AlreadyHandled);
    };
    if matches!(kind, TickKind::OnTime | TickKind::Late) {
        let overlap = s
            .overlap_policy
            .parse::<OverlapPolicy>()
            .unwrap_or(OverlapPolicy::Allow);
        match overlap {
            OverlapPolicy::Allow => {}
            OverlapPolicy::Skip => {
                let active = store::schedule_active_runs(conn, &s.id).await?;
                if !active.is_empty() {
                    store::schedule_tick_finish(
                        conn,
                        tick_id,
                        TickOutcome::SkippedOverlap,
                        None,
                        None,
                    )
                    .await?;
                    tracing::info!(schedule = %s.name, tick = %tick_at, active = ?active,
                        "tick skipped: the previous run is still active");
                    return Ok(Fired::SkippedOverlap);
                }
            }
            OverlapPolicy::CancelPrevious => {
                let by = format!("schedule {} (overlap policy cancel_previous)", s.name);
                let done = store::schedule_cancel_active_runs(conn, &s.id, &by).await?;
                if !done.cancelled.is_empty() || !done.requested.is_empty() {
                    tracing::info!(schedule = %s.name, tick = %tick_at, cancelled = ?done.cancelled,
                        cancel_requested = ?done.requested, "cancelled the previous runs");
                }
            }
        }
    }
    let Some(def) = registry.get(&s.workflow) else {
        let message = format!(
            "workflow `{}` is not loaded by {handler}; known workflows: {}",
            s.workflow,
            registry.names().join(", ")
        );
        return tick_failed(conn, s, tick_id, tick_at, message).await;
    };
    let origin = crate::store::runs::RunOrigin {
        priority: s.priority,
        ..Default::default()
    };
    let one = [Item::input(&s.input)];
    match engine::submit_in(conn, Submission::of(def, &one).from(&origin)).await? {
        Ok(mut submitted) => {
            let Some(run) = submitted.pop().filter(|r| r.outcome == Outcome::Created) else {
                return Err(SchedulerError::NotCreated(s.name.clone()));
            };
            store::run_schedule_link(conn, &run.run_id, &s.id, tick_at).await?;
            store::schedule_tick_finish(conn, tick_id, TickOutcome::Fired, Some(&run.run_id), None)
                .await?;
            if matches!(kind, TickKind::OnTime | TickKind::Backfill) {
                tracing::debug!(schedule = %s.name, tick = %tick_at, run = %run.run_id, "tick fired");
            } else {
                tracing::info!(schedule = %s.name, tick = %tick_at, kind = kind.as_str(),
                    missed, run = %run.run_id, "tick fired");
            }
            Ok(Fired::Run(run))
        }
        Err(rejected) => {
            let errors = rejected.input_errors();
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            let message = format!(
                "the schedule's input does not match workflow `{}`: {}",
                s.workflow,
                text.join("; ")
            );
            tick_failed(conn, s, tick_id, tick_at, message).await
        }
    }
}

async fn tick_failed(
    conn: &mut PgConnection,
    s: &ScheduleRow,
    tick_id: i64,
    tick_at: DateTime<Utc>,
    message: String,
) -> Result<Fired> {
    store::schedule_tick_finish(conn, tick_id, TickOutcome::Failed, None, Some(&message)).await?;
    tracing::warn!(schedule = %s.name, tick = %tick_at, error = %message, "tick failed");
    Ok(Fired::Failed(message))
}

/// Handles a claimed, due schedule: plans its ticks, fires them and moves its cursor.
async fn handle(
    conn: &mut PgConnection,
    registry: &Registry,
    s: &ScheduleRow,
    now: DateTime<Utc>,
    handler: &str,
    report: &mut PassReport,
) -> Result<()> {
    let (cron, misfire, _) = parse_schedule(s)?;
    let Some(cursor) = s.next_fire_at else {
        return Ok(());
    };
    let max_lateness = Duration::from_millis(u64::try_from(s.max_lateness_ms).unwrap_or(0));
    let plan = plan::plan(&cron, cursor, now, max_lateness);
    let mut fired_any = false;
    let mut count = |f: &Fired, report: &mut PassReport| match f {
        Fired::Run(_) => {
            fired_any = true;
            report.fired += 1;
        }
        Fired::SkippedOverlap => report.skipped += 1,
        Fired::Failed(_) => report.failed += 1,
        Fired::AlreadyHandled => {}
    };
    if let Some(missed) = &plan.missed {
        match misfire {
            MisfirePolicy::FireOnce => {
                let f = fire(
                    conn,
                    registry,
                    s,
                    missed.latest,
                    TickKind::Late,
                    missed.count,
                    handler,
                )
                .await?;
                count(&f, report);
            }
            MisfirePolicy::Skip => {
                let tick = TickInsertParams {
                    schedule_id: &s.id,
                    tick_at: missed.latest,
                    kind: TickKind::Late,
                    missed: i32::try_from(missed.count).unwrap_or(i32::MAX),
                    scheduler: handler,
                };
                if let Some(id) = store::schedule_tick_insert(conn, &tick).await? {
                    store::schedule_tick_finish(conn, id, TickOutcome::SkippedMisfire, None, None)
                        .await?;
                    report.skipped += 1;
                    tracing::info!(schedule = %s.name, missed = missed.count, latest = %missed.latest,
                        "missed ticks skipped (misfire policy skip)");
                }
            }
        }
    }
    for tick in &plan.on_time {
        let f = fire(conn, registry, s, *tick, TickKind::OnTime, 0, handler).await?;
        count(&f, report);
    }
    store::schedule_advance(conn, &s.id, plan.next, fired_any.then_some(now)).await?;
    report.schedules += 1;
    Ok(())
}

/// One pass: handles every schedule due at `now`, each in its own transaction. A
/// schedule whose handling fails is rolled back, logged, and left for the next pass.
pub async fn run_due(
    pool: &PgPool,
    registry: &Registry,
    now: DateTime<Utc>,
    handler: &str,
) -> Result<PassReport> {
    let mut report = PassReport::default();
    let mut failed: Vec<String> = Vec::new();
    loop {
        let mut tx = pool.begin().await?;
        let Some(s) = store::schedule_claim_due(&mut tx, now, &failed).await? else {
            break;
        };
        let mut attempt = PassReport::default();
        match handle(&mut tx, registry, &s, now, handler, &mut attempt).await {
            Ok(()) => {
                tx.commit().await?;
                metrics::runs_submitted(&s.workflow, attempt.fired);
                report.schedules += attempt.schedules;
                report.fired += attempt.fired;
                report.skipped += attempt.skipped;
                report.failed += attempt.failed;
            }
            Err(e) => {
                drop(tx);
                tracing::error!(schedule = %s.name, error = %e,
                    "handling a due schedule failed; it stays due");
                failed.push(s.id);
                report.errors += 1;
            }
        }
    }
    Ok(report)
}

/// What [`trigger`] did.
#[derive(Debug)]
pub enum Triggered {
    NotFound,
    Run(Submitted),
    /// The run could not start (see [`Fired::Failed`]); the attempt is recorded.
    Failed(String),
}

/// Fires a schedule now, whatever its cron expression, pause or overlap policy say:
/// records a `manual` tick and starts its run in one transaction.
pub async fn trigger(
    pool: &PgPool,
    registry: &Registry,
    id_or_name: &str,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Triggered> {
    let Some(s) = store::schedule_get(pool, id_or_name).await? else {
        return Ok(Triggered::NotFound);
    };
    let mut tx = pool.begin().await?;
    let fired = fire(&mut tx, registry, &s, now, TickKind::Manual, 0, by).await?;
    let result = match fired {
        Fired::Run(run) => {
            store::schedule_fired(&mut tx, &s.id, now).await?;
            Triggered::Run(run)
        }
        Fired::Failed(message) => Triggered::Failed(message),
        // Manual ticks are never deduplicated or overlap-checked.
        Fired::AlreadyHandled | Fired::SkippedOverlap => {
            return Err(SchedulerError::NotCreated(s.name));
        }
    };
    tx.commit().await?;
    if let Triggered::Run(_) = &result {
        metrics::runs_submitted(&s.workflow, 1);
    }
    Ok(result)
}

/// Minimum pause between passes, so schedulers do not spin while another one commits a
/// schedule that is still due by its cursor.
const MIN_WAIT: Duration = Duration::from_millis(20);

/// Runs a scheduler until `shutdown` is cancelled: syncs the workflow files'
/// schedules, then fires due ticks as they come; and, with `settings.retention`, the
/// [reaper] beside them.
pub async fn run(
    pool: PgPool,
    registry: Arc<Registry>,
    settings: SchedulerSettings,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> Result<()> {
    let stop_reaper = shutdown.child_token();
    let reaper = settings.retention.clone().map(|retention| {
        tokio::spawn(reaper::run(
            pool.clone(),
            retention,
            clock.clone(),
            settings.id.clone(),
            stop_reaper.clone(),
        ))
    });
    let notifier = settings.notify.clone().map(|notify| {
        tokio::spawn(notifier::run(
            pool.clone(),
            notify,
            clock.clone(),
            stop_reaper.clone(),
        ))
    });
    let ran = run_schedules(pool, registry, settings, clock, shutdown).await;
    stop_reaper.cancel();
    if let Some(reaper) = reaper
        && let Err(e) = reaper.await
    {
        tracing::error!(error = %e, "the reaper task failed");
    }
    if let Some(notifier) = notifier {
        match notifier.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the notifier stopped"),
            Err(e) => tracing::error!(error = %e, "the notifier task failed"),
        }
    }
    ran
}

async fn run_schedules(
    pool: PgPool,
    registry: Arc<Registry>,
    settings: SchedulerSettings,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> Result<()> {
    // The database may go away between the service's connect and here: wait for it.
    let synced = loop {
        match sync(&pool, &registry, clock.now()).await {
            Ok(synced) => break synced,
            Err(e) if e.unavailable().is_some() => {
                tracing::warn!(error = %e, "syncing schedules: the database is unavailable; trying again");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            Err(e) => return Err(e),
        }
    };
    tracing::info!(scheduler = %settings.id, added = ?synced.added, changed = ?synced.changed,
        removed = ?synced.removed, unchanged = synced.unchanged, conflicts = ?synced.conflicts,
        "scheduler started; workflow schedules synced");

    let mut listener = Listener::open(&pool, CHANNEL, "schedule changes").await;
    while !shutdown.is_cancelled() {
        let report = match run_due(&pool, &registry, clock.now(), &settings.id).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "scheduler pass failed");
                PassReport {
                    errors: 1,
                    ..PassReport::default()
                }
            }
        };
        let mut wait = match store::schedule_next_due(&pool).await {
            Ok(Some(at)) => (at - clock.now()).to_std().unwrap_or(Duration::ZERO),
            Ok(None) => settings.poll_interval,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the next due schedule");
                settings.poll_interval
            }
        }
        .clamp(MIN_WAIT, settings.poll_interval.max(MIN_WAIT));
        if report.errors > 0 {
            // A schedule that failed stays due: retry it calmly.
            wait = wait.max(Duration::from_secs(1).min(settings.poll_interval));
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(wait) => {}
            notified = listener.notification() => {
                if let Err(e) = notified {
                    tracing::warn!(error = %e, "schedule notifications lost; polling every {:?}", settings.poll_interval);
                }
            }
        }
    }
    listener.close().await;
    tracing::info!(scheduler = %settings.id, "scheduler stopped");
    Ok(())
}

/// A `LISTEN` on `channel` on a connection of its own ([`crate::store::listen_pool`]), so that
/// it never holds one of the connections `--db-pool` sizes (with `--db-pool 1`, a
/// listener on the pool held its only connection and nothing else could run). Without
/// it (it could not be opened, or it failed), the caller polls only. Shared by the
/// scheduler's loops.
pub(super) struct Listener {
    pool: PgPool,
    listener: Option<PgListener>,
}

impl Listener {
    /// Listens on `channel`, or warns (naming `what`) that the caller polls only.
    pub(super) async fn open(pool: &PgPool, channel: &str, what: &str) -> Listener {
        let pool = crate::store::listen_pool(pool);
        let connected = async {
            let mut l = PgListener::connect_with(&pool).await?;
            l.listen(channel).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let listener = match connected.await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for {what}; polling only");
                None
            }
        };
        Listener { pool, listener }
    }

    /// The next notification; never, without a listener. After an error there is none.
    pub(super) async fn notification(&mut self) -> Result<(), sqlx::Error> {
        let Some(listener) = self.listener.as_mut() else {
            return std::future::pending().await;
        };
        let received = listener.recv().await;
        if received.is_err() {
            self.listener = None;
        }
        received.map(|_| ())
    }

    /// Closes its connection before the caller returns, rather than leaving it to be
    /// dropped ([`crate::store::close`]).
    pub(super) async fn close(self) {
        let Listener { pool, listener } = self;
        drop(listener);
        crate::store::close(pool).await;
    }
}
