//! Starting a ready step: its condition, then by kind — a plain attempt spawned on a
//! task of its own, a `sleep` timer, a `wait` for a delivery, a child run — and the
//! variables its templates see.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::FutureExt;
use serde_json::{Map, Value, json};
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use super::dag::{Finished, Pending, Started, StepState, set};
use super::{Engine, EngineError, Result, RunCx};

/// Longest wait for a rate limit's next call that a step waits out in the worker;
/// longer, and the run parks until then.
const RATE_WAIT_HERE: Duration = Duration::from_secs(2);
/// How long past its timeout a step's concurrency slot is held, should its worker die
/// without releasing it.
const SLOT_MARGIN: Duration = Duration::from_secs(30);
/// When a step waiting in line for a slot looks again, should the wake-up of a release
/// be missed (a release wakes the first in line at once).
const SLOT_RECHECK: chrono::Duration = chrono::Duration::seconds(30);
use crate::state::{RunStatus, StepStatus};
use crate::step::{self, StepContext, StepError};
use crate::store;
use crate::telemetry::metrics;
use crate::workflow::template;
use crate::workflow::{Step, StepKind, Workflow};

impl Engine {
    pub(super) fn vars(
        &self,
        cx: &RunCx<'_>,
        states: &HashMap<String, StepState>,
        attempt: i32,
    ) -> minijinja::Value {
        let steps: Map<String, Value> = states
            .iter()
            .filter(|(_, s)| s.is_done())
            .map(|(id, s)| {
                (
                    id.clone(),
                    json!({ "output": s.output.clone().unwrap_or(Value::Null), "status": s.status }),
                )
            })
            .collect();
        let run = minijinja::Value::from(BTreeMap::from([
            ("id", minijinja::Value::from(cx.run_id)),
            (
                "workflow",
                minijinja::Value::from(cx.workflow.name.as_str()),
            ),
            ("attempt", minijinja::Value::from(attempt)),
            ("deliveries", self.deliveries(cx, states)),
        ]));
        let llm = json!({
            "configured": self.config.llm.is_some(),
            "model": self.config.llm.as_ref().map(|l| l.model.clone()),
        });
        let mut vars = BTreeMap::from([
            (
                "input",
                minijinja::Value::from(minijinja::value::Serde(cx.input)),
            ),
            (
                "steps",
                minijinja::Value::from(minijinja::value::Serde(&steps)),
            ),
            ("run", run),
            ("llm", minijinja::Value::from(minijinja::value::Serde(&llm))),
            (
                "env",
                minijinja::Value::from(minijinja::value::Serde(&self.config.env)),
            ),
        ]);
        // An inline map step's item: its input's `item` and `index`, by name.
        if cx.workflow.map_item {
            for key in ["item", "index"] {
                let value = cx.input.get(key).cloned().unwrap_or(Value::Null);
                vars.insert(key, minijinja::Value::from(minijinja::value::Serde(value)));
            }
        }
        minijinja::Value::from(vars)
    }

