//! The engine: advances one run at a time, durably.
//!
//! [`Engine::advance`] is called for every wake-up the queue delivers. It
//!
//! 1. takes the run's **lease** (or returns at once if the run is finished or another
//!    live worker holds it — duplicate wake-ups are normal);
//! 2. loads the pinned definition and the step checkpoints, so a resumed run starts at
//!    the first step without a checkpoint;
//! 3. runs every ready step — independent steps concurrently — recording each attempt's
//!    start before it runs and committing its outcome (checkpoint, or failure with the
//!    next attempt's time) in one fenced transaction with its event;
//! 4. when nothing can run now, finishes the run (`succeeded`, or `dead` with a dead
//!    letter) or **parks** it (`retrying`/`sleeping`) and queues the wake-up in the same
//!    transaction — no worker slot is held while a run waits.
//!
//! Every write proves the lease is still held (fencing), so a worker that lost its lease
//! (paused, partitioned, presumed dead) cannot commit anything more for that run.
//! On shutdown no new step starts; running steps get a grace period, then the run is
//! handed back to the queue.

pub mod ops;
pub mod retry;
mod submit;
mod writer;

pub use submit::{
    BATCH_MAX, BatchItem, BatchOutcome, BatchRejected, BatchSubmitted, ItemRejected, KEY_MAX_LEN,
    Rejected, SubmitBatcher, Submitted, store_definition, submit, submit_for, submit_in,
    submit_many, submit_with,
};

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::{Map, Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::queue::{self, QueueError, Wake};
use crate::state::{RunStatus, StepStatus};
use crate::step::{self, StepContext, StepError};
use crate::store::runs::Acquired;
use crate::store::{self, Lease, StoreError};
use crate::workflow::template;
use crate::workflow::{Step, StepKind, Workflow};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("run {run} pins definition {hash}, which is missing or unreadable: {reason}")]
    Definition {
        run: String,
        hash: String,
        reason: String,
    },
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Shortest template environment value redacted from step errors.
pub const REDACT_MIN: usize = 4;

/// `message` with each value of `env` (at least [`REDACT_MIN`] bytes long) replaced by
/// `[redacted NAME]`, longest values first so that one containing another goes whole.
pub fn redact(env: &BTreeMap<String, String>, mut message: String) -> String {
    let mut values: Vec<(&String, &String)> =
        env.iter().filter(|(_, v)| v.len() >= REDACT_MIN).collect();
    values.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    for (name, value) in values {
        if message.contains(value.as_str()) {
            message = message.replace(value.as_str(), &format!("[redacted {name}]"));
        }
    }
    message
}

impl EngineError {
    /// Why this error means the database is away right now
    /// ([`store::connect::unavailable`]), whichever layer it came through.
    pub fn unavailable(&self) -> Option<&'static str> {
        match self {
            EngineError::Store(e) => e.unavailable(),
            EngineError::Queue(e) => e.unavailable(),
            EngineError::Database(e) => store::connect::unavailable(e),
            EngineError::Definition { .. } => None,
        }
    }
}

/// How long a run handed back after an error waits before it is tried again.
pub const RETRY_AFTER_ERROR: Duration = Duration::from_secs(5);

/// How a call to [`Engine::advance`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Dead,
    /// Waiting for a retry or a timer; a wake-up is queued.
    Parked,
    /// Handed back to the queue (shutdown, or after an error).
    Released,
    /// The lease expired under us; another worker will continue.
    LeaseLost,
    /// An operator cancelled the run; it stopped at a step boundary.
    Cancelled,
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This worker's id (also the lease owner).
    pub worker_id: String,
    pub lease_ttl: Duration,
    /// After shutdown begins, how long running steps may still finish.
    pub shutdown_grace: Duration,
    /// Variables templates may read as `env.NAME`.
    pub env: BTreeMap<String, String>,
    /// The model `llm` steps call, if any.
    pub llm: Option<step::LlmConfig>,
    /// What `http` steps may reach beyond public addresses (`CAIRN_EGRESS_ALLOW`).
    pub egress_allow: step::EgressAllow,
    /// Size limits on responses and stored outputs.
    pub limits: step::Limits,
    /// Where `sql` steps run, when not on `pool` (`CAIRN_STEP_DATABASE_URL`).
    pub step_pool: Option<PgPool>,
    /// Derives the keys templates hand to external agents (`run.deliveries`);
    /// `CAIRN_WEBHOOK_SECRET`.
    pub webhook_secret: Option<String>,
}

