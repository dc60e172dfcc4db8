//! Cairn: durable workflows for AI/agent work, on Postgres alone.
//!
//! # Layout
//!
//! Dependencies point down this list, never up:
//!
//! * [`bench`] — `cairn bench`: real worker and API processes on a fresh database,
//!   measured next to a raw-SQL floor.
//! * [`cli`] — the `ctl` operator CLI; talks to the API over HTTP only.
//! * [`api`] — the axum HTTP API (the dashboard's backend-for-frontend).
//! * [`worker`] — a worker process: the queue consumer, lease keeper and rescuer.
//! * [`scheduler`] — a scheduler process: syncs `[[schedules]]` and turns cron ticks
//!   into runs, each tick exactly once however many schedulers run; and the reaper,
//!   which deletes finished runs past their retention window, one pass at a time.
//! * [`engine`] — advances one run: leases it, runs its ready steps, checkpoints,
//!   retries with backoff, parks, finishes or dead-letters it.
//! * [`step`] — executes one attempt of one step (`http`, `sql`).
//! * [`queue`] — the seam to apalis: the job that says "advance run X"; no apalis type
//!   leaves it.
//! * [`store`] — every SQL statement Cairn runs, one file per aggregate.
//! * [`workflow`] — definitions parsed from `workflows/*.toml`; pure, no I/O but reading
//!   files.
//! * [`delivery`] — the per-delivery keys that sign webhook results for `wait` steps;
//!   pure.
//! * [`config`], [`telemetry`], [`shutdown`] — shared by the binaries.

pub mod api;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod devdb;
pub mod engine;
pub mod queue;
pub mod scheduler;
pub mod shutdown;
pub mod step;
pub mod store;
pub mod telemetry;
pub mod worker;
pub mod workflow;

/// Cairn's own migrations (`migrations/`); apalis' are applied by [`store::migrate`].
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The version every process reports (workers record it with their heartbeat).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
