//! The reaper: retention. Without it every run would stay for good (a one-step run is
//! eight rows), and the run list, vacuum and every scan of the hot tables would slow
//! down with the history.
//!
//! # What goes
//!
//! * Finished runs once they are older than their final status's window
//!   ([`ReaperSettings`]: `--retain-succeeded`, `--retain-cancelled`, `--retain-dead`),
//!   with their steps, attempts, events, dead letters, LLM usage and the schedule ticks
//!   that started them. A window of `None` keeps that status for ever. Pinned runs stay
//!   (an operator's pin, or a workflow's `retain = "forever"`), and so does every run
//!   that is not final, and every run with a child run still going.
//! * Ticks that started no run (skipped or failed), once older than the longest
//!   window; none while any status is kept for ever.
//! * Expired sessions, expired API tokens, and workers silent for
//!   [`ReaperSettings::workers`].
//! * Notifications ([`super::notifier`]) delivered or skipped longer ago than the
//!   succeeded window, and those given up longer ago than the dead window; pending
//!   ones stay.
//!
//! # Where it runs
//!
//! In every `cairn scheduler` process (and in `cairn dev`), beside the schedules loop:
//! a deployment runs schedulers for its cron ticks anyway, several for availability,
//! and they do little else. A pass takes the cluster's reaper lock (a session advisory
//! lock) for its whole length; a reaper that finds it taken skips its pass, so one
//! reaper works at a time however many schedulers run, and another takes over within an
//! interval when that one's process goes.
//!
//! # A pass
//!
//! Every [`ReaperSettings::interval`]: for each final status, batches of at most
//! [`ReaperSettings::batch`] runs, each its own short transaction, until a batch finds
//! fewer; then the ticks, sessions, tokens and workers, likewise. Batches take only rows
//! no one else holds and give up on a lock after a few seconds
//! ([`crate::store::retention`]), so the reaper never holds a worker up for longer than
//! one batch. What the pass did is recorded in `retention_passes`, which the API serves
//! at `GET /api/retention`. On shutdown a pass stops between batches.
//!
//! Time is injected: a pass takes `now`, and the loop reads a [`Clock`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use super::Clock;
use crate::state::RunStatus;
use crate::store::StoreError;
use crate::store::retention as store;

#[derive(Debug, thiserror::Error)]
pub enum ReaperError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The final statuses, in the order a pass handles them.
pub const FINAL_STATUSES: [RunStatus; 3] =
    [RunStatus::Succeeded, RunStatus::Cancelled, RunStatus::Dead];

/// What is kept how long, and how the reaper works (see
/// [`crate::config::RetentionArgs`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ReaperSettings {
    /// How long succeeded runs are kept after they finished; `None`: for ever.
    pub succeeded: Option<Duration>,
    pub cancelled: Option<Duration>,
    pub dead: Option<Duration>,
    /// Workers whose last heartbeat is older than this are forgotten.
    pub workers: Duration,
    /// Time between the starts of two passes.
    pub interval: Duration,
    /// Runs (or other rows) deleted per transaction.
    pub batch: u32,
    /// The largest share of a pass's time spent deleting (0 < share ≤ 1): after a batch
    /// of runs that took `t` the reaper rests `t × (1 − share) / share`, so a large
    /// backlog of finished runs is worked off beside the workers rather than in
    /// competition with them for the database's CPUs.
    pub share: f64,
}

const DAY: Duration = Duration::from_secs(24 * 3600);

/// [`ReaperSettings::share`] unless told: a quarter of the time deleting (measured in
/// docs/BENCHMARKS.md, "Retention").
pub const DEFAULT_SHARE: f64 = 0.25;

impl Default for ReaperSettings {
    fn default() -> Self {
        ReaperSettings {
            succeeded: Some(7 * DAY),
            cancelled: Some(7 * DAY),
            dead: Some(30 * DAY),
            workers: 7 * DAY,
            interval: Duration::from_secs(60),
            batch: 1000,
            share: DEFAULT_SHARE,
        }
    }
}

impl ReaperSettings {
    /// The window of final status `status`; `None`: kept for ever.
    pub fn window(&self, status: RunStatus) -> Option<Duration> {
        match status {
            RunStatus::Succeeded => self.succeeded,
            RunStatus::Cancelled => self.cancelled,
            RunStatus::Dead => self.dead,
            _ => None,
        }
    }

    /// How long ticks that started no run are kept: as long as the longest window, and
    /// for ever when any status is.
    pub fn ticks(&self) -> Option<Duration> {
        let windows = [self.succeeded, self.cancelled, self.dead];
        windows
            .iter()
            .try_fold(Duration::ZERO, |longest, w| w.map(|w| longest.max(w)))
    }

