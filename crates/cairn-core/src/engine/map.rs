//! `map` steps: a child run for each item of a list known only at run time, at most
//! `max_parallel` at once, their outputs gathered in item order.
//!
//! The step's first attempt writes the list (`store::maps`), then every turn — the first,
//! and one each time the parent is woken because an item's child run ended — takes in
//! the ended items and starts the next ones, in one transaction fenced by the parent's
//! lease. Between turns the parent is parked, `waiting`, holding no worker. Each child's
//! end wakes its parent (as a `workflow` step's child does); a wake-up that comes while
//! the parent is busy is not lost, because the parent checks for ended items before it
//! parks. An item is done once its row says so: a crash re-runs no finished item, and a
//! retry of the step (after a timeout, or an operator's retry of the dead run) starts only
//! the items that did not succeed.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::dag::{Started, StepState, set};
use super::writer::{MapTurn, MapTurned};
use super::{Engine, Result, RunCx};
use crate::state::StepStatus;
use crate::step::StepError;
use crate::workflow::template;
use crate::workflow::{MapFailure, MapStep, Step};

impl Engine {
    /// Starts a `map` step, or takes its next turn, or times it out.
    pub(super) async fn start_map(
        &self,
        cx: &RunCx<'_>,
        step: &Step,
        map: &MapStep,
        state: &StepState,
        states: &mut HashMap<String, StepState>,
        vars: minijinja::Value,
    ) -> Result<Started<'static>> {
        let waiting = state.status == StepStatus::Waiting;
        let attempt = if waiting {
            state.attempts
        } else {
            state.attempts + 1
        };
        let begin = match (waiting, state.map.total) {
            (true, _) => None,
            (false, Some(total)) => Some((step.timeout(), total)),
            (false, None) => {
                let items = match template::render_str(&map.items, &vars) {
                    Ok(Value::Array(items)) => items,
                    Ok(other) => {
                        let what = match other {
                            Value::Null => "null",
                            Value::Bool(_) => "a boolean",
                            Value::Number(_) => "a number",
                            Value::String(_) => "a string",
                            Value::Object(_) => "an object",
                            Value::Array(_) => "a list",
                        };
                        return self
                            .map_fail(
                                cx,
                                step,
                                state,
                                states,
                                format!("items: the template yields {what}, not a list"),
                            )
                            .await;
                    }
                    Err(e) => {
                        return self
                            .map_fail(cx, step, state, states, format!("items: {e}"))
                            .await;
                    }
                };
                if items.len() > MapStep::ITEMS_MAX {
                    return self
                        .map_fail(
                            cx,
                            step,
                            state,
                            states,
                            format!(
                                "items: {} items, more than the {} a map step takes",
                                items.len(),
                                MapStep::ITEMS_MAX
                            ),
                        )
                        .await;
                }
                self.writer.map_items(cx.lease, &step.id, &items).await?;
                Some((step.timeout(), items.len() as i32))
            }
        };
        let child = match (&map.workflow, map.item_definition(cx.workflow, &step.id)) {
            (_, Some(inline)) => {
                // Stored when the attempt begins; a later turn's children pin it too.
                if begin.is_some() {
                    self.writer.store_definition(&inline).await?;
                }
                inline
            }
            (Some(workflow), None) => match self.child_definition(cx, workflow).await? {
                Ok(def) => def,
                Err(error) => return self.map_fail(cx, step, state, states, error).await,
            },
            (None, None) => {
                let error = "the map step names no workflow and no step".to_owned();
                return self.map_fail(cx, step, state, states, error).await;
            }
        };
        let origin = crate::store::runs::RunOrigin {
            parent: Some((cx.run_id.to_owned(), step.id.clone())),
            ..cx.origin.clone()
        };
        let mut input = |index: i32, item: &Value| -> std::result::Result<Value, String> {
            let Some(template) = &map.input else {
                return Ok(json!({ "item": item, "index": index }));
            };
            let vars = minijinja::context! {
                item => minijinja::Value::from(minijinja::value::Serde(item)),
                index => index,
                ..vars.clone()
            };
            template::render_value(template, &vars).map_err(|e| format!("input: {e}"))
        };
        let turn = MapTurn {
            step_id: &step.id,
            attempt,
            begin,
            max_parallel: map.max_parallel,
            fail_fast: map.on_failure == MapFailure::FailFast,
            child: &child,
            origin: &origin,
        };
        match self.writer.map_turn(cx.lease, turn, &mut input).await? {
            MapTurned::Succeeded(output) => {
                set(states, &step.id, |s| {
                    s.status = StepStatus::Succeeded;
                    s.attempts = attempt;
                    s.output = Some(output);
                    s.map_news = false;
                });
                Ok(Started::Settled)
            }
            MapTurned::Failed(error) => {
                set(states, &step.id, |s| {
                    s.status = StepStatus::Failed;
                    s.attempts = attempt;
                });
                Ok(Started::Failed(self.redact(error)))
            }
            MapTurned::Waiting { counts, wake_at } => {
                let timed_out = waiting && state.wake_at.is_some_and(|t| t <= cx.clock.now());
                set(states, &step.id, |s| {
                    s.status = StepStatus::Waiting;
                    s.attempts = attempt;
                    s.map = counts;
                    s.map_news = false;
                    if wake_at.is_some() {
                        s.wake_at = wake_at;
                    }
                });
                if !timed_out {
                    return Ok(Started::Settled);
                }
                let why = format!(
                    "the map did not finish within {} ({} of {} items done)",
                    humantime::format_duration(step.timeout()),
                    counts.done,
                    counts.total.unwrap_or_default()
                );
                self.writer
                    .map_stop(cx.lease, &step.id, &format!("cancelled: {why}"))
                    .await?;
                let state = states
                    .get(&step.id)
                    .cloned()
                    .unwrap_or_else(|| state.clone());
                self.fail_waiting(cx, step, &state, states, StepError::retryable(why))
                    .await
            }
        }
    }

    /// Fails a map step for good, before or after it began waiting for its items.
    async fn map_fail(
        &self,
        cx: &RunCx<'_>,
        step: &Step,
        state: &StepState,
        states: &mut HashMap<String, StepState>,
        error: String,
    ) -> Result<Started<'static>> {
        if state.status == StepStatus::Waiting {
            self.fail_waiting(cx, step, state, states, StepError::fatal(error))
                .await
        } else {
            self.fail_at_start(cx, step, state.attempts + 1, states, error)
                .await
        }
    }
}
