//! Submitting runs: each run row, its steps, its `run_queued` event and its first
//! wake-up commit together. Every submission is a batch of one or many runs of one
//! workflow ([`Submission`]), validated as a whole before anything is written, and
//! written by one statement ([`store::runs::run_insert_many`]). Two ways to write it:
//!
//! - [`submit_in`]: in the caller's transaction, so the runs commit or roll back with
//!   what the caller writes beside them (a scheduler's tick, a parent's step);
//! - [`Submitter::submit`]: in transactions of its own, for the API, where one-run
//!   submissions arriving together share a transaction and its commit.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Semaphore, oneshot};

use super::{EngineError, Result};
use crate::queue::{self, Wake};
use crate::state::RunStatus;
use crate::store;
use crate::store::definitions::DefinitionsStored;
use crate::store::runs::{RunInsertManyParams, RunOrigin, RunRow, RunsInserted};
use crate::telemetry::metrics;
use crate::workflow::{Definition, InputError, Registry, content_hash};

/// Most runs one submission queues.
pub const BATCH_MAX: usize = 1_000;
/// Longest idempotency key.
pub const KEY_MAX_LEN: usize = 255;

/// Runs of one workflow to queue, from one origin: one item or up to [`BATCH_MAX`].
#[derive(Debug, Clone, Copy)]
pub struct Submission<'a> {
    pub def: &'a Definition,
    pub items: &'a [Item<'a>],
    pub origin: &'a RunOrigin,
}

