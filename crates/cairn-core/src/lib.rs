//! Cairn's core: what makes a run durable, with no server around it — the SQL, the
//! queue, the steps and the engine that advances a run from checkpoint to checkpoint.
//!
//! # Layout
//!
//! `cairn-workflow` is below this crate; the `cairn` server (API, scheduler, worker
//! processes, configuration) and `cairn-bench` are above it. Inside it, dependencies
//! point down this list, never up (a module may use the ones below it):
//!
//! * [`engine`] — advances one run: leases it, runs its ready steps, checkpoints,
//!   retries with backoff, parks, finishes or dead-letters it; its writer is the one
//!   writer of transitions, and its Submitter the one way runs are queued.
//! * [`step`] — executes one attempt of one step (`http`, `sql`, `llm`, built-ins).
//! * [`queue`] — the seam to apalis: the job that says "advance run X", and
//!   [`queue::migrate`], which brings a database up to date; no apalis type leaves it.
//! * [`store`] — every SQL statement Cairn runs, one file per aggregate, and Cairn's
//!   own migrations (`migrations/`).
//! * [`telemetry`] — the metrics the engine records and runs' trace context; no
//!   exporter (the server installs those).
//! * [`delivery`] — the per-delivery keys that sign webhook results for `wait` steps;
//!   pure.
//! * [`workflow`] and [`state`] — the `cairn-workflow` crate, re-exported: definitions
//!   parsed from `workflows/*.toml`, and the run, step, attempt and tick states as
//!   enums that mirror the database's `CHECK`s.
//!
//! `docs/ARCHITECTURE.md` walks through a run's journey across these layers.

pub mod delivery;
pub mod engine;
pub mod queue;
pub mod step;
pub mod store;
pub mod telemetry;

pub use cairn_workflow::{self as workflow, state};
