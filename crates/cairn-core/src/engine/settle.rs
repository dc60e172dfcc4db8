//! Committing what attempts did and settling the run once nothing runs: checkpoints,
//! failures with their retry, and the run's end — succeeded, dead, parked until its
//! next timer, or handed back.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::dag::{Finished, Pending, StepState, set};
use super::{Engine, Outcome, Result, RunCx, measure, retry};
use crate::state::{RunStatus, StepStatus};
use crate::store;
use crate::workflow::StepKind;
use crate::workflow::template;

impl Engine {
    /// Writes a checkpoint that is still pending.
    pub(super) async fn flush(&self, cx: &RunCx<'_>, pending: &mut Option<Pending>) -> Result<()> {
        if let Some(p) = pending.take() {
            let t = store::steps::Transition {
                checkpoint: Some(p.checkpoint()),
                ..Default::default()
            };
            self.writer.write(cx.lease, t).await?;
        }
        Ok(())
    }

    /// The run's last checkpoint and its success, in one statement (and, for a child
    /// run, the parent's wake-up in the same transaction).
    pub(super) async fn finish_run(
        &self,
        cx: &RunCx<'_>,
        pending: &mut Option<Pending>,
        output: &Value,
    ) -> Result<()> {
        let last = pending.take();
        let t = store::steps::Transition {
            checkpoint: last.as_ref().map(Pending::checkpoint),
            run_output: Some(output),
            begin: None,
        };
        self.writer.finish_run(cx.lease, t, cx.parent).await
    }

    /// Commits an attempt's outcome. Returns the error if the step has failed for good.
    pub(super) async fn finish(
        &self,
        cx: &RunCx<'_>,
        states: &mut HashMap<String, StepState>,
        done: Finished,
    ) -> Result<Option<(String, String)>> {
        let Finished {
            step_id,
            attempt,
            result,
        } = done;
        let floor = states.get(&step_id).map_or(0, |s| s.attempt_floor);
        match result {
            Ok(output) => {
                set(states, &step_id, |s| {
                    s.status = StepStatus::Succeeded;
                    s.output = Some(output.clone());
                });
                let mut pending = Some(Pending {
                    step_id,
                    attempt,
                    output,
                });
                self.flush(cx, &mut pending).await?;
                Ok(None)
            }
            Err(error) => {
                let step = cx.workflow.step(&step_id);
                let max = step.map_or(1, |s| s.retry.max_attempts) as i32;
                let retry_in = match step {
                    Some(step) if error.is_retryable() && attempt - floor < max => {
                        Some(retry::delay(
                            &step.retry,
                            (attempt - floor) as u32,
                            error.retry_after(),
                            fastrand::f64(),
                        ))
                    }
                    _ => None,
                };
                let message = self.redact(if retry_in.is_none() && error.is_retryable() {
                    format!(
                        "{error} (attempt {} of {max}; no attempts left)",
                        attempt - floor
                    )
                } else {
                    error.to_string()
                });
                let next = self
                    .writer
                    .fail(cx.lease, &step_id, attempt, &message, retry_in)
                    .await?;
                match next {
                    Some(at) => {
                        measure::retry_scheduled(cx, step);
                        set(states, &step_id, |s| {
                            s.status = StepStatus::RetryScheduled;
                            s.next_attempt_at = Some(at);
                        });
                        Ok(None)
                    }
                    None => {
                        set(states, &step_id, |s| s.status = StepStatus::Failed);
                        Ok(Some((step_id, message)))
                    }
                }
            }
        }
    }

    /// Nothing is running: finish, park or release the run.
    pub(super) async fn settle(
        &self,
        cx: &RunCx<'_>,
        states: &HashMap<String, StepState>,
        dead: Option<(String, String)>,
        stopping: bool,
    ) -> Result<Option<Outcome>> {
        if let Some((step_id, error)) = dead {
            let error = match states.get(&step_id) {
                Some(_) if error == "failed earlier" => self.failed_error(cx, &step_id).await?,
                _ => error,
            };
            self.writer
                .dead(cx.lease, &step_id, &error, cx.parent)
                .await?;
            return Ok(Some(Outcome::Dead));
        }
        if states.values().all(StepState::is_done) {
            let output = match self.output(cx, states) {
                Ok(output) => output,
                Err(e) => {
                    self.writer
                        .dead(cx.lease, "output", &e.to_string(), cx.parent)
                        .await?;
                    return Ok(Some(Outcome::Dead));
                }
            };
            self.writer.succeed(cx.lease, &output, cx.parent).await?;
            return Ok(Some(Outcome::Succeeded));
        }
        // Waiting on retries or timers: park until the earliest.
        let mut earliest: Option<(DateTime<Utc>, RunStatus)> = None;
        // Steps waiting on the outside world: checked for news before parking.
        let mut watch: Vec<String> = Vec::new();
        for (id, s) in states {
            let kind = cx.workflow.step(id).map(|st| &st.kind);
            let candidate = match (s.status, kind) {
                (StepStatus::RetryScheduled, _) => {
                    s.next_attempt_at.map(|t| (t, RunStatus::Retrying))
                }
                (StepStatus::Waiting, Some(StepKind::Sleep(_))) => {
                    s.wake_at.map(|t| (t, RunStatus::Sleeping))
                }
                (StepStatus::Waiting, _) => {
                    watch.push(id.clone());
                    s.wake_at.map(|t| (t, RunStatus::Waiting))
                }
                _ => None,
            };
            if let Some(c) = candidate
                && earliest.is_none_or(|e| c.0 < e.0)
            {
                earliest = Some(c);
            }
        }
        match earliest {
            Some((at, status)) if !stopping || at > cx.clock.now() => {
                // A callback or a child's end that came meanwhile: advance again.
                if !self.writer.park(cx.lease, status, at, &watch).await? {
                    return Ok(None);
                }
                Ok(Some(Outcome::Parked))
            }
            _ => {
                self.release(cx.lease, "worker shutting down", None).await?;
                Ok(Some(Outcome::Released))
            }
        }
    }

    pub(super) async fn failed_error(&self, cx: &RunCx<'_>, step_id: &str) -> Result<String> {
        Ok(store::steps::step_list(&self.pool, cx.run_id)
            .await?
            .into_iter()
            .find(|s| s.step_id == step_id)
            .and_then(|s| s.error)
            .unwrap_or_else(|| "failed".into()))
    }

    pub(super) fn output(
        &self,
        cx: &RunCx<'_>,
        states: &HashMap<String, StepState>,
    ) -> Result<Value, template::TemplateError> {
        match &cx.workflow.output {
            Some(t) => template::render_value(t, &self.vars(cx, states, 0)),
            None => Ok(Value::Object(
                cx.workflow
                    .leaves()
                    .into_iter()
                    .map(|s| {
                        let out = states
                            .get(&s.id)
                            .and_then(|st| st.output.clone())
                            .unwrap_or(Value::Null);
                        (s.id.clone(), out)
                    })
                    .collect(),
            )),
        }
    }
}
