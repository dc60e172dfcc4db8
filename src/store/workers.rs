//! `workers`: live worker processes and their heartbeats. A heartbeat also extends the
//! leases of the runs the worker is advancing.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Result;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkerRow {
    pub id: String,
    pub hostname: String,
    pub pid: i32,
    pub version: String,
    pub concurrency: i32,
    pub started_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub in_flight: i64,
}

pub struct WorkerRegisterParams<'a> {
    pub id: &'a str,
    pub hostname: &'a str,
    pub pid: i32,
    pub version: &'a str,
    pub concurrency: i32,
}

pub async fn worker_register(pool: &PgPool, p: WorkerRegisterParams<'_>) -> Result<()> {
    sqlx::query(
        "insert into workers (id, hostname, pid, version, concurrency) values ($1, $2, $3, $4, $5)",
    )
    .bind(p.id)
    .bind(p.hostname)
    .bind(p.pid)
    .bind(p.version)
    .bind(p.concurrency)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records a heartbeat and extends the unexpired leases this worker holds, except those
/// of `except` (runs it gave up on); returns how many runs it holds.
pub async fn worker_heartbeat(
    pool: &PgPool,
    id: &str,
    ttl: std::time::Duration,
    except: &[String],
) -> Result<u64> {
    let mut tx = pool.begin().await?;
    sqlx::query("update workers set last_heartbeat_at = clock_timestamp() where id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let held = sqlx::query(
        "update runs set lease_expires_at = clock_timestamp() + make_interval(secs => $2)
          where lease_owner = $1 and status = 'running' and lease_expires_at > clock_timestamp()
            and id <> all ($3)",
    )
    .bind(id)
    .bind(ttl.as_secs_f64())
    .bind(except)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(held)
}

pub async fn worker_stop(pool: &PgPool, id: &str) -> Result<()> {
    sqlx::query("update workers set stopped_at = clock_timestamp() where id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Workers seen within `since`, with how many runs each holds.
pub async fn worker_list(pool: &PgPool, since: std::time::Duration) -> Result<Vec<WorkerRow>> {
    Ok(sqlx::query_as(
        "select w.id, w.hostname, w.pid, w.version, w.concurrency, w.started_at,
                w.last_heartbeat_at, w.stopped_at,
                (select count(*) from runs r where r.lease_owner = w.id and r.status = 'running') as in_flight
           from workers w
          where w.last_heartbeat_at > clock_timestamp() - make_interval(secs => $1)
          order by w.started_at",
    )
    .bind(since.as_secs_f64())
    .fetch_all(pool)
    .await?)
}
