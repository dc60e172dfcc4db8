//! `llm_usage` and the usage report billing is computed from.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Result;

pub async fn llm_usage_insert(
    pool: &PgPool,
    run_id: &str,
    step_id: &str,
    attempt: i32,
    model: &str,
    prompt_tokens: i64,
    completion_tokens: i64,
) -> Result<()> {
    sqlx::query!(
        "insert into llm_usage (run_id, step_id, attempt, model, prompt_tokens, completion_tokens)
         values ($1, $2, $3, $4, $5, $6)",
        run_id,
        step_id,
        attempt,
        model,
        prompt_tokens.max(0),
        completion_tokens.max(0)
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Usage of one (user, project, workflow, model) over a range.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UsageRow {
    pub user_id: Option<i64>,
    pub user_email: Option<String>,
    pub project_id: Option<i64>,
    pub project_name: Option<String>,
    pub workflow: String,
    /// `None` on the rows that count runs and steps; LLM rows name their model.
    pub model: Option<String>,
    pub runs: i64,
    pub steps: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

/// Runs and step attempts per (user, project, workflow) created in the range, and LLM
/// tokens per model used in it.
pub async fn usage_report(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<UsageRow>> {
    Ok(sqlx::query_as!(
        UsageRow,
        "with r as (select id, user_id, project_id, workflow from runs where created_at >= $1 and created_at < $2),
              work as (
                select r.user_id, r.project_id, r.workflow, null::text as model, count(*) as runs,
                       coalesce(sum((select count(*) from step_attempts a where a.run_id = r.id)), 0)::bigint as steps,
                       0::bigint as prompt_tokens, 0::bigint as completion_tokens
                  from r group by r.user_id, r.project_id, r.workflow),
              tokens as (
                select r.user_id, r.project_id, r.workflow, l.model, 0::bigint, 0::bigint,
                       sum(l.prompt_tokens)::bigint, sum(l.completion_tokens)::bigint
                  from llm_usage l join r on r.id = l.run_id
                 group by r.user_id, r.project_id, r.workflow, l.model)
         select x.user_id, u.email as \"user_email?\", x.project_id, p.name as \"project_name?\",
                x.workflow as \"workflow!\", x.model, x.runs as \"runs!\", x.steps as \"steps!\",
                x.prompt_tokens as \"prompt_tokens!\", x.completion_tokens as \"completion_tokens!\"
           from (select * from work union all select * from tokens) x
           left join users u on u.id = x.user_id
           left join projects p on p.id = x.project_id
          order by x.workflow, x.user_id nulls first, x.project_id nulls first, x.model nulls first",
        from,
        to
    )
    .fetch_all(pool)
    .await?)
}
