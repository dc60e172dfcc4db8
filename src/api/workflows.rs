//! `/api/workflows`: the definitions this API accepts runs for.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::workflow::Definition;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/workflows", get(list))
        .route("/api/workflows/{name}", get(show))
}

fn summary(d: &Definition) -> Value {
    json!({
        "name": d.workflow.name,
        "description": d.workflow.description,
        "hash": d.hash,
        "steps": d.workflow.steps.len(),
    })
}

async fn list(State(state): State<AppState>) -> Json<Value> {
    let items: Vec<Value> = state.workflows.iter().map(summary).collect();
    Json(json!({ "items": items }))
}

async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let def = state
        .workflows
        .get(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no workflow named `{name}`")))?;
    Ok(Json(json!({
        "name": def.workflow.name,
        "hash": def.hash,
        "definition": def.workflow,
        "source": def.source,
    })))
}
