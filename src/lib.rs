//! Cairn: durable workflows for AI/agent work, on Postgres alone.
//!
//! # Layout
//!
//! This crate is the server: the processes Cairn runs and their wiring, over
//! `cairn-core` (store, queue, steps, engine), which it re-exports under the same
//! names, and `cairn-workflow` below that. Beside it in the workspace, `cairn-ctl` (the
//! `ctl` operator CLI, which talks to the API over HTTP only) and `cairn-bench` (which
//! measures the `cairn` binary). Inside this crate, dependencies point down this list,
//! never up (a module may use the ones below it, and all of `cairn-core`):
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
//! * [`auth`] — users, tokens and sessions.
//! * [`telemetry`], [`shutdown`] — logging, the metrics exporter, trace export, process
//!   identity and signals, for every process.
//! * From `cairn-core`: [`engine`] (advances one run), [`step`] (one attempt of one
//!   step), [`queue`] (the seam to apalis), [`store`] (every SQL statement and the
//!   migrations), [`delivery`] (webhook result keys); and from `cairn-workflow`,
//!   [`workflow`] and [`state`].
//!
//! `docs/ARCHITECTURE.md` walks through a run's journey across these layers.

pub mod api;
pub mod auth;
pub mod config;
pub mod devdb;
pub mod scheduler;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
pub mod worker;

pub use cairn_core::{delivery, engine, queue, state, step, store, workflow};

/// The version every process reports (workers record it with their heartbeat).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
