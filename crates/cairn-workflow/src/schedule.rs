//! Schedules: recurring runs of a workflow, declared as `[[schedules]]` in its file or
//! created through the API. This is the pure part — a cron expression read in an IANA
//! time zone ([`CronSchedule`]) and the policies a schedule carries ([`ScheduleSpec`]);
//! The scheduler (`cairn::scheduler`) turns due ticks into runs, once each.
//!
//! # Expressions
//!
//! Standard five fields (`minute hour day-of-month month day-of-week`), or six with a
//! leading seconds field. Ranges, lists, steps, month and weekday names, `L`, `#`, `W`
//! and the `@daily`-style aliases are accepted (parsing is [`croner`]'s). Weekdays are
//! POSIX: 0 and 7 are Sunday. When both day fields are restricted, either may match
//! (Vixie cron).
//!
//! # Time zones and daylight saving
//!
//! Fire times are wall-clock times in the schedule's zone, so `0 6 * * *` in
//! `Europe/Berlin` fires at 06:00 Berlin time all year. Where the wall clock jumps
//! (the rules of the Open Cron Pattern Specification, which croner implements):
//!
//! * **Spring forward** (a wall-clock hour does not exist): a *fixed-time* expression —
//!   one second, one minute and one hour, like `30 2 * * *` — whose time falls in the
//!   gap fires once, at the first instant after the gap (03:00 local). Interval
//!   expressions (`*/15 * * * *`, `0 * * * *`) have no ticks in the gap: real time moves
//!   on an hour and they keep their rhythm.
//! * **Fall back** (a wall-clock hour happens twice): a fixed-time expression fires once,
//!   at the first of the two instants. Interval expressions fire in both passes, because
//!   both are real time (an hourly job runs at 02:00 summer time and again at 02:00
//!   winter time, an hour apart).

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why a schedule's expression, zone or policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("bad cron expression `{expr}`: {reason}")]
    Cron { expr: String, reason: String },
    #[error("cron expression `{0}` never fires")]
    NeverFires(String),
    #[error("unknown time zone `{0}`; use an IANA name such as `UTC` or `Europe/Berlin`")]
    TimeZone(String),
    #[error("unknown {what} `{value}`; expected one of: {expected}")]
    Policy {
        what: &'static str,
        value: String,
        expected: String,
    },
}

/// What happens to a tick that could not fire within `max_lateness` of its time
/// (every scheduler was down or paused by a long stall).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MisfirePolicy {
    /// Start one run, late, for all the ticks that were missed together.
    FireOnce,
    /// Start nothing for missed ticks; carry on with the next one.
    Skip,
}

/// What a tick does when the schedule's previous run is still active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// Start another run anyway.
    Allow,
    /// Start nothing for this tick.
    Skip,
    /// Cancel the active runs, then start the new one.
    CancelPrevious,
}

