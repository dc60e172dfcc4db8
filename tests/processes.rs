//! Promises about processes: real `cairn worker` processes, killed with SIGKILL
//! mid-run, and several workers sharing one database.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgListener;

#[sqlx::test(migrations = false)]
async fn a_killed_worker_loses_nothing_and_no_checkpointed_step_runs_again(pool: PgPool) {
    migrate(&pool).await;
    let (addr, seen) = spawn_service(&pool, 1).await;
    let steps: String = ["a", "b", "c", "d"]
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let needs = if i == 0 { String::new() } else { format!("needs = [\"{}\"]\n", ["a", "b", "c"][i - 1]) };
            format!("[[steps]]\nid = \"{id}\"\nkind = \"http\"\nmethod = \"POST\"\nurl = \"http://{addr}/work?ms=60\"\n{needs}\n")
        })
        .collect();
    let def = definition(
        "chain",
        &format!(
            "[defaults]\nretry = {{ max_attempts = 5, initial_delay = \"100ms\" }}\n\n{steps}"
        ),
    );
    let url = database_url(&pool);
    let worker_args = [
        "--concurrency",
        "8",
        "--lease",
        "3s",
        "--poll-interval",
        "200ms",
    ];
    let mut doomed = WorkerProcess::spawn(&url, &worker_args);
    let survivor = WorkerProcess::spawn(&url, &worker_args);
    let doomed_id = doomed.id(&pool).await;
    survivor.id(&pool).await;

    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(submit(&pool, &def, json!({})).await);
    }

    // Kill the worker once it has committed some checkpoints and runs are mid-flight.
    let mut listener = PgListener::connect_with(&pool).await.unwrap();
    listener.listen("cairn_events").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let committed: i64 = sqlx::query_scalar(
            "select count(*) from step_attempts where worker_id = $1 and status = 'succeeded'",
        )
        .bind(&doomed_id)
        .fetch_one(&pool)
        .await
        .unwrap();
        if committed >= 15 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker never got going"
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), listener.recv()).await;
    }
    doomed.kill9();
    let held: Vec<String> =
        sqlx::query_scalar("select id from runs where lease_owner = $1 and status = 'running'")
            .bind(&doomed_id)
            .fetch_all(&pool)
            .await
            .unwrap();
    let finished_at_kill: i64 =
        sqlx::query_scalar("select count(*) from runs where status = 'succeeded'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        !held.is_empty(),
        "the killed worker held no runs: nothing was tested"
    );
    assert!(finished_at_kill < 50, "every run finished before the kill");

    let statuses = wait_finished(&pool, &ids, Duration::from_secs(120)).await;
    drop(survivor);

    let succeeded = statuses.values().filter(|s| *s == "succeeded").count();
    assert_eq!(succeeded, 50, "{statuses:?}");
    assert_eq!(
        seen.after_checkpoint.load(Ordering::SeqCst),
        0,
        "a step was requested again after its checkpoint was committed"
    );
    for id in &ids {
        for step in ["a", "b", "c", "d"] {
            assert!(seen.count(&format!("{id}/{step}")) >= 1);
        }
    }
    // The killed worker's runs were taken over after their leases expired.
    let rescued: Vec<String> = sqlx::query_scalar(
        "select distinct run_id from run_events where kind = 'lease_expired' and data->>'previousWorker' = $1",
    )
    .bind(&doomed_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut held_sorted = held.clone();
    held_sorted.sort();
    let mut rescued_sorted = rescued.clone();
    rescued_sorted.sort();
    assert_eq!(
        held_sorted, rescued_sorted,
        "every run the dead worker held was rescued"
    );
    // Requests beyond one per step are exactly the attempts the dead worker abandoned.
    let total: u32 = seen.requests.lock().unwrap().values().sum();
    let abandoned: i64 =
        sqlx::query_scalar("select count(*) from step_attempts where status = 'abandoned'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        total as i64 <= 200 + abandoned,
        "{total} requests for 200 steps and {abandoned} abandoned attempts"
    );
    eprintln!(
        "crash test: killed {doomed_id} holding {} runs; {total} requests for 200 steps; {abandoned} abandoned attempts",
        held.len()
    );
}

