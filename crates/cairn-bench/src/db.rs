//! The bench's database: creating and dropping it, emptying it between scenarios, the
//! raw-SQL floor, bulk seeding of queued runs, and the queries that time and verify a
//! scenario's runs.

use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool};

use super::Stats;
use super::{BenchError, Result};
use cairn_core::engine;
use cairn_core::queue;
use cairn_core::workflow::Definition;

/// The bench's own database, created through an admin connection.
pub(super) struct BenchDb {
    admin_url: String,
    /// The bench database's name.
    pub(super) name: String,
    /// The bench database's URL, for child processes.
    pub(super) url: String,
    pub(super) pool: PgPool,
}

impl BenchDb {
    /// Creates database `name` through `admin_url` and applies the migrations.
    pub(super) async fn create(admin_url: &str, name: &str) -> Result<BenchDb> {
        let url = with_database(admin_url, name)?;
        let mut admin = PgConnection::connect(admin_url).await?;
        admin
            .execute(sqlx::AssertSqlSafe(format!("create database \"{name}\"")))
            .await?;
        let _ = admin.close().await;
        let created = async {
            // Quiet: truncate's and the migrations' notices are not news here.
            let options: PgConnectOptions = url.parse()?;
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .connect_with(
                    options
                        .application_name("cairn-bench")
                        .options([("client_min_messages", "warning")]),
                )
                .await?;
            cairn_core::queue::migrate(&pool).await?;
            Ok::<_, BenchError>(pool)
        }
        .await;
        match created {
            Ok(pool) => Ok(BenchDb {
                admin_url: admin_url.to_owned(),
                name: name.to_owned(),
                url,
                pool,
            }),
            Err(e) => {
                let _ = drop_database(admin_url, name).await;
                Err(e)
            }
        }
    }

    pub(super) async fn close(self) {
        self.pool.close().await;
    }

    /// Drops the database (closing whatever still connects to it).
    pub(super) async fn drop_database(self) -> Result<()> {
        self.pool.close().await;
        drop_database(&self.admin_url, &self.name).await
    }

