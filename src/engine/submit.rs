//! Submitting a run: the run row, its steps and its first queue job in one transaction.

use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use super::Result;
use crate::queue::{self, Wake};
use crate::store;
use crate::store::runs::{RunInsertParams, RunInserted, RunOrigin, RunRow};
use crate::workflow::{Definition, InputError, content_hash};

/// What [`submit`] did.
pub enum Submitted {
    Created(RunRow),
    /// The idempotency key was used before, for the same request.
    Existing(RunRow),
    /// The idempotency key was used before, for a different request.
    KeyConflict(RunRow),
}

/// Why a submission was refused before anything was written.
pub enum Rejected {
    Input(Vec<InputError>),
}

/// Validates `input` against the definition and queues a run. Nothing is written when
/// the input is refused; the run and its job commit together.
pub async fn submit(
    pool: &PgPool,
    def: &Definition,
    input: &Value,
    idempotency_key: Option<&str>,
) -> Result<Result<Submitted, Rejected>> {
    if let Err(errors) = def.workflow.validate_input(input) {
        return Ok(Err(Rejected::Input(errors)));
    }
    let mut tx = pool.begin().await?;
    let submitted = submit_in(&mut tx, def, input, idempotency_key).await?;
    tx.commit().await?;
    Ok(submitted)
}

/// [`submit`] inside the caller's transaction, so the run, its steps and its queue job
/// commit or roll back with what the caller writes beside them (the scheduler's tick
/// record). Validates first and writes nothing when the input is refused.
pub async fn submit_in(
    conn: &mut PgConnection,
    def: &Definition,
    input: &Value,
    idempotency_key: Option<&str>,
) -> Result<Result<Submitted, Rejected>> {
    submit_with(conn, def, input, idempotency_key, &RunOrigin::default()).await
}

/// [`submit`] for a user and/or a project, with the definitions of the child workflows
/// its `workflow` steps start (stored so workers can start them).
pub async fn submit_for(
    pool: &PgPool,
    def: &Definition,
    children: &[&Definition],
    input: &Value,
    idempotency_key: Option<&str>,
    origin: &RunOrigin,
) -> Result<Result<Submitted, Rejected>> {
    if let Err(errors) = def.workflow.validate_input(input) {
        return Ok(Err(Rejected::Input(errors)));
    }
    let mut tx = pool.begin().await?;
    for child in children {
        store_definition(&mut tx, child).await?;
    }
    let submitted = submit_with(&mut tx, def, input, idempotency_key, origin).await?;
    tx.commit().await?;
    Ok(submitted)
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

/// [`submit_in`] with the run's origin.
pub async fn submit_with(
    conn: &mut PgConnection,
    def: &Definition,
    input: &Value,
    idempotency_key: Option<&str>,
    origin: &RunOrigin,
) -> Result<Result<Submitted, Rejected>> {
    let input = match def.workflow.validate_input(input) {
        Ok(v) => v,
        Err(errors) => return Ok(Err(Rejected::Input(errors))),
    };
    let request_hash = content_hash(&format!("{}\n{}", def.workflow.name, input));
    let id = ulid::Ulid::generate().to_string();
    let step_ids: Vec<String> = def.workflow.steps.iter().map(|s| s.id.clone()).collect();
    let definition =
        serde_json::to_value(&def.workflow).map_err(|e| super::EngineError::Definition {
            run: id.clone(),
            hash: def.hash.clone(),
            reason: e.to_string(),
        })?;

    store::definitions::definition_upsert(
        &mut *conn,
        &def.hash,
        &def.workflow.name,
        &definition,
        &def.source,
    )
    .await?;
    let inserted = store::runs::run_insert(
        &mut *conn,
        RunInsertParams {
            id: &id,
            workflow: &def.workflow.name,
            definition_hash: &def.hash,
            input: &input,
            idempotency_key,
            request_hash: &request_hash,
            step_ids: &step_ids,
            replay_of: None,
            origin,
        },
    )
    .await?;
    let submitted = match inserted {
        RunInserted::Created(run) => {
            queue::enqueue(&mut *conn, &[Wake::now(&run.id)]).await?;
            Submitted::Created(run)
        }
        RunInserted::Existing(run) if run.request_hash.as_deref() == Some(&request_hash) => {
            Submitted::Existing(run)
        }
        RunInserted::Existing(run) => Submitted::KeyConflict(run),
    };
    Ok(Ok(submitted))
}