impl<'a> Submission<'a> {
    /// Runs of `def` with no origin (no user, project or parent; priority 0).
    pub fn of(def: &'a Definition, items: &'a [Item<'a>]) -> Submission<'a> {
        const NONE: &RunOrigin = &RunOrigin {
            user_id: None,
            project_id: None,
            parent: None,
            priority: 0,
        };
        Submission {
            def,
            items,
            origin: NONE,
        }
    }

    /// The same runs from `origin`.
    pub fn from(self, origin: &'a RunOrigin) -> Submission<'a> {
        Submission { origin, ..self }
    }
}

/// One run of a [`Submission`].
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    pub input: &'a Value,
    pub idempotency_key: Option<&'a str>,
}

impl<'a> Item<'a> {
    /// A run of `input` without an idempotency key.
    pub fn input(input: &'a Value) -> Item<'a> {
        Item {
            input,
            idempotency_key: None,
        }
    }
}

/// What became of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new run, queued by this call.
    Created,
    /// The item's idempotency key was used before (earlier, or by an earlier item of
    /// the same submission) for the same request: `run_id` is that run.
    Existing,
    /// The key was used before for a different request: `run_id` is the run it made.
    KeyConflict,
}

/// One item's answer, in the order of the items.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub run_id: String,
    /// The run's status when the submission committed (`queued` for created runs).
    pub status: RunStatus,
    pub outcome: Outcome,
}

/// What is wrong with one item.
#[derive(Debug, Clone)]
pub struct ItemRejected {
    /// The item's position in the submission, from 0.
    pub index: usize,
    /// The input's problems (fields relative to the input).
    pub input: Vec<InputError>,
    /// The idempotency key's problem.
    pub idempotency_key: Option<String>,
}

/// Why a submission was refused before anything was written.
#[derive(Debug, Clone)]
pub enum Rejected {
    Empty,
    /// More than [`BATCH_MAX`] items (how many there were).
    TooMany(usize),
    /// Every invalid item, in order.
    Items(Vec<ItemRejected>),
}

impl Rejected {
    /// The input's problems, for a submission of one run.
    pub fn input_errors(self) -> Vec<InputError> {
        match self {
            Rejected::Items(items) => items.into_iter().flat_map(|i| i.input).collect(),
            Rejected::Empty | Rejected::TooMany(_) => Vec::new(),
        }
    }
}

/// Queues `s`'s runs in the caller's transaction: they commit or roll back with what
/// the caller writes beside them. Every item is validated first; if any is invalid
/// nothing is written and every invalid item is named. The workflow's definition is
/// stored (once per content hash); a run with a concurrency key is admitted in the
/// same transaction if its key has a free slot.
///
/// Idempotency keys are per item: a key used before for the same request answers
/// with that run ([`Outcome::Existing`]), for a different one with a conflict that
/// leaves the other items queued. A key repeated inside the submission is the same:
/// the first item decides, later ones refer to its run.
///
/// The caller counts the runs in [`metrics::runs_submitted`] once it commits.
pub async fn submit_in(
    conn: &mut PgConnection,
    s: Submission<'_>,
) -> Result<std::result::Result<Vec<Submitted>, Rejected>> {
    let prepared = match prepare_all(s.def, s.items) {
        Ok(p) => p,
        Err(rejected) => return Ok(Err(rejected)),
    };
    Ok(Ok(write(
        Target::Within(conn),
        s.def,
        &[],
        &prepared,
        s.origin,
    )
    .await?))
}

/// Stores a definition (once per content hash).
pub async fn store_definition(conn: &mut PgConnection, def: &Definition) -> Result<()> {
    let definition =
        serde_json::to_value(&def.workflow).map_err(|e| super::EngineError::Definition {
            run: String::new(),
            hash: def.hash.clone(),
            reason: e.to_string(),
        })?;
    store::definitions::definition_upsert(
        conn,
        &def.hash,
        &def.workflow.name,
        &definition,
        &def.source,
    )
    .await?;
    Ok(())
}

/// What an idempotency key promises: the same workflow and the same (validated) input.
fn request_hash(workflow: &str, input: &Value) -> String {
    content_hash(&format!("{workflow}\n{input}"))
}

/// Queues a new run's first wake-up in the caller's transaction; a run with a
/// concurrency key is admitted instead, now if a slot is free, or later in its turn.
/// For runs written one by one (a replay); submissions queue theirs as they insert.
pub(super) async fn queue_first(conn: &mut PgConnection, run: &RunRow) -> Result<()> {
    match &run.concurrency_key {
        None => queue::enqueue(&mut *conn, &[Wake::now(&run.id)]).await?,
        Some(key) => {
            store::concurrency::concurrency_admit(&mut *conn, &run.workflow, key, queue::QUEUE)
                .await?;
        }
    }
    Ok(())
}

/// Stores those of `defs` that `stored` does not remember.
async fn store_definitions_missing(
    conn: &mut PgConnection,
    stored: &DefinitionsStored,
    defs: &[&Definition],
) -> Result<()> {
    for def in defs {
        if !stored.contains(&def.hash) {
            store_definition(&mut *conn, def).await?;
        }
    }
    Ok(())
}

/// A run was refused because its definition row is missing although `stored`
/// remembered it (see [`DefinitionsStored`]).
fn definition_missing(e: &EngineError) -> bool {
    matches!(
        e,
        EngineError::Store(store::StoreError::DefinitionMissing(_))
    )
}

/// A valid item, ready to write: its input with defaults applied, and what its
/// idempotency key promises.
#[derive(Debug, Clone)]
struct Prepared {
    /// The run's id, born when the item is accepted: a run written by a lane's writer
    /// has the id its submitter chose.
    id: String,
    input: Value,
    request_hash: String,
    idempotency_key: Option<String>,
    /// Its workflow's concurrency key for this input, if the workflow has a limit.
    concurrency_key: Option<String>,
}

/// Validates one item (`index` names it in the rejection).
fn prepare(
    def: &Definition,
    index: usize,
    item: Item<'_>,
) -> std::result::Result<Prepared, ItemRejected> {
    let key_error = item
        .idempotency_key
        .filter(|k| k.is_empty() || k.len() > KEY_MAX_LEN)
        .map(|_| format!("must be 1 to {KEY_MAX_LEN} characters"));
    let validated = def.workflow.validate_input(item.input).and_then(|input| {
        match def.workflow.concurrency_for(&input) {
            Ok(concurrency) => Ok((input, concurrency.map(|c| c.0))),
            Err(e) => Err(vec![e]),
        }
    });
    match validated {
        Ok((input, concurrency_key)) if key_error.is_none() => Ok(Prepared {
            id: ulid::Ulid::generate().to_string(),
            request_hash: request_hash(&def.workflow.name, &input),
            input,
            idempotency_key: item.idempotency_key.map(str::to_owned),
            concurrency_key,
        }),
        Ok(_) => Err(ItemRejected {
            index,
            input: Vec::new(),
            idempotency_key: key_error,
        }),
        Err(input) => Err(ItemRejected {
            index,
            input,
            idempotency_key: key_error,
        }),
    }
}

/// Validates a whole submission: every item, or why not.
fn prepare_all(
    def: &Definition,
    items: &[Item<'_>],
) -> std::result::Result<Vec<Prepared>, Rejected> {
    if items.is_empty() {
        return Err(Rejected::Empty);
    }
    if items.len() > BATCH_MAX {
        return Err(Rejected::TooMany(items.len()));
    }
    let mut prepared = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match prepare(def, index, *item) {
            Ok(p) => prepared.push(p),
            Err(r) => rejected.push(r),
        }
    }
    if rejected.is_empty() {
        Ok(prepared)
    } else {
        Err(Rejected::Items(rejected))
    }
}

/// Where a submission's statements go.
enum Target<'c> {
    /// The caller's transaction: definitions are upserted, keyed runs admitted in it.
    Within(&'c mut PgConnection),
    /// Transactions of its own on `pool`: definitions `stored` remembers are not
    /// written again, and keyed runs are admitted once their runs have committed.
    Own {
        pool: &'c PgPool,
        stored: &'c DefinitionsStored,
    },
}

/// Writes validated items; answers in their order. `children` are the definitions of
/// the child workflows `def`'s runs may start, stored beside it.
async fn write(
    target: Target<'_>,
    def: &Definition,
    children: &[&Definition],
    prepared: &[Prepared],
    origin: &RunOrigin,
) -> Result<Vec<Submitted>> {
    let n = prepared.len();
    let ids: Vec<&str> = prepared.iter().map(|p| p.id.as_str()).collect();
    // A key repeated in the batch is inserted once, by its first item; `lead[i]` is the
    // item whose run item `i` stands for.
    let mut first: HashMap<&str, usize> = HashMap::new();
    let lead: Vec<usize> = prepared
        .iter()
        .enumerate()
        .map(|(i, p)| match &p.idempotency_key {
            Some(k) => *first.entry(k.as_str()).or_insert(i),
            None => i,
        })
        .collect();
    let hashes: Vec<&str> = prepared.iter().map(|p| p.request_hash.as_str()).collect();
    let sent: Vec<usize> = (0..n).filter(|&i| lead[i] == i).collect();
    let mut sent_ids = Vec::with_capacity(sent.len());
    let mut sent_inputs = Vec::with_capacity(sent.len());
    let mut sent_keys = Vec::with_capacity(sent.len());
    let mut sent_hashes = Vec::with_capacity(sent.len());
    let mut sent_concurrency = Vec::new();
    for &i in &sent {
        sent_ids.push(ids[i]);
        sent_inputs.push(&prepared[i].input);
        sent_keys.push(prepared[i].idempotency_key.as_deref());
        sent_hashes.push(hashes[i]);
        if def.workflow.concurrency.is_some() {
            sent_concurrency.push(prepared[i].concurrency_key.as_deref());
        }
    }
    let step_ids: Vec<&str> = def.workflow.steps.iter().map(|s| s.id.as_str()).collect();
    let wake_ids = queue::wake_ids(sent_ids.len());
    let job_ids: Vec<&str> = wake_ids.iter().map(String::as_str).collect();
    let params = RunInsertManyParams {
        workflow: &def.workflow.name,
        definition_hash: &def.hash,
        step_ids: &step_ids,
        origin,
        ids: &sent_ids,
        inputs: &sent_inputs,
        idempotency_keys: &sent_keys,
        request_hashes: &sent_hashes,
        wakes: Some(store::runs::NewWakes {
            queue: queue::QUEUE,
            job_ids: &job_ids,
        }),
        pinned: def.workflow.pins_runs(),
        concurrency_keys: &sent_concurrency,
        concurrency_limit: def.workflow.concurrency.as_ref().map(|c| c.limit),
    };
    let defs: Vec<&Definition> = std::iter::once(def)
        .chain(children.iter().copied())
        .collect();
    let created_keys = |inserted: &RunsInserted| -> Vec<String> {
        let created: HashSet<&str> = inserted.created.iter().map(String::as_str).collect();
        let mut keys: Vec<String> = sent
            .iter()
            .filter(|&&i| created.contains(ids[i]))
            .filter_map(|&i| prepared[i].concurrency_key.clone())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    };
    let inserted = match target {
        Target::Within(conn) => {
            for d in &defs {
                store_definition(&mut *conn, d).await?;
            }
            let inserted = store::runs::run_insert_many(&mut *conn, params).await?;
            // Keyed runs were inserted waiting for a slot: admit what the limits allow.
            for key in created_keys(&inserted) {
                store::concurrency::concurrency_admit(
                    &mut *conn,
                    &def.workflow.name,
                    &key,
                    queue::QUEUE,
                )
                .await?;
            }
            inserted
        }
        Target::Own { pool, stored } => {
            let inserted = insert_own(pool, stored, &defs, params).await?;
            metrics::runs_submitted(&def.workflow.name, inserted.created.len());
            // Keyed runs were inserted waiting for a slot: admit what the limits allow,
            // key by key in their order. Should this fail, the runs are queued all the
            // same, and the workers' periodic admission starts them.
            for key in created_keys(&inserted) {
                if let Err(e) = super::writer::admit(pool, &def.workflow.name, &key).await {
                    tracing::warn!(workflow = %def.workflow.name, error = %e,
                        "admitting submitted runs to their concurrency slots failed; the workers' periodic admission will");
                }
            }
            inserted
        }
    };
    answers(&ids, &lead, &hashes, prepared, &inserted)
}

/// Inserts in a transaction of its own, storing the definitions `stored` does not
/// remember. Once every definition is stored, the runs, their steps, events and
/// wake-ups are one statement that runs on its own (one round trip, committed as a
/// whole or not at all). Should a remembered definition be missing after all
/// (inserting the runs says so), it is forgotten and the insert tried once more.
async fn insert_own(
    pool: &PgPool,
    stored: &DefinitionsStored,
    defs: &[&Definition],
    params: RunInsertManyParams<'_>,
) -> Result<RunsInserted> {
    let mut retried = false;
    loop {
        let attempt = async {
            if defs.iter().all(|d| stored.contains(&d.hash)) {
                let mut conn = pool.acquire().await?;
                return Ok(store::runs::run_insert_many(&mut conn, params).await?);
            }
            let mut tx = pool.begin().await?;
            store_definitions_missing(&mut tx, stored, defs).await?;
            let inserted = store::runs::run_insert_many(&mut tx, params).await?;
            tx.commit().await?;
            Ok::<_, EngineError>(inserted)
        }
        .await;
        match attempt {
            Err(e) if !retried && definition_missing(&e) => {
                for d in defs {
                    stored.forget(&d.hash);
                }
                retried = true;
            }
            Err(e) => return Err(e),
            Ok(inserted) => {
                for d in defs {
                    stored.remember(&d.hash);
                }
                return Ok(inserted);
            }
        }
    }
}

/// Each item's answer: the run it created, or the one its idempotency key names.
fn answers(
    ids: &[&str],
    lead: &[usize],
    hashes: &[&str],
    prepared: &[Prepared],
    inserted: &RunsInserted,
) -> Result<Vec<Submitted>> {
    let created: HashSet<&str> = inserted.created.iter().map(String::as_str).collect();
    let existing: HashMap<&str, &RunRow> = inserted
        .existing
        .iter()
        .filter_map(|r| r.idempotency_key.as_deref().map(|k| (k, r)))
        .collect();
    let mut out = Vec::with_capacity(lead.len());
    for (i, &l) in lead.iter().enumerate() {
        // The run item `i` refers to: (id, status, request hash).
        let (run_id, status, promised) = if created.contains(ids[l]) {
            (ids[l], RunStatus::Queued, Some(hashes[l]))
        } else {
            let run = prepared[l]
                .idempotency_key
                .as_deref()
                .and_then(|k| existing.get(k))
                .ok_or_else(|| {
                    EngineError::Store(store::StoreError::Invalid(format!(
                        "item {l} of a submission was neither inserted nor found by its idempotency key"
                    )))
                })?;
            (run.id.as_str(), run.status, run.request_hash.as_deref())
        };
        let outcome = if i == l && created.contains(run_id) {
            Outcome::Created
        } else if promised == Some(hashes[i]) {
            Outcome::Existing
        } else {
            Outcome::KeyConflict
        };
        out.push(Submitted {
            run_id: run_id.to_owned(),
            status,
            outcome,
        });
    }
    Ok(out)
}

/// How many shared transactions one [`Submitter`] lane may have open at once: a
/// second one prepares its statements while the first waits for its commit.
const WRITERS_PER_LANE: usize = 2;

/// Submits in transactions of its own ([`Submitter::submit`]), and writes concurrent
/// one-run submissions together: one transaction — one commit, one
/// WAL flush — for all the runs that arrived while the previous transaction of their
/// lane was being written.
///
/// Why: a commit waits for its WAL flush, and one run per transaction caps a
/// connection at one run per flush; sharing the transaction lifts the cap by the
/// number of runs that share it. Under light load a submission is written at once,
/// alone (there is no waiting for company); the batches grow only as submissions queue
/// up.
///
/// Its writes go through connections of their own that do not notify
/// ([`store::connect_unannounced`]); once a write commits, workers and event listeners
/// are woken by one statement that writes nothing ([`Announcer`]). Postgres commits
/// notifying transactions one at a time, WAL flush included, so submit transactions
/// that notified could not share a flush.
///
/// What each caller keeps: its input is validated before it joins a batch (a bad input
/// changes nothing, and never fails another's submission); the answer comes after the
/// commit that holds its run, steps, event and job; idempotency keys work as if the
/// submissions ran one after the other. Should a shared transaction fail, each of its
/// runs is retried alone, so one run that the database refuses fails only its own
/// submission.
///
/// A lane is a workflow and an origin (user, project): the runs of one batch share
/// those. Writers are tasks spawned on demand; a lane with nothing waiting has none.
///
/// A submission of many runs is written as it comes, in one transaction. Every write,
/// of a lane or a batch, holds a write permit, one per connection of its own, and queues
/// for one (fairly, in arrival order) rather than time out waiting for a connection.
/// The process's pool stays free for everything else.
#[derive(Debug)]
pub struct Submitter {
    /// As many connections as the process's pool, that do not notify.
    pool: PgPool,
    /// Shared with the process's other submitters to this database.
    stored: Arc<DefinitionsStored>,
    /// One per open submit transaction: `pool`'s connections.
    write_permits: Semaphore,
    announcer: Arc<Announcer>,
    /// Lanes with submissions waiting or being written. A lane is removed by its last
    /// writer when it finds nothing waiting, under this lock, so a submission either
    /// joins a lane whose writer will see it or starts a new writer.
    lanes: Mutex<HashMap<LaneKey, Lane>>,
    /// The last lane's epoch.
    epochs: AtomicU64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LaneKey {
    workflow: String,
    user_id: Option<i64>,
    project_id: Option<i64>,
    parent: Option<(String, String)>,
    priority: i16,
}

impl LaneKey {
    fn origin(&self) -> RunOrigin {
        RunOrigin {
            user_id: self.user_id,
            project_id: self.project_id,
            parent: self.parent.clone(),
            priority: self.priority,
        }
    }
}

#[derive(Debug)]
struct Lane {
    /// Tells this lane from a later one of the same key (see [`WriterGuard`]).
    epoch: u64,
    waiting: Vec<Waiting>,
    /// Writer tasks running for this lane (at most [`WRITERS_PER_LANE`]).
    writers: usize,
}

#[derive(Debug)]
struct Waiting {
    prepared: Prepared,
    /// The submitting request awaits the other end; dropped unanswered only if the
    /// writer panicked (the request then fails).
    reply: oneshot::Sender<Result<Submitted>>,
}

impl Submitter {
    /// Submissions to `pool`'s database, through as many connections again as `pool`
    /// has (opened as needed); `stored` is shared with other submitters of that
    /// database.
    pub fn new(pool: PgPool, stored: Arc<DefinitionsStored>) -> Submitter {
        let connections = pool.options().get_max_connections().max(1);
        Submitter {
            write_permits: Semaphore::new(connections as usize),
            announcer: Arc::new(Announcer {
                pool: pool.clone(),
                asked: AtomicUsize::new(0),
            }),
            pool: store::connect_unannounced(&pool, connections),
            stored,
            lanes: Mutex::default(),
            epochs: AtomicU64::new(0),
        }
    }

