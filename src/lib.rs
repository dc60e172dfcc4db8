//! Cairn: durable workflows for AI/agent work, on Postgres alone.
//!
//! # Layout
//!
//! This crate sits among three others of the workspace: `cairn-workflow` below it;
//! `cairn-ctl` (the `ctl` operator CLI, which talks to the API over HTTP only) beside
//! it, depending on `cairn-workflow` alone; and `cairn-bench` above it, which measures
//! the `cairn` binary. Inside this crate, dependencies point down this list, never up
//! (a module may use the ones below it):
//!
//! * [`startup`] and [`config`] — the wiring every process shares, from flags to
//!   connected pools and a served API; the binaries and the tests start Cairn through
//!   it. [`devdb`] — `cairn dev`'s private PostgreSQL.
//! * [`api`] — the axum HTTP API (the dashboard's backend-for-frontend).
//! * [`worker`] — a worker process: the queue consumer, lease keeper and rescuer.
//! * [`scheduler`] — a scheduler process: syncs `[[schedules]]` and turns cron ticks
//!   into runs, each tick exactly once however many schedulers run; the reaper,
//!   which deletes finished runs past their retention window, one pass at a time; and
//!   the notifier, which delivers the alerts the database writes when runs die.
//! * [`engine`] — advances one run: leases it, runs its ready steps, checkpoints,
//!   retries with backoff, parks, finishes or dead-letters it.
//! * [`step`] — executes one attempt of one step (`http`, `sql`, `llm`, built-ins).
//! * [`queue`] — the seam to apalis: the job that says "advance run X", and
//!   [`queue::migrate`], which brings a database up to date; no apalis type leaves it.
//! * [`auth`] — users, tokens and sessions.
//! * [`store`] — every SQL statement Cairn runs, one file per aggregate, and Cairn's
//!   own migrations.
//! * [`workflow`] and [`state`] — the `cairn-workflow` crate, re-exported: definitions
//!   parsed from `workflows/*.toml`, and the run, step, attempt and tick states as
//!   enums that mirror the database's `CHECK`s; pure, no I/O but reading files.
//! * [`delivery`] — the per-delivery keys that sign webhook results for `wait` steps;
//!   pure.
//! * [`telemetry`], [`shutdown`] — logging, metrics, traces, process identity and signals, for
//!   every process.
//!
//! `docs/ARCHITECTURE.md` walks through a run's journey across these layers.

pub mod api;
pub mod auth;
pub mod config;
pub mod delivery;
pub mod devdb;
pub mod engine;
pub mod queue;
pub mod scheduler;
pub mod shutdown;
pub mod startup;
pub mod step;
pub mod store;
pub mod telemetry;
pub mod worker;

pub use cairn_workflow::{self as workflow, state};

/// The version every process reports (workers record it with their heartbeat).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
