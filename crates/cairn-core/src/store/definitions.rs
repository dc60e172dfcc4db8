//! `workflow_definitions`: every definition a run started with, by content hash, and
//! [`DefinitionsStored`], a process's memory of which hashes it has already committed.

use std::collections::HashSet;
use std::sync::Mutex;

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
    sqlx::query!(
        "insert into workflow_definitions (hash, name, definition, source)
         values ($1, $2, $3, $4) on conflict (hash) do nothing",
        hash,
        name,
        definition,
        source
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The stored definition (validated JSON) for a hash.
pub async fn definition_get(pool: &PgPool, hash: &str) -> Result<Option<Value>> {
    Ok(sqlx::query_scalar!(
        "select definition from workflow_definitions where hash = $1",
        hash
    )
    .fetch_optional(pool)
    .await?)
}

/// The most recently stored definition named `name`: (hash, validated JSON).
pub async fn definition_latest(pool: &PgPool, name: &str) -> Result<Option<(String, Value)>> {
    let row = sqlx::query!(
        "select hash, definition from workflow_definitions where name = $1 order by created_at desc limit 1",
        name
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| (r.hash, r.definition)))
}

/// The content hashes this process has seen committed to `workflow_definitions` of
/// one database, so a submit can skip [`definition_upsert`] (a statement per request)
/// for a definition it already stored. Hold one per pool (the API keeps it in its
/// state): a hash remembered for one database says nothing about another.
///
/// Callers [`remember`](Self::remember) a hash only after the transaction that stored
/// it committed, so a rolled-back submit never marks its definition stored. Should a
/// remembered row disappear anyway (a database restored or emptied under a running
/// process), inserting a run fails with [`DefinitionMissing`](super::StoreError::DefinitionMissing);
/// the submitter then [`forget`](Self::forget)s the hash
/// and tries once more with the upsert.
#[derive(Debug, Default)]
pub struct DefinitionsStored {
    hashes: Mutex<HashSet<String>>,
}

/// More distinct definitions than any registry holds; past it the memory starts over
/// rather than grow without bound.
const REMEMBERED_MAX: usize = 10_000;

impl DefinitionsStored {
    pub fn contains(&self, hash: &str) -> bool {
        self.lock().contains(hash)
    }

    /// Records that `hash` is committed. Call after the commit, never before.
    pub fn remember(&self, hash: &str) {
        let mut hashes = self.lock();
        if hashes.len() >= REMEMBERED_MAX {
            hashes.clear();
        }
        hashes.insert(hash.to_owned());
    }

    pub fn forget(&self, hash: &str) {
        self.lock().remove(hash);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // A panic while holding the lock cannot leave the set half-changed.
        self.hashes.lock().unwrap_or_else(|e| e.into_inner())
    }
}
