//! Which of a schedule's due ticks fire, and how — pure, so the misfire rules are tested
//! with made-up clocks.
//!
//! Given the schedule's cursor (its earliest unhandled tick) and `now`, every tick in
//! `[cursor, now]` is due. A due tick is **on time** when `now - tick <= max_lateness`:
//! it fires as usual. Older ones were **missed** (no scheduler was running, or all were
//! stalled): they are handled together, by the misfire policy, as one late run
//! (`fire_once`) or none (`skip`). The cursor then moves past everything handled.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::workflow::CronSchedule;

/// At most this many on-time ticks are handled in one transaction; the rest stay due
/// and are handled by the next pass.
pub const MAX_TICKS_PER_PASS: usize = 100;

/// Counting missed ticks stops here (a per-second schedule stopped for a week).
pub const MISSED_COUNT_CAP: u32 = 10_000;

/// What to do with a schedule's due ticks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Ticks older than `max_lateness`, if any.
    pub missed: Option<Missed>,
    /// Ticks within `max_lateness` of now, oldest first.
    pub on_time: Vec<DateTime<Utc>>,
    /// The new cursor: the first tick not handled by this plan (`None`: no more ticks).
    pub next: Option<DateTime<Utc>>,
}

/// Ticks that were missed together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missed {
    /// The most recent of them: the tick a `fire_once` run stands for.
    pub latest: DateTime<Utc>,
    /// How many (at most [`MISSED_COUNT_CAP`]).
    pub count: u32,
}

/// Plans the due ticks of a schedule whose cursor is `cursor`.
pub fn plan(
    cron: &CronSchedule,
    cursor: DateTime<Utc>,
    now: DateTime<Utc>,
    max_lateness: Duration,
) -> Plan {
    let lateness = TimeDelta::from_std(max_lateness).unwrap_or(TimeDelta::MAX);
    // Ticks strictly before `boundary` are later than `max_lateness`.
    let boundary = now
        .checked_sub_signed(lateness)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);

    let mut missed: Option<Missed> = None;
    let mut tick = cron.next_from(cursor);
    while let Some(t) = tick
        && t < boundary
    {
        let count = missed.as_ref().map_or(0, |m| m.count) + 1;
        if count >= MISSED_COUNT_CAP {
            // Jump to the last missed tick instead of walking to it.
            let latest = cron
                .last_at_or_before(boundary - TimeDelta::microseconds(1))
                .unwrap_or(t);
            missed = Some(Missed { latest, count });
            tick = cron.next_from(boundary);
            break;
        }
        missed = Some(Missed { latest: t, count });
        tick = cron.next_after(t);
    }

    let mut on_time = Vec::new();
    while let Some(t) = tick
        && t <= now
        && on_time.len() < MAX_TICKS_PER_PASS
    {
        on_time.push(t);
        tick = cron.next_after(t);
    }
    Plan {
        missed,
        on_time,
        next: tick,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn every_second() -> CronSchedule {
        CronSchedule::parse("* * * * * *", "UTC").unwrap()
    }

    #[test]
    fn a_tick_just_due_fires_on_time() {
        let p = plan(
            &every_second(),
            at("2026-01-01T00:00:05Z"),
            at("2026-01-01T00:00:05.020Z"),
            Duration::from_secs(1),
        );
        assert_eq!(p.missed, None);
        assert_eq!(p.on_time, [at("2026-01-01T00:00:05Z")]);
        assert_eq!(p.next, Some(at("2026-01-01T00:00:06Z")));
    }

    #[test]
    fn ticks_older_than_max_lateness_are_missed_together() {
        // Stopped after 00:00:02 was handled; back at 00:00:08.5 with 1s lateness:
        // 03..07 were missed (07 is 1.5s late), 08 is on time.
        let p = plan(
            &every_second(),
            at("2026-01-01T00:00:03Z"),
            at("2026-01-01T00:00:08.500Z"),
            Duration::from_secs(1),
        );
        assert_eq!(
            p.missed,
            Some(Missed {
                latest: at("2026-01-01T00:00:07Z"),
                count: 5
            })
        );
        assert_eq!(p.on_time, [at("2026-01-01T00:00:08Z")]);
        assert_eq!(p.next, Some(at("2026-01-01T00:00:09Z")));
    }

    #[test]
    fn ticks_within_max_lateness_each_fire() {
        let p = plan(
            &every_second(),
            at("2026-01-01T00:00:03Z"),
            at("2026-01-01T00:00:05.900Z"),
            Duration::from_secs(60),
        );
        assert_eq!(p.missed, None);
        assert_eq!(p.on_time.len(), 3);
    }

    #[test]
    fn a_daily_tick_missed_by_hours_and_nothing_due_yet() {
        let daily = CronSchedule::parse("0 6 * * *", "UTC").unwrap();
        let p = plan(
            &daily,
            at("2026-01-01T06:00:00Z"),
            at("2026-01-01T11:00:00Z"),
            Duration::from_secs(60),
        );
        assert_eq!(
            p.missed,
            Some(Missed {
                latest: at("2026-01-01T06:00:00Z"),
                count: 1
            })
        );
        assert!(p.on_time.is_empty());
        assert_eq!(p.next, Some(at("2026-01-02T06:00:00Z")));

        let early = plan(
            &daily,
            at("2026-01-02T06:00:00Z"),
            at("2026-01-01T11:00:00Z"),
            Duration::from_secs(60),
        );
        assert_eq!(early.missed, None);
        assert!(early.on_time.is_empty());
        assert_eq!(early.next, Some(at("2026-01-02T06:00:00Z")));
    }

    #[test]
    fn long_outages_are_counted_up_to_a_cap_and_on_time_ticks_are_batched() {
        let p = plan(
            &every_second(),
            at("2026-01-01T00:00:00Z"),
            at("2026-01-08T00:00:00Z"),
            Duration::from_secs(300),
        );
        let m = p.missed.unwrap();
        assert_eq!(m.count, MISSED_COUNT_CAP);
        assert_eq!(m.latest, at("2026-01-07T23:54:59Z"));
        assert_eq!(p.on_time.len(), MAX_TICKS_PER_PASS);
        assert_eq!(p.on_time[0], at("2026-01-07T23:55:00Z"));
        // The rest of the on-time ticks stay due for the next pass.
        assert_eq!(p.next, Some(at("2026-01-07T23:56:40Z")));
    }
}