#[sqlx::test(migrations = false)]
async fn two_workers_run_a_thousand_runs_exactly_once(pool: PgPool) {
    migrate(&pool).await;
    let def = definition(
        "pair",
        "[[steps]]\nid = \"one\"\nkind = \"sql\"\nquery = \"select 1 as n\"\n\n[[steps]]\nid = \"two\"\nkind = \"sql\"\nneeds = [\"one\"]\nquery = \"select $1::int + 1 as n\"\nparams = [\"{{ steps.one.output.rows[0].n }}\"]\n",
    );
    let url = database_url(&pool);
    let args = ["--concurrency", "16", "--poll-interval", "200ms"];
    let w1 = WorkerProcess::spawn(&url, &args);
    let w2 = WorkerProcess::spawn(&url, &args);
    let (id1, id2) = (w1.id(&pool).await, w2.id(&pool).await);

    let mut ids = Vec::with_capacity(1000);
    for _ in 0..1000 {
        ids.push(submit(&pool, &def, json!({})).await);
    }
    let statuses = wait_finished(&pool, &ids, Duration::from_secs(300)).await;
    drop((w1, w2));

    assert!(statuses.values().all(|s| s == "succeeded"));
    let finished: i64 =
        sqlx::query_scalar("select count(*) from run_events where kind = 'run_succeeded'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(finished, 1000, "each run completes once");
    let checkpoints: Vec<(String, String, i64)> = sqlx::query_as(
        "select run_id, step_id, count(*) from run_events where kind = 'step_succeeded'
          group by run_id, step_id having count(*) <> 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        checkpoints.is_empty(),
        "checkpointed more than once: {checkpoints:?}"
    );
    let per_worker: HashMap<String, i64> = sqlx::query_as(
        "select worker_id, count(*) from step_attempts where status = 'succeeded' group by worker_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert_eq!(per_worker.values().sum::<i64>(), 2000, "{per_worker:?}");
    assert!(
        per_worker.contains_key(&id1) && per_worker.contains_key(&id2),
        "both workers took part: {per_worker:?}"
    );
    let outputs: i64 = sqlx::query_scalar(
        "select count(*) from runs where output = '{\"two\": {\"rows\": [{\"n\": 2}], \"rowCount\": 1}}'::jsonb",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(outputs, 1000);
}

#[sqlx::test(migrations = false)]
async fn sigterm_hands_unfinished_runs_back_and_another_worker_finishes_them(pool: PgPool) {
    migrate(&pool).await;
    let (addr, seen) = spawn_service(&pool, 1).await;
    let def = definition(
        "gated",
        &format!(
            "[[steps]]\nid = \"slow\"\nkind = \"http\"\nmethod = \"POST\"\nurl = \"http://{addr}/gate\"\n\n[[steps]]\nid = \"after\"\nkind = \"sql\"\nneeds = [\"slow\"]\nquery = \"select 1\"\n"
        ),
    );
    let url = database_url(&pool);
    let mut first = WorkerProcess::spawn(
        &url,
        &["--shutdown-grace", "1s", "--poll-interval", "200ms"],
    );
    first.id(&pool).await;
    let id = submit(&pool, &def, json!({})).await;
    let s = seen.clone();
    wait_until(
        &pool,
        Duration::from_secs(30),
        "the step to be running",
        || {
            let s = s.clone();
            async move { s.gate_entered.load(Ordering::SeqCst) == 1 }
        },
    )
    .await;
    std::process::Command::new("kill")
        .args(["-TERM", &first.pid().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || first.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "the worker exits cleanly on SIGTERM: {status}"
    );
    let (run_status, released): (String, i64) = sqlx::query_as(
        "select status, (select count(*) from run_events where run_id = $1 and kind = 'run_released')
           from runs where id = $1",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (run_status.as_str(), released),
        ("queued", 1),
        "the unfinished run was handed back at once"
    );

    seen.gate.add_permits(10);
    let _second = WorkerProcess::spawn(&url, &["--poll-interval", "200ms"]);
    assert_eq!(
        wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(60)).await[&id],
        "succeeded"
    );
    let tries = attempts(&pool, &id, "slow").await;
    assert_eq!(
        tries.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
        ["abandoned", "succeeded"]
    );
}

/// Every connection of a worker's `--db-pool` is the engine's: its listeners and its
/// fetch have connections of their own. With a pool of one, `sql` steps (which hold a
/// connection while their query runs) and the transitions around them still take
/// turns on it, and the worker holds exactly three more.
#[sqlx::test(migrations = false)]
async fn a_worker_with_a_pool_of_one_connection_runs_its_runs(pool: PgPool) {
    migrate(&pool).await;
    let def = definition(
        "one",
        "[[steps]]\nid = \"a\"\nkind = \"sql\"\nquery = \"select 1\"\n\n\
         [[steps]]\nid = \"b\"\nkind = \"sql\"\nquery = \"select 2\"\n",
    );
    let url = database_url(&pool);
    // No pool at all is a usage error, said before anything connects.
    let none = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["worker", "--db-pool", "0"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&none.stderr);
    assert_eq!(none.status.code(), Some(2), "{said}");
    assert!(said.contains("--db-pool"), "{said}");

    let mut worker = WorkerProcess::spawn(&url, &["--db-pool", "1", "--poll-interval", "200ms"]);
    worker.id(&pool).await;
    wait_listening(&pool, "the worker to listen").await;

    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(submit(&pool, &def, json!({})).await);
    }
    let statuses = wait_finished(&pool, &ids, Duration::from_secs(60)).await;
    assert!(
        ids.iter().all(|id| statuses[id] == "succeeded"),
        "{statuses:?}"
    );
    let held: i64 = sqlx::query_scalar(
        "select count(*) from pg_stat_activity
          where datname = current_database() and application_name = 'cairn'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        held, 4,
        "the pool's one connection and three of the worker's own"
    );
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker kept running"
    );
}

/// A worker whose database connections are all cut (a failover, a restarted pooler)
/// keeps running: it reconnects, hears of new runs again, and finishes them.
#[sqlx::test(migrations = false)]
async fn a_worker_whose_connections_are_cut_reconnects_and_finishes_new_runs(pool: PgPool) {
    migrate(&pool).await;
    let def = definition(
        "one",
        "[[steps]]\nid = \"s\"\nkind = \"sql\"\nquery = \"select 1\"\n",
    );
    let url = database_url(&pool);
    let mut worker = WorkerProcess::spawn(&url, &["--poll-interval", "200ms"]);
    worker.id(&pool).await;
    wait_listening(&pool, "the worker to listen").await;

    let cut: i64 = sqlx::query_scalar(
        "select count(*) from (
             select pg_terminate_backend(pid) from pg_stat_activity
              where datname = current_database() and application_name = 'cairn') t",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        cut >= 2,
        "the worker's listener and pool were connected: {cut}"
    );

    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(submit(&pool, &def, json!({})).await);
    }
    let statuses = wait_finished(&pool, &ids, Duration::from_secs(60)).await;
    assert!(
        ids.iter().all(|id| statuses[id] == "succeeded"),
        "{statuses:?}"
    );
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker kept running"
    );
    // And it listens again, so new runs do not wait for the poll.
    wait_listening(&pool, "the worker to listen again").await;
}

/// Waits until the worker session of this database listens for new jobs and for runs
/// to terminate.
async fn wait_listening(pool: &PgPool, what: &str) {
    wait_until(pool, Duration::from_secs(30), what, || {
        let pool = pool.clone();
        async move {
            // One connection listens for new jobs, one for runs to terminate.
            let channels: Vec<String> = sqlx::query_scalar(
                "select query from pg_stat_activity
                  where datname = current_database() and application_name = 'cairn'
                    and query ilike 'listen%' order by query",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            channels.len() == 2
                && channels[0].contains(r#""apalis::job::insert""#)
                && channels[1].contains(r#""cairn_terminate""#)
        }
    })
    .await;
}
