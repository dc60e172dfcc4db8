//! Retention: the reaper deletes exactly the finished runs past their status's window,
//! with every row that hangs off them, in bounded batches that skip what others hold;
//! it keeps pinned runs (an operator's pin, a `retain = "forever"` workflow) and every
//! run that is not final; one reaper works at a time; expired sessions and tokens,
//! silent workers and old runless ticks go too; the API and `ctl` show the settings and
//! the passes; and `cairn scheduler` runs the reaper.
//!
//! Runs are made by running real workflows, then their finish is moved into the past;
//! the reaper's `now` is injected.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use cairn::auth::Role;
use cairn::scheduler::reaper::{self, Pass, PassReport, ReaperSettings};
use cairn::workflow::{Definition, Registry};
use chrono::{DateTime, Utc};
use common::*;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const OK: &str = r#"
[[steps]]
id = "a"
kind = "pass"
output = { done = true }
"#;

const BOOM: &str = r#"
[defaults]
retry = { max_attempts = 1 }

[[steps]]
id = "boom"
kind = "sql"
query = "select 1 / 0"
"#;

const KEEPER: &str = r#"
retain = "forever"

[[steps]]
id = "a"
kind = "pass"
"#;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn days(n: i64) -> chrono::Duration {
    chrono::Duration::days(n)
}

/// The tables a run's rows are in, and how many rows `ids` have in each.
const TABLES: &[(&str, &str)] = &[
    ("runs", "id"),
    ("steps", "run_id"),
    ("step_attempts", "run_id"),
    ("run_events", "run_id"),
    ("dead_letters", "run_id"),
];

async fn rows_of(pool: &PgPool, ids: &[String]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for (table, column) in TABLES {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select count(*) from {table} where {column} = any($1)"
        )))
        .bind(ids)
        .fetch_one(pool)
        .await
        .unwrap();
        if n > 0 {
            out.insert((*table).to_owned(), n);
        }
    }
    out
}

async fn status_of(pool: &PgPool, id: &str) -> Option<String> {
    sqlx::query_scalar("select status from runs where id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .unwrap()
}

async fn finished_ago(pool: &PgPool, ids: &[String], now: DateTime<Utc>, ago: chrono::Duration) {
    let done = sqlx::query(
        "update runs set finished_at = $2 where id = any($1) and finished_at is not null",
    )
    .bind(ids)
    .bind(now - ago)
    .execute(pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(done as usize, ids.len(), "every run is finished");
}

/// Runs `n` runs of `def` to their end with an in-process worker.
async fn finished_runs(pool: &PgPool, def: &Definition, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(submit(pool, def, json!({})).await);
    }
    let worker = TestWorker::start(pool, fast_settings());
    wait_finished(pool, &ids, Duration::from_secs(60)).await;
    worker.shutdown().await;
    ids
}

/// `n` queued runs of `def`, cancelled before any worker saw them.
async fn cancelled_runs(pool: &PgPool, def: &Definition, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let id = submit(pool, def, json!({})).await;
        cairn::engine::ops::cancel(pool, &id, "test")
            .await
            .unwrap()
            .expect("the run exists");
        assert_eq!(status_of(pool, &id).await.as_deref(), Some("cancelled"));
        ids.push(id);
    }
    ids
}

async fn reap(pool: &PgPool, settings: &ReaperSettings, now: DateTime<Utc>) -> PassReport {
    match reaper::pass(
        pool,
        settings,
        now,
        "test-reaper",
        &CancellationToken::new(),
    )
    .await
    .expect("pass")
    {
        Pass::Done(r) => {
            assert_eq!(r.error, None, "{r:?}");
            r
        }
        Pass::Skipped => panic!("the pass was skipped"),
    }
}

