//! `sql` steps: one statement with bound parameters, read-only unless `mode = "write"`,
//! on the step pool (`CAIRN_STEP_DATABASE_URL`) when there is one. What the query
//! returns is bounded in the database, before it reaches the worker.

use std::time::Duration;

use serde_json::Value;

use super::{StepContext, StepError};
use crate::store::step_sql::StepSqlOutcome;
use crate::store::{self, StoreError};
use crate::workflow::SqlStep;

pub(super) async fn execute(
    step: &SqlStep,
    cx: &StepContext<'_>,
    timeout: Duration,
) -> Result<Value, StepError> {
    let params = step
        .params
        .iter()
        .map(|p| cx.render(p))
        .collect::<Result<Vec<_>, _>>()?;
    let limit = cx.limits.max_output_bytes;
    match store::step_sql::execute(cx.sql_pool, &step.query, &params, step.mode, timeout, limit)
        .await
        .map_err(classify)?
    {
        StepSqlOutcome::Done(out) => Ok(out),
        StepSqlOutcome::TooManyRows(max) => Err(StepError::fatal(format!(
            "the query returned more than {max} rows; add a LIMIT (the write, if any, was rolled back)"
        ))),
        StepSqlOutcome::TooManyBytes(read) => Err(StepError::fatal(format!(
            "the query's rows came to {read} bytes as JSON, more than the {} limit on \
             stored outputs; select fewer rows or columns, or raise CAIRN_MAX_OUTPUT_BYTES \
             (--max-output-bytes) (the write, if any, was rolled back)",
            super::http::format_bytes(limit)
        ))),
    }
}

/// Postgres error classes that another attempt can fix.
fn classify(e: StoreError) -> StepError {
    let message = e.to_string();
    match &e {
        StoreError::Database(sqlx::Error::Database(db)) => {
            let code = db.code().unwrap_or_default();
            // 40: serialisation/deadlock, 53: resources, 55P03: lock not available,
            // 57014: statement timeout, 08: connection trouble.
            if code.starts_with("40")
                || code.starts_with("53")
                || code.starts_with("08")
                || code == "55P03"
                || code == "57014"
            {
                StepError::retryable(message)
            } else {
                StepError::fatal(message)
            }
        }
        StoreError::Database(
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed,
        ) => StepError::retryable(message),
        _ => StepError::fatal(message),
    }
}