    /// Closes the submitter's own connections, once its writes are done: on the way
    /// out, so that the database sees them closed rather than lost ([`store::close`]).
    /// A submission after this fails.
    pub async fn close(&self) {
        store::close(self.pool.clone()).await;
    }

    /// Queues `s`'s runs and answers once they are committed; `registry` holds their
    /// workflow and supplies the child workflows it may start, whose definitions are
    /// stored beside it. Every item is validated first; if any is invalid nothing is
    /// written and every invalid item is named. Idempotency keys behave as in
    /// [`submit_in`].
    ///
    /// A submission of one run joins its lane and shares a transaction with the runs
    /// that arrive meanwhile (see [`Submitter`]); a larger one is a transaction of its
    /// own. Either holds a write permit while it writes.
    pub async fn submit(
        self: &Arc<Self>,
        registry: &Arc<Registry>,
        s: Submission<'_>,
    ) -> Result<std::result::Result<Vec<Submitted>, Rejected>> {
        let mut prepared = match prepare_all(s.def, s.items) {
            Ok(p) => p,
            Err(rejected) => return Ok(Err(rejected)),
        };
        if prepared.len() == 1
            && let Some(one) = prepared.pop()
        {
            return Ok(Ok(vec![
                self.join_lane(registry, s.def, one, s.origin).await?,
            ]));
        }
        let children = children_of(registry, &s.def.workflow.name);
        let _permit = self.permit().await?;
        let target = Target::Own {
            pool: &self.pool,
            stored: &self.stored,
        };
        let written = write(target, s.def, &children, &prepared, s.origin).await?;
        self.announcer.announce();
        Ok(Ok(written))
    }

