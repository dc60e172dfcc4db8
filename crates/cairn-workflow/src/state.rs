//! The names of Cairn's state machines, as Rust types.
//!
//! The database holds the real machines — `CHECK`s list the states and triggers refuse
//! the moves that are not allowed (`migrations/`) — and these enums mirror those lists
//! exactly, so a misspelt or impossible state is a compile error in Rust rather than a
//! constraint violation at run time. Every layer speaks them: the store reads and binds
//! them, the engine decides on them, the API and `ctl` show them (as the same
//! lowercase words the database stores). Pure: the database mapping is the `sqlx`
//! feature, which `ctl` leaves off.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A status word that is not one of its machine's states.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {machine} status `{word}`; expected one of: {expected}")]
pub struct UnknownStatus {
    pub machine: &'static str,
    pub word: String,
    pub expected: String,
}

/// What every state enum here offers, for code that takes any of them (e.g. a CLI flag
/// that accepts one state of a machine).
pub trait Status: Copy + Send + Sync + 'static + FromStr<Err = UnknownStatus> {
    /// Every state, in lifecycle order.
    const ALL: &'static [Self];
    /// The word the database stores and the API shows.
    fn as_str(self) -> &'static str;
}

/// Declares a status enum: its words (what the database stores and the API shows),
/// `as_str`, `ALL` in lifecycle order, `Display`/`FromStr`, serde and,
/// with the `sqlx` feature, a text-backed `sqlx::Type` (binding one, or a slice of
/// them, sends `text`/`text[]`); with `openapi`, a `utoipa` schema.
macro_rules! status {
    (
        $(#[$meta:meta])*
        $name:ident, $machine:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $word:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every state, in lifecycle order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word the database stores and the API shows.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }

            /// The words of [`Self::ALL`], comma-separated (for error messages).
            pub fn expected() -> String {
                Self::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            }
        }

        impl Status for $name {
            const ALL: &'static [$name] = $name::ALL;
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownStatus;
            fn from_str(s: &str) -> Result<Self, UnknownStatus> {
                match s {
                    $($word => Ok($name::$variant),)+
                    _ => Err(UnknownStatus {
                        machine: $machine,
                        word: s.to_owned(),
                        expected: Self::expected(),
                    }),
                }
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        #[cfg(feature = "sqlx")]
        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        #[cfg(feature = "sqlx")]
        impl sqlx::postgres::PgHasArrayType for $name {
            fn array_type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::postgres::PgHasArrayType>::array_type_info()
            }
            fn array_compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::postgres::PgHasArrayType>::array_compatible(ty)
            }
        }

        #[cfg(feature = "sqlx")]
        impl sqlx::Encode<'_, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode_by_ref(&self.as_str(), buf)
            }
        }

        #[cfg(feature = "sqlx")]
        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let word = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                Ok(word.parse()?)
            }
        }
    };
}

status! {
    /// Where a run is (`runs.status`; `runs_status_valid` and the transition trigger
    /// in `migrations/`).
    RunStatus, "run" {
        /// Waiting for a worker.
        Queued = "queued",
        /// Leased by a worker, which is advancing it.
        Running = "running",
        /// Parked until a `wait` step's delivery, a child's end or a timeout.
        Waiting = "waiting",
        /// Parked until a `sleep` step's timer.
        Sleeping = "sleeping",
        /// Parked until a failed step's next attempt.
        Retrying = "retrying",
        Succeeded = "succeeded",
        /// A step failed its last attempt: the run is in the dead letters.
        Dead = "dead",
        Cancelled = "cancelled",
    }
}

impl RunStatus {
    /// The states a run ends in (and `finished_at` is set): `runs_finished_iff_final`.
    pub const FINAL: &'static [RunStatus] =
        &[RunStatus::Succeeded, RunStatus::Dead, RunStatus::Cancelled];
    /// The states before the end: what a schedule's overlap rule counts.
    pub const ACTIVE: &'static [RunStatus] = &[
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Waiting,
        RunStatus::Sleeping,
        RunStatus::Retrying,
    ];

    pub fn is_final(self) -> bool {
        Self::FINAL.contains(&self)
    }

    /// Parked until a time or an event, with no worker holding it.
    pub fn is_parked(self) -> bool {
        matches!(
            self,
            RunStatus::Waiting | RunStatus::Sleeping | RunStatus::Retrying
        )
    }
}

