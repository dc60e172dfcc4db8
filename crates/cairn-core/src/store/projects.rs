//! `projects`: the product's own data the analyses are about.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

use super::Result;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProjectRow {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub owner_id: Option<i64>,
    pub owner_email: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub async fn project_create(
    pool: &PgPool,
    name: &str,
    description: &str,
    owner: Option<i64>,
) -> Result<ProjectRow> {
    let id = sqlx::query_scalar!(
        "insert into projects (name, description, owner_id) values ($1, $2, $3) returning id",
        name,
        description,
        owner
    )
    .fetch_one(pool)
    .await?;
    project_get(pool, id)
        .await?
        .ok_or_else(|| super::StoreError::Invalid(format!("project {id} vanished")))
}

pub async fn project_get(pool: &PgPool, id: i64) -> Result<Option<ProjectRow>> {
    Ok(sqlx::query_as!(
        ProjectRow,
        r#"select p.id, p.name, p.description, p.owner_id, u.email as "owner_email?",
                p.created_at, p.updated_at
           from projects p left join users u on u.id = p.owner_id where p.id = $1"#,
        id
    )
    .fetch_optional(pool)
    .await?)
}

pub async fn project_list(pool: &PgPool) -> Result<Vec<ProjectRow>> {
    Ok(sqlx::query_as!(
        ProjectRow,
        r#"select p.id, p.name, p.description, p.owner_id, u.email as "owner_email?",
                p.created_at, p.updated_at
           from projects p left join users u on u.id = p.owner_id order by p.id desc"#
    )
    .fetch_all(pool)
    .await?)
}

pub async fn project_update(
    pool: &PgPool,
    id: i64,
    name: Option<&str>,
    description: Option<&str>,
) -> Result<Option<ProjectRow>> {
    let done = sqlx::query!(
        "update projects set name = coalesce($2, name), description = coalesce($3, description),
                updated_at = now() where id = $1",
        id,
        name,
        description
    )
    .execute(pool)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    project_get(pool, id).await
}

pub async fn project_delete(pool: &PgPool, id: i64) -> Result<bool> {
    Ok(sqlx::query!("delete from projects where id = $1", id)
        .execute(pool)
        .await?
        .rows_affected()
        == 1)
}

/// A run started for a project: its analyses.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AnalysisRow {
    pub run_id: String,
    pub workflow: String,
    pub status: crate::state::RunStatus,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

pub async fn project_analyses(pool: &PgPool, id: i64, limit: i64) -> Result<Vec<AnalysisRow>> {
    Ok(sqlx::query_as!(
        AnalysisRow,
        "select id as run_id, workflow, status, output, error, created_at, finished_at
           from runs where project_id = $1 order by created_at desc limit $2",
        id,
        limit
    )
    .fetch_all(pool)
    .await?)
}

/// What the built-in `analyze` step reports on.
#[derive(Debug, Clone)]
pub struct ProjectFacts {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub total: i64,
    pub succeeded: i64,
    pub dead: i64,
    pub cancelled: i64,
    pub active: i64,
    pub last_7_days: i64,
    pub top_errors: Vec<(String, i64)>,
    pub recent: Value,
}

pub async fn project_facts(pool: &PgPool, id: i64) -> Result<Option<ProjectFacts>> {
    let Some(p) = project_get(pool, id).await? else {
        return Ok(None);
    };
    let counts = sqlx::query!(
        r#"select count(*) as "total!", count(*) filter (where status = 'succeeded') as "succeeded!",
                count(*) filter (where status = 'dead') as "dead!",
                count(*) filter (where status = 'cancelled') as "cancelled!",
                count(*) filter (where status not in ('succeeded', 'dead', 'cancelled')) as "active!",
                count(*) filter (where created_at > now() - interval '7 days') as "last_7_days!"
           from runs where project_id = $1"#,
        id
    )
    .fetch_one(pool)
    .await?;
    let top_errors = sqlx::query!(
        r#"select error as "error!", count(*) as "count!" from runs
          where project_id = $1 and error is not null
          group by error order by count(*) desc, error limit 3"#,
        id
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.error, r.count))
    .collect();
    let recent = sqlx::query_scalar!(
        r#"select coalesce(jsonb_agg(jsonb_build_object('id', id, 'workflow', workflow, 'status', status,
                                                        'createdAt', created_at) order by created_at desc), '[]')
                    as "recent!"
           from (select id, workflow, status, created_at from runs where project_id = $1
                  order by created_at desc limit 10) r"#,
        id
    )
    .fetch_one(pool)
    .await?;
    Ok(Some(ProjectFacts {
        id: p.id,
        name: p.name,
        description: p.description,
        total: counts.total,
        succeeded: counts.succeeded,
        dead: counts.dead,
        cancelled: counts.cancelled,
        active: counts.active,
        last_7_days: counts.last_7_days,
        top_errors,
        recent,
    }))
}