    /// Hands one valid run to its lane's writer and waits for its answer.
    async fn join_lane(
        self: &Arc<Self>,
        registry: &Arc<Registry>,
        def: &Definition,
        prepared: Prepared,
        origin: &RunOrigin,
    ) -> Result<Submitted> {
        let key = LaneKey {
            workflow: def.workflow.name.clone(),
            user_id: origin.user_id,
            project_id: origin.project_id,
            parent: origin.parent.clone(),
            priority: origin.priority,
        };
        let (reply, answer) = oneshot::channel();
        let start_writer = {
            let mut lanes = self.lock();
            let lane = lanes.entry(key.clone()).or_insert_with(|| Lane {
                epoch: self.epochs.fetch_add(1, Ordering::Relaxed) + 1,
                waiting: Vec::new(),
                writers: 0,
            });
            lane.waiting.push(Waiting { prepared, reply });
            let start = lane.writers < WRITERS_PER_LANE;
            if start {
                lane.writers += 1;
            }
            start.then_some(lane.epoch)
        };
        if let Some(epoch) = start_writer {
            let (this, registry) = (self.clone(), registry.clone());
            tokio::spawn(async move { this.write_lane(registry, key, epoch).await });
        }
        match answer.await {
            Ok(submitted) => submitted,
            Err(_) => Err(EngineError::Store(store::StoreError::Invalid(
                "the submit writer stopped before answering".into(),
            ))),
        }
    }

    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        // The semaphore is never closed.
        self.write_permits.acquire().await.map_err(|e| {
            EngineError::Store(store::StoreError::Invalid(format!("submit permits: {e}")))
        })
    }