/// Advances runs; one per worker process, shared by all its concurrent jobs.
pub struct Engine {
    pool: PgPool,
    config: EngineConfig,
    /// For the operator's own endpoints (the model server): no egress policy.
    http: reqwest::Client,
    /// The clients of `http` steps, under the egress policy.
    egress: Arc<step::StepHttp>,
    shutdown: CancellationToken,
    definitions: Mutex<HashMap<String, Arc<Workflow>>>,
    /// See [`Engine::unreleased`].
    unreleased: Mutex<std::collections::HashSet<String>>,
    /// Signalled whenever events were written; see [`Engine::announcements`].
    announce: Arc<tokio::sync::Notify>,
    /// Step transitions of all runs, group-committed.
    writer: writer::Writer,
}

/// What the engine knows of one step during an advance.
#[derive(Debug, Clone)]
struct StepState {
    status: StepStatus,
    attempts: i32,
    /// Attempts before the last operator retry; they do not count toward the budget.
    attempt_floor: i32,
    output: Option<Value>,
    next_attempt_at: Option<DateTime<Utc>>,
    wake_at: Option<DateTime<Utc>>,
    child_run_id: Option<String>,
    child_status: Option<RunStatus>,
    child_output: Option<Value>,
    child_error: Option<String>,
}

impl StepState {
    fn child_finished(&self) -> bool {
        self.child_status.is_some_and(RunStatus::is_final)
    }

    fn is_done(&self) -> bool {
        self.status.satisfies_needs()
    }
}

/// The result of one attempt, carried back to the run loop.
struct Finished {
    step_id: String,
    attempt: i32,
    result: Result<Value, StepError>,
}

