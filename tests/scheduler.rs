//! Promises about schedules: each tick fires exactly once across three real `cairn
//! scheduler` processes; missed ticks fire once late (`fire_once`) or not at all
//! (`skip`); paused schedules fire nothing and `trigger` fires now; overlap policies
//! against a slow workflow; file sync; and the `/api/schedules` API and `ctl schedule`.
//!
//! Passes other than the multi-process one take an explicit `now`, so they walk a
//! made-up clock instead of sleeping.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use cairn::scheduler::{self, Triggered};
use cairn::store::schedules as store;
use cairn::workflow::{CronSchedule, Registry};
use chrono::{DateTime, TimeDelta, Utc};
use common::*;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgListener;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn secs(t: DateTime<Utc>, s: f64) -> DateTime<Utc> {
    t + TimeDelta::milliseconds((s * 1000.0) as i64)
}

/// (tick time, kind, outcome, run id, missed) of a schedule's ticks, oldest first.
async fn ticks(
    pool: &PgPool,
    schedule: &str,
) -> Vec<(DateTime<Utc>, String, String, Option<String>, i32)> {
    sqlx::query_as(
        "select t.tick_at, t.kind, t.outcome, t.run_id, t.missed
           from schedule_ticks t join schedules s on s.id = t.schedule_id
          where s.name = $1 order by t.tick_at",
    )
    .bind(schedule)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Tick times of the runs a schedule started, oldest first.
async fn run_ticks(pool: &PgPool, schedule: &str) -> Vec<DateTime<Utc>> {
    sqlx::query_scalar(
        "select r.schedule_tick_at from runs r join schedules s on s.id = r.schedule_id
          where s.name = $1 order by r.schedule_tick_at",
    )
    .bind(schedule)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn schedule(pool: &PgPool, name: &str) -> store::ScheduleRow {
    store::schedule_get(pool, name)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no schedule {name}"))
}

async fn pass(pool: &PgPool, registry: &Registry, now: DateTime<Utc>) -> scheduler::PassReport {
    scheduler::run_due(pool, registry, now, "test-scheduler")
        .await
        .expect("pass")
}

/// Polls the database until `query` (a count) reaches `want`; panics after `limit`.
async fn wait_count(pool: &PgPool, query: &str, want: i64, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(query))
            .fetch_one(pool)
            .await
            .unwrap();
        if n >= want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "`{query}` reached {n}, not {want}, in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits, woken by run events, until every run in `ids` has `status`.
async fn wait_status(pool: &PgPool, ids: &[String], status: &str) {
    let mut listener = PgListener::connect_with(pool).await.unwrap();
    listener.listen("cairn_events").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n: i64 =
            sqlx::query_scalar("select count(*) from runs where id = any($1) and status = $2")
                .bind(ids)
                .bind(status)
                .fetch_one(pool)
                .await
                .unwrap();
        if n == ids.len() as i64 {
            return;
        }
        let now = tokio::time::Instant::now();
        assert!(now < deadline, "runs {ids:?} never all became {status}");
        let _ = tokio::time::timeout(
            (deadline - now).min(Duration::from_secs(1)),
            listener.recv(),
        )
        .await;
    }
}

async fn status(pool: &PgPool, id: &str) -> String {
    sqlx::query_scalar("select status from runs where id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A `cairn scheduler` child process, killed when dropped.
struct SchedulerProcess {
    child: std::process::Child,
}

impl SchedulerProcess {
    fn spawn(database_url: &str, workflows: &std::path::Path) -> SchedulerProcess {
        SchedulerProcess::spawn_with(database_url, workflows, &[])
    }

    fn spawn_with(
        database_url: &str,
        workflows: &std::path::Path,
        args: &[&str],
    ) -> SchedulerProcess {
        let log = std::env::temp_dir().join(format!(
            "cairn-test-scheduler-{}.log",
            ulid::Ulid::generate()
        ));
        let stderr = std::fs::File::create(&log).expect("scheduler log file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("scheduler")
            .arg("--workflows-dir")
            .arg(workflows)
            .args(["--scheduler-poll", "1s"])
            .args(args)
            .env("DATABASE_URL", database_url)
            .env("CAIRN_NO_MIGRATE", "true")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn cairn scheduler");
        SchedulerProcess { child }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for SchedulerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn workflow_dir(files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cairn-test-workflows-{}", ulid::Ulid::generate()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
    }
    dir
}

const EVERY_SECOND: &str = r#"
[[steps]]
id = "one"
kind = "sql"
query = "select 1 as n"

[[schedules]]
cron = "* * * * * *"
max_lateness = "5s"
"#;

/// The scheduler's two listeners (schedule changes, notifications to deliver) hold
/// connections of their own: a scheduler whose pool has a single connection still
/// fires its ticks.
#[sqlx::test(migrations = false)]
async fn a_scheduler_with_a_pool_of_one_connection_fires_its_ticks(pool: PgPool) {
    migrate(&pool).await;
    let dir = workflow_dir(&[("tick", EVERY_SECOND)]);
    let url = database_url(&pool);
    let mut scheduler = SchedulerProcess::spawn_with(&url, &dir, &["--db-pool", "1"]);
    wait_count(
        &pool,
        "select count(*) from pg_stat_activity
          where datname = current_database()
            and (query ilike 'listen%cairn_schedules%' or query ilike 'listen%cairn_notifications%')",
        2,
        Duration::from_secs(60),
    )
    .await;
    wait_count(
        &pool,
        "select count(*) from schedule_ticks",
        2,
        Duration::from_secs(30),
    )
    .await;
    assert!(scheduler.alive(), "the scheduler kept running");
}

#[sqlx::test(migrations = false)]
async fn three_scheduler_processes_fire_each_tick_exactly_once(pool: PgPool) {
    migrate(&pool).await;
    let dir = workflow_dir(&[("tick", EVERY_SECOND)]);
    let url = database_url(&pool);
    let mut procs: Vec<SchedulerProcess> = (0..3)
        .map(|_| SchedulerProcess::spawn(&url, &dir))
        .collect();

    // All three are past their sync and in their loop once each listens for changes.
    wait_count(
        &pool,
        "select count(*) from pg_stat_activity
          where datname = current_database() and query ilike 'listen%cairn_schedules%'",
        3,
        Duration::from_secs(60),
    )
    .await;
    wait_count(
        &pool,
        "select count(*) from schedule_ticks",
        1,
        Duration::from_secs(30),
    )
    .await;
    let first: DateTime<Utc> = sqlx::query_scalar("select max(tick_at) from schedule_ticks")
        .fetch_one(&pool)
        .await
        .unwrap();
    // Ten ticks, all handled while the three compete.
    let window: Vec<DateTime<Utc>> = (1..=10).map(|i| first + TimeDelta::seconds(i)).collect();
    let after = first + TimeDelta::seconds(11);
    wait_count(
        &pool,
        &format!(
            "select count(*) from schedule_ticks where tick_at >= '{}'",
            after.to_rfc3339()
        ),
        1,
        Duration::from_secs(60),
    )
    .await;
    for (i, p) in procs.iter_mut().enumerate() {
        assert!(p.alive(), "scheduler {i} exited");
    }
    drop(procs);

    let all = ticks(&pool, "tick").await;
    let in_window: Vec<_> = all
        .iter()
        .filter(|t| window.contains(&t.0))
        .cloned()
        .collect();
    assert_eq!(
        in_window.iter().map(|t| t.0).collect::<Vec<_>>(),
        window,
        "one tick row per second"
    );
    assert!(
        in_window.iter().all(|t| t.2 == "fired" && t.3.is_some()),
        "{in_window:?}"
    );
    // Every tick handled, from the first to the last, has exactly one run, and no run
    // exists without its tick.
    let (first_all, last_all) = (all[0].0, all[all.len() - 1].0);
    assert_eq!(
        all.len() as i64,
        (last_all - first_all).num_seconds() + 1,
        "no second skipped: {all:?}"
    );
    let runs = run_ticks(&pool, "tick").await;
    assert_eq!(runs, all.iter().map(|t| t.0).collect::<Vec<_>>());
    let duplicates: Vec<(DateTime<Utc>, i64)> = sqlx::query_as(
        "select schedule_tick_at, count(*) from runs where schedule_id is not null
          group by schedule_tick_at having count(*) <> 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(duplicates.is_empty(), "duplicate runs for {duplicates:?}");
    let by: BTreeMap<String, i64> =
        sqlx::query_as("select scheduler, count(*) from schedule_ticks group by scheduler")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    eprintln!("ticks handled per scheduler process: {by:?}");
    let _ = std::fs::remove_dir_all(dir);
}

const TWO_POLICIES: &str = r#"
[[steps]]
id = "one"
kind = "sql"
query = "select 1 as n"

[[schedules]]
name = "fire_once"
cron = "* * * * * *"
misfire_policy = "fire_once"
max_lateness = "1s"

[[schedules]]
name = "skip"
cron = "* * * * * *"
misfire_policy = "skip"
max_lateness = "1s"
"#;

#[sqlx::test(migrations = false)]
async fn missed_ticks_fire_once_late_or_are_skipped_after_a_restart(pool: PgPool) {
    migrate(&pool).await;
    let registry = Registry::from_definitions([definition("tick", TWO_POLICIES)]);
    let t0 = at("2026-06-01T12:00:00Z");
    scheduler::sync(&pool, &registry, t0).await.unwrap();

    // Running: ticks 1 and 2 fire on time.
    pass(&pool, &registry, secs(t0, 1.02)).await;
    pass(&pool, &registry, secs(t0, 2.03)).await;
    // Stopped across ticks 3..7; restarted at 8.4s (the restart syncs again first).
    let resynced = scheduler::sync(&pool, &registry, secs(t0, 8.3))
        .await
        .unwrap();
    assert_eq!(resynced.unchanged, 2, "{resynced:?}");
    let report = pass(&pool, &registry, secs(t0, 8.4)).await;
    assert_eq!(report.fired, 3, "fire_once: late + tick 8; skip: tick 8");
    assert_eq!(report.skipped, 1);
    pass(&pool, &registry, secs(t0, 9.01)).await;

    let t = |s: i64| t0 + TimeDelta::seconds(s);
    let fire_once = ticks(&pool, "tick.fire_once").await;
    let summary: Vec<_> = fire_once
        .iter()
        .map(|(at, kind, outcome, run, missed)| {
            (*at, kind.as_str(), outcome.as_str(), run.is_some(), *missed)
        })
        .collect();
    assert_eq!(
        summary,
        [
            (t(1), "on_time", "fired", true, 0),
            (t(2), "on_time", "fired", true, 0),
            (t(7), "late", "fired", true, 5),
            (t(8), "on_time", "fired", true, 0),
            (t(9), "on_time", "fired", true, 0),
        ]
    );
    assert_eq!(
        run_ticks(&pool, "tick.fire_once").await,
        [t(1), t(2), t(7), t(8), t(9)]
    );

    let skip = ticks(&pool, "tick.skip").await;
    let summary: Vec<_> = skip
        .iter()
        .map(|(at, kind, outcome, run, missed)| {
            (*at, kind.as_str(), outcome.as_str(), run.is_some(), *missed)
        })
        .collect();
    assert_eq!(
        summary,
        [
            (t(1), "on_time", "fired", true, 0),
            (t(2), "on_time", "fired", true, 0),
            (t(7), "late", "skipped_misfire", false, 5),
            (t(8), "on_time", "fired", true, 0),
            (t(9), "on_time", "fired", true, 0),
        ]
    );
    assert_eq!(
        run_ticks(&pool, "tick.skip").await,
        [t(1), t(2), t(8), t(9)]
    );

    // A second pass at the same instant finds nothing due: nothing fires twice.
    let again = pass(&pool, &registry, secs(t0, 9.01)).await;
    assert_eq!(again, scheduler::PassReport::default());
}

const ONE_SCHEDULE: &str = r#"
[input]
who = { type = "string", default = "cron" }

[[steps]]
id = "one"
kind = "sql"
query = "select $1::text as who"
params = ["{{ input.who }}"]

[[schedules]]
cron = "* * * * * *"
input = { who = "schedule" }
"#;

#[sqlx::test(migrations = false)]
async fn paused_schedules_fire_nothing_and_trigger_fires_now(pool: PgPool) {
    migrate(&pool).await;
    let registry = Registry::from_definitions([definition("beat", ONE_SCHEDULE)]);
    let t0 = at("2026-06-01T12:00:00Z");
    scheduler::sync(&pool, &registry, t0).await.unwrap();
    pass(&pool, &registry, secs(t0, 1.01)).await;

    let s = schedule(&pool, "beat").await;
    store::schedule_set_enabled(&pool, &s.id, false, None)
        .await
        .unwrap();
    for i in 2..=6 {
        let report = pass(&pool, &registry, secs(t0, i as f64 + 0.01)).await;
        assert_eq!(report, scheduler::PassReport::default(), "paused, at {i}s");
    }
    assert_eq!(ticks(&pool, "beat").await.len(), 1);

    // Trigger while paused: a run now, recorded as a manual tick.
    let now = secs(t0, 6.5);
    let Triggered::Run(run) = scheduler::trigger(&pool, &registry, "beat", "test", now)
        .await
        .unwrap()
    else {
        panic!("trigger did not start a run");
    };
    let input: serde_json::Value = sqlx::query_scalar("select input from runs where id = $1")
        .bind(&run.run_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(input, json!({ "who": "schedule" }));
    let linked = store::run_schedule_get(&pool, &run.run_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (linked.schedule_id.as_str(), linked.tick_at),
        (s.id.as_str(), now)
    );
    assert_eq!(linked.kind.as_deref(), Some("manual"));

    // Resume: the cursor moves to the next tick; the paused ticks never fire.
    let resume_at = CronSchedule::parse("* * * * * *", "UTC")
        .unwrap()
        .next_after(secs(t0, 6.6));
    store::schedule_set_enabled(&pool, &s.id, true, resume_at)
        .await
        .unwrap();
    let report = pass(&pool, &registry, secs(t0, 7.01)).await;
    assert_eq!(report.fired, 1);
    let kinds: Vec<(DateTime<Utc>, String)> = ticks(&pool, "beat")
        .await
        .into_iter()
        .map(|t| (t.0, t.1))
        .collect();
    assert_eq!(
        kinds,
        [
            (t0 + TimeDelta::seconds(1), "on_time".to_owned()),
            (now, "manual".to_owned()),
            (t0 + TimeDelta::seconds(7), "on_time".to_owned()),
        ]
    );
    assert_eq!(
        schedule(&pool, "beat").await.last_fired_at,
        Some(secs(t0, 7.01))
    );

    // Triggering an unknown schedule changes nothing.
    assert!(matches!(
        scheduler::trigger(&pool, &registry, "nope", "test", now)
            .await
            .unwrap(),
        Triggered::NotFound
    ));
}

fn slow(url: &str) -> String {
    format!(
        r#"
[[steps]]
id = "work"
kind = "http"
method = "POST"
url = "{url}"

[[steps]]
id = "nap"
kind = "sleep"
needs = ["work"]
duration = "1h"

[[schedules]]
name = "allow"
cron = "* * * * * *"
overlap_policy = "allow"

[[schedules]]
name = "skip"
cron = "* * * * * *"
overlap_policy = "skip"

[[schedules]]
name = "cancel"
cron = "* * * * * *"
overlap_policy = "cancel_previous"
"#
    )
}

#[sqlx::test(migrations = false)]
async fn overlap_policies_with_a_slow_workflow(pool: PgPool) {
    migrate(&pool).await;
    let (addr, _seen) = spawn_service(&pool, 1).await;
    let registry = Registry::from_definitions([
        definition("parked", &slow(&format!("http://{addr}/work?ms=0"))),
        definition("busy", &slow(&format!("http://{addr}/work?ms=4000"))),
    ]);
    let worker = TestWorker::start(&pool, fast_settings());
    let t0 = at("2026-06-01T12:00:00Z");
    scheduler::sync(&pool, &registry, t0).await.unwrap();

    // Tick 1 starts a run per schedule; `parked` runs reach their one-hour timer,
    // `busy` runs are inside their four-second HTTP call.
    pass(&pool, &registry, secs(t0, 1.01)).await;
    let mut parked = Vec::new();
    for name in ["parked.allow", "parked.skip", "parked.cancel"] {
        parked.extend(run_ids(&pool, name).await);
    }
    assert_eq!(parked.len(), 3);
    let busy_cancel = run_ids(&pool, "busy.cancel").await.remove(0);
    wait_status(&pool, &parked, "sleeping").await;
    wait_count(
        &pool,
        &format!(
            "select count(*) from steps where run_id = '{busy_cancel}' and step_id = 'work' and status = 'running'"
        ),
        1,
        Duration::from_secs(30),
    )
    .await;

    // Tick 2, with every previous run still active.
    pass(&pool, &registry, secs(t0, 2.01)).await;

    // allow: a second run beside the first.
    let allow = run_ids(&pool, "parked.allow").await;
    assert_eq!(allow.len(), 2);
    assert_eq!(status(&pool, &allow[0]).await, "sleeping");

    // skip: no second run; the tick says why.
    assert_eq!(run_ids(&pool, "parked.skip").await, [parked[1].clone()]);
    let skip_ticks = ticks(&pool, "parked.skip").await;
    assert_eq!(skip_ticks[1].2, "skipped_overlap");
    assert_eq!(skip_ticks[1].3, None);

    // cancel_previous: the parked run is cancelled at once, its open steps too, and
    // a new run starts.
    let cancel = run_ids(&pool, "parked.cancel").await;
    assert_eq!(cancel.len(), 2);
    assert_eq!(status(&pool, &cancel[0]).await, "cancelled");
    let open: i64 = sqlx::query_scalar(
        "select count(*) from steps where run_id = $1 and status not in ('succeeded', 'cancelled')",
    )
    .bind(&cancel[0])
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(open, 0);
    let by: Option<String> = sqlx::query_scalar(
        "select data->>'by' from run_events where run_id = $1 and kind = 'run_cancelled'",
    )
    .bind(&cancel[0])
    .fetch_optional(&pool)
    .await
    .unwrap();
    assert!(by.is_some_and(|b| b.contains("parked.cancel")));
    assert_ne!(status(&pool, &cancel[1]).await, "cancelled");

    // cancel_previous on a run a worker is executing: asked to stop at its next step
    // boundary (it is not cut off mid-step).
    let busy = run_ids(&pool, "busy.cancel").await;
    assert_eq!(busy.len(), 2);
    let requested: Option<DateTime<Utc>> =
        sqlx::query_scalar("select cancel_requested_at from runs where id = $1")
            .bind(&busy_cancel)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(requested.is_some());
    let kinds: Vec<String> = sqlx::query_scalar(
        "select kind from run_events where run_id = $1 and kind like 'run_cancel%'",
    )
    .bind(&busy_cancel)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(kinds, ["run_cancel_requested"]);

    worker.shutdown().await;
}

async fn run_ids(pool: &PgPool, schedule: &str) -> Vec<String> {
    sqlx::query_scalar(
        "select r.id from runs r join schedules s on s.id = r.schedule_id
          where s.name = $1 order by r.schedule_tick_at, r.id",
    )
    .bind(schedule)
    .fetch_all(pool)
    .await
    .unwrap()
}

const STEP: &str = "[[steps]]\nid = \"one\"\nkind = \"sql\"\nquery = \"select 1 as n\"\n";

#[sqlx::test(migrations = false)]
async fn sync_adds_changes_and_removes_file_schedules(pool: PgPool) {
    migrate(&pool).await;
    let t0 = at("2026-06-01T12:00:00Z");
    let a1 = format!(
        "{STEP}\n[[schedules]]\ncron = \"0 6 * * *\"\n\n[[schedules]]\nname = \"hourly\"\ncron = \"0 * * * *\"\n"
    );
    let b1 = format!(
        "[input]\nn = {{ type = \"integer\" }}\n\n{STEP}\n[[schedules]]\ncron = \"0 6 * * *\"\ninput = {{ n = 1 }}\n"
    );
    let reg1 = Registry::from_definitions([definition("a", &a1), definition("b", &b1)]);
    let report = scheduler::sync(&pool, &reg1, t0).await.unwrap();
    assert_eq!(report.added, ["a", "a.hourly", "b"]);
    assert_eq!(
        schedule(&pool, "a").await.next_fire_at,
        Some(at("2026-06-02T06:00:00Z"))
    );

    // An operator's pause survives a restart with unchanged files.
    let a = schedule(&pool, "a").await;
    store::schedule_set_enabled(&pool, &a.id, false, None)
        .await
        .unwrap();
    let report = scheduler::sync(&pool, &reg1, t0).await.unwrap();
    assert_eq!(
        (report.unchanged, report.added.len(), report.changed.len()),
        (3, 0, 0)
    );
    assert!(!schedule(&pool, "a").await.enabled);

    // Files changed: a's time moves (and the file's enabled wins), a.hourly is gone,
    // b's input changes (its cursor stays).
    let a2 = format!("{STEP}\n[[schedules]]\ncron = \"0 7 * * *\"\n");
    let b2 = b1.replace("n = 1 }", "n = 2 }");
    let reg2 = Registry::from_definitions([definition("a", &a2), definition("b", &b2)]);
    let b_cursor = schedule(&pool, "b").await.next_fire_at;
    let report = scheduler::sync(&pool, &reg2, secs(t0, 60.0)).await.unwrap();
    assert_eq!(report.changed, ["a", "b"]);
    assert_eq!(report.removed, ["a.hourly"]);
    let a = schedule(&pool, "a").await;
    assert!(a.enabled);
    assert_eq!(
        (a.cron.as_str(), a.next_fire_at),
        ("0 7 * * *", Some(at("2026-06-02T07:00:00Z")))
    );
    let b = schedule(&pool, "b").await;
    assert_eq!(b.input, json!({ "n": 2 }));
    assert_eq!(b.next_fire_at, b_cursor);
    assert!(
        store::schedule_get(&pool, "a.hourly")
            .await
            .unwrap()
            .is_none()
    );

    // A file entry never overwrites a schedule created through the API.
    let mut conn = pool.acquire().await.unwrap();
    store::schedule_insert(
        &mut conn,
        "api-c",
        &store::ScheduleParams {
            name: "c",
            workflow: "a",
            cron: "0 0 * * *",
            timezone: "UTC",
            input: &json!({}),
            enabled: true,
            misfire_policy: "skip",
            max_lateness_ms: 60_000,
            overlap_policy: "allow",
            source: "api",
            spec_hash: None,
            next_fire_at: None,
            priority: 0,
        },
    )
    .await
    .unwrap();
    let c = format!("{STEP}\n[[schedules]]\ncron = \"* * * * *\"\n");
    let reg3 = Registry::from_definitions([
        definition("a", &a2),
        definition("b", &b2),
        definition("c", &c),
    ]);
    let report = scheduler::sync(&pool, &reg3, t0).await.unwrap();
    assert_eq!(report.conflicts, ["c"]);
    let c = schedule(&pool, "c").await;
    assert_eq!((c.source.as_str(), c.cron.as_str()), ("api", "0 0 * * *"));
}

const GREET: &str = r#"
[input]
name = { type = "string" }

[[steps]]
id = "greet"
kind = "sql"
query = "select 'hi ' || $1::text as text"
params = ["{{ input.name }}"]

[[schedules]]
name = "daily"
cron = "0 6 * * *"
input = { name = "file" }
"#;

async fn count_schedules(pool: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from schedules")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn the_schedules_api(pool: PgPool) {
    migrate(&pool).await;
    let registry = Registry::from_definitions([definition("greet", GREET)]);
    scheduler::sync(&pool, &registry, Utc::now()).await.unwrap();
    let api = TestApi::builder(&pool).registry(registry).start().await;

    let body = json!({
        "name": "every-10s",
        "workflow": "greet",
        "cron": "*/10 * * * * *",
        "timezone": "Europe/Berlin",
        "input": { "name": "Ada" },
        "overlapPolicy": "skip",
        "maxLateness": "30s",
    });
    let (code, created) = api.call("POST", "/api/schedules", Some(body.clone())).await;
    assert_eq!(code, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    for key in [
        "id",
        "name",
        "workflow",
        "cron",
        "timezone",
        "input",
        "enabled",
        "misfirePolicy",
        "overlapPolicy",
        "maxLateness",
        "nextFireTimes",
        "lastFiredAt",
        "source",
    ] {
        assert!(created.get(key).is_some(), "no {key} in {created}");
    }
    assert_eq!(created["source"], "api");
    assert_eq!(created["misfirePolicy"], "fire_once");
    assert_eq!(created["overlapPolicy"], "skip");
    assert_eq!(created["maxLateness"], "30s");
    let next: Vec<DateTime<Utc>> =
        serde_json::from_value(created["nextFireTimes"].clone()).unwrap();
    assert_eq!(next.len(), 3);
    assert!(
        next.windows(2)
            .all(|w| w[1] - w[0] == TimeDelta::seconds(10))
    );

    // Refusals change nothing.
    let before = count_schedules(&pool).await;
    let (code, e) = api.call("POST", "/api/schedules", Some(body.clone())).await;
    assert_eq!(code, 409, "{e}");
    let bad = json!({
        "name": "bad name!", "workflow": "greet", "cron": "61 * * * *",
        "timezone": "Mars/Base", "misfirePolicy": "later", "maxLateness": "soon",
        "input": { "name": 1 },
    });
    let (code, e) = api.call("POST", "/api/schedules", Some(bad)).await;
    assert_eq!(code, 422, "{e}");
    let fields: Vec<&str> = e["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "name",
            "cron",
            "timezone",
            "misfirePolicy",
            "maxLateness",
            "input"
        ],
        "{e}"
    );
    let (code, e) = api
        .call(
            "POST",
            "/api/schedules",
            Some(json!({ "name": "x", "workflow": "nope", "cron": "* * * * *" })),
        )
        .await;
    assert_eq!(
        (code, e["error"]["details"][0]["field"].as_str()),
        (422, Some("workflow"))
    );
    let (code, _) = api
        .call(
            "POST",
            "/api/schedules",
            Some(json!({ "name": "x", "workflow": "greet", "cron": "* * * * *", "colour": 1 })),
        )
        .await;
    assert_eq!(code, 400);
    let (code, _) = api
        .call_as(&api.viewer, "POST", "/api/schedules", Some(body.clone()))
        .await;
    assert_eq!(code, 403);
    assert_eq!(count_schedules(&pool).await, before);

    // Reading, by id or name, as a viewer.
    let (code, list) = api
        .call_as(&api.viewer, "GET", "/api/schedules", None)
        .await;
    assert_eq!(code, 200);
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["every-10s", "greet.daily"]);
    let (code, by_name) = api.call("GET", "/api/schedules/every-10s", None).await;
    assert_eq!((code, by_name["id"].as_str()), (200, Some(id.as_str())));
    assert_eq!(by_name["recentTicks"], json!([]));
    let (code, _) = api.call("GET", "/api/schedules/nope", None).await;
    assert_eq!(code, 404);

    // Pause, resume.
    let (code, paused) = api
        .call("POST", &format!("/api/schedules/{id}/pause"), None)
        .await;
    assert_eq!(
        (code, &paused["enabled"], &paused["nextFireTimes"]),
        (200, &json!(false), &json!([]))
    );
    let (code, resumed) = api
        .call("POST", &format!("/api/schedules/{id}/resume"), None)
        .await;
    assert_eq!((code, &resumed["enabled"]), (200, &json!(true)));
    assert_eq!(resumed["nextFireTimes"].as_array().unwrap().len(), 3);

    // Trigger: a run now, which shows the schedule and tick that started it.
    let (code, triggered) = api
        .call("POST", &format!("/api/schedules/{id}/trigger"), None)
        .await;
    assert_eq!(code, 201, "{triggered}");
    assert_eq!(triggered["status"], "queued");
    let task = triggered["taskId"].as_str().unwrap();
    let (_, run) = api.call("GET", &format!("/api/tasks/{task}"), None).await;
    assert_eq!(run["input"], json!({ "name": "Ada" }));
    assert_eq!(run["schedule"]["id"], json!(id));
    assert_eq!(run["schedule"]["name"], "every-10s");
    assert_eq!(run["schedule"]["kind"], "manual");
    assert!(run["schedule"]["tickAt"].is_string());
    let (_, detail) = api.call("GET", &format!("/api/schedules/{id}"), None).await;
    assert_eq!(detail["recentTicks"][0]["taskId"], json!(task));
    assert!(detail["lastFiredAt"].is_string());

    // Remove: API schedules go; file schedules are removed from their file.
    let (code, e) = api.call("DELETE", "/api/schedules/greet.daily", None).await;
    assert_eq!(code, 409, "{e}");
    let (code, _) = api
        .call("DELETE", &format!("/api/schedules/{id}"), None)
        .await;
    assert_eq!(code, 204);
    let (code, _) = api.call("GET", &format!("/api/schedules/{id}"), None).await;
    assert_eq!(code, 404);
    // The run keeps its record of the removed schedule.
    let (_, run) = api.call("GET", &format!("/api/tasks/{task}"), None).await;
    assert_eq!(
        (run["schedule"]["id"].as_str(), &run["schedule"]["name"]),
        (Some(id.as_str()), &Value::Null)
    );

    let (_, doc) = api.call("GET", "/api/openapi.json", None).await;
    for path in [
        "/api/schedules",
        "/api/schedules/{id}",
        "/api/schedules/{id}/pause",
        "/api/schedules/{id}/resume",
        "/api/schedules/{id}/trigger",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from OpenAPI"
        );
    }
    api.stop.cancel();
}

#[sqlx::test(migrations = false)]
async fn ctl_schedule_commands(pool: PgPool) {
    migrate(&pool).await;
    let registry = Registry::from_definitions([definition("greet", GREET)]);
    let api = TestApi::builder(&pool).registry(registry).start().await;

    let (code, out, err) = api
        .ctl(&[
            "schedule",
            "add",
            "nightly",
            "--workflow",
            "greet",
            "--cron",
            "30 2 * * *",
            "--timezone",
            "Europe/Berlin",
            "--input",
            r#"{"name":"Ada"}"#,
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Schedule  nightly"), "{out}");

    let (code, out, err) = api.ctl(&["schedule", "list"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("NEXT FIRE TIMES") && out.contains("nightly"),
        "{out}"
    );
    let (code, out, _) = api.ctl(&["schedule", "list", "-o", "json"]).await;
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        list["items"][0]["nextFireTimes"].as_array().unwrap().len(),
        3
    );

    let (code, out, _) = api.ctl(&["schedule", "pause", "nightly"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("Next      paused"), "{out}");
    let (code, _, _) = api.ctl(&["schedule", "resume", "nightly"]).await;
    assert_eq!(code, 0);

    let (code, out, err) = api
        .ctl(&["schedule", "trigger", "nightly", "-o", "json"])
        .await;
    assert_eq!(code, 0, "{err}");
    let triggered: Value = serde_json::from_str(&out).unwrap();
    let task = triggered["taskId"].as_str().unwrap();
    let (code, out, _) = api.ctl(&["task", "show", task]).await;
    assert_eq!(code, 0);
    assert!(out.contains("Schedule  nightly (tick "), "{out}");
    let (code, out, _) = api.ctl(&["schedule", "show", "nightly"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("manual") && out.contains(task), "{out}");

    let (code, _, _) = api.ctl(&["schedule", "remove", "nightly", "--yes"]).await;
    assert_eq!(code, 0);
    let (code, _, err) = api.ctl(&["schedule", "show", "nightly"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no schedule"), "{err}");
    api.stop.cancel();
}

/// A schedule's `priority` (from the workflow file, or set through the API) is the
/// priority of every run it starts; out of range is refused where it is written.
#[sqlx::test(migrations = false)]
async fn scheduled_runs_get_their_schedules_priority(pool: PgPool) {
    migrate(&pool).await;
    let file = ONE_SCHEDULE.replace(
        "input = { who = \"schedule\" }",
        "input = { who = \"schedule\" }\npriority = 5",
    );
    let registry = Registry::from_definitions([definition("beat", &file)]);
    let t0 = at("2026-06-01T12:00:00Z");
    scheduler::sync(&pool, &registry, t0).await.unwrap();
    assert_eq!(schedule(&pool, "beat").await.priority, 5);
    let report = pass(&pool, &registry, secs(t0, 1.01)).await;
    assert_eq!(report.fired, 1);
    let priorities: Vec<i16> = sqlx::query_scalar("select priority from runs")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(priorities, [5]);

    let bad = cairn::workflow::Definition::parse(
        "beat",
        "beat.toml",
        &ONE_SCHEDULE.replace("input = { who = \"schedule\" }", "priority = 1001"),
    )
    .unwrap_err();
    assert!(bad.to_string().contains("priority is 0 to 1000"), "{bad}");

    let api = TestApi::builder(&pool)
        .registry(Registry::from_definitions([definition("beat", &file)]))
        .start()
        .await;
    let (code, body) = api
        .call(
            "POST",
            "/api/schedules",
            Some(
                json!({ "name": "urgent", "workflow": "beat", "cron": "0 6 * * *", "priority": 9 }),
            ),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["priority"], 9, "{body}");
    let (code, body) = api
        .call(
            "PATCH",
            "/api/schedules/urgent",
            Some(json!({ "priority": 2000 })),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    let (code, out, err) = api
        .ctl(&["schedule", "update", "urgent", "--priority", "3"])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(schedule(&pool, "urgent").await.priority, 3);
}
