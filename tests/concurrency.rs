//! Concurrency limits per key (`[concurrency]` in a workflow): measured by a local
//! service that counts the requests in flight per key, with several workers taking the
//! runs, submitted through the API one by one and in batches.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::post;
use serde_json::{Value, json};
use sqlx::PgPool;

use common::{
    TestApi, TestWorker, WorkerProcess, database_url, definition, fast_settings, migrate,
    wait_finished,
};

/// What the service saw, per key: requests in flight now, the most at once, and the
/// order requests arrived in (`n` of each).
#[derive(Default)]
struct Load {
    in_flight: HashMap<String, u32>,
    most: HashMap<String, u32>,
    arrivals: HashMap<String, Vec<i64>>,
}

type Shared = Arc<Mutex<Load>>;

/// Counts a request out of flight when it ends, also when it is dropped (its client, a
/// killed worker, went away).
struct InFlight {
    load: Shared,
    key: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut l) = self.load.lock() {
            *l.in_flight.entry(self.key.clone()).or_default() -= 1;
        }
    }
}

/// `POST /hold?key=K&n=N&ms=M`: counts itself in flight for `key` for `ms`.
async fn hold(
    State(load): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> &'static str {
    let key = q.get("key").cloned().unwrap_or_default();
    let n: i64 = q.get("n").and_then(|n| n.parse().ok()).unwrap_or(-1);
    let ms: u64 = q.get("ms").and_then(|m| m.parse().ok()).unwrap_or(100);
    let _in_flight = {
        let mut l = load.lock().unwrap();
        let now = {
            let c = l.in_flight.entry(key.clone()).or_default();
            *c += 1;
            *c
        };
        let most = l.most.entry(key.clone()).or_default();
        *most = (*most).max(now);
        l.arrivals.entry(key.clone()).or_default().push(n);
        InFlight {
            load: load.clone(),
            key,
        }
    };
    tokio::time::sleep(Duration::from_millis(ms)).await;
    "ok"
}

async fn spawn_load_service() -> (SocketAddr, Shared) {
    let load = Shared::default();
    let app = Router::new()
        .route("/hold", post(hold))
        .with_state(load.clone());
    let addr = common::serve(app).await;
    (addr, load)
}

fn limited(addr: SocketAddr, limit: u32, ms: u64) -> cairn::workflow::Definition {
    definition(
        "limited",
        &format!(
            r#"
[input]
project = {{ type = "string" }}
n = {{ type = "integer" }}

[concurrency]
key = "{{{{ input.project }}}}"
limit = {limit}

[[steps]]
id = "call"
kind = "http"
method = "POST"
url = "http://{addr}/hold?key={{{{ input.project }}}}&n={{{{ input.n }}}}&ms={ms}"
"#
        ),
    )
}

