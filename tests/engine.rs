//! The engine end to end against a real Postgres (one database per test): DAGs with
//! parallel branches, retries with backoff, dead letters, fencing, timers, conditions.

mod common;

use std::time::Duration;

use cairn::store;
use common::*;
use serde_json::{Value, json};
use sqlx::PgPool;

#[sqlx::test(migrations = false)]
async fn parallel_branches_overlap_and_the_dag_completes(pool: PgPool) {
    migrate(&pool).await;
    let (addr, seen) = spawn_service(&pool, 2).await;
    let def = definition(
        "diamond",
        &format!(
            r#"
[defaults]
retry = {{ max_attempts = 1 }}

[[steps]]
id = "a"
kind = "sql"
query = "select 1 as one"

[[steps]]
id = "b"
kind = "http"
needs = ["a"]
method = "POST"
url = "http://{addr}/barrier"

[[steps]]
id = "c"
kind = "http"
needs = ["a"]
method = "POST"
url = "http://{addr}/barrier"

[[steps]]
id = "d"
kind = "sql"
needs = ["b", "c"]
query = "select $1::int + $2::int as total"
params = ["{{{{ steps.b.output.status }}}}", "{{{{ steps.c.output.status }}}}"]
"#
        ),
    );
    let worker = TestWorker::start(&pool, fast_settings());
    let id = submit(&pool, &def, json!({})).await;
    let statuses = wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(60)).await;
    worker.shutdown().await;

    assert_eq!(statuses[&id], "succeeded");
    // The barrier only opens when both requests are in flight at once.
    let b = attempts(&pool, &id, "b").await;
    let c = attempts(&pool, &id, "c").await;
    assert_eq!((b.len(), c.len()), (1, 1));
    let (b_start, b_end) = (b[0].1, b[0].2.unwrap());
    let (c_start, c_end) = (c[0].1, c[0].2.unwrap());
    assert!(
        b_start < c_end && c_start < b_end,
        "b and c did not overlap"
    );
    assert_eq!(seen.count(&format!("{id}/b")), 1);
    let output: Value = sqlx::query_scalar("select output from runs where id = $1")
        .bind(&id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        output,
        json!({ "d": { "rows": [{ "total": 400 }], "rowCount": 1 } })
    );
    // d started only after both b and c were checkpointed.
    let d = attempts(&pool, &id, "d").await;
    assert!(d[0].1 >= b_end && d[0].1 >= c_end);
}

#[sqlx::test(migrations = false)]
async fn a_flaky_step_is_retried_with_growing_delays(pool: PgPool) {
    migrate(&pool).await;
    let (addr, seen) = spawn_service(&pool, 1).await;
    let def = definition(
        "flaky",
        &format!(
            r#"
[[steps]]
id = "call"
kind = "http"
method = "POST"
url = "http://{addr}/flaky/2"
retry = {{ max_attempts = 5, initial_delay = "200ms", max_delay = "10s", multiplier = 3, jitter = 0 }}
"#
        ),
    );
    let worker = TestWorker::start(&pool, fast_settings());
    let id = submit(&pool, &def, json!({})).await;
    let statuses = wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(60)).await;
    worker.shutdown().await;

    assert_eq!(statuses[&id], "succeeded");
    let tries = attempts(&pool, &id, "call").await;
    let kinds: Vec<&str> = tries.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(kinds, ["failed", "failed", "succeeded"]);
    assert_eq!(seen.count(&format!("{id}/call")), 3);
    // Delays follow the policy: 200ms, then 200ms × 3.
    let delays: Vec<Option<i64>> = tries.iter().map(|t| t.4).collect();
    assert_eq!(delays, [Some(200), Some(600), None]);
    for (i, want) in [(1usize, 200i64), (2, 600)] {
        let waited = (tries[i].1 - tries[i - 1].2.unwrap()).num_milliseconds();
        assert!(
            waited >= want,
            "attempt {} began {waited}ms after the failure, before its {want}ms delay",
            i + 1
        );
    }
    assert!(tries[0].3.as_deref().unwrap().contains("503"));
    // The run was parked, not held, between attempts.
    let parked: i64 = sqlx::query_scalar(
        "select count(*) from run_events where run_id = $1 and kind = 'run_retrying'",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(parked, 2);
}

