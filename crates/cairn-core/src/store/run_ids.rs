//! Finding runs by the start of their id, so that operators can type `01JAB` for a
//! run as they would a git commit.
//!
//! Run ids are ULIDs: their text sorts by creation time, and the ids sharing a prefix
//! are one contiguous range of the primary key. The query scans that range only
//! (`id >= prefix and id < prefix || U+10FFFF`), backwards from the newest, stopping at
//! the limit; `starts_with` keeps the answer exact under any collation.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Result;
use super::runs::{RunRow, query_runs};
use crate::state::RunStatus;

/// Filters for [`run_list_by_id_prefix`]; results are newest (highest id) first.
#[derive(Debug, Clone, Default)]
pub struct RunPrefixParams<'a> {
    pub prefix: &'a str,
    pub status: Option<RunStatus>,
    pub workflow: Option<&'a str>,
    pub created_after: Option<DateTime<Utc>>,
    /// Only ids below this one (the last id of the previous page).
    pub before_id: Option<&'a str>,
    pub limit: i64,
}

/// Runs whose id starts with `p.prefix`, by a range scan of the primary key.
pub async fn run_list_by_id_prefix(pool: &PgPool, p: &RunPrefixParams<'_>) -> Result<Vec<RunRow>> {
    Ok(query_runs!(
        "select",
        "from runs
          where id >= $1 and id < $1 || chr(1114111) and starts_with(id, $1)
            and ($2::text is null or status = $2)
            and ($3::text is null or workflow = $3)
            and ($4::timestamptz is null or created_at >= $4)
            and ($5::text is null or id < $5)
          order by id desc
          limit $6",
        p.prefix,
        p.status as Option<RunStatus>,
        p.workflow,
        p.created_after,
        p.before_id,
        p.limit
    )
    .fetch_all(pool)
    .await?)
}