    /// The settings as a pass records them (seconds; null: for ever).
    pub fn to_json(&self) -> Value {
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs());
        json!({
            "succeeded": secs(self.succeeded),
            "cancelled": secs(self.cancelled),
            "dead": secs(self.dead),
            "ticks": secs(self.ticks()),
            "workers": self.workers.as_secs(),
            "interval": self.interval.as_secs(),
            "batch": self.batch,
            "share": self.share,
        })
    }
}

/// What one pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub started_at: DateTime<Utc>,
    pub duration: Duration,
    /// Runs deleted, by final status.
    pub runs: BTreeMap<String, u64>,
    /// Rows deleted, by table (runs and what hung off them, `schedule_ticks`,
    /// `sessions`, `api_tokens`, `workers`).
    pub deleted: BTreeMap<String, u64>,
    /// Transactions that deleted something, or found nothing more to delete.
    pub batches: u32,
    /// False when the pass stopped part-way: at shutdown, or on `error`.
    pub complete: bool,
    pub error: Option<String>,
}

impl PassReport {
    fn new(started_at: DateTime<Utc>) -> PassReport {
        PassReport {
            started_at,
            duration: Duration::ZERO,
            runs: FINAL_STATUSES
                .iter()
                .map(|s| (s.as_str().to_owned(), 0))
                .collect(),
            deleted: BTreeMap::new(),
            batches: 0,
            complete: true,
            error: None,
        }
    }

    /// Runs deleted in all.
    pub fn runs_deleted(&self) -> u64 {
        self.runs.values().sum()
    }

    /// Rows deleted in all.
    pub fn rows_deleted(&self) -> u64 {
        self.deleted.values().sum()
    }

    fn count(&mut self, table: &str, n: u64) {
        if n > 0 {
            *self.deleted.entry(table.to_owned()).or_default() += n;
        }
    }
}

/// What [`pass`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pass {
    /// Another reaper holds the cluster's lock: nothing was done.
    Skipped,
    /// The pass ran (see its `complete` and `error`) and was recorded.
    Done(PassReport),
}

/// How long a rate limit key is kept after its last call.
const RATE_KEY_IDLE: Duration = Duration::from_secs(3600);

/// One pass at `now` (see the module docs), unless another reaper's pass is under way.
/// `stop` ends it between two batches. An error part-way ends the pass too; what was
/// deleted before it is reported and recorded with the error.
pub async fn pass(
    pool: &PgPool,
    settings: &ReaperSettings,
    now: DateTime<Utc>,
    reaper: &str,
    stop: &CancellationToken,
) -> Result<Pass, ReaperError> {
    let mut conn = pool.acquire().await?;
    if !store::reaper_lock_try(&mut conn).await? {
        return Ok(Pass::Skipped);
    }
    let started = Instant::now();
    let mut report = PassReport::new(now);
    let mut worked = work(&mut conn, settings, now, stop, &mut report).await;
    if worked.is_ok() {
        // Rate limit keys no step has used for a while (templated keys, one per tenant,
        // would pile up); a key used again starts afresh.
        match crate::store::rate_limits::rate_limits_forget_idle(pool, RATE_KEY_IDLE).await {
            Ok(0) => {}
            Ok(n) => {
                report.deleted.insert("rate_limits".to_owned(), n);
            }
            Err(e) => worked = Err(e.into()),
        }
    }
    report.duration = started.elapsed();
    if let Err(e) = &worked {
        report.complete = false;
        report.error = Some(e.to_string());
    }
    let runs = json!(report.runs);
    let deleted = json!(report.deleted);
    let settings_json = settings.to_json();
    let duration_ms = i64::try_from(report.duration.as_millis()).unwrap_or(i64::MAX);
    let recorded = store::pass_insert(
        &mut conn,
        &store::PassInsert {
            reaper,
            started_at: now,
            finished_at: now + chrono::Duration::milliseconds(duration_ms),
            duration_ms,
            settings: &settings_json,
            runs: &runs,
            deleted: &deleted,
            batches: i32::try_from(report.batches).unwrap_or(i32::MAX),
            complete: report.complete,
            error: report.error.as_deref(),
        },
    )
    .await;
    let unlocked = store::reaper_unlock(&mut conn).await;
    if worked.is_err() || recorded.is_err() || unlocked.is_err() {
        // Whatever state the session is in, closing it gives the lock back.
        let _ = conn.close().await;
    }
    if let Err(e) = recorded {
        tracing::warn!(error = %e, "could not record the reaper's pass");
    }
    Ok(Pass::Done(report))
}

/// After a batch that took `took`, rests so that deleting takes at most `share` of the
/// time; `stop` cuts the rest short.
async fn rest(took: Duration, share: f64, stop: &CancellationToken) {
    if !(share > 0.0 && share < 1.0) {
        return;
    }
    let pause = took.mul_f64((1.0 - share) / share);
    tokio::select! {
        _ = tokio::time::sleep(pause) => {}
        _ = stop.cancelled() => {}
    }
}