#[sqlx::test(migrations = false)]
async fn a_step_that_always_fails_dead_letters_the_run_with_every_attempt(pool: PgPool) {
    migrate(&pool).await;
    let (addr, seen) = spawn_service(&pool, 1).await;
    let def = definition(
        "doomed",
        &format!(
            r#"
[input]
who = {{ type = "string" }}

[[steps]]
id = "first"
kind = "sql"
query = "select 1 as ok"

[[steps]]
id = "call"
kind = "http"
needs = ["first"]
method = "POST"
url = "http://{addr}/status/500"
retry = {{ max_attempts = 3, initial_delay = "100ms", multiplier = 2, jitter = 0 }}

[[steps]]
id = "after"
kind = "sql"
needs = ["call"]
query = "select 1"
"#
        ),
    );
    let worker = TestWorker::start(&pool, fast_settings());
    let id = submit(&pool, &def, json!({ "who": "ada" })).await;
    let statuses = wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(60)).await;
    worker.shutdown().await;

    assert_eq!(statuses[&id], "dead");
    assert_eq!(seen.count(&format!("{id}/call")), 3);
    let (step, error, attempts, input): (String, String, Value, Value) = sqlx::query_as(
        "select step_id, error, attempts, input from dead_letters where run_id = $1",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(step, "call");
    assert!(
        error.contains("500") && error.contains("no attempts left"),
        "{error}"
    );
    assert_eq!(input, json!({ "who": "ada" }));
    let attempts = attempts.as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    for a in attempts {
        assert_eq!(a["status"], "failed");
        assert!(a["error"].as_str().unwrap().contains("500"));
        assert!(a["startedAt"].is_string() && a["finishedAt"].is_string());
    }
    // The downstream step never ran; the first step kept its checkpoint.
    let states: Vec<(String, String)> =
        sqlx::query_as("select step_id, status from steps where run_id = $1 order by step_id")
            .bind(&id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        states,
        [
            ("after".to_owned(), "pending".to_owned()),
            ("call".to_owned(), "failed".to_owned()),
            ("first".to_owned(), "succeeded".to_owned())
        ]
    );
}

#[sqlx::test(migrations = false)]
async fn client_errors_are_fatal_at_once_but_429_is_retried(pool: PgPool) {
    migrate(&pool).await;
    let (addr, seen) = spawn_service(&pool, 1).await;
    let step = |code: u16| {
        format!(
            r#"
[[steps]]
id = "call"
kind = "http"
method = "POST"
url = "http://{addr}/status/{code}"
retry = {{ max_attempts = 2, initial_delay = "50ms", jitter = 0 }}
"#
        )
    };
    let not_found = definition("not_found", &step(404));
    let throttled = definition("throttled", &step(429));
    let worker = TestWorker::start(&pool, fast_settings());
    let a = submit(&pool, &not_found, json!({})).await;
    let b = submit(&pool, &throttled, json!({})).await;
    let statuses = wait_finished(&pool, &[a.clone(), b.clone()], Duration::from_secs(60)).await;
    worker.shutdown().await;
    assert_eq!(
        (statuses[&a].as_str(), statuses[&b].as_str()),
        ("dead", "dead")
    );
    assert_eq!(
        seen.count(&format!("{a}/call")),
        1,
        "404 must not be retried"
    );
    assert_eq!(seen.count(&format!("{b}/call")), 2, "429 must be retried");
}