    /// A writer: takes what waits in its lane and writes it, until nothing waits.
    async fn write_lane(self: Arc<Self>, registry: Arc<Registry>, key: LaneKey, epoch: u64) {
        let _guard = WriterGuard {
            batcher: &self,
            key: &key,
            epoch,
        };
        loop {
            let batch: Vec<Waiting> = {
                let mut lanes = self.lock();
                let Some(lane) = lanes.get_mut(&key).filter(|l| l.epoch == epoch) else {
                    // The lane was dropped after a writer panicked.
                    return;
                };
                if lane.waiting.is_empty() {
                    lane.writers -= 1;
                    if lane.writers == 0 {
                        lanes.remove(&key);
                    }
                    return;
                }
                let take = lane.waiting.len().min(BATCH_MAX);
                lane.waiting.drain(..take).collect()
            };
            self.write_batch(&registry, &key, batch).await;
        }
    }

    async fn write_batch(&self, registry: &Registry, key: &LaneKey, batch: Vec<Waiting>) {
        let Some(def) = registry.get(&key.workflow) else {
            for w in batch {
                let _ = w
                    .reply
                    .send(Err(EngineError::Store(store::StoreError::Invalid(
                        format!("workflow `{}` left the registry", key.workflow),
                    ))));
            }
            return;
        };
        let children = children_of(registry, &key.workflow);
        let origin = key.origin();
        let (prepared, replies): (Vec<Prepared>, Vec<_>) =
            batch.into_iter().map(|w| (w.prepared, w.reply)).unzip();
        let shared = prepared.len() > 1;
        // Kept to retry one by one should the shared transaction fail.
        let alone: Vec<Prepared> = if shared { prepared.clone() } else { Vec::new() };
        let written = match self.permit().await {
            Ok(_permit) => write(self.own(), def, &children, &prepared, &origin).await,
            Err(e) => Err(e),
        };
        match written {
            Ok(answers) => {
                self.announcer.announce();
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(e) if !shared => {
                if let Some(reply) = replies.into_iter().next() {
                    let _ = reply.send(Err(e));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, runs = replies.len(),
                    "a shared submit transaction failed; writing its runs one by one");
                for (reply, p) in replies.into_iter().zip(alone) {
                    let _permit = self.permit().await;
                    let one = write(
                        self.own(),
                        def,
                        &children,
                        std::slice::from_ref(&p),
                        &origin,
                    )
                    .await
                    .and_then(|mut answers| {
                        answers.pop().ok_or_else(|| {
                            EngineError::Store(store::StoreError::Invalid(
                                "a submit of one run answered nothing".into(),
                            ))
                        })
                    });
                    if one.is_ok() {
                        self.announcer.announce();
                    }
                    let _ = reply.send(one);
                }
            }
        }
    }

    /// Writes in transactions of its own through the submitter's connections.
    fn own(&self) -> Target<'_> {
        Target::Own {
            pool: &self.pool,
            stored: &self.stored,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LaneKey, Lane>> {
        // Every change under the lock is a few map and vector operations.
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The workflows a run of `workflow` may start, itself left out.
fn children_of<'r>(registry: &'r Registry, workflow: &str) -> Vec<&'r Definition> {
    registry
        .with_children(workflow)
        .into_iter()
        .filter(|d| d.workflow.name != workflow)
        .collect()
}

/// Wakes workers and event listeners once submits have committed, with
/// [`store::jobs::jobs_announce`]: one announcement at a time, and those asked for
/// while one is being sent make one more between them.
#[derive(Debug)]
struct Announcer {
    pool: PgPool,
    /// Announcements asked for and not yet covered by one that was sent.
    asked: AtomicUsize,
}

impl Announcer {
    /// Asks for an announcement; starts a task to send it unless one is running.
    fn announce(self: &Arc<Self>) {
        if self.asked.fetch_add(1, Ordering::SeqCst) == 0 {
            let this = self.clone();
            tokio::spawn(async move { this.send_until_covered().await });
        }
    }

    async fn send_until_covered(&self) {
        loop {
            let asked = self.asked.load(Ordering::SeqCst);
            if let Err(e) = store::jobs::jobs_announce(&self.pool, queue::QUEUE).await {
                // The workers' poll finds the runs all the same, a little later.
                tracing::warn!(error = %e, "announcing submitted runs failed");
            }
            // Asked again meanwhile: those were committed before this announcement was
            // sent, or after; one more covers them.
            if self.asked.fetch_sub(asked, Ordering::SeqCst) == asked {
                return;
            }
        }
    }
}

/// Should a writer panic, its lane is dropped, and with it the replies of everything
/// waiting there: those submissions fail rather than wait forever. The lane's other
/// writer stops at its next look (the epoch tells it the lane is gone); the next
/// submission starts a new lane.
struct WriterGuard<'a> {
    batcher: &'a Submitter,
    key: &'a LaneKey,
    epoch: u64,
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut lanes = self.batcher.lock();
            if lanes.get(self.key).is_some_and(|l| l.epoch == self.epoch) {
                lanes.remove(self.key);
            }
        }
    }
}

