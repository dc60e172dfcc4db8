//! What the engine tells the metrics ([`crate::telemetry::metrics`]), in one place, so
//! the run loop says it in one line: a run leased (and, on its first lease, how long it
//! waited), a run finished, a retry scheduled. Each is called once the transition it
//! counts has committed.

use super::{Outcome, Result, RunCx};
use crate::state::RunStatus;
use crate::store::runs::Acquired;
use crate::telemetry::metrics::{self, RunTimer};
use crate::workflow::Step;

/// A run was just leased: times its advance from now.
pub(super) fn leased(acquired: &Acquired) -> RunTimer {
    let run = &acquired.run;
    RunTimer::leased(
        &run.workflow,
        run.created_at,
        run.started_at,
        acquired.db_now,
    )
}

/// The advance `timer` measured ended with `outcome`: counted if it finished the run.
pub(super) fn advanced(timer: RunTimer, outcome: &Result<Outcome>) {
    let status = match outcome {
        Ok(Outcome::Succeeded) => Some(RunStatus::Succeeded),
        Ok(Outcome::Dead) => Some(RunStatus::Dead),
        Ok(Outcome::Cancelled) => Some(RunStatus::Cancelled),
        _ => None,
    };
    timer.ended(status);
}

/// A failed attempt of `step` was scheduled to be tried again.
pub(super) fn retry_scheduled(cx: &RunCx<'_>, step: Option<&Step>) {
    metrics::step_retry_scheduled(&cx.workflow.name, step.map_or("", |s| s.kind.name()));
}