#[sqlx::test(migrations = false)]
async fn sql_steps_are_read_only_unless_write_and_conditions_skip(pool: PgPool) {
    migrate(&pool).await;
    sqlx::query("create table notes (id serial primary key, body text not null)")
        .execute(&pool)
        .await
        .unwrap();
    let def = definition(
        "notes",
        r#"
[input]
body = { type = "string" }
loud = { type = "boolean", default = false }

[[steps]]
id = "insert"
kind = "sql"
mode = "write"
query = "insert into notes (body) values ($1) returning id, body"
params = ["{{ input.body }}"]

[[steps]]
id = "shout"
kind = "sql"
needs = ["insert"]
if = "input.loud"
query = "select upper($1) as body"
params = ["{{ steps.insert.output.rows[0].body }}"]

[[steps]]
id = "count"
kind = "sql"
needs = ["insert", "shout"]
query = "select count(*) as n from notes where id = $1"
params = ["{{ steps.insert.output.rows[0].id }}"]
"#,
    );
    let sneaky = definition(
        "sneaky",
        r#"
[[steps]]
id = "write"
kind = "sql"
query = "insert into notes (body) values ('nope')"
retry = { max_attempts = 3 }
"#,
    );
    let worker = TestWorker::start(&pool, fast_settings());
    let quiet = submit(&pool, &def, json!({ "body": "hi" })).await;
    let loud = submit(&pool, &def, json!({ "body": "hey", "loud": true })).await;
    let bad = submit(&pool, &sneaky, json!({})).await;
    let statuses = wait_finished(
        &pool,
        &[quiet.clone(), loud.clone(), bad.clone()],
        Duration::from_secs(60),
    )
    .await;
    worker.shutdown().await;

    assert_eq!(statuses[&quiet], "succeeded");
    assert_eq!(statuses[&loud], "succeeded");
    let step_status = |run: String, step: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "select status from steps where run_id = $1 and step_id = $2",
            )
            .bind(run)
            .bind(step)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(step_status(quiet.clone(), "shout").await, "skipped");
    assert_eq!(step_status(loud.clone(), "shout").await, "succeeded");
    // A read-only step cannot write, and that is not worth retrying.
    assert_eq!(statuses[&bad], "dead");
    assert_eq!(attempts(&pool, &bad, "write").await.len(), 1);
    let notes: i64 = sqlx::query_scalar("select count(*) from notes")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(notes, 2);
}