/// Queues one run of `def` with input `{}` from `origin` in a transaction of its own;
/// its id. For unit tests that need runs to work on.
#[cfg(test)]
pub(crate) async fn queue_one(pool: &PgPool, def: &Definition, origin: &RunOrigin) -> String {
    let input = serde_json::json!({});
    let one = [Item::input(&input)];
    let mut tx = pool.begin().await.expect("begin");
    let submitted = submit_in(&mut tx, Submission::of(def, &one).from(origin))
        .await
        .expect("submit");
    tx.commit().await.expect("commit");
    match submitted.ok().and_then(|mut runs| runs.pop()) {
        Some(run) if run.outcome == Outcome::Created => run.run_id,
        _ => panic!("the run was not created"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sqlx::postgres::PgListener;

    use super::*;

    /// Submitted runs are announced once, after their commit: the submit's own
    /// statement notifies nobody, and one announcement wakes both the workers of the
    /// queue and the event listeners.
    #[sqlx::test(migrations = false)]
    async fn submits_are_announced_once_after_their_commit(pool: PgPool) {
        crate::queue::migrate(&pool).await.expect("migrate");
        let mut listener = PgListener::connect_with(&pool).await.expect("listener");
        listener
            .listen_all(["apalis::job::insert", store::events::CHANNEL])
            .await
            .expect("listen");
        let def = Definition::parse(
            "one",
            "one.toml",
            "[[steps]]\nid = \"s\"\nkind = \"pass\"\n",
        )
        .expect("valid");
        let batcher = Arc::new(Submitter::new(pool.clone(), Arc::default()));
        let registry = Arc::new(Registry::from_definitions([def.clone()]));
        let input = json!({});
        let items = [Item::input(&input); 3];
        let Ok(Ok(written)) = batcher
            .submit(&registry, Submission::of(&def, &items))
            .await
        else {
            panic!("the batch was not written");
        };
        assert_eq!(written.len(), 3);

        // Once the announcer is done, a marker: everything sent before it arrives first.
        while batcher.announcer.asked.load(Ordering::SeqCst) != 0 {
            tokio::task::yield_now().await;
        }
        sqlx::query("select pg_notify('apalis::job::insert', 'end')")
            .execute(&pool)
            .await
            .expect("notify");
        let mut got = Vec::new();
        loop {
            let n = listener.recv().await.expect("a notification");
            if n.payload() == "end" {
                break;
            }
            got.push((n.channel().to_owned(), n.payload().to_owned()));
        }
        got.sort();
        assert_eq!(
            got.len(),
            2,
            "one announcement, nothing from the insert: {got:?}"
        );
        assert_eq!(got[0].0, "apalis::job::insert");
        let payload: serde_json::Value = serde_json::from_str(&got[0].1).expect("json");
        assert_eq!(payload["job_type"], queue::QUEUE);
        assert_eq!(got[1].0, store::events::CHANNEL);
    }
}