/// The `n` of each run of `project`, in the order the runs were admitted to a slot.
async fn admission_order(pool: &PgPool, project: &str) -> Vec<i64> {
    sqlx::query_scalar(
        "select (r.input->>'n')::bigint from run_events e join runs r on r.id = e.run_id
          where e.kind = 'run_admitted' and r.input->>'project' = $1
          order by e.id",
    )
    .bind(project)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// 20 runs of one key with `limit = 2` over 3 workers: never more than 2 in flight for
/// the key, all succeed, admitted in submission order; another key's runs are admitted
/// at once, not behind the first key's queue. The API says which runs wait for a slot.
#[sqlx::test(migrations = false)]
async fn a_key_runs_at_most_its_limit_in_submission_order(pool: PgPool) {
    migrate(&pool).await;
    let (addr, load) = spawn_load_service().await;
    let api = TestApi::start(&pool, [limited(addr, 2, 150)]).await;

    let mut ids = Vec::new();
    for n in 0..20 {
        let (status, body) = api
            .call(
                "POST",
                "/api/tasks",
                Some(json!({ "workflow": "limited", "input": { "project": "a", "n": n } })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["taskId"].as_str().unwrap().to_owned());
    }
    let (status, body) = api
        .call(
            "POST",
            "/api/tasks/batch",
            Some(json!({ "workflow": "limited", "tasks": [
                { "input": { "project": "b", "n": 0 } },
                { "input": { "project": "b", "n": 1 } },
                { "input": { "project": "b", "n": 2 } },
            ] })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    for t in body["tasks"].as_array().unwrap() {
        ids.push(t["taskId"].as_str().unwrap().to_owned());
    }

    // No worker yet: each key's first two runs hold its slots, the rest wait.
    assert_eq!(admission_order(&pool, "a").await, [0, 1]);
    assert_eq!(admission_order(&pool, "b").await, [0, 1]);
    let (_, first) = api
        .call("GET", &format!("/api/tasks/{}", ids[0]), None)
        .await;
    let (_, third) = api
        .call("GET", &format!("/api/tasks/{}", ids[2]), None)
        .await;
    assert_eq!(first["concurrencyKey"], "a", "{first}");
    assert_eq!(first["waitingForSlot"], false, "{first}");
    assert_eq!(third["status"], "queued", "{third}");
    assert_eq!(third["waitingForSlot"], true, "{third}");
    let waiting: i64 =
        sqlx::query_scalar("select count(*) from runs where not admitted and status = 'queued'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(waiting, 18 + 1);

    let workers: Vec<TestWorker> = (0..3)
        .map(|_| TestWorker::start(&pool, fast_settings()))
        .collect();
    let statuses = wait_finished(&pool, &ids, Duration::from_secs(90)).await;
    for w in workers {
        w.shutdown().await;
    }
    assert!(statuses.values().all(|s| s == "succeeded"), "{statuses:?}");
    assert_eq!(
        admission_order(&pool, "a").await,
        (0..20).collect::<Vec<_>>()
    );
    assert_eq!(admission_order(&pool, "b").await, [0, 1, 2]);
    let load = load.lock().unwrap();
    assert_eq!(load.most["a"], 2, "most requests of key a at once");
    assert!(load.most["b"] <= 2, "most requests of key b at once");
    assert_eq!(load.arrivals["a"].len(), 20, "each run of a called once");
    // Runs start as they are admitted: two admitted together may reach the service in
    // either order, never further apart.
    for (i, n) in load.arrivals["a"].iter().enumerate() {
        assert!(
            (*n - i as i64).abs() <= 1,
            "arrival {i} was run {n}: {:?}",
            load.arrivals["a"]
        );
    }
}

/// A slot is freed however its run ends: a cancelled run (waiting or holding) lets the
/// next one in, and a retried dead run queues behind those already waiting.
#[sqlx::test(migrations = false)]
async fn cancelling_frees_a_slot_and_a_retried_run_waits_its_turn(pool: PgPool) {
    migrate(&pool).await;
    let (addr, _load) = spawn_load_service().await;
    let api = TestApi::start(&pool, [limited(addr, 1, 50)]).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, body) = api
            .call(
                "POST",
                "/api/tasks",
                Some(json!({ "workflow": "limited", "input": { "project": "p", "n": n } })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["taskId"].as_str().unwrap().to_owned());
    }
    assert_eq!(admission_order(&pool, "p").await, [0]);
    // Cancelling the holder admits the next in line.
    let (status, body) = api
        .call("POST", &format!("/api/tasks/{}/cancel", ids[0]), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(admission_order(&pool, "p").await, [0, 1]);
    // Cancelling a waiting run takes it out of the line.
    let (status, body) = api
        .call("POST", &format!("/api/tasks/{}/cancel", ids[2]), None)
        .await;
    assert_eq!(status, 200, "{body}");
    // Retrying the first run: it waits behind run 1, which holds the slot.
    let (status, body) = api
        .call("POST", &format!("/api/tasks/{}/retry", ids[0]), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, run0) = api
        .call("GET", &format!("/api/tasks/{}", ids[0]), None)
        .await;
    assert_eq!(run0["waitingForSlot"], true, "{run0}");

    let worker = TestWorker::start(&pool, fast_settings());
    let statuses = wait_finished(&pool, &ids[..2], Duration::from_secs(60)).await;
    worker.shutdown().await;
    assert_eq!(statuses[&ids[0]], "succeeded");
    assert_eq!(statuses[&ids[1]], "succeeded");
    assert_eq!(admission_order(&pool, "p").await, [0, 1, 0]);
    let status: String = sqlx::query_scalar("select status from runs where id = $1")
        .bind(&ids[2])
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "cancelled");
}

/// An admission lost after a slot freed up (the process died between the run's end and
/// the next run's admission) is made by the workers' periodic admission.
#[sqlx::test(migrations = false)]
async fn a_lost_admission_is_made_by_the_workers(pool: PgPool) {
    migrate(&pool).await;
    let (addr, _load) = spawn_load_service().await;
    let def = limited(addr, 1, 10);
    let first = common::submit(&pool, &def, json!({ "project": "q", "n": 0 })).await;
    let second = common::submit(&pool, &def, json!({ "project": "q", "n": 1 })).await;
    // The holder ends as if its worker finished it and died before admitting the next.
    sqlx::query("update runs set status = 'cancelled', finished_at = now() where id = $1")
        .bind(&first)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(admission_order(&pool, "q").await, [0]);
    let worker = TestWorker::start(&pool, fast_settings());
    let statuses = wait_finished(
        &pool,
        std::slice::from_ref(&second),
        Duration::from_secs(60),
    )
    .await;
    worker.shutdown().await;
    assert_eq!(statuses[&second], "succeeded");
    assert_eq!(admission_order(&pool, "q").await, [0, 1]);
}

/// A key the input cannot give is a 422 naming the problem, and nothing is written.
#[sqlx::test(migrations = false)]
async fn a_key_too_long_is_refused(pool: PgPool) {
    migrate(&pool).await;
    let (addr, _load) = spawn_load_service().await;
    let api = TestApi::start(&pool, [limited(addr, 1, 10)]).await;
    let long = "x".repeat(201);
    let (status, body) = api
        .call(
            "POST",
            "/api/tasks",
            Some(json!({ "workflow": "limited", "input": { "project": long, "n": 0 } })),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("concurrency key"), "{body}");
    let runs: i64 = sqlx::query_scalar("select count(*) from runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(runs, 0);
    let _: Value = body;
}

/// A worker SIGKILLed while its runs hold both slots of a key: the slots are not lost.
/// The runs' leases expire, another worker finishes them, the rest of the key's runs
/// are admitted in order, and never more than the limit call the service at once.
#[sqlx::test(migrations = false)]
async fn slots_held_by_a_killed_worker_come_back_with_its_leases(pool: PgPool) {
    migrate(&pool).await;
    let (addr, load) = spawn_load_service().await;
    let def = limited(addr, 2, 400);
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(common::submit(&pool, &def, json!({ "project": "k", "n": n })).await);
    }
    let url = database_url(&pool);
    let args = [
        "--concurrency",
        "8",
        "--lease",
        "2s",
        "--poll-interval",
        "200ms",
    ];
    let mut doomed = WorkerProcess::spawn(&url, &args);
    let doomed_id = doomed.id(&pool).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while load
        .lock()
        .unwrap()
        .in_flight
        .get("k")
        .copied()
        .unwrap_or(0)
        < 2
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker never called the service"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.kill9();
    let held: i64 = sqlx::query_scalar(
        "select count(*) from runs where lease_owner = $1 and status = 'running'",
    )
    .bind(&doomed_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(held, 2, "the killed worker held both slots' runs");

    let survivor = WorkerProcess::spawn(&url, &args);
    let statuses = wait_finished(&pool, &ids, Duration::from_secs(90)).await;
    drop(survivor);
    assert!(statuses.values().all(|s| s == "succeeded"), "{statuses:?}");
    assert_eq!(
        admission_order(&pool, "k").await,
        (0..6).collect::<Vec<_>>()
    );
    assert_eq!(
        load.lock().unwrap().most["k"],
        2,
        "most calls of key k at once"
    );
    let rescued: i64 = sqlx::query_scalar(
        "select count(distinct run_id) from run_events
          where kind = 'lease_expired' and data->>'previousWorker' = $1",
    )
    .bind(&doomed_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(rescued, 2, "both runs of the dead worker were taken over");
}

/// A step's `concurrency`: 10 runs over two workers, each with a step that may run at most
/// twice at once across all of them. Never more than 2 calls of the key in flight, every
/// run succeeds with one attempt of the step (waiting in line is no attempt), and the
/// steps that found no free slot said so.
#[sqlx::test(migrations = false)]
async fn a_step_concurrency_key_runs_at_most_its_limit(pool: PgPool) {
    migrate(&pool).await;
    let (addr, load) = spawn_load_service().await;
    let def = definition(
        "crawl",
        &format!(
            r#"
[input]
n = {{ type = "integer" }}

[[steps]]
id = "prepare"
kind = "pass"

[[steps]]
id = "call"
kind = "http"
needs = ["prepare"]
method = "POST"
url = "http://{addr}/hold?key=svc&n={{{{ input.n }}}}&ms=150"
concurrency = {{ key = "svc", limit = 2 }}
"#
        ),
    );
    let api = TestApi::start(&pool, [def]).await;
    let tasks: Vec<Value> = (0..10).map(|n| json!({ "input": { "n": n } })).collect();
    let (status, body) = api
        .call(
            "POST",
            "/api/tasks/batch",
            Some(json!({ "workflow": "crawl", "tasks": tasks })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let ids: Vec<String> = body["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskId"].as_str().unwrap().to_owned())
        .collect();
    let workers: Vec<TestWorker> = (0..2)
        .map(|_| TestWorker::start(&pool, fast_settings()))
        .collect();
    let statuses = wait_finished(&pool, &ids, Duration::from_secs(90)).await;
    for w in workers {
        w.shutdown().await;
    }
    assert!(statuses.values().all(|s| s == "succeeded"), "{statuses:?}");
    {
        let load = load.lock().unwrap();
        assert_eq!(load.most["svc"], 2, "most calls of the key at once");
        assert_eq!(load.arrivals["svc"].len(), 10, "each run called once");
    }
    let attempts: Vec<i32> =
        sqlx::query_scalar("select attempts from steps where step_id = 'call'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(attempts, [1; 10], "waiting in line is no attempt");
    let waited: i64 = sqlx::query_scalar(
        "select count(distinct run_id) from run_events where kind = 'step_waiting_for_slot'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(waited > 0, "no step had to wait for a slot");
    let left: i64 = sqlx::query_scalar(
        "select (select count(*) from step_slots) + (select count(*) from step_slot_waiters)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(left, 0, "every slot released, nobody left in line");
}
