//! Operator actions on runs: retry a dead run from its failed step, replay a run (from a
//! step), cancel, and the bulk forms of each over a filter, in bounded batches.

use std::collections::BTreeSet;

use serde_json::Value;
use sqlx::PgPool;

use super::{EngineError, Result, writer};
use crate::store::runs::{Cancelled, RunFilter, RunInsertParams, RunInserted, RunRow};
use crate::store::{self};
use crate::telemetry::metrics;
use crate::workflow::{Definition, InputError, Registry, Workflow, content_hash};

/// Bulk operations touch at most this many runs per transaction.
pub const BATCH: usize = 100;
/// And at most this many runs per request.
pub const BULK_LIMIT: i64 = 100_000;

/// Retries a dead or cancelled run from its failed steps. `None`: no such run, or it is
/// not dead or cancelled (see [`store::runs::run_retry`]).
pub async fn retry(pool: &PgPool, run_id: &str, by: &str) -> Result<Option<RunRow>> {
    writer::retry(pool, run_id, by).await
}

/// Cancels a run (and the child runs it started); a parent waiting on it learns at once.
pub async fn cancel(pool: &PgPool, run_id: &str, by: &str) -> Result<Option<Cancelled>> {
    writer::cancel(pool, run_id, by).await
}

/// Terminates a run: like [`cancel`], but a running run's steps are stopped at once
/// (their attempts recorded `terminated`), and its child runs are terminated too.
pub async fn terminate(pool: &PgPool, run_id: &str, by: &str) -> Result<Option<Cancelled>> {
    writer::terminate(pool, run_id, by).await
}

/// What to replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayParams {
    /// Re-execute this step and everything downstream of it; copy the other checkpoints.
    /// Without it, every step runs again.
    pub from_step: Option<String>,
    /// A different input (validated against the definition used).
    pub input: Option<Value>,
    /// Use the workflow's current definition instead of the one the run pinned.
    pub latest_definition: bool,
}

/// Why a replay was refused.
#[derive(Debug)]
pub enum ReplayRejected {
    NotFound,
    WorkflowGone(String),
    UnknownStep(String),
    Input(Vec<InputError>),
}

/// Starts a new run linked to `run_id` (`replayOf`).
pub async fn replay(
    pool: &PgPool,
    registry: &Registry,
    run_id: &str,
    p: &ReplayParams,
) -> Result<Result<RunRow, ReplayRejected>> {
    let Some(original) = store::runs::run_get(pool, run_id).await? else {
        return Ok(Err(ReplayRejected::NotFound));
    };
    let latest: Option<&Definition> = if p.latest_definition {
        match registry.get(&original.workflow) {
            Some(d) => Some(d),
            None => return Ok(Err(ReplayRejected::WorkflowGone(original.workflow))),
        }
    } else {
        None
    };
    let (workflow, hash): (Workflow, String) = match latest {
        Some(d) => (d.workflow.clone(), d.hash.clone()),
        None => {
            let value = store::definitions::definition_get(pool, &original.definition_hash)
                .await?
                .ok_or_else(|| EngineError::Definition {
                    run: run_id.to_owned(),
                    hash: original.definition_hash.clone(),
                    reason: "not found".into(),
                })?;
            let wf = serde_json::from_value(value).map_err(|e| EngineError::Definition {
                run: run_id.to_owned(),
                hash: original.definition_hash.clone(),
                reason: e.to_string(),
            })?;
            (wf, original.definition_hash.clone())
        }
    };
    let input = match workflow.validate_input(p.input.as_ref().unwrap_or(&original.input)) {
        Ok(v) => v,
        Err(e) => return Ok(Err(ReplayRejected::Input(e))),
    };
    let concurrency = match workflow.concurrency_for(&input) {
        Ok(c) => c,
        Err(e) => return Ok(Err(ReplayRejected::Input(vec![e]))),
    };
    let copy: Vec<String> = match &p.from_step {
        None => Vec::new(),
        Some(s) => {
            if workflow.step(s).is_none() {
                return Ok(Err(ReplayRejected::UnknownStep(s.clone())));
            }
            let rerun = downstream(&workflow, s);
            workflow
                .steps
                .iter()
                .map(|st| st.id.clone())
                .filter(|id| !rerun.contains(id))
                .collect()
        }
    };

    let id = ulid::Ulid::generate().to_string();
    let step_ids: Vec<String> = workflow.steps.iter().map(|s| s.id.clone()).collect();
    let request_hash = content_hash(&format!("{}\n{}", workflow.name, input));
    let mut tx = pool.begin().await?;
    if let Some(d) = latest {
        let definition =
            serde_json::to_value(&d.workflow).map_err(|e| EngineError::Definition {
                run: id.clone(),
                hash: d.hash.clone(),
                reason: e.to_string(),
            })?;
        store::definitions::definition_upsert(
            &mut tx,
            &d.hash,
            &d.workflow.name,
            &definition,
            &d.source,
        )
        .await?;
    }
    let inserted = store::runs::run_insert(
        &mut tx,
        RunInsertParams {
            id: &id,
            workflow: &workflow.name,
            definition_hash: &hash,
            input: &input,
            idempotency_key: None,
            request_hash: &request_hash,
            step_ids: &step_ids,
            replay_of: Some(run_id),
            origin: &store::runs::RunOrigin {
                user_id: original.user_id,
                project_id: original.project_id,
                parent: None,
                priority: original.priority,
            },
            pinned: workflow.pins_runs(),
            concurrency: concurrency
                .as_ref()
                .map(|(key, limit)| (key.as_str(), *limit)),
        },
    )
    .await?;
    let run = match inserted {
        RunInserted::Created(run) | RunInserted::Existing(run) => run,
    };
    let copied = store::runs::steps_copy_checkpoints(&mut tx, run_id, &id, &copy).await?;
    store::events::event_append(
        &mut tx,
        &id,
        "run_replay_of",
        None,
        serde_json::json!({ "replayOf": run_id, "fromStep": p.from_step, "copied": copied }),
    )
    .await?;
    super::submit::queue_first(&mut tx, &run).await?;
    tx.commit().await?;
    metrics::runs_submitted(&workflow.name, 1);
    Ok(Ok(run))
}