async fn work(
    conn: &mut PgConnection,
    s: &ReaperSettings,
    now: DateTime<Utc>,
    stop: &CancellationToken,
    report: &mut PassReport,
) -> Result<(), ReaperError> {
    let limit = i64::from(s.batch.max(1));
    let before = |window: Option<Duration>| {
        window
            .and_then(|w| chrono::Duration::from_std(w).ok())
            .and_then(|w| now.checked_sub_signed(w))
    };
    for status in FINAL_STATUSES {
        let Some(cutoff) = before(s.window(status)) else {
            continue;
        };
        loop {
            if stop.is_cancelled() {
                report.complete = false;
                return Ok(());
            }
            let took = Instant::now();
            let batch = store::runs_reap_batch(conn, status, cutoff, limit).await?;
            report.batches += 1;
            if let Some(n) = report.runs.get_mut(status.as_str()) {
                *n += batch.runs;
            }
            for (table, n) in &batch.rows {
                report.count(table, u64::try_from(*n).unwrap_or(0));
            }
            if batch.runs < limit as u64 {
                break;
            }
            rest(took.elapsed(), s.share, stop).await;
        }
    }
    let others = [
        (Other::Ticks, before(s.ticks())),
        (Other::Sessions, Some(now)),
        (Other::Tokens, Some(now)),
        (Other::Workers, before(Some(s.workers))),
        (Other::Notifications, before(s.succeeded)),
        (Other::FailedNotifications, before(s.dead)),
    ];
    for (other, cutoff) in others {
        let Some(cutoff) = cutoff else { continue };
        loop {
            if stop.is_cancelled() {
                report.complete = false;
                return Ok(());
            }
            let n = other.reap_batch(conn, cutoff, limit).await?;
            report.batches += 1;
            report.count(other.table(), n);
            if n < limit as u64 {
                break;
            }
        }
    }
    Ok(())
}

/// What a pass deletes after the runs, each older than its own cutoff.
#[derive(Debug, Clone, Copy)]
enum Other {
    Ticks,
    Sessions,
    Tokens,
    Workers,
    /// Delivered or skipped: kept as long as succeeded runs.
    Notifications,
    /// Given up: kept as long as dead runs.
    FailedNotifications,
}

impl Other {
    fn table(self) -> &'static str {
        match self {
            Other::Ticks => "schedule_ticks",
            Other::Sessions => "sessions",
            Other::Tokens => "api_tokens",
            Other::Workers => "workers",
            Other::Notifications | Other::FailedNotifications => "notifications",
        }
    }

    async fn reap_batch(
        self,
        conn: &mut PgConnection,
        before: DateTime<Utc>,
        limit: i64,
    ) -> crate::store::Result<u64> {
        match self {
            Other::Ticks => store::ticks_reap_batch(conn, before, limit).await,
            Other::Sessions => store::sessions_reap_batch(conn, before, limit).await,
            Other::Tokens => store::tokens_reap_batch(conn, before, limit).await,
            Other::Workers => store::workers_reap_batch(conn, before, limit).await,
            Other::Notifications => store::notifications_reap_batch(conn, before, limit).await,
            Other::FailedNotifications => {
                store::notifications_failed_reap_batch(conn, before, limit).await
            }
        }
    }
}

/// Runs a pass every `settings.interval` until `shutdown` is cancelled, the first at
/// once. `reaper` names this process in the passes it records.
pub async fn run(
    pool: PgPool,
    settings: ReaperSettings,
    clock: Arc<dyn Clock>,
    reaper: String,
    shutdown: CancellationToken,
) {
    let secs = |d: Option<Duration>| {
        d.map_or("forever".to_owned(), |d| {
            humantime::format_duration(d).to_string()
        })
    };
    tracing::info!(reaper = %reaper, succeeded = %secs(settings.succeeded),
        cancelled = %secs(settings.cancelled), dead = %secs(settings.dead),
        interval = %humantime::format_duration(settings.interval), batch = settings.batch,
        "reaper started");
    while !shutdown.is_cancelled() {
        match pass(&pool, &settings, clock.now(), &reaper, &shutdown).await {
            Ok(Pass::Skipped) => {
                tracing::debug!("another reaper holds the lock; this pass is skipped");
            }
            Ok(Pass::Done(r)) => match &r.error {
                Some(e) => tracing::warn!(error = %e, runs = r.runs_deleted(),
                    rows = r.rows_deleted(), "reaper pass failed part-way; the next one starts over"),
                None if r.rows_deleted() > 0 => tracing::info!(
                    runs = r.runs_deleted(),
                    rows = r.rows_deleted(),
                    ms = r.duration.as_millis() as u64,
                    complete = r.complete,
                    "reaper pass"
                ),
                None => tracing::debug!("reaper pass: nothing to delete"),
            },
            Err(e) => tracing::warn!(error = %e, "reaper pass could not start"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(settings.interval) => {}
        }
    }
    tracing::info!(reaper = %reaper, "reaper stopped");
}
