//! The statements of `sql` steps: user SQL with bound parameters, in a transaction that
//! is read-only unless the step says `mode = "write"`, under a statement timeout.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgArguments;
use sqlx::query::QueryScalar;

use super::Result;
use crate::workflow::SqlMode;

fn bind<'q, O>(
    mut q: QueryScalar<'q, sqlx::Postgres, O, PgArguments>,
    params: &'q [Value],
) -> QueryScalar<'q, sqlx::Postgres, O, PgArguments> {
    for p in params {
        q = match p {
            Value::Null => q.bind(None::<String>),
            Value::Bool(b) => q.bind(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => q.bind(i),
                None => q.bind(n.as_f64()),
            },
            Value::String(s) => q.bind(s.as_str()),
            other => q.bind(other),
        };
    }
    q
}

/// Runs `query` and returns `{ "rows": [...], "rowCount": n }`.
pub async fn execute(
    pool: &PgPool,
    query: &str,
    params: &[Value],
    mode: SqlMode,
    timeout: Duration,
) -> Result<Value> {
    let query = query.trim().trim_end_matches(';').trim();
    // One round trip: the transaction's mode and its statement timeout (a number this
    // function formats, never user text) travel with BEGIN, and so does the default
    // planning of prepared statements and of sequential scans, which workers' sessions
    // otherwise switch off (`store::connect_quiet`): a user's query may well need a plan
    // for its values, or a scan of a whole table.
    let access = match mode {
        SqlMode::Read => "read only",
        SqlMode::Write => "read write",
    };
    let begin = format!(
        "begin {access}; set local statement_timeout = {}; set local plan_cache_mode = auto; \
         set local enable_seqscan = on",
        timeout.as_millis().clamp(1, i32::MAX as u128)
    );
    let mut tx = pool.begin_with(sqlx::AssertSqlSafe(begin)).await?;

    let first_word = query
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let returns_rows = matches!(first_word.as_str(), "select" | "with" | "values" | "table")
        || query.to_ascii_lowercase().contains("returning");
    let out = if returns_rows {
        // Wrapping keeps any statement that yields rows and turns them into JSON.
        let wrapped = if matches!(
            first_word.as_str(),
            "insert" | "update" | "delete" | "merge"
        ) {
            format!(
                "with cairn_rows as ({query}) select coalesce(jsonb_agg(to_jsonb(cairn_rows)), '[]'::jsonb) from cairn_rows"
            )
        } else {
            format!(
                "select coalesce(jsonb_agg(to_jsonb(cairn_rows)), '[]'::jsonb) from ({query}) as cairn_rows"
            )
        };
        let rows: Value = bind(sqlx::query_scalar(sqlx::AssertSqlSafe(wrapped)), params)
            .fetch_one(&mut *tx)
            .await?;
        let count = rows.as_array().map_or(0, Vec::len);
        json!({ "rows": rows, "rowCount": count })
    } else {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(query.to_owned()));
        for p in params {
            q = match p {
                Value::Null => q.bind(None::<String>),
                Value::Bool(b) => q.bind(*b),
                Value::Number(n) => match n.as_i64() {
                    Some(i) => q.bind(i),
                    None => q.bind(n.as_f64()),
                },
                Value::String(s) => q.bind(s.as_str()),
                other => q.bind(other),
            };
        }
        let done = q.execute(&mut *tx).await?;
        json!({ "rows": [], "rowCount": done.rows_affected() })
    };
    tx.commit().await?;
    Ok(out)
}