/// `step` and every step that needs it, directly or not.
pub fn downstream(workflow: &Workflow, step: &str) -> BTreeSet<String> {
    let mut set = BTreeSet::from([step.to_owned()]);
    // Steps are in topological order: one pass suffices.
    for s in &workflow.steps {
        if s.needs.iter().any(|n| set.contains(n)) {
            set.insert(s.id.clone());
        }
    }
    set
}

/// A bulk action over runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkAction {
    Retry,
    Cancel,
    Replay,
}

/// What a bulk action matched and did.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkOutcome {
    /// Runs the filter matched.
    pub matched: usize,
    /// The first 100 of them.
    pub ids: Vec<String>,
    /// Runs the action changed (0 on a dry run).
    pub processed: usize,
    pub dry_run: bool,
}

/// Applies `action` to every run matching `filter`, in transactions of at most
/// [`BATCH`] runs. A dry run only counts.
pub async fn bulk(
    pool: &PgPool,
    registry: &Registry,
    action: BulkAction,
    filter: &RunFilter,
    dry_run: bool,
    by: &str,
) -> Result<BulkOutcome> {
    let ids = store::runs::run_ids_matching(pool, filter, BULK_LIMIT).await?;
    let mut outcome = BulkOutcome {
        matched: ids.len(),
        ids: ids.iter().take(100).cloned().collect(),
        processed: 0,
        dry_run,
    };
    if dry_run {
        return Ok(outcome);
    }
    for batch in ids.chunks(BATCH) {
        // Each transaction locks its runs in id order, as the workers' statements that
        // lock several runs do, so that neither waits for the other in a cycle.
        let mut batch = batch.to_vec();
        batch.sort();
        match action {
            BulkAction::Retry => {
                outcome.processed += writer::retry_many(pool, &batch, by).await?;
            }
            BulkAction::Cancel => {
                outcome.processed += writer::cancel_many(pool, &batch, by).await?;
            }
            BulkAction::Replay => {
                for id in &batch {
                    if replay(pool, registry, id, &ReplayParams::default())
                        .await?
                        .is_ok()
                    {
                        outcome.processed += 1;
                    }
                }
            }
        }
    }
    Ok(outcome)
}
