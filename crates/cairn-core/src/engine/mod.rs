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
//!
//! The rooms: this file holds the lease's lifecycle (taking a run, giving it up or
//! handing it back); [`dag`] the run loop; [`start`] how each kind of step starts;
//! [`map`] the turns of a `map` step; [`settle`] committing outcomes and ending, parking or releasing the run;
//! [`writer`] every write of a transition (the only code here that opens a
//! transaction); [`submit`] queuing new runs; [`ops`] the operator's actions;
//! [`measure`] what the metrics hear of it.

mod dag;
mod map;
mod measure;
pub mod ops;
pub mod retry;
mod settle;
mod start;
pub mod submit;
mod writer;

pub use writer::{Delivered, admit, admit_due, deliver, release_held, rescue_expired};

pub use submit::{Submission, Submitter, submit_in};

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::queue::QueueError;
use crate::step::{self};
use crate::store::runs::Acquired;
use crate::store::{self, Lease, StoreError};
use crate::workflow::Workflow;
use dag::{StepState, step_states};

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
    /// The runs being advanced, each with the token that terminates it.
    advancing: Mutex<HashMap<String, CancellationToken>>,
    /// Signalled whenever events were written; see [`Engine::announcements`].
    announce: Arc<tokio::sync::Notify>,
    /// Step transitions of all runs, group-committed.
    writer: writer::Writer,
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
            advancing: Mutex::new(HashMap::new()),
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
    /// that fails, the run's lease is left to expire (the heartbeat extends only the
    /// runs whose handler has not returned: `queue::Held`), and the rescuer requeues it.
    pub async fn advance(&self, acquired: Acquired) -> Result<Outcome> {
        self.announce.notify_one();
        let lease = acquired.lease.clone();
        let parent = acquired.run.parent_run_id.clone();
        let keyed = acquired
            .run
            .concurrency_key
            .clone()
            .map(|key| (acquired.run.workflow.clone(), key));
        let timer = measure::leased(&acquired);
        // Every advance of the run, on any worker, is a span of the run's one trace.
        let span = tracing::info_span!(
            "run.advance",
            run = %lease.run_id,
            workflow = %acquired.run.workflow
        );
        crate::telemetry::traces::join_run(&span, &lease.run_id);
        let outcome = match self.advance_run(acquired).instrument(span).await {
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
        if let (
            Some((workflow, key)),
            Ok(Outcome::Succeeded | Outcome::Dead | Outcome::Cancelled),
        ) = (&keyed, &outcome)
        {
            // The run's slot is free: the next run of its key may start. Should this
            // fail, the rescuers' periodic admission does it.
            if let Err(e) = admit(&self.pool, workflow, key).await {
                tracing::warn!(run = %lease.run_id, error = %e,
                    "admitting the next run of the concurrency key failed");
            }
        }
        measure::advanced(timer, &outcome);
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
        let reason = why.to_string();
        match self.writer.dead(lease, "definition", &reason, parent).await {
            Ok(()) => Ok(Outcome::Dead),
            Err(e) => {
                self.let_lease_expire(lease, &e);
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
                self.let_lease_expire(lease, why);
                Ok(Outcome::LeaseLost)
            }
            Err(e) => {
                tracing::error!(run = %lease.run_id, error = %e,
                    "handing the run back failed; its lease will expire");
                self.let_lease_expire(lease, &e);
                Err(e)
            }
        }
    }

    fn let_lease_expire(&self, lease: &Lease, why: &EngineError) {
        tracing::debug!(run = %lease.run_id, error = %why, "leaving the run's lease to expire");
    }

    /// Stops the running steps of `run_id` at once, if this worker is advancing it: an
    /// operator terminated it (`store::runs::run_terminate`). The run then finishes
    /// `cancelled`, its stopped attempts `terminated`. Whether the run was found here.
    pub fn terminate(&self, run_id: &str) -> bool {
        let token = self
            .advancing
            .lock()
            .ok()
            .and_then(|runs| runs.get(run_id).cloned());
        match token {
            Some(token) => {
                tracing::info!(run = run_id, "terminating the run's running steps");
                token.cancel();
                true
            }
            None => false,
        }
    }

    async fn advance_run(&self, acquired: Acquired) -> Result<Outcome> {
        let lease = acquired.lease;
        let run = acquired.run;
        let run_id = run.id.as_str();
        let terminate = CancellationToken::new();
        if let Ok(mut runs) = self.advancing.lock() {
            runs.insert(run_id.to_owned(), terminate.clone());
        }
        let _advancing = Advancing {
            runs: &self.advancing,
            run_id,
        };
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
                priority: run.priority,
            },
            terminate,
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
                self.writer.cancel_finish(&lease).await?;
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

    /// `message` without the values of the environment variables templates may read
    /// (`CAIRN_TEMPLATE_ENV`: API keys, as a rule): a step's error is stored, shown to
    /// viewers and put in dead letters, and a service's answer or a URL in it may quote
    /// what the step sent. Values shorter than [`REDACT_MIN`] are left alone: they are
    /// not secrets, and replacing them would garble every message.
    fn redact(&self, message: String) -> String {
        redact(&self.config.env, message)
    }

    /// Gives the run back to the queue, to be taken again at `at` (now when `None`).
    async fn release(&self, lease: &Lease, reason: &str, at: Option<DateTime<Utc>>) -> Result<()> {
        self.writer.release(lease, reason, at).await
    }
}

/// Takes a run out of [`Engine::advancing`] when its advance ends, however it ends.
struct Advancing<'a> {
    runs: &'a Mutex<HashMap<String, CancellationToken>>,
    run_id: &'a str,
}

impl Drop for Advancing<'_> {
    fn drop(&mut self) {
        if let Ok(mut runs) = self.runs.lock() {
            runs.remove(self.run_id);
        }
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
    /// Cancelled when an operator terminates the run: its running steps stop at once.
    terminate: CancellationToken,
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