    /// Runs `--setup-sql` (any number of statements) on the bench database.
    pub(super) async fn setup(&self, sql: &str) -> Result<()> {
        tracing::warn!(sql, "experiment: running --setup-sql on the bench database");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Empties every table a scenario writes: runs with their steps, attempts and
    /// events (and, by cascade, anything else that references them), Cairn's workers,
    /// and apalis' jobs and workers. Definitions stay.
    pub(super) async fn reset(&self) -> Result<()> {
        sqlx::query("truncate runs, steps, step_attempts, run_events, workers, retention_passes, apalis.jobs, apalis.workers restart identity cascade")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The raw-SQL floor: `rows` rows in a plain table, drained by a minimal batched
    /// claim-and-delete loop (100 rows a statement, `FOR UPDATE SKIP LOCKED`) from two
    /// connections until empty. Returns rows/s.
    pub(super) async fn floor(&self, rows: u64) -> Result<f64> {
        let pool = &self.pool;
        sqlx::query("drop table if exists bench_floor")
            .execute(pool)
            .await?;
        sqlx::query("create table bench_floor (id bigserial primary key, payload jsonb)")
            .execute(pool)
            .await?;
        sqlx::query(
            "insert into bench_floor (payload)
             select jsonb_build_object('n', g) from generate_series(1, $1) g",
        )
        .bind(rows as i64)
        .execute(pool)
        .await?;
        sqlx::query("vacuum analyze bench_floor")
            .execute(pool)
            .await?;

        async fn drain(pool: PgPool) -> Result<u64> {
            let mut conn = pool.acquire().await?;
            let mut total = 0u64;
            loop {
                let ids: Vec<i64> = sqlx::query_scalar(
                    "delete from bench_floor where id in
                       (select id from bench_floor order by id limit 100 for update skip locked)
                     returning id",
                )
                .fetch_all(&mut *conn)
                .await?;
                if ids.is_empty() {
                    return Ok(total);
                }
                total += ids.len() as u64;
            }
        }
        // Both connections open before the clock starts.
        let warm: Vec<_> = futures::future::try_join_all((0..2).map(|_| pool.acquire())).await?;
        drop(warm);
        let started = Instant::now();
        let (a, b) = tokio::try_join!(drain(pool.clone()), drain(pool.clone()))?;
        let elapsed = started.elapsed().as_secs_f64();
        sqlx::query("drop table bench_floor").execute(pool).await?;
        if a + b != rows {
            return Err(BenchError::Incorrect {
                scenario: "floor",
                what: format!("deleted {} rows of {rows}", a + b),
            });
        }
        Ok(rows as f64 / elapsed.max(1e-9))
    }

    /// The keep-history floor: `rows` jobs in a plain table, worked by the loop every
    /// durable queue runs — claim a batch of 100 (`FOR UPDATE SKIP LOCKED`), handle it
    /// (nothing), mark it done — with the finished rows kept, as Cairn keeps its runs,
    /// from two connections, each statement its own commit. With `chain_steps`, each
    /// job is one step of a chain of that many and marking it done queues the next
    /// step in the same statement, as a workflow's next step is queued with its
    /// predecessor's checkpoint; `rows` chains are seeded. The table is analyzed once
    /// seeded, as the scenarios' tables are. Returns jobs (steps) done per second.
    pub(super) async fn history_floor(&self, rows: u64, chain_steps: Option<u32>) -> Result<f64> {
        let pool = &self.pool;
        sqlx::raw_sql(
            "drop table if exists bench_history;
             create table bench_history (
                 id bigserial primary key,
                 status text not null default 'queued',
                 chain bigint not null,
                 step int not null default 1,
                 payload jsonb not null default '{}',
                 created_at timestamptz not null default now(),
                 finished_at timestamptz);
             create index bench_history_queued on bench_history (id) where status = 'queued';",
        )
        .execute(pool)
        .await?;
        sqlx::query(
            "insert into bench_history (chain, payload)
             select g, jsonb_build_object('n', g) from generate_series(1, $1) g",
        )
        .bind(rows as i64)
        .execute(pool)
        .await?;
        sqlx::query("vacuum analyze bench_history")
            .execute(pool)
            .await?;
        let last_step = chain_steps.unwrap_or(1) as i32;

        async fn work(pool: PgPool, last_step: i32) -> Result<u64> {
            let mut conn = pool.acquire().await?;
            let mut total = 0u64;
            loop {
                let ids: Vec<i64> = sqlx::query_scalar(
                    "update bench_history set status = 'running'
                      where id = any (array(
                            select id from bench_history where status = 'queued'
                             order by id limit 100 for update skip locked))
                     returning id",
                )
                .fetch_all(&mut *conn)
                .await?;
                if ids.is_empty() {
                    // Every chain's last step is done once nothing is queued or running.
                    let open: bool = sqlx::query_scalar(
                        "select exists (select from bench_history where status <> 'done')",
                    )
                    .fetch_one(&mut *conn)
                    .await?;
                    if !open {
                        return Ok(total);
                    }
                    tokio::task::yield_now().await;
                    continue;
                }
                total += ids.len() as u64;
                sqlx::query(
                    "with done as (
                         update bench_history set status = 'done', finished_at = now()
                          where id = any ($1)
                         returning chain, step, payload)
                     insert into bench_history (chain, step, payload)
                     select chain, step + 1, payload from done where step < $2",
                )
                .bind(&ids)
                .bind(last_step)
                .execute(&mut *conn)
                .await?;
            }
        }
        let warm: Vec<_> = futures::future::try_join_all((0..2).map(|_| pool.acquire())).await?;
        drop(warm);
        let started = Instant::now();
        let (a, b) =
            tokio::try_join!(work(pool.clone(), last_step), work(pool.clone(), last_step))?;
        let elapsed = started.elapsed().as_secs_f64();
        let kept: i64 =
            sqlx::query_scalar("select count(*) from bench_history where status = 'done'")
                .fetch_one(pool)
                .await?;
        sqlx::query("drop table bench_history")
            .execute(pool)
            .await?;
        let expected = rows * last_step as u64;
        if a + b != expected || kept as u64 != expected {
            return Err(BenchError::Incorrect {
                scenario: "floor",
                what: format!(
                    "the keep-history floor did {} jobs and kept {kept}, of {expected}",
                    a + b
                ),
            });
        }
        Ok(expected as f64 / elapsed.max(1e-9))
    }

    /// Seeds `n` finished runs of `def` as a deployment keeps them: each succeeded a day
    /// ago with its one step checkpointed, one successful attempt and the five events a
    /// one-step run leaves (`def` must have one step). Written directly, 100,000 runs a
    /// statement with triggers off, since a million runs through the workers would
    /// take longer than the scenario; then left as `stats` says.
    pub(super) async fn seed_history(&self, def: &Definition, n: u64, stats: Stats) -> Result<()> {
        const CHUNK: u64 = 100_000;
        let step = match def.workflow.steps.as_slice() {
            [one] => one.id.clone(),
            _ => {
                return Err(BenchError::Workflow(
                    "history needs a one-step workflow".into(),
                ));
            }
        };
        let mut tx = self.pool.begin().await?;
        engine::submit::store_definition(&mut tx, def).await?;
        tx.commit().await?;
        let started = Instant::now();
        let mut from = 0u64;
        while from < n {
            let size = CHUNK.min(n - from);
            let mut tx = self.pool.begin().await?;
            sqlx::query("set local session_replication_role = replica")
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "with r as (
                     insert into runs (id, workflow, definition_hash, status, input, output,
                                       request_hash, lease_token, created_at, started_at,
                                       finished_at)
                     select '00' || lpad(g::text, 24, '0'), $3, $4, 'succeeded', '{}'::jsonb,
                            '{}'::jsonb, 'history', 1, t, t, t + interval '5 ms'
                       from generate_series($1::bigint, $1 + $2 - 1) g,
                            lateral (select now() - interval '1 day' + g * interval '1 ms') as at (t)
                     returning id, started_at, finished_at),
                 s as (
                     insert into steps (run_id, step_id, status, attempts, output, started_at,
                                        finished_at)
                     select id, $5, 'succeeded', 1, '{}'::jsonb, started_at, finished_at from r),
                 a as (
                     insert into step_attempts (run_id, step_id, attempt, worker_id, status,
                                                started_at, finished_at)
                     select id, $5, 1, 'history', 'succeeded', started_at, finished_at from r)
                 insert into run_events (run_id, at, kind, step_id, data)
                 select id, started_at, e.kind, e.step, '{}'::jsonb
                   from r, lateral (values (1, 'run_queued', null), (2, 'run_running', null),
                                           (3, 'step_started', $5), (4, 'step_succeeded', $5),
                                           (5, 'run_succeeded', null)) as e (ord, kind, step)
                  order by id, e.ord",
            )
            .bind(from as i64)
            .bind(size as i64)
            .bind(&def.workflow.name)
            .bind(&def.hash)
            .bind(&step)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            from += size;
        }
        // Autovacuum would have visited tables this size; whether it analyzed them too
        // is `stats` (`settle` vacuums as it analyzes).
        match stats {
            Stats::Analyzed => self.settle(stats).await?,
            Stats::Fresh => {
                sqlx::query("vacuum runs, steps, step_attempts, run_events")
                    .execute(&self.pool)
                    .await?;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(runs = n, secs, "history seeded");
        Ok(())
    }

    /// Milliseconds from `since` (the database's clock) to the first attempt's start.
    pub(super) async fn first_attempt_ms_after(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<f64> {
        let ms: Option<f64> = sqlx::query_scalar(
            "select (extract(epoch from min(started_at) - $1) * 1000)::float8 from step_attempts",
        )
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        ms.ok_or_else(|| BenchError::Incorrect {
            scenario: "pickup",
            what: "no attempt started".into(),
        })
    }

    /// What a deployment's tables look like to the planner when its workers start:
    /// `Analyzed`, as autovacuum leaves them within a minute of a backlog building up
    /// (every hot table, `step_attempts` included, which is still empty then); `Fresh`,
    /// never analyzed since they were emptied.
    pub(super) async fn settle(&self, stats: Stats) -> Result<()> {
        if stats == Stats::Analyzed {
            sqlx::query("vacuum analyze runs, steps, step_attempts, run_events, apalis.jobs")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Runs that reached a final status. History (which finished a day before it was
    /// seeded, and which the retention scenario's reaper deletes meanwhile) is left out.
    /// Asked every [`super::scenarios::POLL`] while workers drain, so it must not read
    /// the history: `not pinned` (no bench run is) lets it range-scan `runs_reapable`.
    /// Without it, it counted through every finished run, 100–200 ms of a core four
    /// times a second over a million of them, and slowed the drain it was timing.
    pub(super) async fn finished(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "select count(*) from runs where status in ('succeeded', 'dead', 'cancelled')
                and finished_at > now() - interval '12 hours' and not pinned",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Seeded history still there: runs that finished over 12 hours ago.
    pub(super) async fn history_left(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "select count(*) from runs
              where status = 'succeeded' and finished_at < now() - interval '12 hours'",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// The first run's start and the `nth` run's finish (database clock), history left
    /// out; `None` while fewer than `nth` runs finished.
    pub(super) async fn drain_bounds(
        &self,
        nth: u64,
    ) -> Result<Option<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)>> {
        let row: (
            Option<chrono::DateTime<chrono::Utc>>,
            Option<chrono::DateTime<chrono::Utc>>,
        ) = sqlx::query_as(
            "select (select min(started_at) from runs
                      where started_at > now() - interval '12 hours'),
                    (select finished_at from runs
                      where finished_at > now() - interval '12 hours'
                      order by finished_at offset $1 - 1 limit 1)",
        )
        .bind(nth as i64)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.0.zip(row.1))
    }

    /// The latest complete pass of a reaper that deleted something: (runs, rows,
    /// start, end).
    pub(super) async fn reaper_pass(
        &self,
    ) -> Result<
        Option<(
            i64,
            i64,
            chrono::DateTime<chrono::Utc>,
            chrono::DateTime<chrono::Utc>,
        )>,
    > {
        Ok(sqlx::query_as(
            "select (runs ->> 'succeeded')::bigint,
                    (select coalesce(sum(value::bigint), 0)::bigint from jsonb_each_text(deleted)),
                    started_at, finished_at
               from retention_passes
              where complete and (runs ->> 'succeeded')::bigint > 0
              order by id desc limit 1",
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Seconds from the first run's start to the `nth` run's finish, by the database's
    /// clock; `None` while fewer than `nth` runs finished. History (which finished a
    /// day before it was seeded) is left out.
    pub(super) async fn window(&self, nth: u64) -> Result<Option<f64>> {
        Ok(sqlx::query_scalar(
            "select extract(epoch from
                    (select finished_at from runs
                      where finished_at > now() - interval '12 hours'
                      order by finished_at offset $1 - 1 limit 1)
                  - (select min(started_at) from runs
                      where started_at > now() - interval '12 hours'))::float8",
        )
        .bind(nth as i64)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Checks that exactly `n` runs exist, all succeeded, with every one of their
    /// `steps` steps checkpointed exactly once (one successful attempt, one
    /// `step_succeeded` event) and one `run_succeeded` event each.
    pub(super) async fn verify_all(
        &self,
        scenario: &'static str,
        n: u64,
        steps: u64,
    ) -> Result<()> {
        let c = self.counts().await?;
        let expect = |what: &str, got: i64, want: u64| {
            if got == want as i64 {
                Ok(())
            } else {
                Err(BenchError::Incorrect {
                    scenario,
                    what: format!("{what}: {got}, expected {want}"),
                })
            }
        };
        expect("runs", c.runs, n)?;
        expect("succeeded runs", c.succeeded, n)?;
        expect("succeeded steps", c.steps_succeeded, n * steps)?;
        expect("successful attempts", c.attempts_succeeded, n * steps)?;
        expect("step_succeeded events", c.step_events, n * steps)?;
        expect("run_succeeded events", c.run_events, n)?;
        expect("steps checkpointed more than once", c.duplicates, 0)?;
        expect(
            "steps, attempts and events without their run or step",
            c.orphans,
            0,
        )?;
        Ok(())
    }

    /// For a drain stopped part-way: every finished run succeeded, each with `steps`
    /// checkpoints, none twice, and at least `at_least` finished. Returns how many.
    pub(super) async fn verify_finished(
        &self,
        scenario: &'static str,
        at_least: u64,
        steps: u64,
    ) -> Result<u64> {
        let c = self.counts().await?;
        let incorrect = |what: String| BenchError::Incorrect { scenario, what };
        if c.finished != c.succeeded {
            return Err(incorrect(format!(
                "{} runs finished but only {} succeeded",
                c.finished, c.succeeded
            )));
        }
        if (c.succeeded as u64) < at_least {
            return Err(incorrect(format!(
                "{} runs succeeded, expected at least {at_least}",
                c.succeeded
            )));
        }
        let steps_of_succeeded: i64 = sqlx::query_scalar(
            "select count(*) from steps s join runs r on r.id = s.run_id
              where r.status = 'succeeded' and s.status = 'succeeded'",
        )
        .fetch_one(&self.pool)
        .await?;
        if steps_of_succeeded != c.succeeded * steps as i64 || c.run_events != c.succeeded {
            return Err(incorrect(format!(
                "{} succeeded runs have {steps_of_succeeded} checkpoints and {} run_succeeded events",
                c.succeeded, c.run_events
            )));
        }
        if c.duplicates != 0 {
            return Err(incorrect(format!(
                "{} steps checkpointed more than once",
                c.duplicates
            )));
        }
        Ok(c.succeeded as u64)
    }

    async fn counts(&self) -> Result<Counts> {
        Ok(sqlx::query_as(
            "select (select count(*) from runs) as runs,
                    (select count(*) from runs where status = 'succeeded') as succeeded,
                    (select count(*) from runs where status in ('succeeded', 'dead', 'cancelled')) as finished,
                    (select count(*) from steps where status = 'succeeded') as steps_succeeded,
                    (select count(*) from step_attempts where status = 'succeeded') as attempts_succeeded,
                    (select count(*) from run_events where kind = 'step_succeeded') as step_events,
                    (select count(*) from run_events where kind = 'run_succeeded') as run_events,
                    (select count(*) from (select 1 from run_events where kind = 'step_succeeded'
                                            group by run_id, step_id having count(*) > 1) d) as duplicates,
                    (select count(*) from steps s
                      where not exists (select from runs r where r.id = s.run_id))
                  + (select count(*) from step_attempts a
                      where not exists (select from steps s
                                         where s.run_id = a.run_id and s.step_id = a.step_id))
                  + (select count(*) from run_events e
                      where not exists (select from runs r where r.id = e.run_id)) as orphans",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Queued runs and queued apalis jobs (submitted, nothing run).
    pub(super) async fn queued(&self) -> Result<(i64, i64, i64)> {
        Ok(sqlx::query_as(
            "select (select count(*) from runs where status = 'queued'),
                    (select count(*) from runs),
                    (select count(*) from apalis.jobs where job_type = $1 and status = 'Pending')",
        )
        .bind(queue::QUEUE)
        .fetch_one(&self.pool)
        .await?)
    }

    /// How far the database's clock is ahead of this process's (`clock_timestamp()`
    /// minus the local time halfway through the round trip; zero on one machine), from
    /// the quickest of 20 round trips: off by at most half that round trip.
    pub(super) async fn clock_offset(&self) -> Result<chrono::TimeDelta> {
        let mut best: Option<(chrono::TimeDelta, chrono::TimeDelta)> = None;
        for _ in 0..20 {
            let before = chrono::Utc::now();
            let db: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("select clock_timestamp()")
                .fetch_one(&self.pool)
                .await?;
            let after = chrono::Utc::now();
            let rtt = after - before;
            let offset = db - (before + rtt / 2);
            if best.is_none_or(|(r, _)| rtt < r) {
                best = Some((rtt, offset));
            }
        }
        Ok(best.map(|(_, offset)| offset).unwrap_or_default())
    }

    /// Percentiles (ms) of the time from each run's submit answer (`answered`, by the
    /// database's clock) to its first step's first attempt.
    pub(super) async fn pickup_answered_ms(
        &self,
        answered: &[(String, chrono::DateTime<chrono::Utc>)],
        quantiles: &[f64],
    ) -> Result<Vec<f64>> {
        let (ids, at): (Vec<&str>, Vec<chrono::DateTime<chrono::Utc>>) =
            answered.iter().map(|(id, t)| (id.as_str(), *t)).unzip();
        let values: Option<Vec<f64>> = sqlx::query_scalar(
            "select percentile_cont($3::float8[]) within group
                      (order by extract(epoch from a.started_at - s.answered_at) * 1000)
               from unnest($1::text[], $2::timestamptz[]) as s (run_id, answered_at)
               join lateral (select min(started_at) as started_at from step_attempts
                              where run_id = s.run_id) a on true",
        )
        .bind(&ids)
        .bind(&at)
        .bind(quantiles)
        .fetch_one(&self.pool)
        .await?;
        Ok(values.unwrap_or_default())
    }

    /// Percentiles (ms) of the time from a run's creation (its submit transaction) to
    /// its first step's first attempt, by the database's clock.
    pub(super) async fn pickup_ms(&self, quantiles: &[f64]) -> Result<Vec<f64>> {
        let values: Option<Vec<f64>> = sqlx::query_scalar(
            "select percentile_cont($1::float8[]) within group
                      (order by extract(epoch from a.started_at - r.created_at) * 1000)
               from runs r
               join lateral (select min(started_at) as started_at from step_attempts
                              where run_id = r.id) a on true",
        )
        .bind(quantiles)
        .fetch_one(&self.pool)
        .await?;
        Ok(values.unwrap_or_default())
    }

    /// This database's committed transactions and the cluster's WAL position (bytes),
    /// for costs per run. Statistics of a backend arrive when it idles or exits.
    pub(super) async fn counters(&self) -> Result<(i64, i64)> {
        Ok(sqlx::query_as(
            "select (select xact_commit from pg_stat_database where datname = current_database()),
                    pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::int8",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// The server's `autovacuum` setting (`on`/`off`), which decides the dead tuples.
    pub(super) async fn autovacuum(&self) -> Result<String> {
        Ok(sqlx::query_scalar("select current_setting('autovacuum')")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Medians (ms) of the two halves of pickup: submit → lease taken (queue wait,
    /// fetch, dispatch, lease transaction) and lease → first attempt's start (loading
    /// the run, the step's start transaction).
    pub(super) async fn pickup_parts_ms(&self) -> Result<(f64, f64)> {
        let parts: (Option<f64>, Option<f64>) = sqlx::query_as(
            "select percentile_cont(0.5) within group
                      (order by extract(epoch from r.started_at - r.created_at) * 1000),
                    percentile_cont(0.5) within group
                      (order by extract(epoch from a.started_at - r.started_at) * 1000)
               from runs r
               join lateral (select min(started_at) as started_at from step_attempts
                              where run_id = r.id) a on true",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((parts.0.unwrap_or_default(), parts.1.unwrap_or_default()))
    }

    /// Dead tuples in the hot tables, as the statistics report them now.
    pub(super) async fn dead_tuples(&self) -> Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            "select t.name, coalesce(s.n_dead_tup, 0)
               from unnest(array['runs', 'steps', 'step_attempts', 'run_events', 'apalis.jobs'])
                    with ordinality as t(name, ord)
               left join pg_stat_user_tables s on s.relid = to_regclass(t.name)
              order by t.ord",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}

#[derive(sqlx::FromRow)]
struct Counts {
    runs: i64,
    succeeded: i64,
    finished: i64,
    steps_succeeded: i64,
    attempts_succeeded: i64,
    step_events: i64,
    run_events: i64,
    duplicates: i64,
    /// Steps, attempts and events whose run or step does not exist.
    orphans: i64,
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> Result<String> {
    let mut parsed = reqwest::Url::parse(url).map_err(|e| BenchError::BadUrl(e.to_string()))?;
    parsed.set_path(&format!("/{name}"));
    Ok(parsed.to_string())
}

async fn drop_database(admin_url: &str, name: &str) -> Result<()> {
    let mut admin = PgConnection::connect(admin_url).await?;
    // Worker processes may still be closing their connections.
    let mut tries = 0;
    loop {
        let dropped = admin
            .execute(sqlx::AssertSqlSafe(format!(
                "drop database if exists \"{name}\" with (force)"
            )))
            .await;
        match dropped {
            Ok(_) => break,
            Err(e) if tries < 5 => {
                tries += 1;
                tracing::warn!(error = %e, "dropping the bench database; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let _ = admin.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_database_replaces_only_the_path() {
        assert_eq!(
            with_database(
                "postgres://postgres@127.0.0.1:5432/postgres",
                "cairn_bench_x"
            )
            .unwrap(),
            "postgres://postgres@127.0.0.1:5432/cairn_bench_x"
        );
        assert_eq!(
            with_database("postgres://u:p%40ss@db:6543/app?sslmode=disable", "b").unwrap(),
            "postgres://u:p%40ss@db:6543/b?sslmode=disable"
        );
        assert!(with_database("not a url", "b").is_err());
    }
}