#[sqlx::test(migrations = false)]
async fn a_worker_whose_lease_expired_cannot_commit(pool: PgPool) {
    migrate(&pool).await;
    let def = definition(
        "one",
        "[[steps]]\nid = \"s\"\nkind = \"sql\"\nquery = \"select 1\"\n",
    );
    let id = submit(&pool, &def, json!({})).await;
    let ttl = Duration::from_secs(30);
    let first = store::runs::run_lease_acquire(&pool, &id, "worker-a", ttl)
        .await
        .unwrap()
        .expect("free run is acquired");
    // A live lease keeps everyone else out.
    assert!(
        store::runs::run_lease_acquire(&pool, &id, "worker-b", ttl)
            .await
            .unwrap()
            .is_none()
    );

    let mut tx = pool.begin().await.unwrap();
    store::steps::step_begin(&mut tx, &first.lease, "s", 1)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // worker-a stalls past its lease; worker-b takes over.
    sqlx::query(
        "update runs set lease_expires_at = clock_timestamp() - interval '1 second' where id = $1",
    )
    .bind(&id)
    .execute(&pool)
    .await
    .unwrap();
    let second = store::runs::run_lease_acquire(&pool, &id, "worker-b", ttl)
        .await
        .unwrap()
        .expect("expired lease is taken over");
    assert!(second.lease.token > first.lease.token);

    let mut tx = pool.begin().await.unwrap();
    let err =
        store::steps::step_succeed(&mut tx, &first.lease, "s", 1, &json!({"late": true}), None)
            .await
            .unwrap_err();
    assert!(matches!(err, store::StoreError::LeaseLost(_)), "{err}");
    drop(tx);
    let (status, attempt_status): (String, String) = sqlx::query_as(
        "select s.status, a.status from steps s join step_attempts a using (run_id, step_id)
          where s.run_id = $1 and a.attempt = 1",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(status, "pending", "the stalled attempt is handed back");
    assert_eq!(attempt_status, "abandoned");

    // The new owner commits normally.
    let mut tx = pool.begin().await.unwrap();
    store::steps::step_begin(&mut tx, &second.lease, "s", 2)
        .await
        .unwrap();
    store::steps::step_succeed(&mut tx, &second.lease, "s", 2, &json!({}), None)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn the_schema_enforces_the_state_machine(pool: PgPool) {
    migrate(&pool).await;
    let def = definition(
        "one",
        "[[steps]]\nid = \"s\"\nkind = \"sql\"\nquery = \"select 1\"\n",
    );
    let id = submit(&pool, &def, json!({})).await;
    for bad in [
        "update runs set status = 'succeeded' where id = $1",
        "update runs set status = 'bogus' where id = $1",
        "update runs set status = 'running' where id = $1",
        "update steps set status = 'succeeded' where run_id = $1",
        "update run_events set kind = 'x' where run_id = $1",
    ] {
        let r = sqlx::query(bad).bind(&id).execute(&pool).await;
        assert!(r.is_err(), "accepted: {bad}");
    }
}

#[sqlx::test(migrations = false)]
async fn sleep_steps_are_durable_timers(pool: PgPool) {
    migrate(&pool).await;
    let def = definition(
        "nap",
        "[[steps]]\nid = \"nap\"\nkind = \"sleep\"\nduration = \"1s\"\n\n[[steps]]\nid = \"after\"\nkind = \"sql\"\nneeds = [\"nap\"]\nquery = \"select 1 as one\"\n",
    );
    let worker = TestWorker::start(&pool, fast_settings());
    let id = submit(&pool, &def, json!({})).await;
    let statuses = wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(30)).await;
    worker.shutdown().await;
    assert_eq!(statuses[&id], "succeeded");
    let (wake_at, after_start): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as(
            "select (select wake_at from steps where run_id = $1 and step_id = 'nap'),
                    (select started_at from step_attempts where run_id = $1 and step_id = 'after')",
        )
        .bind(&id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        after_start >= wake_at,
        "the step after the timer ran before it fired"
    );
    let kinds: Vec<String> =
        sqlx::query_scalar("select kind from run_events where run_id = $1 order by id")
            .bind(&id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(kinds.contains(&"run_sleeping".to_owned()), "{kinds:?}");
    let abandoned = kinds.iter().filter(|k| *k == "step_abandoned").count();
    assert_eq!(abandoned, 0, "{kinds:?}");
}

/// A worker's fetch: taking wake-ups deletes them and leases their runs in one
/// statement — as many as asked, due ones only, each run once however often it was
/// woken, never a finished run or one a live worker holds — and a stopping worker hands
/// back what it took but never started.
#[sqlx::test(migrations = false)]
async fn taking_wake_ups_leases_their_runs_once_and_stopping_hands_them_back(pool: PgPool) {
    migrate(&pool).await;
    let def = definition(
        "one",
        "[[steps]]\nid = \"s\"\nkind = \"sql\"\nquery = \"select 1\"\n",
    );
    let ttl = Duration::from_secs(30);
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(submit(&pool, &def, json!({})).await);
    }
    // ids[0] woken twice more; ids[1] cancelled; ids[2] held by a live worker; ids[3]
    // has only a wake-up due in an hour besides its own.
    let mut tx = pool.begin().await.unwrap();
    cairn::queue::enqueue(
        &mut tx,
        &[
            cairn::queue::Wake::now(&ids[0]),
            cairn::queue::Wake::now(&ids[0]),
        ],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    sqlx::query("update runs set status = 'cancelled', finished_at = now() where id = $1")
        .bind(&ids[1])
        .execute(&pool)
        .await
        .unwrap();
    store::runs::run_lease_acquire(&pool, &ids[2], "worker-x", ttl)
        .await
        .unwrap()
        .expect("free run is acquired");
    sqlx::query(
        "delete from apalis.jobs
          where convert_from(job, 'utf8')::jsonb ->> 'run_id' = $1",
    )
    .bind(&ids[3])
    .execute(&pool)
    .await
    .unwrap();
    let mut tx = pool.begin().await.unwrap();
    cairn::queue::enqueue(
        &mut tx,
        &[cairn::queue::Wake {
            run_id: ids[3].clone(),
            at: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
        }],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let jobs = |pool: PgPool| async move {
        sqlx::query_scalar::<_, i64>("select count(*) from apalis.jobs")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(jobs(pool.clone()).await, 7);
    sqlx::query(
        "update apalis.jobs set run_at = now() - interval '1 hour'
          where convert_from(job, 'utf8')::jsonb ->> 'run_id' = $1",
    )
    .bind(&ids[0])
    .execute(&pool)
    .await
    .unwrap();

    // Asked for three: the three oldest wake-ups, all ids[0]'s, lease it once.
    let first = store::jobs::jobs_claim_runs(&pool, cairn::queue::QUEUE, "worker-a", ttl, 3)
        .await
        .unwrap();
    assert_eq!(
        first.iter().map(|a| a.run.id.as_str()).collect::<Vec<_>>(),
        [ids[0].as_str()]
    );
    assert_eq!(first[0].lease.owner, "worker-a");
    assert_eq!(jobs(pool.clone()).await, 4);

    let rest = store::jobs::jobs_claim_runs(&pool, cairn::queue::QUEUE, "worker-a", ttl, 100)
        .await
        .unwrap();
    let mut leased: Vec<&str> = rest.iter().map(|a| a.run.id.as_str()).collect();
    leased.sort();
    assert_eq!(
        leased,
        [ids[4].as_str()],
        "finished, held and not-yet-due runs stay"
    );
    // Every due wake-up is gone, including those that leased nothing; the one due in
    // an hour stays.
    assert_eq!(jobs(pool.clone()).await, 1);
    let owners: Vec<(String, Option<String>)> =
        sqlx::query_as("select status, lease_owner from runs where id = any($1) order by id")
            .bind(&ids)
            .fetch_all(&pool)
            .await
            .unwrap();
    let expected: Vec<(String, Option<String>)> = {
        let mut v: Vec<(String, (String, Option<String>))> = vec![
            (ids[0].clone(), ("running".into(), Some("worker-a".into()))),
            (ids[1].clone(), ("cancelled".into(), None)),
            (ids[2].clone(), ("running".into(), Some("worker-x".into()))),
            (ids[3].clone(), ("queued".into(), None)),
            (ids[4].clone(), ("running".into(), Some("worker-a".into()))),
        ];
        v.sort();
        v.into_iter().map(|(_, s)| s).collect()
    };
    assert_eq!(owners, expected);

    // worker-a stops without starting either: both go back to the queue with a wake-up
    // and an event; worker-x's run is not touched.
    assert_eq!(
        cairn::engine::release_held(&pool, "worker-a")
            .await
            .unwrap(),
        2
    );
    let back: Vec<(String, i64)> = sqlx::query_as(
        "select r.status,
                (select count(*) from run_events e where e.run_id = r.id and e.kind = 'run_released')
           from runs r where r.id = any($1) order by r.id",
    )
    .bind([&ids[0], &ids[4]])
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(back, [("queued".to_owned(), 1), ("queued".to_owned(), 1)]);
    assert_eq!(jobs(pool.clone()).await, 3);
    let again = store::jobs::jobs_claim_runs(&pool, cairn::queue::QUEUE, "worker-b", ttl, 100)
        .await
        .unwrap();
    assert_eq!(
        again.len(),
        2,
        "handed-back runs are taken by the next worker"
    );
}

/// The database itself refuses what the state machine forbids, whoever writes:
/// a checkpointed step never changes, a run only moves along its allowed transitions,
/// and a status change stamps `updated_at`.
#[sqlx::test(migrations = false)]
async fn the_database_refuses_forbidden_transitions(pool: PgPool) {
    migrate(&pool).await;
    let def = definition(
        "one",
        "[[steps]]\nid = \"s\"\nkind = \"sql\"\nquery = \"select 1\"\n",
    );
    let id = submit(&pool, &def, json!({})).await;
    let err = sqlx::query("update runs set status = 'succeeded' where id = $1")
        .bind(&id)
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot go from queued to succeeded"),
        "{err}"
    );
    let before: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("select updated_at from runs where id = $1")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
    let after: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "update runs set status = 'cancelled', finished_at = now() where id = $1
         returning updated_at",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(after > before, "a status change stamps updated_at");

    let id = submit(&pool, &def, json!({})).await;
    sqlx::query(
        "update steps set status = 'succeeded', output = '{}', finished_at = now()
          where run_id = $1",
    )
    .bind(&id)
    .execute(&pool)
    .await
    .unwrap();
    for change in [
        "update steps set output = '{\"other\": 1}' where run_id = $1",
        "update steps set status = 'pending', finished_at = null where run_id = $1",
    ] {
        let err = sqlx::query(change)
            .bind(&id)
            .execute(&pool)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("is checkpointed"),
            "{change}: {err}"
        );
    }
    // Anything else about a checkpointed step may still be written.
    sqlx::query("update steps set attempts = attempts + 1 where run_id = $1")
        .bind(&id)
        .execute(&pool)
        .await
        .unwrap();
}

/// `pass` steps do no I/O: their output is their `output`, rendered from the run's input
/// and the steps before them, and they are checkpointed like any step.
#[sqlx::test(migrations = false)]
async fn pass_steps_render_their_output_and_are_checkpointed(pool: PgPool) {
    migrate(&pool).await;
    let def = definition(
        "shaped",
        r#"
[input]
name = { type = "string" }

[[steps]]
id = "first"
kind = "pass"
output = { greeting = "hello {{ input.name }}", n = 3 }

[[steps]]
id = "second"
kind = "pass"
needs = ["first"]
output = { said = "{{ steps.first.output.greeting }}", list = ["{{ input.name }}", "x"] }

[[steps]]
id = "joined"
kind = "pass"
needs = ["second"]
"#,
    );
    let worker = TestWorker::start(&pool, fast_settings());
    let id = submit(&pool, &def, json!({ "name": "ada" })).await;
    let statuses = wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(60)).await;
    worker.shutdown().await;

    assert_eq!(statuses[&id], "succeeded");
    let outputs: Vec<(String, Value)> = sqlx::query_as(
        "select step_id, output from steps where run_id = $1 and status = 'succeeded'
          order by step_id",
    )
    .bind(&id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        outputs,
        vec![
            (
                "first".to_owned(),
                json!({ "greeting": "hello ada", "n": 3 })
            ),
            ("joined".to_owned(), json!({})),
            (
                "second".to_owned(),
                json!({ "said": "hello ada", "list": ["ada", "x"] })
            ),
        ]
    );
    for step in ["first", "second", "joined"] {
        assert_eq!(attempts(&pool, &id, step).await.len(), 1, "{step}");
    }
}

/// A run the worker fails to advance is never left leased to it (its heartbeat would
/// keep the lease alive for as long as the worker lives): after a database error the run
/// is handed back and finishes on a later try; a run whose definition cannot be read is
/// dead, with the reason.
#[sqlx::test(migrations = false)]
async fn a_run_the_worker_cannot_advance_is_handed_back_or_dead_never_stuck(pool: PgPool) {
    migrate(&pool).await;
    // The first step start anywhere fails once, as a lost connection or a full disk would.
    sqlx::raw_sql(
        "create sequence injected_failures;
         create function fail_the_first_start() returns trigger language plpgsql as $$
         begin
             if new.kind = 'step_started' and nextval('injected_failures') = 1 then
                 raise exception 'injected failure';
             end if;
             return new;
         end $$;
         create trigger fail_the_first_start before insert on run_events
             for each row execute function fail_the_first_start();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let one = definition(
        "one",
        "[[steps]]\nid = \"s\"\nkind = \"pass\"\noutput = { ok = true }\n",
    );
    let unreadable = definition("unreadable", "[[steps]]\nid = \"s\"\nkind = \"pass\"\n");
    let flaky = submit(&pool, &one, json!({})).await;
    let broken = submit(&pool, &unreadable, json!({})).await;
    sqlx::query(
        "update workflow_definitions set definition = '{\"steps\": \"not a list\"}'
          where hash = (select definition_hash from runs where id = $1)",
    )
    .bind(&broken)
    .execute(&pool)
    .await
    .unwrap();

    let worker = TestWorker::start(&pool, fast_settings());
    let ids = [flaky.clone(), broken.clone()];
    let statuses = wait_finished(&pool, &ids, Duration::from_secs(60)).await;
    worker.shutdown().await;

    assert_eq!(statuses[&flaky], "succeeded");
    let released: Vec<String> = sqlx::query_scalar(
        "select data->>'reason' from run_events where run_id = $1 and kind = 'run_released'",
    )
    .bind(&flaky)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(released.len(), 1, "{released:?}");
    assert!(released[0].contains("injected failure"), "{released:?}");
    assert_eq!(attempts(&pool, &flaky, "s").await.len(), 1);

    assert_eq!(statuses[&broken], "dead");
    let (step, error): (String, String) =
        sqlx::query_as("select step_id, error from dead_letters where run_id = $1")
            .bind(&broken)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(step, "definition");
    assert!(error.contains("missing or unreadable"), "{error}");
}

/// A wake-up taken while its run is being parked leases the run once the park commits.
/// The fetch began while the park held the run's row: in its snapshot the run is still
/// running under its worker, and deciding on that would delete the wake-up without
/// leasing anything, leaving the run waiting for a wake-up that never comes (a child
/// that finished just as its parent parked).
#[sqlx::test(migrations = false)]
async fn a_wake_up_taken_while_its_run_is_parked_leases_it_once_the_park_commits(pool: PgPool) {
    migrate(&pool).await;
    let def = definition("one", "[[steps]]\nid = \"s\"\nkind = \"pass\"\n");
    let id = submit(&pool, &def, json!({})).await;
    let ttl = Duration::from_secs(30);
    let queue = cairn::queue::QUEUE;
    let held = store::jobs::jobs_claim_runs(&pool, queue, "worker-a", ttl, 10)
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    let lease = held[0].lease.clone();

    // worker-a parks the run; its transaction is not committed yet.
    let mut park = pool.begin().await.unwrap();
    store::runs::run_park(
        &mut park,
        &lease,
        cairn::state::RunStatus::Waiting,
        chrono::Utc::now() + chrono::Duration::hours(1),
    )
    .await
    .unwrap();
    // Meanwhile what the run waits for happens, and wakes it.
    let mut tx = pool.begin().await.unwrap();
    cairn::queue::enqueue(&mut tx, &[cairn::queue::Wake::now(&id)])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // worker-b's fetch takes the wake-up and waits for the park's lock on the run.
    let fetch = {
        let pool = pool.clone();
        tokio::spawn(async move {
            store::jobs::jobs_claim_runs(&pool, queue, "worker-b", ttl, 10).await
        })
    };
    wait_until(
        &pool,
        Duration::from_secs(30),
        "the fetch to wait for the park",
        || {
            // Or finished without waiting, which is how the statement went wrong: deciding
            // on its snapshot, it never got as far as locking the run.
            let finished = fetch.is_finished();
            let pool = pool.clone();
            async move {
                finished
                    || sqlx::query_scalar::<_, bool>(
                        "select exists (select from pg_stat_activity
                                 where datname = current_database() and wait_event_type = 'Lock'
                                   and query like '%delete from apalis.jobs%')",
                    )
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        },
    )
    .await;
    park.commit().await.unwrap();

    let taken = fetch.await.unwrap().unwrap();
    assert_eq!(
        taken.iter().map(|a| a.run.id.as_str()).collect::<Vec<_>>(),
        [id.as_str()],
        "the parked run is leased by the wake-up that came while it parked"
    );
    assert_eq!(taken[0].lease.owner, "worker-b");
    let (status, owner): (String, Option<String>) =
        sqlx::query_as("select status, lease_owner from runs where id = $1")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), owner.as_deref()),
        ("running", Some("worker-b"))
    );
}