macro_rules! policy_names {
    ($ty:ident, $what:literal, $($variant:ident => $name:literal),+) => {
        impl $ty {
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl FromStr for $ty {
            type Err = ScheduleError;

            fn from_str(s: &str) -> Result<Self, ScheduleError> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    other => Err(ScheduleError::Policy {
                        what: $what,
                        value: other.to_owned(),
                        expected: $ty::NAMES.join(", "),
                    }),
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

policy_names!(MisfirePolicy, "misfire policy", FireOnce => "fire_once", Skip => "skip");
policy_names!(OverlapPolicy, "overlap policy", Allow => "allow", Skip => "skip", CancelPrevious => "cancel_previous");

/// How late a tick may start and still count as on time, unless a schedule says.
pub const DEFAULT_MAX_LATENESS: Duration = Duration::from_secs(60);

/// A schedule as a workflow file declares it (`[[schedules]]`), validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSpec {
    /// Unique among all schedules: the workflow's name, or `<workflow>.<name>` when the
    /// entry has a `name`.
    pub name: String,
    pub cron: String,
    /// An IANA zone name.
    pub timezone: String,
    /// The input of every run it starts (checked against the workflow's `[input]`).
    pub input: Value,
    pub enabled: bool,
    pub misfire_policy: MisfirePolicy,
    pub max_lateness_ms: u64,
    pub overlap_policy: OverlapPolicy,
    /// The priority of the runs it starts (0 to 1000; see `cairn::store::runs::PRIORITY_MAX`).
    /// Left out of the JSON when 0, so the stored hash of a schedule without one is
    /// what it was before priorities existed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i16,
}

fn is_zero(p: &i16) -> bool {
    *p == 0
}

impl ScheduleSpec {
    pub fn max_lateness(&self) -> Duration {
        Duration::from_millis(self.max_lateness_ms)
    }
}

/// A cron expression read in a time zone: computes fire times.
///
/// Fire times are whole seconds. Every method takes and returns UTC instants, and may
/// be handed any instant (sub-second parts are handled), so callers can pass their
/// clock's `now` as it is.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    tz: Tz,
}

/// Parses a time zone name (`UTC`, `Europe/Berlin`, …).
pub fn parse_timezone(name: &str) -> Result<Tz, ScheduleError> {
    Tz::from_str(name.trim()).map_err(|_| ScheduleError::TimeZone(name.to_owned()))
}

impl CronSchedule {
    /// Parses an expression of 5 fields (or 6, seconds first) and a zone name. An
    /// expression that can never fire (`0 0 30 2 *`) is refused too.
    pub fn parse(expr: &str, timezone: &str) -> Result<CronSchedule, ScheduleError> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| ScheduleError::Cron {
                expr: expr.to_owned(),
                reason: e.to_string(),
            })?;
        let schedule = CronSchedule {
            cron,
            tz: parse_timezone(timezone)?,
        };
        if schedule.next_after(Utc::now()).is_none() {
            return Err(ScheduleError::NeverFires(expr.to_owned()));
        }
        Ok(schedule)
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// `at` in the schedule's zone, without its sub-second part (croner reads whole
    /// seconds only).
    fn local(&self, at: DateTime<Utc>) -> DateTime<Tz> {
        at.trunc_subsecs(0).with_timezone(&self.tz)
    }

    /// The first fire time strictly after `after`; `None` if there is none within
    /// the next few years (croner's search limit).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&self.local(after), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The first fire time at or after `from`.
    pub fn next_from(&self, from: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let whole = self.local(from);
        // With a fraction, the whole second lies before `from` and cannot count.
        let inclusive = from.timestamp_subsec_nanos() == 0;
        self.cron
            .find_next_occurrence(&whole, inclusive)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The last fire time at or before `at`.
    pub fn last_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&self.local(at), true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The next `n` fire times strictly after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut times = Vec::with_capacity(n);
        let mut cursor = after;
        while times.len() < n {
            match self.next_after(cursor) {
                Some(t) => {
                    times.push(t);
                    cursor = t;
                }
                None => break,
            }
        }
        times
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn fires(expr: &str, tz: &str, after: &str, n: usize) -> Vec<String> {
        CronSchedule::parse(expr, tz)
            .unwrap()
            .upcoming(utc(after), n)
            .into_iter()
            .map(|t| t.to_rfc3339())
            .collect()
    }

    #[test]
    fn five_fields_fire_on_the_minute_six_fields_on_the_second() {
        assert_eq!(
            fires("*/15 * * * *", "UTC", "2026-01-01T00:00:00Z", 3),
            [
                "2026-01-01T00:15:00+00:00",
                "2026-01-01T00:30:00+00:00",
                "2026-01-01T00:45:00+00:00"
            ]
        );
        assert_eq!(
            fires("*/20 * * * * *", "UTC", "2026-01-01T00:00:00.250Z", 3),
            [
                "2026-01-01T00:00:20+00:00",
                "2026-01-01T00:00:40+00:00",
                "2026-01-01T00:01:00+00:00"
            ]
        );
    }

    #[test]
    fn wall_clock_time_in_the_zone() {
        // 06:00 in Berlin is 05:00 UTC in winter and 04:00 UTC in summer.
        assert_eq!(
            fires("0 6 * * *", "Europe/Berlin", "2026-01-10T12:00:00Z", 1),
            ["2026-01-11T05:00:00+00:00"]
        );
        assert_eq!(
            fires("0 6 * * *", "Europe/Berlin", "2026-07-10T12:00:00Z", 1),
            ["2026-07-11T04:00:00+00:00"]
        );
        assert_eq!(
            fires(
                "0 9 * * MON-FRI",
                "America/New_York",
                "2026-01-09T15:00:00Z",
                2
            ),
            ["2026-01-12T14:00:00+00:00", "2026-01-13T14:00:00+00:00"]
        );
    }

    #[test]
    fn spring_forward_a_time_in_the_gap_fires_once_right_after_it() {
        // Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
        assert_eq!(
            fires("30 2 * * *", "Europe/Berlin", "2026-03-27T12:00:00Z", 4),
            [
                "2026-03-28T01:30:00+00:00", // 02:30 CET
                "2026-03-29T01:00:00+00:00", // 03:00 CEST, the first instant after the gap
                "2026-03-30T00:30:00+00:00", // 02:30 CEST
                "2026-03-31T00:30:00+00:00",
            ]
        );
        // New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT.
        assert_eq!(
            fires("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 3),
            [
                "2026-03-08T07:00:00+00:00", // 03:00 EDT
                "2026-03-09T06:30:00+00:00",
                "2026-03-10T06:30:00+00:00",
            ]
        );
    }

    #[test]
    fn fall_back_a_repeated_time_fires_once_at_its_first_pass() {
        // Berlin, 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
        assert_eq!(
            fires("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 3),
            [
                "2026-10-25T00:30:00+00:00", // 02:30 CEST only, not 01:30Z (02:30 CET)
                "2026-10-26T01:30:00+00:00",
                "2026-10-27T01:30:00+00:00",
            ]
        );
        // Starting inside the repeated hour, after the first 02:30, it does not fire
        // again in the second pass.
        assert_eq!(
            fires("30 2 * * *", "Europe/Berlin", "2026-10-25T00:45:00Z", 1),
            ["2026-10-26T01:30:00+00:00"]
        );
        // New York, 2026-11-01: 01:30 happens twice.
        assert_eq!(
            fires("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2),
            ["2026-11-01T05:30:00+00:00", "2026-11-02T06:30:00+00:00"]
        );
    }

    #[test]
    fn interval_expressions_follow_real_time_across_both_transitions() {
        // Hourly across spring forward: 01:00 CET, then 03:00 CEST — one real hour.
        assert_eq!(
            fires("0 * * * *", "Europe/Berlin", "2026-03-28T23:30:00Z", 3),
            [
                "2026-03-29T00:00:00+00:00",
                "2026-03-29T01:00:00+00:00",
                "2026-03-29T02:00:00+00:00"
            ]
        );
        // Every 30 minutes across fall back: the repeated hour fires in both passes.
        assert_eq!(
            fires("*/30 * * * *", "Europe/Berlin", "2026-10-24T23:45:00Z", 5),
            [
                "2026-10-25T00:00:00+00:00", // 02:00 CEST
                "2026-10-25T00:30:00+00:00", // 02:30 CEST
                "2026-10-25T01:00:00+00:00", // 02:00 CET
                "2026-10-25T01:30:00+00:00", // 02:30 CET
                "2026-10-25T02:00:00+00:00", // 03:00 CET
            ]
        );
    }

    #[test]
    fn next_from_includes_an_exact_fire_time_and_last_at_or_before_looks_back() {
        let s = CronSchedule::parse("0 * * * *", "UTC").unwrap();
        let t = utc("2026-01-01T05:00:00Z");
        assert_eq!(s.next_from(t), Some(t));
        assert_eq!(
            s.next_from(utc("2026-01-01T05:00:00.001Z")),
            Some(utc("2026-01-01T06:00:00Z"))
        );
        assert_eq!(
            s.last_at_or_before(utc("2026-01-01T05:59:59.900Z")),
            Some(t)
        );
        assert_eq!(s.last_at_or_before(t), Some(t));
    }

    #[test]
    fn bad_expressions_zones_and_policies_are_refused() {
        for bad in [
            "",
            "* * * *",
            "61 * * * *",
            "* * * * * * *",
            "nonsense",
            "0 0 30 2 *",
        ] {
            assert!(CronSchedule::parse(bad, "UTC").is_err(), "{bad:?}");
        }
        assert_eq!(
            CronSchedule::parse("* * * * *", "Mars/Olympus").unwrap_err(),
            ScheduleError::TimeZone("Mars/Olympus".into())
        );
        assert!(CronSchedule::parse("@daily", "UTC").is_ok());
        assert_eq!(
            "skip".parse::<OverlapPolicy>().unwrap(),
            OverlapPolicy::Skip
        );
        assert!("later".parse::<MisfirePolicy>().is_err());
    }
}
