//! `workflow_definitions`: every definition a run started with, by content hash.

use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use super::Result;

pub async fn definition_upsert(
    conn: &mut PgConnection,
    hash: &str,
    name: &str,
    definition: &Value,
    source: &str,
) -> Result<()> {
    sqlx::query(
        "insert into workflow_definitions (hash, name, definition, source)
         values ($1, $2, $3, $4) on conflict (hash) do nothing",
    )
    .bind(hash)
    .bind(name)
    .bind(definition)
    .bind(source)
    .execute(conn)
    .await?;
    Ok(())
}

/// The stored definition (validated JSON) for a hash.
pub async fn definition_get(pool: &PgPool, hash: &str) -> Result<Option<Value>> {
    Ok(
        sqlx::query_scalar("select definition from workflow_definitions where hash = $1")
            .bind(hash)
            .fetch_optional(pool)
            .await?,
    )
}

/// The most recently stored definition named `name`: (hash, validated JSON).
pub async fn definition_latest(pool: &PgPool, name: &str) -> Result<Option<(String, Value)>> {
    Ok(sqlx::query_as(
        "select hash, definition from workflow_definitions where name = $1 order by created_at desc limit 1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?)
}
