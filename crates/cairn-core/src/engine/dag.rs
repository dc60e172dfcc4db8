//! The run loop: which steps are ready, starting them (independent steps at once),
//! awaiting their attempts and committing each outcome, until nothing can run now and
//! the run is settled ([`super::settle`]).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::Value;

use super::{Engine, Outcome, Result, RunCx};
use crate::state::{RunStatus, StepStatus};
use crate::step::StepError;
use crate::store;
use crate::workflow::Step;

/// What the engine knows of one step during an advance.
#[derive(Debug, Clone)]
pub(super) struct StepState {
    pub(super) status: StepStatus,
    pub(super) attempts: i32,
    /// Attempts before the last operator retry; they do not count toward the budget.
    pub(super) attempt_floor: i32,
    pub(super) output: Option<Value>,
    pub(super) next_attempt_at: Option<DateTime<Utc>>,
    pub(super) wake_at: Option<DateTime<Utc>>,
    pub(super) child_run_id: Option<String>,
    pub(super) child_status: Option<RunStatus>,
    pub(super) child_output: Option<Value>,
    pub(super) child_error: Option<String>,
    /// A `map` step's progress.
    pub(super) map: store::maps::MapCounts,
    /// A `map` step has items whose child runs finished.
    pub(super) map_news: bool,
}

impl StepState {
    pub(super) fn child_finished(&self) -> bool {
        self.child_status.is_some_and(RunStatus::is_final)
    }

    pub(super) fn is_done(&self) -> bool {
        self.status.satisfies_needs()
    }
}

/// The result of one attempt, carried back to the run loop.
pub(super) struct Finished {
    pub(super) step_id: String,
    pub(super) attempt: i32,
    pub(super) result: Result<Value, StepError>,
}

/// A step's success not yet written.
pub(super) struct Pending {
    pub(super) step_id: String,
    pub(super) attempt: i32,
    pub(super) output: Value,
}

impl Pending {
    pub(super) fn checkpoint(&self) -> store::steps::Checkpoint<'_> {
        store::steps::Checkpoint {
            step_id: &self.step_id,
            attempt: self.attempt,
            output: &self.output,
        }
    }
}

pub(super) enum Started<'a> {
    Attempt(futures::future::BoxFuture<'a, Finished>),
    /// Decided without running anything (skipped, timer set or fired).
    Settled,
    /// Held back until then by its rate limit, without an attempt.
    Delayed(DateTime<Utc>),
    /// Failed for good before running (a broken condition).
    Failed(String),
}

/// The engine's view of a run's step rows.
pub(super) fn step_states(rows: Vec<store::steps::StepRow>) -> HashMap<String, StepState> {
    rows.into_iter()
        .map(|s| {
            (
                s.step_id,
                StepState {
                    status: s.status,
                    attempts: s.attempts,
                    attempt_floor: s.attempt_floor,
                    output: s.output,
                    next_attempt_at: s.next_attempt_at,
                    wake_at: s.wake_at,
                    child_run_id: s.child_run_id,
                    child_status: s.child_status,
                    child_output: s.child_output,
                    child_error: s.child_error,
                    map: store::maps::MapCounts {
                        total: s.map_total,
                        done: s.map_done,
                        failed: s.map_failed,
                        running: s.map_running,
                    },
                    map_news: s.map_news,
                },
            )
        })
        .collect()
}

pub(super) fn set(
    states: &mut HashMap<String, StepState>,
    id: &str,
    f: impl FnOnce(&mut StepState),
) {
    if let Some(s) = states.get_mut(id) {
        f(s);
    }
}

