//! `map_items`: the items of `map` steps, one row each, and the progress counts kept on
//! the step (`steps.map_*`).
//!
//! The list is written once, in chunks that are transactions of their own (a list of
//! 10,000 items is never one giant write), and the step's `map_total` is set only after
//! the last chunk: until then a restarted worker writes the list again, skipping the
//! rows that are there. From then on each wake-up of the parent moves a bounded number
//! of rows — the items whose child runs finished, the next ones to start — so the cost
//! of a wake-up does not grow with the list. Every write is fenced by the parent's lease,
//! whose row lock serialises them.

use serde_json::Value;
use sqlx::PgConnection;

use super::{Lease, Result, lease_fence};
use crate::state::MapItemStatus;

/// The items written in one statement (and one transaction) at most.
pub const CHUNK: usize = 1_000;

/// A map step's progress, as the step row counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapCounts {
    /// Set once the whole list is written.
    pub total: Option<i32>,
    pub done: i32,
    pub failed: i32,
    pub running: i32,
}

impl MapCounts {
    /// Every item has ended, succeeded or failed.
    pub fn finished(&self) -> bool {
        self.total
            .is_some_and(|t| self.done + self.failed == t && self.running == 0)
    }
}

/// Writes `items` as the map's items `first..`, skipping those already written.
pub async fn map_items_insert(
    conn: &mut PgConnection,
    lease: &Lease,
    step_id: &str,
    first: i32,
    items: &[Value],
) -> Result<()> {
    lease_fence(conn, lease).await?;
    sqlx::query!(
        "insert into map_items (run_id, step_id, index, item)
         select $1, $2, $3 + (t.ord - 1)::int, t.item
           from unnest($4::jsonb[]) with ordinality as t (item, ord)
         on conflict do nothing",
        &lease.run_id,
        step_id,
        first,
        items as &[Value],
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Readies the map for a new attempt of its step: the list's size is recorded (`total`,
/// the first time), items that failed in an earlier attempt are pending again, and the
/// counts are taken afresh from the items. Items that succeeded stay done.
pub async fn map_ready(
    conn: &mut PgConnection,
    lease: &Lease,
    step_id: &str,
    total: i32,
) -> Result<MapCounts> {
    lease_fence(conn, lease).await?;
    sqlx::query!(
        "update map_items set status = 'pending', child_run_id = null, output = null, error = null
          where run_id = $1 and step_id = $2 and status = 'failed'",
        &lease.run_id,
        step_id,
    )
    .execute(&mut *conn)
    .await?;
    let counts = sqlx::query!(
        r#"update steps s
              set map_total = coalesce(s.map_total, $3),
                  map_done = c.done, map_failed = 0, map_running = c.running
             from (select count(*) filter (where status = 'succeeded')::int as done,
                          count(*) filter (where status = 'running')::int as running
                     from map_items where run_id = $1 and step_id = $2) c
            where s.run_id = $1 and s.step_id = $2
        returning s.map_total, s.map_done, s.map_failed, s.map_running"#,
        &lease.run_id,
        step_id,
        total,
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(MapCounts {
        total: counts.map_total,
        done: counts.map_done,
        failed: counts.map_failed,
        running: counts.map_running,
    })
}

/// Takes in the items whose child runs have finished: a child's output (succeeded) or
/// its error (dead, cancelled) becomes the item's, and the counts follow.
pub async fn map_collect(
    conn: &mut PgConnection,
    lease: &Lease,
    step_id: &str,
) -> Result<MapCounts> {
    lease_fence(conn, lease).await?;
    let ended = sqlx::query_scalar!(
        r#"update map_items m
              set status = case when e.status = 'succeeded' then 'succeeded' else 'failed' end,
                  output = case when e.status = 'succeeded' then e.output end,
                  error = case when e.status = 'succeeded' then null
                               else 'child run ' || e.id || ' is ' || e.status
                                    || coalesce(': ' || e.error, '') end
             from (select i.index, c.id, c.status, c.output, c.error
                     from map_items i
                          -- Each child by key (`limit 1`), never a join the planner
                          -- may turn into a read of every run.
                          cross join lateral (select c.id, c.status::text as status, c.output, c.error
                                                from runs c where c.id = i.child_run_id limit 1) c
                    where i.run_id = $1 and i.step_id = $2 and i.status = 'running'
                      and c.status in ('succeeded', 'dead', 'cancelled')) e
            where m.run_id = $1 and m.step_id = $2 and m.index = e.index
        returning m.status as "status: MapItemStatus""#,
        &lease.run_id,
        step_id,
    )
    .fetch_all(&mut *conn)
    .await?;
    let done = ended
        .iter()
        .filter(|s| **s == MapItemStatus::Succeeded)
        .count() as i32;
    let failed = ended.len() as i32 - done;
    map_count(conn, lease, step_id, done, failed, -(done + failed)).await
}

/// Adds to the step's counts; returns them.
async fn map_count(
    conn: &mut PgConnection,
    lease: &Lease,
    step_id: &str,
    done: i32,
    failed: i32,
    running: i32,
) -> Result<MapCounts> {
    let counts = sqlx::query!(
        "update steps set map_done = map_done + $3, map_failed = map_failed + $4,
                          map_running = map_running + $5
          where run_id = $1 and step_id = $2
      returning map_total, map_done, map_failed, map_running",
        &lease.run_id,
        step_id,
        done,
        failed,
        running,
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(MapCounts {
        total: counts.map_total,
        done: counts.map_done,
        failed: counts.map_failed,
        running: counts.map_running,
    })
}

/// The next `limit` items to start, in item order, locked.
pub async fn map_next(
    conn: &mut PgConnection,
    lease: &Lease,
    step_id: &str,
    limit: i64,
) -> Result<Vec<(i32, Value)>> {
    let rows = sqlx::query!(
        "select index, item from map_items
          where run_id = $1 and step_id = $2 and status = 'pending'
          order by index limit $3 for update",
        &lease.run_id,
        step_id,
        limit,
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.index, r.item)).collect())
}

/// Records the items started (`index` → child run) and those that failed before their
/// child could start (`index` → why); returns the counts.
pub async fn map_started(
    conn: &mut PgConnection,
    lease: &Lease,
    step_id: &str,
    started: &[(i32, String)],
    refused: &[(i32, String)],
) -> Result<MapCounts> {
    let (indexes, children): (Vec<i32>, Vec<String>) = started.iter().cloned().unzip();
    sqlx::query!(
        "update map_items m set status = 'running', child_run_id = t.child
           from unnest($3::int[], $4::text[]) as t (index, child)
          where m.run_id = $1 and m.step_id = $2 and m.index = t.index",
        &lease.run_id,
        step_id,
        &indexes,
        &children,
    )
    .execute(&mut *conn)
    .await?;
    let (indexes, errors): (Vec<i32>, Vec<String>) = refused.iter().cloned().unzip();
    sqlx::query!(
        "update map_items m set status = 'failed', error = t.error
           from unnest($3::int[], $4::text[]) as t (index, error)
          where m.run_id = $1 and m.step_id = $2 and m.index = t.index",
        &lease.run_id,
        step_id,
        &indexes,
        &errors,
    )
    .execute(&mut *conn)
    .await?;
    map_count(
        conn,
        lease,
        step_id,
        0,
        refused.len() as i32,
        started.len() as i32,
    )
    .await
}

/// Stops the map: the items in flight fail with `why`; returns their child runs, for the
/// caller to cancel.
pub async fn map_stop(
    conn: &mut PgConnection,
    lease: &Lease,
    step_id: &str,
    why: &str,
) -> Result<Vec<String>> {
    lease_fence(conn, lease).await?;
    let children = sqlx::query_scalar!(
        r#"update map_items set status = 'failed', error = $3
            where run_id = $1 and step_id = $2 and status = 'running'
        returning child_run_id as "child_run_id!""#,
        &lease.run_id,
        step_id,
        why,
    )
    .fetch_all(&mut *conn)
    .await?;
    let n = children.len() as i32;
    map_count(conn, lease, step_id, 0, n, -n).await?;
    Ok(children)
}

/// The first failure, in item order: its index and error.
pub async fn map_first_failure(
    conn: &mut PgConnection,
    lease: &Lease,
    step_id: &str,
) -> Result<Option<(i32, String)>> {
    let row = sqlx::query!(
        r#"select index, error as "error!" from map_items
            where run_id = $1 and step_id = $2 and status = 'failed'
            order by index limit 1"#,
        &lease.run_id,
        step_id,
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| (r.index, r.error)))
}

/// The map's output: each item's, in item order — a succeeded item's child output, a
/// failed one's `{ "error", "run" }`.
pub async fn map_output(conn: &mut PgConnection, lease: &Lease, step_id: &str) -> Result<Value> {
    let output = sqlx::query_scalar!(
        r#"select coalesce(jsonb_agg(case when status = 'succeeded' then coalesce(output, 'null')
                                          else jsonb_build_object('error', error, 'run', child_run_id)
                                     end order by index), '[]'::jsonb) as "output!"
             from map_items where run_id = $1 and step_id = $2"#,
        &lease.run_id,
        step_id,
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(output)
}

/// One item of a map step, as the API lists it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MapItemRow {
    pub index: i32,
    pub status: MapItemStatus,
    pub child_run_id: Option<String>,
    pub error: Option<String>,
}

/// The items of `run_id`'s map step `step_id` after index `after`, in item order, at
/// most `limit`.
pub async fn map_item_list(
    pool: &sqlx::PgPool,
    run_id: &str,
    step_id: &str,
    after: i32,
    limit: i64,
) -> Result<Vec<MapItemRow>> {
    Ok(sqlx::query_as!(
        MapItemRow,
        r#"select index, status as "status: MapItemStatus", child_run_id, error
             from map_items where run_id = $1 and step_id = $2 and index > $3
            order by index limit $4"#,
        run_id,
        step_id,
        after,
        limit,
    )
    .fetch_all(pool)
    .await?)
}