impl Engine {
    pub fn new(pool: PgPool, config: EngineConfig, shutdown: CancellationToken) -> Engine {
        let http = reqwest::Client::builder()
            .user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Engine {
            writer: writer::Writer::start(pool.clone()),
            egress: Arc::new(step::StepHttp::new(config.egress_allow.clone())),
            pool,
            config,
            http,
            shutdown,
            definitions: Mutex::new(HashMap::new()),
            unreleased: Mutex::new(std::collections::HashSet::new()),
            announce: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Notified after the engine wrote run events, for a process whose connections do
    /// not notify listeners themselves (see [`store::connect_quiet`]) to announce them.
    pub fn announcements(&self) -> Arc<tokio::sync::Notify> {
        self.announce.clone()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    async fn definition(&self, run_id: &str, hash: &str) -> Result<Arc<Workflow>> {
        if let Some(wf) = self
            .definitions
            .lock()
            .ok()
            .and_then(|m| m.get(hash).cloned())
        {
            return Ok(wf);
        }
        let err = |reason: String| EngineError::Definition {
            run: run_id.to_owned(),
            hash: hash.to_owned(),
            reason,
        };
        let value = store::definitions::definition_get(&self.pool, hash)
            .await?
            .ok_or_else(|| err("not found".into()))?;
        let wf: Workflow = serde_json::from_value(value).map_err(|e| err(e.to_string()))?;
        let wf = Arc::new(wf);
        if let Ok(mut m) = self.definitions.lock() {
            m.insert(hash.to_owned(), wf.clone());
        }
        Ok(wf)
    }

    /// Advances a run whose lease was just taken (by the queue's fetch) as far as it
    /// can go now. See the module docs.
    ///
    /// A run this call cannot advance is never left leased to this worker, whose
    /// heartbeat would keep its lease alive: a run whose definition cannot be read is
    /// dead, with the reason; after any other error (the database's, most likely) the run
    /// is handed back to the queue and tried again [`RETRY_AFTER_ERROR`] later. When even
    /// that fails, the run is left out of the heartbeat ([`Engine::unreleased`]), so its
    /// lease expires and the rescuer requeues it.
    pub async fn advance(&self, acquired: Acquired) -> Result<Outcome> {
        self.announce.notify_one();
        let lease = acquired.lease.clone();
        if let Ok(mut runs) = self.unreleased.lock() {
            runs.remove(&lease.run_id);
        }
        let parent = acquired.run.parent_run_id.clone();
        let outcome = match self.advance_run(acquired).await {
            Err(e @ EngineError::Definition { .. }) => {
                tracing::error!(run = %lease.run_id, error = %e, "the run cannot be advanced");
                self.give_up(&lease, parent.as_deref(), &e).await
            }
            Err(e) => {
                tracing::warn!(run = %lease.run_id, error = %e,
                    "advancing the run failed; handing it back to the queue");
                self.hand_back(&lease, &e).await
            }
            ok => ok,
        };
        self.announce.notify_one();
        outcome
    }

    /// A run that no attempt can advance: dead, with `why`.
    async fn give_up(
        &self,
        lease: &Lease,
        parent: Option<&str>,
        why: &EngineError,
    ) -> Result<Outcome> {
        let dead = async {
            let mut tx = self.pool.begin().await?;
            store::runs::run_dead(&mut tx, lease, "definition", &why.to_string()).await?;
            if let Some(parent) = parent {
                queue::enqueue(&mut tx, &[Wake::now(parent)]).await?;
            }
            tx.commit().await?;
            Ok::<_, EngineError>(())
        };
        match dead.await {
            Ok(()) => Ok(Outcome::Dead),
            Err(e) => {
                self.leave_unreleased(lease, &e);
                Err(e)
            }
        }
    }

    /// Gives a run back to the queue after an error, to be tried again later.
    async fn hand_back(&self, lease: &Lease, why: &EngineError) -> Result<Outcome> {
        let reason = format!("the worker hit an error: {why}");
        let retry_at = Utc::now() + RETRY_AFTER_ERROR;
        match self.release(lease, &reason, Some(retry_at)).await {
            Ok(()) => Ok(Outcome::Released),
            // Someone else has the run now, or an operator cancelled it: theirs to finish.
            Err(EngineError::Store(StoreError::LeaseLost(_) | StoreError::CancelRequested(_))) => {
                self.leave_unreleased(lease, why);
                Ok(Outcome::LeaseLost)
            }
            Err(e) => {
                tracing::error!(run = %lease.run_id, error = %e,
                    "handing the run back failed; its lease will expire");
                self.leave_unreleased(lease, &e);
                Err(e)
            }
        }
    }

    fn leave_unreleased(&self, lease: &Lease, why: &EngineError) {
        tracing::debug!(run = %lease.run_id, error = %why, "no longer extending the run's lease");
        if let Ok(mut runs) = self.unreleased.lock() {
            runs.insert(lease.run_id.clone());
        }
    }

    /// Runs this worker gave up on but could not hand back: its heartbeat must not
    /// extend their leases. A run leaves the set when this worker leases it again.
    pub fn unreleased(&self) -> Vec<String> {
        self.unreleased
            .lock()
            .map(|runs| runs.iter().cloned().collect())
            .unwrap_or_default()
    }

    async fn advance_run(&self, acquired: Acquired) -> Result<Outcome> {
        let lease = acquired.lease;
        let run = acquired.run;
        let run_id = run.id.as_str();
        let clock = Clock {
            base: acquired.db_now,
            at: Instant::now(),
        };
        let wf = self.definition(run_id, &run.definition_hash).await?;
        let mut states = step_states(acquired.steps);
        let cx = RunCx {
            run_id,
            workflow: &wf,
            input: &run.input,
            lease: &lease,
            clock,
            parent: run.parent_run_id.as_deref(),
            origin: store::runs::RunOrigin {
                user_id: run.user_id,
                project_id: run.project_id,
                parent: None,
            },
        };
        let driven = if run.cancel_requested_at.is_some() {
            Err(EngineError::Store(StoreError::CancelRequested(
                run_id.to_owned(),
            )))
        } else {
            loop {
                match self.drive(&cx, &mut states).await {
                    // A callback or a child finished while we were deciding to park.
                    Ok(None) => states = self.load_states(run_id).await?,
                    Ok(Some(outcome)) => break Ok(outcome),
                    Err(e) => break Err(e),
                }
            }
        };
        match driven {
            Err(EngineError::Store(StoreError::LeaseLost(_))) => {
                tracing::warn!(
                    run = run_id,
                    "lease lost; another worker continues this run"
                );
                Ok(Outcome::LeaseLost)
            }
            Err(EngineError::Store(StoreError::CancelRequested(_))) => {
                let mut tx = self.pool.begin().await?;
                store::runs::run_cancel_finish(&mut tx, &lease).await?;
                tx.commit().await?;
                tracing::info!(run = run_id, "run cancelled at a step boundary");
                Ok(Outcome::Cancelled)
            }
            other => other,
        }
    }

    async fn load_states(&self, run_id: &str) -> Result<HashMap<String, StepState>> {
        Ok(step_states(
            store::steps::step_list(&self.pool, run_id).await?,
        ))
    }

    async fn drive(
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
                Some(deadline) => match tokio::time::timeout_at(deadline, in_flight.next()).await {
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

    fn is_ready(
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
            // Timers fire, waits time out; a child's end is news at once.
            StepStatus::Waiting => {
                state.wake_at.is_some_and(|t| t <= now) || state.child_finished()
            }
            _ => false,
        };
        due && step
            .needs
            .iter()
            .all(|n| states.get(n).is_some_and(StepState::is_done))
    }

    fn vars(
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
        minijinja::Value::from(BTreeMap::from([
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
        ]))
    }

    /// `run.deliveries.<wait step>`: `{ key, attempt }`, the credential an external agent
    /// signs that step's result with (see [`crate::delivery`]), for the attempt that is
    /// waiting or will wait next. Without the webhook secret, reading it is an error that
    /// names the setting.
    fn deliveries(&self, cx: &RunCx<'_>, states: &HashMap<String, StepState>) -> minijinja::Value {
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
    async fn start<'a>(
        &'a self,
        cx: &'a RunCx<'a>,
        step: &'a Step,
        states: &mut HashMap<String, StepState>,
        pending: &mut Option<Pending>,
    ) -> Result<Started<'a>> {
        // Only a plain attempt's start carries a pending checkpoint; anything else
        // writes it first, so events stay in the order things happened.
        let plain = step.condition.is_none()
            && !matches!(
                step.kind,
                StepKind::Sleep(_) | StepKind::Wait(_) | StepKind::Workflow(_)
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
                    let mut tx = self.pool.begin().await?;
                    store::steps::step_skip(&mut tx, cx.lease, &step.id).await?;
                    tx.commit().await?;
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
        if let StepKind::Workflow(child) = &step.kind {
            return self
                .start_child(cx, step, child, &state, states, vars)
                .await;
        }
        if let StepKind::Sleep(sleep) = &step.kind {
            if state.status == StepStatus::Waiting {
                let woke = json!({ "wokeAt": state.wake_at });
                let attempt = state.attempts;
                let mut tx = self.pool.begin().await?;
                store::steps::step_succeed(&mut tx, cx.lease, &step.id, attempt, &woke, None)
                    .await?;
                tx.commit().await?;
                set(states, &step.id, |s| {
                    s.status = StepStatus::Succeeded;
                    s.output = Some(woke.clone());
                });
            } else {
                let duration = Duration::from_millis(sleep.duration_ms);
                let mut tx = self.pool.begin().await?;
                let wake_at =
                    store::steps::step_sleep(&mut tx, cx.lease, &step.id, attempt, duration)
                        .await?;
                tx.commit().await?;
                set(states, &step.id, |s| {
                    s.status = StepStatus::Waiting;
                    s.attempts = attempt;
                    s.wake_at = Some(wake_at);
                });
            }
            return Ok(Started::Settled);
        }

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
            AbortOnDropHandle::new(tokio::spawn(async move {
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
                };
                let timeout = step.timeout();
                match tokio::time::timeout(timeout, step::execute(&step, &scx)).await {
                    Ok(result) => result,
                    Err(_) => Err(StepError::retryable(format!(
                        "timed out after {}",
                        humantime::format_duration(timeout)
                    ))),
                }
            }))
        };
        let step_id = step.id.clone();
        let fut = async move {
            let result = match task.await {
                Ok(result) => result,
                Err(e) if e.is_panic() => Err(StepError::fatal("the step panicked")),
                Err(e) => Err(StepError::fatal(format!("the step's task stopped: {e}"))),
            };
            Finished {
                step_id,
                attempt,
                result,
            }
        }
        .boxed();
        Ok(Started::Attempt(fut))
    }

    /// Writes a checkpoint that is still pending.
    async fn flush(&self, cx: &RunCx<'_>, pending: &mut Option<Pending>) -> Result<()> {
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
    async fn finish_run(
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
        if cx.parent.is_some() {
            let mut tx = self.pool.begin().await?;
            store::steps::step_transition(&mut tx, cx.lease, t).await?;
            self.wake_parent(&mut tx, cx).await?;
            tx.commit().await?;
        } else {
            self.writer.write(cx.lease, t).await?;
        }
        Ok(())
    }

    /// `message` without the values of the environment variables templates may read
    /// (`CAIRN_TEMPLATE_ENV`: API keys, as a rule): a step's error is stored, shown to
    /// viewers and put in dead letters, and a service's answer or a URL in it may quote
    /// what the step sent. Values shorter than [`REDACT_MIN`] are left alone: they are
    /// not secrets, and replacing them would garble every message.
    fn redact(&self, message: String) -> String {
        redact(&self.config.env, message)
    }

    /// Commits an attempt's outcome. Returns the error if the step has failed for good.
    async fn finish(
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
                let mut tx = self.pool.begin().await?;
                let next = store::steps::step_fail(
                    &mut tx, cx.lease, &step_id, attempt, &message, retry_in,
                )
                .await?;
                tx.commit().await?;
                match next {
                    Some(at) => {
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
    async fn settle(
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
            let mut tx = self.pool.begin().await?;
            store::runs::run_dead(&mut tx, cx.lease, &step_id, &error).await?;
            self.wake_parent(&mut tx, cx).await?;
            tx.commit().await?;
            return Ok(Some(Outcome::Dead));
        }
        if states.values().all(StepState::is_done) {
            let output = match self.output(cx, states) {
                Ok(output) => output,
                Err(e) => {
                    let mut tx = self.pool.begin().await?;
                    store::runs::run_dead(&mut tx, cx.lease, "output", &e.to_string()).await?;
                    self.wake_parent(&mut tx, cx).await?;
                    tx.commit().await?;
                    return Ok(Some(Outcome::Dead));
                }
            };
            let mut tx = self.pool.begin().await?;
            store::runs::run_succeed(&mut tx, cx.lease, &output).await?;
            self.wake_parent(&mut tx, cx).await?;
            tx.commit().await?;
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
                let mut tx = self.pool.begin().await?;
                store::runs::run_park(&mut tx, cx.lease, status, at).await?;
                // The park holds the run's lock: a callback or a child's end either
                // committed before (seen here) or wakes the run after.
                if store::steps::steps_have_news(&mut tx, cx.run_id, &watch).await? {
                    drop(tx);
                    return Ok(None);
                }
                queue::enqueue(
                    &mut tx,
                    &[Wake {
                        run_id: cx.run_id.to_owned(),
                        at: Some(at),
                    }],
                )
                .await?;
                tx.commit().await?;
                Ok(Some(Outcome::Parked))
            }
            _ => {
                self.release(cx.lease, "worker shutting down", None).await?;
                Ok(Some(Outcome::Released))
            }
        }
    }

    /// Fails a step for good before it ran (a broken condition, template or child input):
    /// the attempt is recorded, with its error.
    async fn fail_at_start(
        &self,
        cx: &RunCx<'_>,
        step: &Step,
        attempt: i32,
        states: &mut HashMap<String, StepState>,
        error: String,
    ) -> Result<Started<'static>> {
        let error = self.redact(error);
        let mut tx = self.pool.begin().await?;
        store::steps::step_begin(&mut tx, cx.lease, &step.id, attempt).await?;
        store::steps::step_fail(&mut tx, cx.lease, &step.id, attempt, &error, None).await?;
        tx.commit().await?;
        set(states, &step.id, |s| {
            s.status = StepStatus::Failed;
            s.attempts = attempt;
        });
        Ok(Started::Failed(error))
    }

    /// Queues a wake-up for the parent run, in the transaction that finishes this one.
    async fn wake_parent(&self, tx: &mut sqlx::PgConnection, cx: &RunCx<'_>) -> Result<()> {
        if let Some(parent) = cx.parent {
            queue::enqueue(tx, &[Wake::now(parent)]).await?;
        }
        Ok(())
    }

    /// Records a timed-out or failed wait as a failed attempt, retried per the policy.
    async fn fail_waiting(
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
    async fn start_wait(
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
        let mut tx = self.pool.begin().await?;
        let wake_at =
            store::steps::step_wait(&mut tx, cx.lease, &step.id, attempt, step.timeout(), None)
                .await?;
        tx.commit().await?;
        set(states, &step.id, |s| {
            s.status = StepStatus::Waiting;
            s.attempts = attempt;
            s.wake_at = Some(wake_at);
        });
        Ok(Started::Settled)
    }

    /// `workflow` steps: start the child run, or take its result, or time out.
    async fn start_child(
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
                    let mut tx = self.pool.begin().await?;
                    store::steps::step_succeed(
                        &mut tx,
                        cx.lease,
                        &step.id,
                        state.attempts,
                        &output,
                        None,
                    )
                    .await?;
                    tx.commit().await?;
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
                    let mut tx = self.pool.begin().await?;
                    store::runs::run_cancel(
                        &mut tx,
                        &child_id,
                        &format!("parent {} timed out", cx.run_id),
                    )
                    .await?;
                    tx.commit().await?;
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
        let Some((hash, definition)) =
            store::definitions::definition_latest(&self.pool, &child.workflow).await?
        else {
            let error = format!(
                "workflow `{}` has never been stored; submit it once through the API",
                child.workflow
            );
            return self.fail_at_start(cx, step, attempt, states, error).await;
        };
        let workflow: Workflow =
            serde_json::from_value(definition).map_err(|e| EngineError::Definition {
                run: cx.run_id.to_owned(),
                hash: hash.clone(),
                reason: e.to_string(),
            })?;
        let def = crate::workflow::Definition {
            workflow,
            source: String::new(),
            hash,
        };
        let origin = store::runs::RunOrigin {
            parent: Some((cx.run_id.to_owned(), step.id.clone())),
            ..cx.origin.clone()
        };
        let mut tx = self.pool.begin().await?;
        store::lease_fence(&mut tx, cx.lease).await?;
        let created = match submit_with(&mut tx, &def, &input, None, &origin).await? {
            Ok(Submitted::Created(run)) => run,
            Ok(_) => {
                return Err(EngineError::Definition {
                    run: cx.run_id.to_owned(),
                    hash: def.hash,
                    reason: "child run not created".into(),
                });
            }
            Err(Rejected::Input(errors)) => {
                drop(tx);
                let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
                let error = format!(
                    "input for workflow `{}` is invalid: {}",
                    child.workflow,
                    text.join("; ")
                );
                return self.fail_at_start(cx, step, attempt, states, error).await;
            }
        };
        let wake_at = store::steps::step_wait(
            &mut tx,
            cx.lease,
            &step.id,
            attempt,
            step.timeout(),
            Some(&created.id),
        )
        .await?;
        tx.commit().await?;
        set(states, &step.id, |s| {
            s.status = StepStatus::Waiting;
            s.attempts = attempt;
            s.wake_at = Some(wake_at);
            s.child_run_id = Some(created.id.clone());
            s.child_status = Some(created.status);
        });
        Ok(Started::Settled)
    }

    async fn failed_error(&self, cx: &RunCx<'_>, step_id: &str) -> Result<String> {
        Ok(store::steps::step_list(&self.pool, cx.run_id)
            .await?
            .into_iter()
            .find(|s| s.step_id == step_id)
            .and_then(|s| s.error)
            .unwrap_or_else(|| "failed".into()))
    }

    fn output(
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

    /// Gives the run back to the queue, to be taken again at `at` (now when `None`).
    async fn release(&self, lease: &Lease, reason: &str, at: Option<DateTime<Utc>>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        store::runs::run_release(&mut tx, lease, reason).await?;
        let wake = Wake {
            run_id: lease.run_id.clone(),
            at,
        };
        queue::enqueue(&mut tx, &[wake]).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// A step's success not yet written.
struct Pending {
    step_id: String,
    attempt: i32,
    output: Value,
}

impl Pending {
    fn checkpoint(&self) -> store::steps::Checkpoint<'_> {
        store::steps::Checkpoint {
            step_id: &self.step_id,
            attempt: self.attempt,
            output: &self.output,
        }
    }
}

enum Started<'a> {
    Attempt(futures::future::BoxFuture<'a, Finished>),
    /// Decided without running anything (skipped, timer set or fired).
    Settled,
    /// Failed for good before running (a broken condition).
    Failed(String),
}

/// The engine's view of a run's step rows.
fn step_states(rows: Vec<store::steps::StepRow>) -> HashMap<String, StepState> {
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
                },
            )
        })
        .collect()
}

fn set(states: &mut HashMap<String, StepState>, id: &str, f: impl FnOnce(&mut StepState)) {
    if let Some(s) = states.get_mut(id) {
        f(s);
    }
}

/// The run being advanced.
struct RunCx<'a> {
    run_id: &'a str,
    workflow: &'a Workflow,
    input: &'a Value,
    lease: &'a Lease,
    clock: Clock,
    /// The run whose `workflow` step started this one: woken when this one finishes.
    parent: Option<&'a str>,
    /// Passed on to child runs.
    origin: store::runs::RunOrigin,
}

/// The database's clock, read when the lease was taken, advanced by the local monotonic
/// clock: comparisons with times the database wrote need no agreement between hosts.
#[derive(Debug, Clone, Copy)]
struct Clock {
    base: DateTime<Utc>,
    at: Instant,
}

impl Clock {
    fn now(&self) -> DateTime<Utc> {
        self.base + chrono::Duration::from_std(self.at.elapsed()).unwrap_or_default()
    }
}

/// Hands back to the queue every run worker `owner` still leases — runs its fetch took
/// but never started before it stopped — so they continue at once elsewhere rather than
/// when their lease expires. Call only once no handler of `owner` is running.
pub async fn release_held(pool: &PgPool, owner: &str) -> Result<usize> {
    let mut tx = pool.begin().await?;
    let ids =
        store::runs::run_release_held(&mut tx, owner, "the worker stopped before starting it")
            .await?;
    if !ids.is_empty() {
        let wakes: Vec<Wake> = ids.iter().map(Wake::now).collect();
        queue::enqueue(&mut tx, &wakes).await?;
    }
    tx.commit().await?;
    Ok(ids.len())
}

/// Queues wake-ups for runs whose lease expired; returns how many were rescued.
pub async fn rescue_expired(pool: &PgPool, batch: i64) -> Result<usize> {
    let mut tx = pool.begin().await?;
    let ids = store::runs::runs_rescue_expired(&mut tx, batch).await?;
    if !ids.is_empty() {
        let wakes: Vec<Wake> = ids.iter().map(Wake::now).collect();
        queue::enqueue(&mut tx, &wakes).await?;
    }
    tx.commit().await?;
    if !ids.is_empty() {
        tracing::info!(count = ids.len(), runs = ?ids, "requeued runs whose worker lost its lease");
    }
    Ok(ids.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_environment_values_are_redacted_longest_first() {
        let env: BTreeMap<String, String> = [
            ("KEY", "sk-123456"),
            ("LONG", "sk-123456-extended"),
            ("SHORT", "abc"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(
            redact(&env, "sent sk-123456-extended and sk-123456 and abc".into()),
            "sent [redacted LONG] and [redacted KEY] and abc"
        );
        assert_eq!(redact(&env, "nothing".into()), "nothing");
    }
}