impl Engine {
    pub(super) async fn drive(
        &self,
        cx: &RunCx<'_>,
        states: &mut HashMap<String, StepState>,
    ) -> Result<Option<Outcome>> {
        let mut in_flight = FuturesUnordered::new();
        let mut running: Vec<String> = Vec::new();
        let mut dead: Option<(String, String)> = states
            .iter()
            .find(|(_, s)| s.status == StepStatus::Failed)
            .map(|(id, _)| (id.clone(), "failed earlier".to_owned()));
        let mut grace_deadline: Option<tokio::time::Instant> = None;
        // A checkpoint not yet written: it commits with the start of the next step, or
        // on its own before anything else is written or awaited.
        let mut pending: Option<Pending> = None;

        loop {
            if cx.terminate.is_cancelled() {
                return self.terminated(cx, &mut pending).await;
            }
            let stopping = self.shutdown.is_cancelled();
            if stopping && grace_deadline.is_none() {
                grace_deadline = Some(tokio::time::Instant::now() + self.config.shutdown_grace);
            }
            // Start everything that is ready, unless the run is dying or we are stopping.
            if dead.is_none() && !stopping {
                let now = cx.clock.now();
                let ready: Vec<&Step> = cx
                    .workflow
                    .steps
                    .iter()
                    .filter(|s| !running.contains(&s.id) && self.is_ready(s, states, now))
                    .collect();
                let mut progressed = false;
                for step in ready {
                    match self.start(cx, step, states, &mut pending).await? {
                        Started::Attempt(fut) => {
                            running.push(step.id.clone());
                            in_flight.push(fut);
                        }
                        Started::Settled => progressed = true,
                        Started::Delayed(at) => {
                            set(states, &step.id, |s| {
                                s.status = StepStatus::RetryScheduled;
                                s.next_attempt_at = Some(at);
                            });
                            progressed = true;
                        }
                        Started::Failed(error) => {
                            dead = Some((step.id.clone(), error));
                            break;
                        }
                    }
                }
                if progressed {
                    continue;
                }
            }
            self.flush(cx, &mut pending).await?;

            if in_flight.is_empty() {
                return self.settle(cx, states, dead, stopping).await;
            }

            let next = match grace_deadline {
                Some(deadline) => match tokio::select! {
                    next = tokio::time::timeout_at(deadline, in_flight.next()) => next,
                    _ = cx.terminate.cancelled() => continue,
                } {
                    Ok(next) => next,
                    Err(_) => {
                        drop(in_flight);
                        self.release(cx.lease, "worker shut down before the step finished", None)
                            .await?;
                        return Ok(Some(Outcome::Released));
                    }
                },
                None => tokio::select! {
                    next = in_flight.next() => next,
                    _ = self.shutdown.cancelled() => continue,
                    _ = cx.terminate.cancelled() => continue,
                },
            };
            let Some(Finished {
                step_id,
                attempt,
                result,
            }) = next
            else {
                continue;
            };
            running.retain(|id| id != &step_id);
            match result {
                Ok(output) => {
                    set(states, &step_id, |s| {
                        s.status = StepStatus::Succeeded;
                        s.output = Some(output.clone());
                    });
                    let may_finish =
                        in_flight.is_empty() && dead.is_none() && !self.shutdown.is_cancelled();
                    // A broken output template is left to `settle`, which records why
                    // the run died.
                    let run_output = if may_finish && states.values().all(StepState::is_done) {
                        self.output(cx, states).ok()
                    } else {
                        None
                    };
                    pending = Some(Pending {
                        step_id,
                        attempt,
                        output,
                    });
                    if let Some(run_output) = run_output {
                        self.finish_run(cx, &mut pending, &run_output).await?;
                        return Ok(Some(Outcome::Succeeded));
                    }
                }
                Err(error) => {
                    let done = Finished {
                        step_id,
                        attempt,
                        result: Err(error),
                    };
                    if let Some(error) = self.finish(cx, states, done).await? {
                        dead.get_or_insert(error);
                    }
                }
            }
        }
    }

    /// An operator terminated the run: the attempts in flight are dropped (their tasks
    /// abort) by the caller's return, what finished before is written, and the run is
    /// finished as cancelled (`store::runs::run_cancel_finish` records the attempts
    /// that were running as `terminated`).
    async fn terminated(
        &self,
        cx: &RunCx<'_>,
        pending: &mut Option<Pending>,
    ) -> Result<Option<Outcome>> {
        self.flush(cx, pending).await?;
        Err(super::EngineError::Store(
            store::StoreError::CancelRequested(cx.run_id.to_owned()),
        ))
    }

    pub(super) fn is_ready(
        &self,
        step: &Step,
        states: &HashMap<String, StepState>,
        now: DateTime<Utc>,
    ) -> bool {
        let Some(state) = states.get(&step.id) else {
            return false;
        };
        let due = match state.status {
            StepStatus::Pending => true,
            StepStatus::RetryScheduled => state.next_attempt_at.is_none_or(|t| t <= now),
            // Timers fire, waits time out; a child's end is news at once, and so is
            // the end of a map item's.
            StepStatus::Waiting => {
                state.wake_at.is_some_and(|t| t <= now) || state.child_finished() || state.map_news
            }
            _ => false,
        };
        due && step
            .needs
            .iter()
            .all(|n| states.get(n).is_some_and(StepState::is_done))
    }
}