    /// `run.deliveries.<wait step>`: `{ key, attempt }`, the credential an external agent
    /// signs that step's result with (see [`crate::delivery`]), for the attempt that is
    /// waiting or will wait next. Without the webhook secret, reading it is an error that
    /// names the setting.
    pub(super) fn deliveries(
        &self,
        cx: &RunCx<'_>,
        states: &HashMap<String, StepState>,
    ) -> minijinja::Value {
        let mut waits = cx
            .workflow
            .steps
            .iter()
            .filter(|s| matches!(s.kind, StepKind::Wait(_)))
            .peekable();
        let Some(secret) = self.config.webhook_secret.as_deref() else {
            if waits.peek().is_none() {
                return minijinja::Value::from(BTreeMap::<String, minijinja::Value>::new());
            }
            return minijinja::Value::from(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                "run.deliveries needs the webhook secret on the worker \
                 (CAIRN_WEBHOOK_SECRET or --webhook-secret)",
            ));
        };
        let mut out = BTreeMap::new();
        for step in waits {
            let (status, attempts) = states
                .get(&step.id)
                .map_or((StepStatus::Pending, 0), |s| (s.status, s.attempts));
            let attempt = crate::delivery::awaited_attempt(status, attempts);
            let value = match crate::delivery::key(secret, cx.run_id, &step.id, attempt) {
                Ok(key) => minijinja::Value::from(BTreeMap::from([
                    ("key", minijinja::Value::from(key)),
                    ("attempt", minijinja::Value::from(attempt)),
                ])),
                Err(e) => minijinja::Value::from(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    format!("run.deliveries.{}: {e}", step.id),
                )),
            };
            out.insert(step.id.clone(), value);
        }
        minijinja::Value::from(out)
    }

    /// Starts a ready step: evaluates its condition, handles timers, or records the
    /// attempt's start and returns the attempt to await.
    pub(super) async fn start<'a>(
        &'a self,
        cx: &'a RunCx<'a>,
        step: &'a Step,
        states: &mut HashMap<String, StepState>,
        pending: &mut Option<Pending>,
    ) -> Result<Started<'a>> {
        // Only a plain attempt's start carries a pending checkpoint; anything else
        // writes it first, so events stay in the order things happened.
        let plain = step.condition.is_none()
            && step.rate_limit.is_none()
            && step.concurrency.is_none()
            && !matches!(
                step.kind,
                StepKind::Sleep(_) | StepKind::Wait(_) | StepKind::Workflow(_) | StepKind::Map(_)
            );
        if !plain {
            self.flush(cx, pending).await?;
        }
        let Some(state) = states.get(&step.id).cloned() else {
            return Ok(Started::Settled);
        };
        let attempt = state.attempts + 1;
        let vars = self.vars(cx, states, attempt);

        if state.status == StepStatus::Pending
            && let Some(condition) = &step.condition
        {
            match template::eval_condition(condition, &vars) {
                Ok(true) => {}
                Ok(false) => {
                    self.writer.skip(cx.lease, &step.id).await?;
                    set(states, &step.id, |s| {
                        s.status = StepStatus::Skipped;
                        s.output = Some(Value::Null);
                    });
                    return Ok(Started::Settled);
                }
                Err(e) => {
                    return self
                        .fail_at_start(cx, step, attempt, states, format!("condition: {e}"))
                        .await;
                }
            }
        }

        if let StepKind::Wait(_) = &step.kind {
            return self.start_wait(cx, step, &state, states).await;
        }
        if let StepKind::Map(map) = &step.kind {
            return self.start_map(cx, step, map, &state, states, vars).await;
        }
        if let StepKind::Workflow(child) = &step.kind {
            return self
                .start_child(cx, step, child, &state, states, vars)
                .await;
        }
        if let StepKind::Sleep(sleep) = &step.kind {
            if state.status == StepStatus::Waiting {
                let woke = json!({ "wokeAt": state.wake_at });
                self.writer
                    .succeed_waiting(cx.lease, &step.id, state.attempts, &woke)
                    .await?;
                set(states, &step.id, |s| {
                    s.status = StepStatus::Succeeded;
                    s.output = Some(woke.clone());
                });
            } else {
                let duration = Duration::from_millis(sleep.duration_ms);
                let wake_at = self
                    .writer
                    .sleep(cx.lease, &step.id, attempt, duration)
                    .await?;
                set(states, &step.id, |s| {
                    s.status = StepStatus::Waiting;
                    s.attempts = attempt;
                    s.wake_at = Some(wake_at);
                });
            }
            return Ok(Started::Settled);
        }

        let rate_key = match &step.rate_limit {
            None => None,
            Some(limit) => {
                let key = match limit_key(&limit.key, &vars) {
                    Ok(key) => key,
                    Err(e) => {
                        let error = format!("rate_limit.key: {e}");
                        return self.fail_at_start(cx, step, attempt, states, error).await;
                    }
                };
                match self.rate_take(cx, step, limit, &key).await? {
                    Some(started) => return Ok(started),
                    None => Some(key),
                }
            }
        };

        // A slot of the step's concurrency key, held until the attempt ends (or, should
        // this worker die, until it expires). Taken after the rate limit's call, which
        // may park the run: a parked run holds no slot.
        let slot_key = match &step.concurrency {
            None => None,
            Some(limit) => {
                let key = match limit_key(&limit.key, &vars) {
                    Ok(key) => key,
                    Err(e) => {
                        let error = format!("concurrency.key: {e}");
                        return self.fail_at_start(cx, step, attempt, states, error).await;
                    }
                };
                let hold = step.timeout() + SLOT_MARGIN;
                if !super::writer::slot_take(
                    &self.pool,
                    cx.lease,
                    &step.id,
                    &key,
                    limit.limit,
                    hold,
                )
                .await?
                {
                    let at = cx.clock.now() + SLOT_RECHECK;
                    self.writer
                        .delay(cx.lease, &step.id, at, store::steps::Delay::Slot(&key))
                        .await?;
                    return Ok(Started::Delayed(at));
                }
                Some(key)
            }
        };

        // One statement, with the checkpoint that made this step ready if it is
        // still pending.
        let last = pending.take();
        let t = store::steps::Transition {
            checkpoint: last.as_ref().map(Pending::checkpoint),
            run_output: None,
            begin: Some((&step.id, attempt)),
        };
        self.writer.write(cx.lease, t).await?;
        self.announce.notify_one();
        set(states, &step.id, |s| {
            s.status = StepStatus::Running;
            s.attempts = attempt;
        });
        let timer = metrics::AttemptTimer::started(&cx.workflow.name, step.kind.name());
        // Each attempt runs on its own task: the run loop may wait for a connection
        // to record one step's outcome while its other steps, holding connections in
        // the middle of their own transactions, keep going. Dropping the handle (the
        // run loop gave up, e.g. after the shutdown grace) aborts the attempt.
        let task = {
            let step = step.clone();
            let run_id = cx.run_id.to_owned();
            let pool = self.pool.clone();
            let sql_pool = self
                .config
                .step_pool
                .clone()
                .unwrap_or_else(|| pool.clone());
            let http = self.http.clone();
            let egress = self.egress.clone();
            let limits = self.config.limits;
            let llm = self.config.llm.clone();
            // The attempt's span, a child of the run's advance (the current span).
            let span = tracing::info_span!(
                "step.attempt",
                run = %cx.run_id,
                step = %step.id,
                attempt,
                kind = step.kind.name()
            );
            let traceparent =
                crate::telemetry::traces::traceparent(&span, cx.run_id, &step.id, attempt as u32);
            let attempt_run = async move {
                let scx = StepContext {
                    run_id: &run_id,
                    step_id: &step.id,
                    attempt: attempt as u32,
                    vars,
                    pool: &pool,
                    sql_pool: &sql_pool,
                    http: &http,
                    egress: &egress,
                    limits,
                    llm: llm.as_ref(),
                    traceparent: &traceparent,
                };
                let timeout = step.timeout();
                let result = match tokio::time::timeout(timeout, step::execute(&step, &scx)).await {
                    Ok(result) => result,
                    Err(_) => Err(StepError::retryable(format!(
                        "timed out after {}",
                        humantime::format_duration(timeout)
                    ))),
                };
                // The provider asked for a pause (429 or 503 with `Retry-After`): every
                // step sharing the rate limit waits, not this run alone.
                if let (Some(key), Some(wait)) = (
                    &rate_key,
                    result.as_ref().err().and_then(StepError::retry_after),
                ) && let Err(e) = store::rate_limits::rate_hold(&pool, key, wait).await
                {
                    tracing::warn!(run = %run_id, key = %key, error = %e,
                        "holding the rate limit back after Retry-After failed");
                }
                // The slot is free for the next step in line; should this fail, the
                // slot expires.
                if let Some(key) = &slot_key
                    && let Err(e) = super::writer::slot_release(&pool, key, &run_id, &step.id).await
                {
                    tracing::warn!(run = %run_id, key = %key, error = %e,
                        "releasing the step's concurrency slot failed");
                }
                if let Err(e) = &result {
                    tracing::info!(error = %e, "the attempt failed");
                }
                result
            };
            AbortOnDropHandle::new(tokio::spawn(attempt_run.instrument(span)))
        };
        let step_id = step.id.clone();
        let fut = async move {
            let result = match task.await {
                Ok(result) => result,
                Err(e) if e.is_panic() => Err(StepError::fatal("the step panicked")),
                Err(e) => Err(StepError::fatal(format!("the step's task stopped: {e}"))),
            };
            timer.ended(result.is_ok());
            Finished {
                step_id,
                attempt,
                result,
            }
        }
        .boxed();
        Ok(Started::Attempt(fut))
    }

    /// Takes a call of the step's rate limit `key`. `None`: the attempt may start now.
    /// When the key's next call is due within [`RATE_WAIT_HERE`], this waits for it;
    /// later than that, the step is held back until then without an attempt
    /// (`retry_scheduled`), and the run parks, holding no worker.
    async fn rate_take(
        &self,
        cx: &RunCx<'_>,
        step: &Step,
        limit: &crate::workflow::RateLimit,
        key: &str,
    ) -> Result<Option<Started<'static>>> {
        loop {
            let Some(at) = store::rate_limits::rate_take(&self.pool, key, limit.interval()).await?
            else {
                return Ok(None);
            };
            let wait = (at - cx.clock.now()).to_std().unwrap_or_default();
            if wait > RATE_WAIT_HERE {
                self.writer
                    .delay(cx.lease, &step.id, at, store::steps::Delay::RateLimit(key))
                    .await?;
                return Ok(Some(Started::Delayed(at)));
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                // Stopping: the step is still pending, and nothing was written.
                _ = cx.terminate.cancelled() => return Ok(Some(Started::Settled)),
                _ = self.shutdown.cancelled() => return Ok(Some(Started::Settled)),
            }
        }
    }

    /// Fails a step for good before it ran (a broken condition, template or child input):
    /// the attempt is recorded, with its error.
    pub(super) async fn fail_at_start(
        &self,
        cx: &RunCx<'_>,
        step: &Step,
        attempt: i32,
        states: &mut HashMap<String, StepState>,
        error: String,
    ) -> Result<Started<'static>> {
        let error = self.redact(error);
        self.writer
            .fail_at_start(cx.lease, &step.id, attempt, &error)
            .await?;
        set(states, &step.id, |s| {
            s.status = StepStatus::Failed;
            s.attempts = attempt;
        });
        Ok(Started::Failed(error))
    }

    /// Records a timed-out or failed wait as a failed attempt, retried per the policy.
    pub(super) async fn fail_waiting(
        &self,
        cx: &RunCx<'_>,
        step: &Step,
        state: &StepState,
        states: &mut HashMap<String, StepState>,
        error: StepError,
    ) -> Result<Started<'static>> {
        let done = Finished {
            step_id: step.id.clone(),
            attempt: state.attempts,
            result: Err(error),
        };
        match self.finish(cx, states, done).await? {
            Some((_, message)) => Ok(Started::Failed(message)),
            None => Ok(Started::Settled),
        }
    }

    /// `wait` steps: start waiting for the callback, or time out.
    pub(super) async fn start_wait(
        &self,
        cx: &RunCx<'_>,
        step: &Step,
        state: &StepState,
        states: &mut HashMap<String, StepState>,
    ) -> Result<Started<'static>> {
        if state.status == StepStatus::Waiting {
            // Only due when the timeout passed (a delivered result is a checkpoint).
            let error = StepError::retryable(format!(
                "no callback arrived within {}",
                humantime::format_duration(step.timeout())
            ));
            return self.fail_waiting(cx, step, state, states, error).await;
        }
        let attempt = state.attempts + 1;
        let wake_at = self
            .writer
            .wait(cx.lease, &step.id, attempt, step.timeout())
            .await?;
        set(states, &step.id, |s| {
            s.status = StepStatus::Waiting;
            s.attempts = attempt;
            s.wake_at = Some(wake_at);
        });
        Ok(Started::Settled)
    }

    /// The latest stored definition of `workflow`, which child runs pin; `Err` says why
    /// there is none.
    pub(super) async fn child_definition(
        &self,
        cx: &RunCx<'_>,
        workflow: &str,
    ) -> Result<Result<crate::workflow::Definition, String>> {
        let Some((hash, definition)) =
            store::definitions::definition_latest(&self.pool, workflow).await?
        else {
            return Ok(Err(format!(
                "workflow `{workflow}` has never been stored; submit it once through the API"
            )));
        };
        let workflow: Workflow =
            serde_json::from_value(definition).map_err(|e| EngineError::Definition {
                run: cx.run_id.to_owned(),
                hash: hash.clone(),
                reason: e.to_string(),
            })?;
        Ok(Ok(crate::workflow::Definition {
            workflow,
            source: String::new(),
            hash,
        }))
    }

    /// `workflow` steps: start the child run, or take its result, or time out.
    pub(super) async fn start_child(
        &self,
        cx: &RunCx<'_>,
        step: &Step,
        child: &crate::workflow::ChildStep,
        state: &StepState,
        states: &mut HashMap<String, StepState>,
        vars: minijinja::Value,
    ) -> Result<Started<'static>> {
        if state.status == StepStatus::Waiting {
            let child_id = state.child_run_id.clone().unwrap_or_default();
            match state.child_status {
                Some(RunStatus::Succeeded) => {
                    let output = state.child_output.clone().unwrap_or(Value::Null);
                    self.writer
                        .succeed_waiting(cx.lease, &step.id, state.attempts, &output)
                        .await?;
                    set(states, &step.id, |s| {
                        s.status = StepStatus::Succeeded;
                        s.output = Some(output.clone());
                    });
                    return Ok(Started::Settled);
                }
                Some(status @ (RunStatus::Dead | RunStatus::Cancelled)) => {
                    let why = state.child_error.clone().unwrap_or_default();
                    let error =
                        StepError::fatal(format!("child run {child_id} is {status}: {why}"));
                    return self.fail_waiting(cx, step, state, states, error).await;
                }
                _ => {
                    // Timed out: stop the child before trying again.
                    self.writer
                        .cancel_child(&child_id, &format!("parent {} timed out", cx.run_id))
                        .await?;
                    let error = StepError::retryable(format!(
                        "child run {child_id} did not finish within {}",
                        humantime::format_duration(step.timeout())
                    ));
                    return self.fail_waiting(cx, step, state, states, error).await;
                }
            }
        }
        let attempt = state.attempts + 1;
        let input = match template::render_value(&child.input, &vars) {
            Ok(v) => v,
            Err(e) => {
                return self
                    .fail_at_start(cx, step, attempt, states, e.to_string())
                    .await;
            }
        };
        let def = match self.child_definition(cx, &child.workflow).await? {
            Ok(def) => def,
            Err(error) => return self.fail_at_start(cx, step, attempt, states, error).await,
        };
        let origin = store::runs::RunOrigin {
            parent: Some((cx.run_id.to_owned(), step.id.clone())),
            ..cx.origin.clone()
        };
        let spawned = self
            .writer
            .spawn_child(
                cx.lease,
                &step.id,
                attempt,
                step.timeout(),
                &def,
                &input,
                &origin,
            )
            .await?;
        let (created, wake_at) = match spawned {
            Ok(spawned) => spawned,
            Err(errors) => {
                let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
                let error = format!(
                    "input for workflow `{}` is invalid: {}",
                    child.workflow,
                    text.join("; ")
                );
                return self.fail_at_start(cx, step, attempt, states, error).await;
            }
        };
        set(states, &step.id, |s| {
            s.status = StepStatus::Waiting;
            s.attempts = attempt;
            s.wake_at = Some(wake_at);
            s.child_run_id = Some(created.run_id.clone());
            s.child_status = Some(created.status);
        });
        Ok(Started::Settled)
    }
}

/// The key of a step's rate limit or concurrency limit, rendered: a string as it is,
/// any other value as its JSON text.
fn limit_key(
    key: &str,
    vars: &minijinja::Value,
) -> std::result::Result<String, template::TemplateError> {
    Ok(match template::render_str(key, vars)? {
        Value::String(key) => key,
        other => other.to_string(),
    })
}
