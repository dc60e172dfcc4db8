//! Backfill: start the runs a schedule would have started for its fire times in a range
//! `[from, to)` — to make up for ticks a pause or an outage skipped, or to run a new
//! schedule over the past.
//!
//! Each fire time is claimed like a scheduler's tick, with a `schedule_ticks` row of
//! kind `backfill` under the same unique index, so a fire time starts at most one run
//! whoever reaches it first: the scheduler, this backfill, or one before it. Fire times
//! already handled are counted and left alone. The whole range commits in one
//! transaction that holds the schedule's row, so it starts all its runs or none, and
//! schedulers skip the schedule (`skip locked`) until it commits.
//!
//! Every fire time gets its run whatever the overlap policy says (an operator asked for
//! them), and whether or not the schedule is paused.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{Fired, Result, SchedulerError, TickKind, fire, parse_schedule};
use crate::store::schedules as store;
use crate::workflow::Registry;

/// At most this many fire times in one backfill: a bigger range is refused, not cut.
pub const BACKFILL_MAX: usize = 1_000;

/// What [`backfill`] did.
#[derive(Debug)]
pub enum Backfilled {
    NotFound,
    /// The range holds more than [`BACKFILL_MAX`] fire times; nothing was started.
    TooMany,
    /// A run could not start (the workflow is not loaded, or the schedule's input no
    /// longer matches it); nothing was started.
    Failed(String),
    Done(BackfillReport),
}

/// A backfill that committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackfillReport {
    /// The runs started, in fire-time order.
    pub runs: Vec<String>,
    /// Fire times in the range.
    pub fire_times: usize,
    /// Fire times some scheduler or earlier backfill had handled: no run started.
    pub already_handled: usize,
}

/// The fire times of `cron` in `[from, to)`; `None` when there are more than `max`.
pub fn fire_times(
    cron: &crate::workflow::CronSchedule,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    max: usize,
) -> Option<Vec<DateTime<Utc>>> {
    let mut times = Vec::new();
    let mut next = cron.next_from(from);
    while let Some(t) = next.filter(|t| *t < to) {
        if times.len() == max {
            return None;
        }
        times.push(t);
        next = cron.next_after(t);
    }
    Some(times)
}

/// Starts one run for every fire time of schedule `id_or_name` in `[from, to)` that no
/// one handled yet (see the module docs). `by` is recorded on the ticks.
pub async fn backfill(
    pool: &PgPool,
    registry: &Registry,
    id_or_name: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Backfilled> {
    let Some(found) = store::schedule_get(pool, id_or_name).await? else {
        return Ok(Backfilled::NotFound);
    };
    let mut tx = pool.begin().await?;
    // Read again under the lock: an edit committed meanwhile decides the fire times.
    let Some(s) = store::schedule_lock(&mut tx, &found.id).await? else {
        return Ok(Backfilled::NotFound);
    };
    let (cron, _, _) = parse_schedule(&s)?;
    let Some(times) = fire_times(&cron, from, to, BACKFILL_MAX) else {
        return Ok(Backfilled::TooMany);
    };
    let mut report = BackfillReport {
        fire_times: times.len(),
        ..BackfillReport::default()
    };
    for t in times {
        match fire(&mut tx, registry, &s, t, TickKind::Backfill, 0, by).await? {
            Fired::Run(run) => report.runs.push(run.run_id),
            Fired::AlreadyHandled => report.already_handled += 1,
            // The transaction is dropped: the failed tick is not recorded either, and
            // the operator is told why at once.
            Fired::Failed(message) => return Ok(Backfilled::Failed(message)),
            Fired::SkippedOverlap => return Err(SchedulerError::NotCreated(s.name)),
        }
    }
    if !report.runs.is_empty() {
        store::schedule_fired(&mut tx, &s.id, now).await?;
    }
    tx.commit().await?;
    tracing::info!(schedule = %s.name, from = %from, to = %to, started = report.runs.len(),
        already_handled = report.already_handled, by, "schedule backfilled");
    Ok(Backfilled::Done(report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::CronSchedule;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_range_includes_from_and_excludes_to() {
        let hourly = CronSchedule::parse("0 * * * *", "UTC").unwrap();
        let times = fire_times(
            &hourly,
            at("2026-01-01T00:00:00Z"),
            at("2026-01-01T03:00:00Z"),
            10,
        )
        .unwrap();
        assert_eq!(
            times,
            [
                at("2026-01-01T00:00:00Z"),
                at("2026-01-01T01:00:00Z"),
                at("2026-01-01T02:00:00Z")
            ]
        );
    }

    #[test]
    fn more_fire_times_than_the_bound_is_none_not_a_cut() {
        let every_second = CronSchedule::parse("* * * * * *", "UTC").unwrap();
        let from = at("2026-01-01T00:00:00Z");
        assert_eq!(
            fire_times(&every_second, from, at("2026-01-01T00:00:03Z"), 3).map(|t| t.len()),
            Some(3)
        );
        assert_eq!(
            fire_times(&every_second, from, at("2026-01-01T00:00:04Z"), 3),
            None
        );
    }

    #[test]
    fn fire_times_are_read_in_the_schedule_zone() {
        // 06:00 in Berlin is 05:00 UTC in winter.
        let six = CronSchedule::parse("0 6 * * *", "Europe/Berlin").unwrap();
        let times = fire_times(
            &six,
            at("2026-01-01T00:00:00Z"),
            at("2026-01-03T00:00:00Z"),
            10,
        )
        .unwrap();
        assert_eq!(
            times,
            [at("2026-01-01T05:00:00Z"), at("2026-01-02T05:00:00Z")]
        );
    }
}
