//! The statements of `sql` steps: user SQL with bound parameters, in a transaction that
//! is read-only unless the step says `mode = "write"`, under a statement timeout.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;

use super::Result;
use crate::workflow::SqlMode;

fn bind_row<'q, O>(
    mut q: QueryAs<'q, sqlx::Postgres, O, PgArguments>,
    params: &'q [Value],
) -> QueryAs<'q, sqlx::Postgres, O, PgArguments> {
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

/// Most rows a `sql` step's query may return.
pub const MAX_ROWS: u64 = 100_000;

/// What a `sql` step's statement gave.
#[derive(Debug, Clone, PartialEq)]
pub enum StepSqlOutcome {
    /// `{ "rows": [...], "rowCount": n }`.
    Done(Value),
    /// The query returned more than [`MAX_ROWS`] rows (the count stops there).
    TooManyRows(u64),
    /// The rows came to more than `max_bytes` of JSON; reading stopped after this many.
    TooManyBytes(u64),
}

/// Runs `query`. Rows come back as one JSON array built by the database, of at most
/// [`MAX_ROWS`] rows and `max_bytes` bytes (as Postgres spells JSON): the database
/// stops reading at the row limit and stops adding to the array at the byte limit, so
/// a query that matches a whole table costs the worker no more memory than the limit.
pub async fn execute(
    pool: &PgPool,
    query: &str,
    params: &[Value],
    mode: SqlMode,
    timeout: Duration,
    max_bytes: u64,
) -> Result<StepSqlOutcome> {
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
        // Wrapping keeps any statement that yields rows and turns them into JSON, in
        // the database. The limits are numbers this function formats, never user text.
        // A data-modifying WITH must be at the top level.
        let (with, source) = if matches!(
            first_word.as_str(),
            "insert" | "update" | "delete" | "merge"
        ) {
            (
                format!("with cairn_rows as ({query}) "),
                "cairn_rows".to_owned(),
            )
        } else {
            (String::new(), format!("({query}) as cairn_rows"))
        };
        let wrapped = format!(
            "{with}select coalesce(jsonb_agg(j order by n) filter (where total <= {max_bytes}), '[]'::jsonb), \
                    count(*), coalesce(max(total), 0)::bigint \
               from (select j, n, sum(octet_length(j::text)) over (order by n rows unbounded preceding) as total \
                       from (select to_jsonb(cairn_rows) as j, row_number() over () as n \
                               from {source} limit {limit}) as cairn_limited) as cairn_sized",
            max_bytes = max_bytes.min(i64::MAX as u64),
            limit = MAX_ROWS + 1,
        );
        let (rows, count, bytes): (Value, i64, i64) =
            bind_row(sqlx::query_as(sqlx::AssertSqlSafe(wrapped)), params)
                .fetch_one(&mut *tx)
                .await?;
        if count as u64 > MAX_ROWS {
            return Ok(StepSqlOutcome::TooManyRows(MAX_ROWS));
        }
        if bytes as u64 > max_bytes {
            return Ok(StepSqlOutcome::TooManyBytes(bytes as u64));
        }
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
    Ok(StepSqlOutcome::Done(out))
}
