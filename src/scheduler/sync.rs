//! Syncing `[[schedules]]` from workflow files into the `schedules` table, which every
//! scheduler does on start.
//!
//! Entries are matched by name. A new entry is added with its cursor at its next tick;
//! a changed entry (its hash differs from the one last synced) is rewritten, and its
//! cursor moves to the next tick only when its timing changed (expression, zone, or
//! disabled → enabled); an unchanged entry is left alone, so an operator's pause
//! survives restarts. File schedules whose entry is gone are removed. Schedules created
//! through the API are never touched: a file entry with the same name is reported as a
//! conflict and skipped.
//!
//! Syncs are serialised by an advisory lock, so schedulers starting together apply the
//! files one after another. Every scheduler should see the same workflow files: a
//! scheduler started with fewer files removes the schedules the others declared.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Result;
use crate::store::schedules::{self as store, ScheduleParams};
use crate::workflow::{CronSchedule, Registry, ScheduleSpec, content_hash};

/// What a sync changed, by schedule name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: usize,
    /// File entries whose name an API-created schedule already has.
    pub conflicts: Vec<String>,
}

fn spec_hash(workflow: &str, spec: &ScheduleSpec) -> String {
    let json = serde_json::json!({ "workflow": workflow, "spec": spec });
    content_hash(&json.to_string())
}

/// Applies the `[[schedules]]` of every workflow in `registry`; `now` places the
/// cursors of new and retimed schedules.
pub async fn sync(pool: &PgPool, registry: &Registry, now: DateTime<Utc>) -> Result<SyncReport> {
    let mut report = SyncReport::default();
    let mut keep = Vec::new();
    let mut tx = pool.begin().await?;
    store::schedule_sync_lock(&mut tx).await?;
    for def in registry.iter() {
        let workflow = &def.workflow.name;
        for spec in &def.workflow.schedules {
            keep.push(spec.name.clone());
            let hash = spec_hash(workflow, spec);
            let cron = CronSchedule::parse(&spec.cron, &spec.timezone)?;
            let params = ScheduleParams {
                name: &spec.name,
                workflow,
                cron: &spec.cron,
                timezone: &spec.timezone,
                input: &spec.input,
                enabled: spec.enabled,
                misfire_policy: spec.misfire_policy.as_str(),
                max_lateness_ms: i64::try_from(spec.max_lateness_ms).unwrap_or(i64::MAX),
                overlap_policy: spec.overlap_policy.as_str(),
                source: "file",
                spec_hash: Some(&hash),
                next_fire_at: cron.next_after(now),
                priority: spec.priority,
            };
            match store::schedule_get_for_update(&mut tx, &spec.name).await? {
                None => {
                    let id = ulid::Ulid::generate().to_string();
                    store::schedule_insert(&mut tx, &id, &params).await?;
                    report.added.push(spec.name.clone());
                }
                Some(row) if row.source != "file" => {
                    tracing::warn!(schedule = %spec.name, workflow = %workflow,
                        "a schedule created through the API has this name; the workflow file's entry is ignored");
                    report.conflicts.push(spec.name.clone());
                }
                Some(row) if row.spec_hash.as_deref() == Some(hash.as_str()) => {
                    report.unchanged += 1;
                }
                Some(row) => {
                    let retimed = row.cron != spec.cron
                        || row.timezone != spec.timezone
                        || (!row.enabled && spec.enabled);
                    store::schedule_file_update(&mut tx, &row.id, &params, retimed).await?;
                    report.changed.push(spec.name.clone());
                }
            }
        }
    }
    report.removed = store::schedule_file_delete_except(&mut tx, &keep).await?;
    tx.commit().await?;
    Ok(report)
}