async fn pinned_of(pool: &PgPool, id: &str) -> bool {
    sqlx::query_scalar("select pinned from runs where id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn child_of(pool: &PgPool, parent: &str) -> String {
    sqlx::query_scalar("select id from runs where parent_run_id = $1")
        .bind(parent)
        .fetch_one(pool)
        .await
        .unwrap()
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// Per status, runs just past the window go with all their rows, runs just inside it
/// stay with all theirs; the pass reports what it deleted, table by table; the pass is
/// recorded.
#[sqlx::test(migrations = false)]
async fn retention_deletes_exactly_what_is_past_its_window(pool: PgPool) {
    migrate(&pool).await;
    let ok = definition("ok", OK);
    let boom = definition("boom", BOOM);
    let succeeded = finished_runs(&pool, &ok, 4).await;
    let dead = finished_runs(&pool, &boom, 4).await;
    for id in &dead {
        assert_eq!(status_of(&pool, id).await.as_deref(), Some("dead"));
    }
    let cancelled = cancelled_runs(&pool, &ok, 4).await;
    let now = Utc::now();
    // Defaults: succeeded and cancelled 7 days, dead 30.
    let settings = ReaperSettings::default();
    let (old_ok, young_ok) = succeeded.split_at(2);
    let (old_cancelled, young_cancelled) = cancelled.split_at(2);
    let (old_dead, young_dead) = dead.split_at(2);
    finished_ago(&pool, old_ok, now, days(7) + chrono::Duration::seconds(1)).await;
    finished_ago(&pool, young_ok, now, days(7) - chrono::Duration::seconds(1)).await;
    finished_ago(&pool, old_cancelled, now, days(8)).await;
    finished_ago(&pool, young_cancelled, now, days(6)).await;
    finished_ago(&pool, old_dead, now, days(31)).await;
    // Dead for 8 days: past the other statuses' window, not past its own.
    finished_ago(&pool, young_dead, now, days(8)).await;

    let old: Vec<String> = [old_ok, old_cancelled, old_dead].concat();
    let young: Vec<String> = [young_ok, young_cancelled, young_dead].concat();
    let old_rows = rows_of(&pool, &old).await;
    let young_rows = rows_of(&pool, &young).await;
    // What each kind of run is made of: a one-step run that succeeded is 8 rows (run,
    // step, attempt, 5 events); a dead one 8 and its dead letter; a run cancelled while
    // queued 4 (run, step, 2 events).
    assert_eq!(rows_of(&pool, &old_ok[..1]).await.values().sum::<i64>(), 8);
    assert_eq!(
        rows_of(&pool, &old_dead[..1]).await.values().sum::<i64>(),
        9
    );
    assert_eq!(
        rows_of(&pool, &old_cancelled[..1])
            .await
            .values()
            .sum::<i64>(),
        4
    );

    let report = reap(&pool, &settings, now).await;
    assert_eq!(
        report.runs,
        counts(&[("succeeded", 2), ("cancelled", 2), ("dead", 2)])
    );
    let expected: BTreeMap<String, u64> = old_rows
        .iter()
        .map(|(t, n)| (t.clone(), *n as u64))
        .collect();
    assert_eq!(report.deleted, expected, "the report counts every row");
    assert!(report.complete);
    assert!(
        rows_of(&pool, &old).await.is_empty(),
        "nothing of them is left"
    );
    assert_eq!(
        rows_of(&pool, &young).await,
        young_rows,
        "the others are whole"
    );

    // A second pass at the same time finds nothing; one two days later takes the
    // succeeded and cancelled runs that were inside their window, not the dead ones.
    let again = reap(&pool, &settings, now).await;
    assert_eq!(again.runs_deleted(), 0);
    assert_eq!(again.rows_deleted(), 0);
    let later = reap(&pool, &settings, now + days(2)).await;
    assert_eq!(
        later.runs,
        counts(&[("succeeded", 2), ("cancelled", 2), ("dead", 0)])
    );
    assert_eq!(rows_of(&pool, young_dead).await.get("runs"), Some(&2));

    // `forever` keeps a status whatever the age.
    let keep_dead = ReaperSettings {
        dead: None,
        ..ReaperSettings::default()
    };
    let kept = reap(&pool, &keep_dead, now + days(10_000)).await;
    assert_eq!(kept.runs_deleted(), 0);
    assert_eq!(rows_of(&pool, young_dead).await.get("runs"), Some(&2));

    // Every pass was recorded, newest last, with its settings.
    let passes: Vec<(Value, Value, bool)> =
        sqlx::query_as("select runs, settings, complete from retention_passes order by id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(passes.len(), 4);
    assert_eq!(passes[0].0["dead"], 2);
    assert_eq!(passes[0].1["succeeded"], 7 * 86_400);
    assert_eq!(passes[0].1["dead"], 30 * 86_400);
    assert_eq!(passes[3].1["dead"], Value::Null);
    assert!(passes.iter().all(|p| p.2));
}

/// More runs than a batch holds go in several batches, every one of them; a run whose
/// row another transaction holds is skipped, not waited for, and goes in a later pass.
#[sqlx::test(migrations = false)]
async fn retention_works_in_batches_and_skips_what_others_hold(pool: PgPool) {
    migrate(&pool).await;
    let ok = definition("ok", OK);
    let ids = finished_runs(&pool, &ok, 25).await;
    let now = Utc::now();
    finished_ago(&pool, &ids, now, days(30)).await;
    let settings = ReaperSettings {
        batch: 10,
        ..ReaperSettings::default()
    };

    // A worker (or an operator) holds one of them.
    let held = ids[0].clone();
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("select id from runs where id = $1 for no key update")
        .bind(&held)
        .execute(&mut *holder)
        .await
        .unwrap();

    let report = tokio::time::timeout(Duration::from_secs(30), reap(&pool, &settings, now))
        .await
        .expect("the pass does not wait for the held run");
    assert_eq!(report.runs["succeeded"], 24);
    assert_eq!(report.deleted["runs"], 24);
    assert_eq!(report.deleted["run_events"], 24 * 5);
    // Succeeded: batches of 10, 10 and 4; then one batch each that finds nothing:
    // cancelled, dead, ticks, sessions, tokens, workers, and notifications (delivered
    // or skipped, then given up).
    assert_eq!(report.batches, 3 + 8);
    assert_eq!(rows_of(&pool, &ids).await.get("runs"), Some(&1));
    assert_eq!(status_of(&pool, &held).await.as_deref(), Some("succeeded"));

    holder.commit().await.unwrap();
    let report = reap(&pool, &settings, now).await;
    assert_eq!(report.runs["succeeded"], 1);
    assert!(rows_of(&pool, &ids).await.is_empty());
}

/// Pinned runs stay whatever their age: runs of a `retain = "forever"` workflow are
/// pinned when queued, operators pin and unpin through the API (with an event each),
/// pinning a run pins its child runs, and a child started by a pinned run is pinned.
#[sqlx::test(migrations = false)]
async fn pinned_runs_and_forever_workflows_are_kept(pool: PgPool) {
    migrate(&pool).await;
    let ok = definition("ok", OK);
    let keeper = definition("keeper", KEEPER);
    let parent = definition(
        "parent",
        "[[steps]]\nid = \"call\"\nkind = \"workflow\"\nworkflow = \"ok\"\ninput = {}\n",
    );
    let forever_parent = definition(
        "forever_parent",
        "retain = \"forever\"\n\n[[steps]]\nid = \"call\"\nkind = \"workflow\"\nworkflow = \"ok\"\ninput = {}\n",
    );
    let registry = Registry::from_definitions([
        ok.clone(),
        keeper.clone(),
        parent.clone(),
        forever_parent.clone(),
    ]);
    let api = TestApi::builder(&pool).registry(registry).start().await;
    let operator = token(&pool, Role::Operator).await;
    let viewer = token(&pool, Role::Viewer).await;
    let mut tops = Vec::new();
    for workflow in ["ok", "ok", "keeper", "parent", "forever_parent"] {
        let (status, body) = api
            .call_as(
                &operator,
                "POST",
                "/api/tasks",
                Some(json!({ "workflow": workflow, "input": {} })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        tops.push(body["taskId"].as_str().unwrap().to_owned());
    }
    let [plain, pinned, kept, parent_run, forever_run] =
        <[String; 5]>::try_from(tops.clone()).unwrap();
    let worker = TestWorker::start(&pool, fast_settings());
    wait_finished(&pool, &tops, Duration::from_secs(60)).await;
    worker.shutdown().await;
    let child = child_of(&pool, &parent_run).await;
    let forever_child = child_of(&pool, &forever_run).await;
    assert!(
        pinned_of(&pool, &kept).await,
        "retain = forever pins at submit"
    );
    assert!(pinned_of(&pool, &forever_run).await);
    assert!(
        pinned_of(&pool, &forever_child).await,
        "a child started by a pinned run is pinned"
    );
    assert!(!pinned_of(&pool, &plain).await);
    assert!(!pinned_of(&pool, &child).await);

    // Viewers may not pin; operators may; an unknown run is 404.
    let (status, _) = api
        .call_as(&viewer, "POST", &format!("/api/tasks/{pinned}/pin"), None)
        .await;
    assert_eq!(status, 403);
    let (status, _) = api
        .call_as(&operator, "POST", "/api/tasks/01NOPE/pin", None)
        .await;
    assert_eq!(status, 404);
    let (status, body) = api
        .call_as(&operator, "POST", &format!("/api/tasks/{pinned}/pin"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pinned"], true);
    assert_eq!(body["changed"], json!([pinned]));
    // Pinning a parent pins its child; pinning again changes nothing.
    let (_, body) = api
        .call_as(
            &operator,
            "POST",
            &format!("/api/tasks/{parent_run}/pin"),
            None,
        )
        .await;
    let mut both = vec![parent_run.clone(), child.clone()];
    both.sort();
    assert_eq!(body["changed"], json!(both));
    let (_, body) = api
        .call_as(
            &operator,
            "POST",
            &format!("/api/tasks/{parent_run}/pin"),
            None,
        )
        .await;
    assert_eq!(body["changed"], json!([]));
    let events: Vec<(String, Value)> = sqlx::query_as(
        "select kind, data from run_events where run_id = $1 and kind like 'run_%pinned'",
    )
    .bind(&child)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "run_pinned");
    assert_eq!(events[0].1["run"], json!(parent_run));
    // The run's page and the list say so.
    let (_, page) = api
        .call_as(&viewer, "GET", &format!("/api/tasks/{pinned}"), None)
        .await;
    assert_eq!(page["pinned"], true);
    let (_, list) = api
        .call_as(&viewer, "GET", "/api/tasks?workflow=keeper", None)
        .await;
    assert_eq!(list["items"][0]["pinned"], true);

    let all = [tops.clone(), vec![child.clone(), forever_child.clone()]].concat();
    let now = Utc::now();
    finished_ago(&pool, &all, now, days(365)).await;
    let report = reap(&pool, &ReaperSettings::default(), now).await;
    assert_eq!(report.runs["succeeded"], 1, "only the plain run goes");
    assert_eq!(status_of(&pool, &plain).await, None);
    for id in [
        &pinned,
        &kept,
        &parent_run,
        &child,
        &forever_run,
        &forever_child,
    ] {
        assert_eq!(
            status_of(&pool, id).await.as_deref(),
            Some("succeeded"),
            "{id}"
        );
    }

    // Unpinned (even a forever workflow's run), they go at the next pass.
    for id in [&pinned, &kept] {
        let (status, body) = api
            .call_as(&operator, "POST", &format!("/api/tasks/{id}/unpin"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["pinned"], false);
    }
    let report = reap(&pool, &ReaperSettings::default(), now).await;
    assert_eq!(report.runs["succeeded"], 2);
    assert_eq!(status_of(&pool, &pinned).await, None);
    assert_eq!(status_of(&pool, &kept).await, None);
    drop(api);
}

/// Runs that are not final are never deleted, however old: queued, running (leased),
/// sleeping, and a dead run retried (queued again); nor is a finished run whose child
/// run is still going.
#[sqlx::test(migrations = false)]
async fn runs_that_are_not_final_are_never_touched(pool: PgPool) {
    migrate(&pool).await;
    let ok = definition("ok", OK);
    let boom = definition("boom", BOOM);
    let nap = definition(
        "nap",
        "[[steps]]\nid = \"zz\"\nkind = \"sleep\"\nduration = \"1h\"\n",
    );
    let parent = finished_runs(&pool, &ok, 1).await.remove(0);
    let napping = submit(&pool, &nap, json!({})).await;
    let retried = finished_runs(&pool, &boom, 1).await.remove(0);
    let worker = TestWorker::start(&pool, fast_settings());
    wait_until(&pool, Duration::from_secs(60), "the run to sleep", || {
        let pool = pool.clone();
        let id = napping.clone();
        async move { status_of(&pool, &id).await.as_deref() == Some("sleeping") }
    })
    .await;
    worker.shutdown().await;
    let queued = submit(&pool, &ok, json!({})).await;
    let running = submit(&pool, &ok, json!({})).await;
    cairn::store::runs::run_lease_acquire(&pool, &running, "elsewhere", Duration::from_secs(600))
        .await
        .unwrap()
        .expect("leased");
    cairn::engine::ops::retry(&pool, &retried, "test")
        .await
        .unwrap()
        .expect("retried");
    // A run past its window whose child run is still going (queued) stays until the
    // child finishes.
    let child = submit(&pool, &ok, json!({})).await;
    sqlx::query("update runs set parent_run_id = $1 where id = $2")
        .bind(&parent)
        .bind(&child)
        .execute(&pool)
        .await
        .unwrap();
    finished_ago(&pool, std::slice::from_ref(&parent), Utc::now(), days(365)).await;
    let ids = vec![napping, queued, running, retried];
    sqlx::query("update runs set created_at = now() - interval '3 years' where id = any($1)")
        .bind(&ids)
        .execute(&pool)
        .await
        .unwrap();
    let before = rows_of(&pool, &ids).await;

    let tiny = ReaperSettings {
        succeeded: Some(Duration::from_secs(1)),
        cancelled: Some(Duration::from_secs(1)),
        dead: Some(Duration::from_secs(1)),
        ..ReaperSettings::default()
    };
    let report = reap(&pool, &tiny, Utc::now() + days(10_000)).await;
    assert_eq!(report.runs_deleted(), 0);
    assert_eq!(rows_of(&pool, &ids).await, before);
    let statuses: Vec<String> =
        sqlx::query_scalar("select status from runs where id = any($1) order by status")
            .bind(&ids)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(statuses, ["queued", "queued", "running", "sleeping"]);
    assert_eq!(
        status_of(&pool, &parent).await.as_deref(),
        Some("succeeded")
    );

    cairn::engine::ops::cancel(&pool, &child, "test")
        .await
        .unwrap()
        .expect("the child exists");
    let report = reap(&pool, &ReaperSettings::default(), Utc::now()).await;
    assert_eq!(
        report.runs["succeeded"], 1,
        "the parent goes once its child is final"
    );
    assert_eq!(status_of(&pool, &parent).await, None);
    assert_eq!(status_of(&pool, &child).await.as_deref(), Some("cancelled"));
}

/// One reaper at a time: while another session holds the reaper lock (another
/// scheduler's pass under way) a pass does nothing; once it is free the pass works, and
/// gives the lock back.
#[sqlx::test(migrations = false)]
async fn two_reapers_do_not_work_at_once(pool: PgPool) {
    migrate(&pool).await;
    let ok = definition("ok", OK);
    let ids = finished_runs(&pool, &ok, 3).await;
    let now = Utc::now();
    finished_ago(&pool, &ids, now, days(30)).await;

    let mut other = pool.acquire().await.unwrap();
    assert!(
        cairn::store::retention::reaper_lock_try(&mut other)
            .await
            .unwrap()
    );
    let settings = ReaperSettings::default();
    let stop = CancellationToken::new();
    let skipped = reaper::pass(&pool, &settings, now, "second", &stop)
        .await
        .unwrap();
    assert_eq!(skipped, Pass::Skipped);
    assert_eq!(rows_of(&pool, &ids).await.get("runs"), Some(&3));
    let recorded: i64 = sqlx::query_scalar("select count(*) from retention_passes")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(recorded, 0, "a skipped pass is not recorded");

    // Two passes racing while the lock is free: both may run, one after the other,
    // never both deleting: every run is deleted once.
    cairn::store::retention::reaper_unlock(&mut other)
        .await
        .unwrap();
    drop(other);
    let (a, b) = tokio::join!(
        reaper::pass(&pool, &settings, now, "a", &stop),
        reaper::pass(&pool, &settings, now, "b", &stop)
    );
    let deleted: u64 = [a.unwrap(), b.unwrap()]
        .iter()
        .map(|p| match p {
            Pass::Done(r) => r.runs_deleted(),
            Pass::Skipped => 0,
        })
        .sum();
    assert_eq!(deleted, 3);
    let locks: i64 = sqlx::query_scalar(
        "select count(*) from pg_locks
              where locktype = 'advisory'
                and database = (select oid from pg_database where datname = current_database())",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(locks, 0, "no pass keeps the lock");
}

/// A pass told to stop ends between batches and says it stopped part-way; a batch that
/// would wait on a lock for long gives up, deletes nothing of that batch, and the pass
/// records the error; the next pass deletes what is due.
#[sqlx::test(migrations = false)]
async fn a_pass_stops_between_batches_and_gives_up_on_long_locks(pool: PgPool) {
    migrate(&pool).await;
    let boom = definition("boom", BOOM);
    let ids = finished_runs(&pool, &boom, 2).await;
    let now = Utc::now();
    finished_ago(&pool, &ids, now, days(60)).await;
    let settings = ReaperSettings::default();

    let stopped = CancellationToken::new();
    stopped.cancel();
    let Pass::Done(r) = reaper::pass(&pool, &settings, now, "test", &stopped)
        .await
        .unwrap()
    else {
        panic!("skipped")
    };
    assert!(!r.complete);
    assert_eq!(r.runs_deleted(), 0);

    // Someone holds a dead letter of one of them: the runs are free, but deleting them
    // would wait for that lock.
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("select id from dead_letters where run_id = $1 for update")
        .bind(&ids[0])
        .execute(&mut *holder)
        .await
        .unwrap();
    let Pass::Done(r) = reaper::pass(&pool, &settings, now, "test", &CancellationToken::new())
        .await
        .unwrap()
    else {
        panic!("skipped")
    };
    assert!(!r.complete);
    let error = r.error.expect("the batch gave up");
    assert!(error.contains("lock timeout"), "{error}");
    assert_eq!(rows_of(&pool, &ids).await.get("runs"), Some(&2));
    let recorded: (bool, Option<String>) =
        sqlx::query_as("select complete, error from retention_passes order by id desc limit 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!recorded.0);
    assert!(recorded.1.is_some_and(|e| e.contains("lock timeout")));
    holder.commit().await.unwrap();

    let report = reap(&pool, &settings, now).await;
    assert_eq!(report.runs["dead"], 2);
    assert_eq!(report.deleted["dead_letters"], 2);
    assert!(rows_of(&pool, &ids).await.is_empty());
}

/// Expired sessions and tokens, workers silent for a week, runless ticks older than
/// the longest window, and the ticks of deleted runs go; the rest stays.
#[sqlx::test(migrations = false)]
async fn sessions_tokens_workers_and_ticks_are_cleaned(pool: PgPool) {
    migrate(&pool).await;
    let now = Utc::now();
    let user = cairn::auth::create_user(&pool, "a@example.com", "A", "password1", Role::Admin)
        .await
        .unwrap();
    for (hash, expires) in [("s-old", now - days(1)), ("s-live", now + days(1))] {
        sqlx::query("insert into sessions (token_hash, user_id, expires_at) values ($1, $2, $3)")
            .bind(hash)
            .bind(user.id)
            .bind(expires)
            .execute(&pool)
            .await
            .unwrap();
    }
    for (name, expires) in [
        ("t-expired", Some(now - chrono::Duration::minutes(1))),
        ("t-live", Some(now + days(1))),
        ("t-never", None),
    ] {
        sqlx::query(
            "insert into api_tokens (name, token_hash, role, expires_at) values ($1, $1, 'viewer', $2)",
        )
        .bind(name)
        .bind(expires)
        .execute(&pool)
        .await
        .unwrap();
    }
    for (id, seen) in [
        ("w-gone", now - days(8)),
        ("w-stopped-recently", now - days(6)),
        ("w-live", now),
    ] {
        sqlx::query(
            "insert into workers (id, hostname, pid, version, concurrency, last_heartbeat_at)
             values ($1, 'h', 1, 'v', 1, $2)",
        )
        .bind(id)
        .bind(seen)
        .execute(&pool)
        .await
        .unwrap();
    }
    // A schedule whose ticks: one fired a run that is past its window, one skipped
    // long ago, one skipped recently.
    let ok = definition("ok", OK);
    let fired = finished_runs(&pool, &ok, 1).await;
    finished_ago(&pool, &fired, now, days(8)).await;
    sqlx::query(
        "insert into schedules (id, name, workflow, cron, source) values ('s1', 's', 'ok', '* * * * *', 'api')",
    )
    .execute(&pool)
    .await
    .unwrap();
    for (tick, outcome, run, handled) in [
        (1, "fired", Some(fired[0].as_str()), now - days(8)),
        (2, "skipped_overlap", None, now - days(31)),
        (3, "skipped_overlap", None, now - days(29)),
    ] {
        sqlx::query(
            "insert into schedule_ticks (schedule_id, tick_at, kind, outcome, run_id, scheduler, handled_at)
             values ('s1', $1, 'on_time', $2, $3, 'test', $4)",
        )
        .bind(now - chrono::Duration::minutes(tick))
        .bind(outcome)
        .bind(run)
        .bind(handled)
        .execute(&pool)
        .await
        .unwrap();
    }

    let report = reap(&pool, &ReaperSettings::default(), now).await;
    assert_eq!(report.deleted["sessions"], 1);
    assert_eq!(report.deleted["api_tokens"], 1);
    assert_eq!(report.deleted["workers"], 1);
    // The fired tick went with its run, the old skipped one on its own.
    assert_eq!(report.deleted["schedule_ticks"], 2);
    assert_eq!(report.runs["succeeded"], 1);
    let left = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(sql)
                .fetch_all(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(left("select token_hash from sessions").await, ["s-live"]);
    assert_eq!(
        left("select name from api_tokens order by name").await,
        ["t-live", "t-never"]
    );
    assert_eq!(
        left("select id from workers where id like 'w-%' order by id").await,
        ["w-live", "w-stopped-recently"]
    );
    assert_eq!(
        left("select outcome || ' ' || (run_id is null)::text from schedule_ticks").await,
        ["skipped_overlap true"]
    );
    assert_eq!(left("select id from schedules").await, ["s1"]);

    // With any status kept for ever, runless ticks are kept too.
    sqlx::query("update schedule_ticks set handled_at = now() - interval '10 years'")
        .execute(&pool)
        .await
        .unwrap();
    let keep = ReaperSettings {
        cancelled: None,
        ..ReaperSettings::default()
    };
    let report = reap(&pool, &keep, now).await;
    assert_eq!(report.deleted.get("schedule_ticks"), None);
}

/// `GET /api/retention` and `ctl retention` show the settings of the latest pass and
/// what the passes deleted; `ctl task pin` and `unpin` pin and unpin.
#[sqlx::test(migrations = false)]
async fn the_api_and_ctl_show_the_settings_and_the_passes(pool: PgPool) {
    migrate(&pool).await;
    let ok = definition("ok", OK);
    let registry = Registry::from_definitions([ok.clone()]);
    let api = TestApi::builder(&pool).registry(registry).start().await;
    let viewer = token(&pool, Role::Viewer).await;
    let operator = token(&pool, Role::Operator).await;
    // Before any pass.
    let (code, out, err) = ctl_at(&api.base, &viewer, &["retention"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("No reaper pass recorded yet"), "{out}");
    assert!(out.contains("cairn scheduler"), "{out}");

    let ids = finished_runs(&pool, &ok, 3).await;
    let now = Utc::now();
    finished_ago(&pool, &ids, now, days(2)).await;
    let settings = ReaperSettings {
        succeeded: Some(DAY),
        dead: None,
        ..ReaperSettings::default()
    };
    let keep = ids[0].clone();
    let (code, out, err) = ctl_at(&api.base, &operator, &["task", "pin", &keep]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("pinned: retention keeps it"), "{out}");
    let report = reap(&pool, &settings, now).await;
    assert_eq!(report.runs["succeeded"], 2);

    let (_, body) = api.call_as(&viewer, "GET", "/api/retention", None).await;
    assert_eq!(body["settings"]["succeeded"], 86_400);
    assert_eq!(body["settings"]["cancelled"], 7 * 86_400);
    assert_eq!(body["settings"]["dead"], Value::Null);
    assert_eq!(body["settings"]["ticks"], Value::Null);
    assert_eq!(body["settings"]["batch"], 1000);
    let pass = &body["passes"][0];
    assert_eq!(pass["reaper"], "test-reaper");
    assert_eq!(pass["runsDeleted"], 2);
    assert_eq!(pass["runs"]["succeeded"], 2);
    assert_eq!(pass["rowsDeleted"], 16, "two one-step runs, 8 rows each");
    assert_eq!(pass["complete"], true);
    assert!(pass["durationMs"].as_i64().is_some());

    let (code, out, err) = ctl_at(&api.base, &viewer, &["retention"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("deleted 1d after they finished"), "{out}");
    assert!(out.contains("kept forever"), "{out}");
    assert!(out.contains("test-reaper"), "{out}");
    assert!(out.contains("complete"), "{out}");
    let (code, out, _) = ctl_at(
        &api.base,
        &viewer,
        &["retention", "--limit", "1", "-o", "json"],
    )
    .await;
    assert_eq!(code, 0);
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["passes"].as_array().map(Vec::len), Some(1));
    assert_eq!(json["passes"][0]["rowsDeleted"], 16);

    let (code, out, err) = ctl_at(&api.base, &operator, &["task", "unpin", &keep]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("unpinned"), "{out}");
    let report = reap(&pool, &settings, now).await;
    assert_eq!(report.runs["succeeded"], 1);

    // A limit out of range is refused.
    let (status, _) = api
        .call_as(&viewer, "GET", "/api/retention?limit=0", None)
        .await;
    assert_eq!(status, 400);
    drop(api);
}

/// Starts `cairn ARGS` on the test's database with `--retain-succeeded 2h` and a
/// run that finished 3 hours ago beside one that just finished, and waits for the
/// process's reaper to record its first pass: the old run goes, the new one stays, and
/// the pass is recorded under the process's name with the settings it was given.
async fn the_process_runs_the_reaper(pool: &PgPool, args: &[&str]) {
    let ok = definition("ok", OK);
    let ids = finished_runs(pool, &ok, 2).await;
    let now = Utc::now();
    finished_ago(pool, &ids[..1], now, chrono::Duration::hours(3)).await;
    let dir = std::env::temp_dir().join(format!("cairn-retention-{}", ulid::Ulid::generate()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ok.toml"), OK).unwrap();
    let log = dir.join("process.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .args(["--retain-succeeded", "2h", "--reaper-interval", "1h"])
        .env("DATABASE_URL", database_url(pool))
        .env("CAIRN_NO_MIGRATE", "true")
        .env("CAIRN_WORKFLOWS_DIR", &dir)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let pass: (String, Value, Value) = loop {
        let row: Option<(String, Value, Value)> = sqlx::query_as(
            "select reaper, runs, settings from retention_passes order by id desc limit 1",
        )
        .fetch_optional(pool)
        .await
        .unwrap();
        if let Some(row) = row {
            break row;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{args:?} exited ({status}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no pass within 60 s: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        // No event tells of a pass: look again shortly.
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(pass.0.starts_with("scheduler-"), "{pass:?}");
    assert_eq!(pass.1["succeeded"], 1);
    assert_eq!(pass.2["succeeded"], 7200);
    assert_eq!(pass.2["dead"], 30 * 86_400);
    assert_eq!(pass.2["interval"], 3600);
    assert_eq!(status_of(pool, &ids[0]).await, None);
    assert_eq!(status_of(pool, &ids[1]).await.as_deref(), Some("succeeded"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[sqlx::test(migrations = false)]
async fn cairn_scheduler_runs_the_reaper(pool: PgPool) {
    migrate(&pool).await;
    the_process_runs_the_reaper(&pool, &["scheduler"]).await;
}

/// `cairn dev` (API, worker and scheduler in one process) runs it too.
#[sqlx::test(migrations = false)]
async fn cairn_dev_runs_the_reaper(pool: PgPool) {
    migrate(&pool).await;
    the_process_runs_the_reaper(&pool, &["dev", "--listen", "127.0.0.1:0"]).await;
}
