//! `/api/projects` (the product's data the analyses are about), `/api/agents/*` (start
//! agent workflows; answer at once) and `/api/billing/usage`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{Operator, Viewer};
use super::extract::{AppJson, AppQuery};
use super::tasks::ago;
use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::engine::Submission;
use crate::engine::submit::Item;
use crate::state::RunStatus;
use crate::store;
use crate::store::projects::ProjectRow;
use crate::store::runs::RunOrigin;

/// The workflows the agent endpoints start.
pub const ANALYZE_WORKFLOW: &str = "analyze_project";
pub const SUMMARIZE_WORKFLOW: &str = "summarize_document";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, delete))
        .routes(routes!(analyze))
        .routes(routes!(summarize))
        .routes(routes!(start_workflow))
        .routes(routes!(usage))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    id: i64,
    name: String,
    description: String,
    owner: Option<String>,
    owner_id: Option<i64>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<ProjectRow> for Project {
    fn from(p: ProjectRow) -> Self {
        Project {
            id: p.id,
            name: p.name,
            description: p.description,
            owner: p.owner_email,
            owner_id: p.owner_id,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectList {
    items: Vec<Project>,
}

/// Projects, newest first.
#[utoipa::path(get, path = "/api/projects", tag = "projects", responses((status = 200, body = ProjectList)))]
async fn list(State(state): State<AppState>, _: Viewer) -> Result<Json<ProjectList>, ApiError> {
    let items = store::projects::project_list(&state.pool)
        .await?
        .into_iter()
        .map(Project::from)
        .collect();
    Ok(Json(ProjectList { items }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProject {
    /// At most 200 characters, not blank.
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    #[serde(default)]
    description: String,
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() || name.chars().count() > 200 {
        return Err(ApiError::Unprocessable {
            message: "name must be 1 to 200 characters".into(),
            details: None,
        });
    }
    Ok(())
}

/// Creates a project owned by the caller.
#[utoipa::path(post, path = "/api/projects", tag = "projects", request_body = NewProject,
    responses((status = 201, body = Project), (status = 422, body = super::error::ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    Operator(p): Operator,
    AppJson(req): AppJson<NewProject>,
) -> Result<(StatusCode, Json<Project>), ApiError> {
    check_name(&req.name)?;
    let row =
        store::projects::project_create(&state.pool, req.name.trim(), &req.description, p.user_id)
            .await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    task_id: String,
    workflow: String,
    status: RunStatus,
    /// The run's output once it succeeded.
    #[schema(value_type = Option<Object>)]
    result: Option<Value>,
    error: Option<String>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectDetail {
    #[serde(flatten)]
    project: Project,
    /// Runs started for this project, newest first.
    analyses: Vec<Analysis>,
}

async fn get_project(state: &AppState, id: i64) -> Result<ProjectRow, ApiError> {
    store::projects::project_get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no project {id}")))
}

/// A project with its analyses and their results.
#[utoipa::path(get, path = "/api/projects/{id}", tag = "projects", params(("id" = i64, Path)),
    responses((status = 200, body = ProjectDetail), (status = 404, body = super::error::ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    _: Viewer,
    Path(id): Path<i64>,
) -> Result<Json<ProjectDetail>, ApiError> {
    let project = get_project(&state, id).await?;
    let analyses = store::projects::project_analyses(&state.pool, id, 50)
        .await?
        .into_iter()
        .map(|a| Analysis {
            task_id: a.run_id,
            workflow: a.workflow,
            status: a.status,
            result: a.output,
            error: a.error,
            created_at: a.created_at,
            finished_at: a.finished_at,
        })
        .collect();
    Ok(Json(ProjectDetail {
        project: project.into(),
        analyses,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectChange {
    /// At most 200 characters, not blank.
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    description: Option<String>,
}

/// Renames or redescribes a project.
#[utoipa::path(patch, path = "/api/projects/{id}", tag = "projects", params(("id" = i64, Path)),
    request_body = ProjectChange, responses((status = 200, body = Project), (status = 404, body = super::error::ErrorBody)))]
async fn update(
    State(state): State<AppState>,
    _: Operator,
    Path(id): Path<i64>,
    AppJson(req): AppJson<ProjectChange>,
) -> Result<Json<Project>, ApiError> {
    if let Some(n) = &req.name {
        check_name(n)?;
    }
    let row = store::projects::project_update(
        &state.pool,
        id,
        req.name.as_deref().map(str::trim),
        req.description.as_deref(),
    )
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no project {id}")))?;
    Ok(Json(row.into()))
}

/// Deletes a project (its runs stay, without the project).
#[utoipa::path(delete, path = "/api/projects/{id}", tag = "projects", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = super::error::ErrorBody)))]
async fn delete(
    State(state): State<AppState>,
    _: Operator,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    if store::projects::project_delete(&state.pool, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no project {id}")))
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    task_id: String,
    status: RunStatus,
    workflow: String,
}

/// Queues `workflow` for the caller (and project), answering at once.
async fn start(
    state: &AppState,
    who: &Principal,
    workflow: &str,
    input: &Value,
    project_id: Option<i64>,
) -> Result<(StatusCode, Json<Started>), ApiError> {
    let def = state.workflows.get(workflow).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no workflow named `{workflow}`; known workflows: {}",
            state.workflows.names().join(", ")
        ))
    })?;
    let origin = RunOrigin {
        user_id: who.user_id,
        project_id,
        parent: None,
        priority: 0,
    };
    let one = [Item::input(input)];
    let submission = Submission::of(def, &one).from(&origin);
    match state.submits.submit(&state.workflows, submission).await? {
        Ok(mut submitted) => {
            let run = submitted
                .pop()
                .ok_or_else(|| ApiError::Internal("a submit of one run answered nothing".into()))?;
            Ok((
                StatusCode::ACCEPTED,
                Json(Started {
                    task_id: run.run_id,
                    status: run.status,
                    workflow: def.workflow.name.clone(),
                }),
            ))
        }
        Err(rejected) => {
            let errors = rejected.input_errors();
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            Err(ApiError::Unprocessable {
                message: format!(
                    "input does not match workflow `{workflow}`: {}",
                    text.join("; ")
                ),
                details: Some(json!(errors)),
            })
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AnalyzeRequest {
    project_id: i64,
}

/// Starts an analysis of a project (`analyze_project`); the result lands on the project.
#[utoipa::path(post, path = "/api/agents/analyze", tag = "agents", request_body = AnalyzeRequest,
    responses((status = 202, body = Started), (status = 404, body = super::error::ErrorBody)))]
async fn analyze(
    State(state): State<AppState>,
    Operator(p): Operator,
    AppJson(req): AppJson<AnalyzeRequest>,
) -> Result<(StatusCode, Json<Started>), ApiError> {
    get_project(&state, req.project_id).await?;
    start(
        &state,
        &p,
        ANALYZE_WORKFLOW,
        &json!({ "project_id": req.project_id }),
        Some(req.project_id),
    )
    .await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SummarizeRequest {
    /// Summarize this project's description…
    project_id: Option<i64>,
    /// …or this text.
    text: Option<String>,
}

/// Starts a summary (`summarize_document`) of a text or of a project's description.
#[utoipa::path(post, path = "/api/agents/summarize", tag = "agents", request_body = SummarizeRequest,
    responses((status = 202, body = Started), (status = 404, body = super::error::ErrorBody),
              (status = 422, body = super::error::ErrorBody)))]
async fn summarize(
    State(state): State<AppState>,
    Operator(p): Operator,
    AppJson(req): AppJson<SummarizeRequest>,
) -> Result<(StatusCode, Json<Started>), ApiError> {
    let input = match (&req.project_id, &req.text) {
        (Some(id), None) => {
            get_project(&state, *id).await?;
            json!({ "project_id": id })
        }
        (None, Some(text)) if !text.trim().is_empty() => json!({ "text": text }),
        _ => {
            return Err(ApiError::Unprocessable {
                message: "give either projectId or a non-empty text".into(),
                details: None,
            });
        }
    };
    start(&state, &p, SUMMARIZE_WORKFLOW, &input, req.project_id).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkflowRequest {
    workflow: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    input: Value,
    /// Attach the run to a project (it becomes one of its analyses).
    project_id: Option<i64>,
}

/// Starts any agent workflow.
#[utoipa::path(post, path = "/api/agents/workflow", tag = "agents", request_body = WorkflowRequest,
    responses((status = 202, body = Started), (status = 404, body = super::error::ErrorBody),
              (status = 422, body = super::error::ErrorBody)))]
async fn start_workflow(
    State(state): State<AppState>,
    Operator(p): Operator,
    AppJson(req): AppJson<WorkflowRequest>,
) -> Result<(StatusCode, Json<Started>), ApiError> {
    if let Some(id) = req.project_id {
        get_project(&state, id).await?;
    }
    start(&state, &p, &req.workflow, &req.input, req.project_id).await
}

/// Prices in USD per million tokens: `model=prompt/completion,…`.
#[derive(Debug, Clone, Default)]
pub struct Prices(BTreeMap<String, (f64, f64)>);

impl Prices {
    pub fn parse(s: &str) -> Result<Prices, String> {
        let mut map = BTreeMap::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (model, price) = entry
                .split_once('=')
                .ok_or_else(|| format!("`{entry}`: expected model=prompt/completion"))?;
            let (p, c) = price
                .split_once('/')
                .ok_or_else(|| format!("`{entry}`: expected model=prompt/completion"))?;
            let p: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("`{entry}`: bad prompt price"))?;
            let c: f64 = c
                .trim()
                .parse()
                .map_err(|_| format!("`{entry}`: bad completion price"))?;
            map.insert(model.trim().to_owned(), (p, c));
        }
        Ok(Prices(map))
    }

    /// Estimated cost, or `None` for a model without a price.
    pub fn cost(&self, model: &str, prompt: i64, completion: i64) -> Option<f64> {
        self.0
            .get(model)
            .map(|(p, c)| (prompt as f64 * p + completion as f64 * c) / 1_000_000.0)
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// From this long ago (default 30d).
    #[param(pattern = r"^([0-9]{1,9}(ms|s|m|h|d|w|y))+$")]
    since: Option<String>,
    /// Until this long ago (default now).
    #[param(pattern = r"^([0-9]{1,9}(ms|s|m|h|d|w|y))+$")]
    until: Option<String>,
}

#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageLine {
    user_id: Option<i64>,
    user: Option<String>,
    project_id: Option<i64>,
    project: Option<String>,
    workflow: String,
    runs: i64,
    steps: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    /// USD, from `CAIRN_LLM_PRICES`; models without a price count as 0 and are listed.
    estimated_cost: f64,
    unpriced_models: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    items: Vec<UsageLine>,
    totals: UsageLine,
}

/// Runs, step attempts, LLM tokens and estimated cost per user, project and workflow.
#[utoipa::path(get, path = "/api/billing/usage", tag = "billing", params(UsageQuery),
    responses((status = 200, body = Usage), (status = 400, body = super::error::ErrorBody)))]
async fn usage(
    State(state): State<AppState>,
    _: Viewer,
    AppQuery(q): AppQuery<UsageQuery>,
) -> Result<Json<Usage>, ApiError> {
    let from = ago("since", q.since.as_deref().unwrap_or("30d"))?;
    let to = match &q.until {
        Some(u) => ago("until", u)?,
        None => Utc::now(),
    };
    let rows = store::usage::usage_report(&state.pool, from, to).await?;
    let mut lines: BTreeMap<(String, Option<i64>, Option<i64>), UsageLine> = BTreeMap::new();
    for r in rows {
        let line = lines
            .entry((r.workflow.clone(), r.user_id, r.project_id))
            .or_insert_with(|| UsageLine {
                user_id: r.user_id,
                user: r.user_email.clone(),
                project_id: r.project_id,
                project: r.project_name.clone(),
                workflow: r.workflow.clone(),
                ..Default::default()
            });
        line.runs += r.runs;
        line.steps += r.steps;
        line.prompt_tokens += r.prompt_tokens;
        line.completion_tokens += r.completion_tokens;
        if let Some(model) = &r.model {
            match state
                .prices
                .cost(model, r.prompt_tokens, r.completion_tokens)
            {
                Some(c) => line.estimated_cost += c,
                None if !line.unpriced_models.contains(model) => {
                    line.unpriced_models.push(model.clone())
                }
                None => {}
            }
        }
    }
    let items: Vec<UsageLine> = lines.into_values().collect();
    let mut totals = UsageLine {
        workflow: "*".into(),
        ..Default::default()
    };
    for l in &items {
        totals.runs += l.runs;
        totals.steps += l.steps;
        totals.prompt_tokens += l.prompt_tokens;
        totals.completion_tokens += l.completion_tokens;
        totals.estimated_cost += l.estimated_cost;
        for m in &l.unpriced_models {
            if !totals.unpriced_models.contains(m) {
                totals.unpriced_models.push(m.clone());
            }
        }
    }
    Ok(Json(Usage {
        from,
        to,
        items,
        totals,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_parse_and_cost() {
        let p = Prices::parse("gpt-4o-mini=0.15/0.60, local = 0/0").unwrap();
        assert_eq!(p.cost("gpt-4o-mini", 1_000_000, 500_000), Some(0.45));
        assert_eq!(p.cost("local", 10, 10), Some(0.0));
        assert_eq!(p.cost("other", 1, 1), None);
        assert!(Prices::parse("x=1").is_err());
    }
}