status! {
    /// Where one step of a run is (`steps.status`; `steps_status_valid`).
    StepStatus, "step" {
        /// Not started: its needs are not all done, or no worker got to it yet.
        Pending = "pending",
        /// An attempt is under way.
        Running = "running",
        /// An attempt failed; the next is due at `next_attempt_at`.
        RetryScheduled = "retry_scheduled",
        /// A `sleep`, `wait` or `workflow` step waiting on a timer, a delivery or a child.
        Waiting = "waiting",
        Succeeded = "succeeded",
        /// Its last attempt failed (or an error it could not retry).
        Failed = "failed",
        /// Its `if` was false.
        Skipped = "skipped",
        Cancelled = "cancelled",
    }
}

impl StepStatus {
    /// Checkpointed: the step never runs again (`steps_finished_iff_final`).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            StepStatus::Succeeded
                | StepStatus::Failed
                | StepStatus::Skipped
                | StepStatus::Cancelled
        )
    }

    /// Done in the sense of a dependency: the steps that need it may start.
    pub fn satisfies_needs(self) -> bool {
        matches!(self, StepStatus::Succeeded | StepStatus::Skipped)
    }
}

status! {
    /// How one attempt of a step went (`step_attempts.status`).
    AttemptStatus, "attempt" {
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        /// Its worker's lease ran out mid-attempt: the attempt is closed with no result.
        Abandoned = "abandoned",
        /// An operator terminated the run while the attempt ran: it was stopped at once.
        Terminated = "terminated",
    }
}

status! {
    /// Where one item of a `map` step stands (`map_items.status`).
    MapItemStatus, "map item" {
        /// Not started yet.
        Pending = "pending",
        /// Its child run is started and not finished.
        Running = "running",
        /// Its child run succeeded; its output is the item's.
        Succeeded = "succeeded",
        /// Its child run died or was cancelled, or its input could not be made.
        Failed = "failed",
    }
}

status! {
    /// Where one alert stands (`notifications.state`; `notifications_state_valid` in
    /// `migrations/`).
    NotificationState, "notification" {
        /// Due, being delivered, or waiting for its next attempt.
        Pending = "pending",
        /// Its target accepted it.
        Delivered = "delivered",
        /// There was nothing to deliver it to (no URL): recorded, not sent.
        Skipped = "skipped",
        /// Given up on after its last attempt.
        Failed = "failed",
    }
}

impl NotificationState {
    /// Whether an operator can send it again: the notifier has given up on it.
    pub fn can_resend(self) -> bool {
        matches!(self, NotificationState::Failed | NotificationState::Skipped)
    }
}

status! {
    /// How one cron tick of a schedule ended (`schedule_ticks.outcome`).
    TickOutcome, "tick outcome" {
        /// Its run was started (`run_id`).
        Fired = "fired",
        /// The schedule's previous run was still active (overlap rule `skip`).
        SkippedOverlap = "skipped_overlap",
        /// Missed ticks under `misfire_policy = "skip"`.
        SkippedMisfire = "skipped_misfire",
        /// Its run could not be started (`error` says why).
        Failed = "failed",
    }
}

status! {
    /// Why a tick row exists (`schedule_ticks.kind`).
    TickKind, "tick kind" {
        /// Handled within the schedule's `max_lateness`.
        OnTime = "on_time",
        /// Stands for ticks missed while no scheduler ran (the misfire policy).
        Late = "late",
        /// Triggered from the API or `ctl`.
        Manual = "manual",
        /// Started by an operator's backfill of a range of fire times.
        Backfill = "backfill",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_unknown_words_are_named() {
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>(), Ok(*s));
            assert_eq!(
                serde_json::to_value(s).ok(),
                Some(serde_json::json!(s.as_str()))
            );
        }
        for s in StepStatus::ALL {
            assert_eq!(s.as_str().parse::<StepStatus>(), Ok(*s));
        }
        let e = "done".parse::<RunStatus>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown run status `done`; expected one of: queued, running, waiting, sleeping, \
             retrying, succeeded, dead, cancelled"
        );
    }

    #[test]
    fn final_states_are_the_ones_the_schema_says() {
        let finals: Vec<_> = RunStatus::ALL.iter().filter(|s| s.is_final()).collect();
        assert_eq!(
            finals,
            [
                &RunStatus::Succeeded,
                &RunStatus::Dead,
                &RunStatus::Cancelled
            ]
        );
        let active: Vec<_> = RunStatus::ALL
            .iter()
            .filter(|s| !s.is_final())
            .copied()
            .collect();
        assert_eq!(active, RunStatus::ACTIVE);
    }
}
