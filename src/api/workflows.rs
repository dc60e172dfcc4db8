//! `/api/workflows`: the definitions this API accepts runs for.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Viewer;
use super::extract::AppQuery;
use super::{ApiError, AppState};
use crate::workflow::Definition;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(graph))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GraphQuery {
    /// `mermaid` (default) or `dot`.
    #[param(pattern = "^(mermaid|dot)$")]
    format: Option<String>,
}

/// The workflow's DAG as Mermaid or Graphviz DOT text.
#[utoipa::path(get, path = "/api/workflows/{name}/graph", tag = "workflows",
    params(("name" = String, Path), GraphQuery),
    responses((status = 200, content_type = "text/plain", body = String), (status = 404, body = super::error::ErrorBody)))]
async fn graph(
    State(state): State<AppState>,
    _: Viewer,
    Path(name): Path<String>,
    AppQuery(q): AppQuery<GraphQuery>,
) -> Result<String, ApiError> {
    let def = state
        .workflows
        .get(&name)
        .ok_or_else(|| ApiError::NotFound(format!("no workflow named `{name}`")))?;
    match q.format.as_deref().unwrap_or("mermaid") {
        "mermaid" => Ok(def.workflow.to_mermaid()),
        "dot" => Ok(def.workflow.to_dot()),
        other => Err(ApiError::bad_request(format!(
            "format `{other}` must be mermaid or dot"
        ))),
    }
}

fn summary(d: &Definition) -> Value {
    json!({
        "name": d.workflow.name,
        "description": d.workflow.description,
        "hash": d.hash,
        "steps": d.workflow.steps.len(),
    })
}

/// The workflows this API accepts runs for.
#[utoipa::path(get, path = "/api/workflows", tag = "workflows", responses((status = 200, body = Object)))]
async fn list(State(state): State<AppState>, _: Viewer) -> Json<Value> {
    let items: Vec<Value> = state.workflows.iter().map(summary).collect();
    Json(json!({ "items": items }))
}

/// One workflow: its validated definition and source.
#[utoipa::path(get, path = "/api/workflows/{name}", tag = "workflows", params(("name" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = super::error::ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    _: Viewer,
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
