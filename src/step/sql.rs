//! `sql` steps: one statement with bound parameters, read-only unless `mode = "write"`.

use std::time::Duration;

use serde_json::Value;

use super::{StepContext, StepError};
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
    store::step_sql::execute(cx.pool, &step.query, &params, step.mode, timeout)
        .await
        .map_err(classify)
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
