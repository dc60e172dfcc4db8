//! `map` steps: a child run per item of a list known at run time. Measured by a local
//! service that counts the item calls in flight and each item's calls, with workers
//! in this process and, for the crash, a real worker process SIGKILLed mid-map.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};
use sqlx::PgPool;

use common::{
    TestApi, TestWorker, WorkerProcess, database_url, definition, fast_settings, migrate,
    wait_finished, wait_until,
};

/// What the service saw: item calls in flight now, the most at once, and each item's
/// calls.
#[derive(Default)]
struct Load {
    in_flight: u32,
    most: u32,
    calls: HashMap<i64, u32>,
}

type Shared = Arc<Mutex<Load>>;

/// Counts a call out of flight when it ends, also when its client went away.
struct InFlight(Shared);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut l) = self.0.lock() {
            l.in_flight -= 1;
        }
    }
}

/// `POST /item?n=N&ms=M`: in flight for `ms`; 500 when `n` is `fail`.
async fn item(
    State(load): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> (StatusCode, &'static str) {
    let n: i64 = q.get("n").and_then(|n| n.parse().ok()).unwrap_or(-1);
    let ms: u64 = q.get("ms").and_then(|m| m.parse().ok()).unwrap_or(50);
    let fail: i64 = q.get("fail").and_then(|f| f.parse().ok()).unwrap_or(-1);
    let _in_flight = {
        let mut l = load.lock().unwrap();
        l.in_flight += 1;
        l.most = l.most.max(l.in_flight);
        *l.calls.entry(n).or_default() += 1;
        InFlight(load.clone())
    };
    tokio::time::sleep(Duration::from_millis(ms)).await;
    if n == fail {
        (StatusCode::INTERNAL_SERVER_ERROR, "no")
    } else {
        (StatusCode::OK, "ok")
    }
}

async fn spawn_service() -> (SocketAddr, Shared) {
    let load = Shared::default();
    let app = Router::new()
        .route("/item", post(item))
        .with_state(load.clone());
    let addr = common::serve(app).await;
    (addr, load)
}

/// The item workflow: calls the service for its item, and outputs ten times it.
fn child(addr: SocketAddr, ms: u64, fail: i64) -> cairn::workflow::Definition {
    definition(
        "one_item",
        &format!(
            r#"
output = "{{{{ {{'n': input.n, 'tenfold': input.n * 10}} }}}}"

[input]
n = {{ type = "integer" }}

[[steps]]
id = "call"
kind = "http"
method = "POST"
url = "http://{addr}/item?n={{{{ input.n }}}}&ms={ms}&fail={fail}"
retry = {{ max_attempts = 1 }}
"#
        ),
    )
}

/// A map over `range(count)` with `max_parallel` and `on_failure`.
fn fan(count: usize, max_parallel: u32, on_failure: &str) -> cairn::workflow::Definition {
    named_fan("fan", count, max_parallel, on_failure)
}

fn named_fan(
    name: &str,
    count: usize,
    max_parallel: u32,
    on_failure: &str,
) -> cairn::workflow::Definition {
    definition(
        name,
        &format!(
            r#"
[[steps]]
id = "list"
kind = "pass"
output = {{ numbers = "{{{{ range({count}) | list }}}}" }}

[[steps]]
id = "each"
kind = "map"
needs = ["list"]
items = "{{{{ steps.list.output.numbers }}}}"
workflow = "one_item"
input = {{ n = "{{{{ item }}}}" }}
max_parallel = {max_parallel}
on_failure = "{on_failure}"
"#
        ),
    )
}

async fn submit(api: &TestApi, workflow: &str) -> String {
    let (status, body) = api
        .call(
            "POST",
            "/api/tasks",
            Some(json!({ "workflow": workflow, "input": {} })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["taskId"].as_str().unwrap().to_owned()
}

async fn children(pool: &PgPool, parent: &str) -> i64 {
    sqlx::query_scalar("select count(*) from runs where parent_run_id = $1")
        .bind(parent)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// 50 items, `max_parallel = 5`, over two workers: never more than 5 items call the
/// service at once, each item once; the output lists the children's outputs in item
/// order; the API shows the progress and pages through the items.
#[sqlx::test(migrations = false)]
async fn a_map_runs_at_most_max_parallel_items_and_keeps_item_order(pool: PgPool) {
    migrate(&pool).await;
    let (addr, load) = spawn_service().await;
    let api = TestApi::start(&pool, [fan(50, 5, "fail_fast"), child(addr, 80, -1)]).await;
    let workers: Vec<TestWorker> = (0..2)
        .map(|_| TestWorker::start(&pool, fast_settings()))
        .collect();
    let id = submit(&api, "fan").await;
    let statuses = wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(120)).await;
    for w in workers {
        w.shutdown().await;
    }
    assert_eq!(statuses[&id], "succeeded");
    {
        let load = load.lock().unwrap();
        assert_eq!(load.most, 5, "most item calls at once");
        assert_eq!(load.calls.len(), 50);
        assert!(load.calls.values().all(|c| *c == 1), "{:?}", load.calls);
    }
    let (_, run) = api.call("GET", &format!("/api/tasks/{id}"), None).await;
    let each = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "each")
        .unwrap()
        .clone();
    let expected: Vec<Value> = (0..50)
        .map(|n| json!({ "n": n, "tenfold": n * 10 }))
        .collect();
    assert_eq!(each["output"], Value::Array(expected));
    assert_eq!(
        each["map"],
        json!({ "total": 50, "done": 50, "failed": 0, "running": 0 })
    );
    assert_eq!(children(&pool, &id).await, 50);

    let path = format!("/api/tasks/{id}/steps/each/items?limit=20");
    let (status, page) = api.call("GET", &path, None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 20);
    assert_eq!(page["next"], 19);
    assert_eq!(page["items"][0]["index"], 0);
    assert_eq!(page["items"][0]["status"], "succeeded");
    let first_child = page["items"][0]["childRunId"].as_str().unwrap().to_owned();
    let (_, child_run) = api
        .call("GET", &format!("/api/tasks/{first_child}"), None)
        .await;
    assert_eq!(child_run["parentRunId"], id.as_str(), "{child_run}");
    let (_, last) = api
        .call(
            "GET",
            &format!("/api/tasks/{id}/steps/each/items?after=39&limit=20"),
            None,
        )
        .await;
    assert_eq!(last["items"].as_array().unwrap().len(), 10);
    assert!(last.get("next").is_none(), "{last}");
    let (status, _) = api
        .call("GET", &format!("/api/tasks/{id}/steps/list/items"), None)
        .await;
    assert_eq!(status, 404, "a step that is no map has no items");
    // `after` is an item index: the schema offers 0 and up, and the API refuses the rest.
    let (status, body) = api
        .call(
            "GET",
            &format!("/api/tasks/{id}/steps/each/items?after=-7478"),
            None,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let doc = serde_json::to_value(cairn::api::openapi()).unwrap();
    let params = &doc["paths"]["/api/tasks/{id}/steps/{step}/items"]["get"]["parameters"];
    let after = params
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "after")
        .unwrap();
    let pattern = after["schema"]["pattern"].as_str().unwrap();
    assert!(pattern.starts_with("^(0|[1-9]"), "{pattern}");
}

/// A worker SIGKILLed mid-map: no finished item runs again (each has one child run and
/// the items done before the kill called the service once), and the map completes on
/// another worker, its output in item order.
#[sqlx::test(migrations = false)]
async fn a_worker_killed_mid_map_reruns_no_finished_item(pool: PgPool) {
    migrate(&pool).await;
    let (addr, load) = spawn_service().await;
    let api = TestApi::start(&pool, [fan(30, 3, "fail_fast"), child(addr, 300, -1)]).await;
    let id = submit(&api, "fan").await;
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
    wait_until(&pool, Duration::from_secs(60), "six items done", || {
        let pool = pool.clone();
        let id = id.clone();
        async move {
            let done: i32 = sqlx::query_scalar(
                "select map_done from steps where run_id = $1 and step_id = 'each'",
            )
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
            done >= 6
        }
    })
    .await;
    doomed.kill9();
    let finished_before: Vec<i64> = sqlx::query_scalar(
        "select (item)::bigint from map_items
          where run_id = $1 and step_id = 'each' and status = 'succeeded'",
    )
    .bind(&id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(finished_before.len() >= 6, "{finished_before:?}");

    let survivor = WorkerProcess::spawn(&url, &args);
    let statuses = wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(120)).await;
    drop(survivor);
    assert_eq!(statuses[&id], "succeeded");
    assert_eq!(children(&pool, &id).await, 30, "one child run per item");
    let (calls, most) = {
        let load = load.lock().unwrap();
        (load.calls.clone(), load.most)
    };
    for n in &finished_before {
        assert_eq!(calls[n], 1, "item {n} finished before the kill ran again");
    }
    assert_eq!(calls.len(), 30);
    assert!(most <= 3, "most item calls at once: {most}");
    let output: Value =
        sqlx::query_scalar("select output from steps where run_id = $1 and step_id = 'each'")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
    let order: Vec<i64> = output
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["n"].as_i64().unwrap())
        .collect();
    assert_eq!(order, (0..30).collect::<Vec<_>>());
}

/// `collect`: a failed item's error takes its place in the output and the others go on;
/// `fail_fast`: the step fails at the first failure and no further item starts. An
/// operator's retry of the dead run starts only the items that did not succeed.
#[sqlx::test(migrations = false)]
async fn a_failed_item_is_collected_or_fails_the_map_fast(pool: PgPool) {
    migrate(&pool).await;
    let (addr, load) = spawn_service().await;
    let collect = named_fan("collecting", 6, 2, "collect");
    let api = TestApi::start(&pool, [collect, fan(6, 1, "fail_fast"), child(addr, 10, 3)]).await;
    let worker = TestWorker::start(&pool, fast_settings());

    let collected = submit(&api, "collecting").await;
    wait_finished(
        &pool,
        std::slice::from_ref(&collected),
        Duration::from_secs(60),
    )
    .await;
    let (_, run) = api
        .call("GET", &format!("/api/tasks/{collected}"), None)
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let output = &run["steps"][1]["output"];
    assert_eq!(output.as_array().unwrap().len(), 6, "{output}");
    assert_eq!(output[2], json!({ "n": 2, "tenfold": 20 }));
    assert_eq!(output[5], json!({ "n": 5, "tenfold": 50 }));
    let error = output[3]["error"].as_str().unwrap();
    assert!(error.contains("is dead"), "{error}");
    assert!(output[3]["run"].is_string(), "{output}");
    assert_eq!(run["steps"][1]["map"]["failed"], 1);

    let fast = submit(&api, "fan").await;
    wait_finished(&pool, std::slice::from_ref(&fast), Duration::from_secs(60)).await;
    let (_, run) = api.call("GET", &format!("/api/tasks/{fast}"), None).await;
    assert_eq!(run["status"], "dead", "{run}");
    let error = run["steps"][1]["error"].as_str().unwrap();
    assert!(error.starts_with("item 3 failed: child run"), "{error}");
    assert_eq!(
        children(&pool, &fast).await,
        4,
        "items after the failure never started"
    );

    // Retried: item 3 gets a new child (and fails again), items 0–2 do not run again.
    let before: HashMap<i64, u32> = load.lock().unwrap().calls.clone();
    let (status, body) = api
        .call("POST", &format!("/api/tasks/{fast}/retry"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    wait_until(
        &pool,
        Duration::from_secs(60),
        "the retried map failed again",
        || {
            let pool = pool.clone();
            let fast = fast.clone();
            async move {
                let status: String = sqlx::query_scalar("select status from runs where id = $1")
                    .bind(&fast)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                status == "dead"
            }
        },
    )
    .await;
    worker.shutdown().await;
    assert_eq!(
        children(&pool, &fast).await,
        5,
        "only the failed item started again"
    );
    let after = load.lock().unwrap().calls.clone();
    for n in 0..3 {
        assert_eq!(after[&n], before[&n], "item {n} ran again");
    }
    assert_eq!(after[&3], before[&3] + 1);
}

/// Terminating the parent stops its running items too: their child runs end
/// `cancelled`, at once.
#[sqlx::test(migrations = false)]
async fn terminating_a_map_terminates_its_items(pool: PgPool) {
    migrate(&pool).await;
    let (addr, load) = spawn_service().await;
    let api = TestApi::start(&pool, [fan(10, 3, "fail_fast"), child(addr, 60_000, -1)]).await;
    let worker = TestWorker::start(&pool, fast_settings());
    let id = submit(&api, "fan").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while load.lock().unwrap().in_flight < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the items never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kids: Vec<String> = sqlx::query_scalar("select id from runs where parent_run_id = $1")
        .bind(&id)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(kids.len(), 3);
    let (status, body) = api
        .call("POST", &format!("/api/tasks/{id}/terminate"), None)
        .await;
    assert!(status == 200 || status == 202, "{status} {body}");
    let mut all = kids.clone();
    all.push(id.clone());
    let statuses = wait_finished(&pool, &all, Duration::from_secs(10)).await;
    worker.shutdown().await;
    assert!(statuses.values().all(|s| s == "cancelled"), "{statuses:?}");
    assert_eq!(
        children(&pool, &id).await,
        3,
        "no item started after the terminate"
    );
}

/// An inline step: each item runs that one step as a child run of its own, whose
/// templates read `item` and `index`; the output is each step's output in item order.
#[sqlx::test(migrations = false)]
async fn an_inline_step_runs_once_per_item(pool: PgPool) {
    migrate(&pool).await;
    let (addr, load) = spawn_service().await;
    let inline = definition(
        "pages",
        &format!(
            r#"
[input]
names = {{ type = "array" }}

[[steps]]
id = "fetch"
kind = "map"
items = "{{{{ input.names }}}}"
max_parallel = 2

[steps.step]
kind = "http"
method = "POST"
url = "http://{addr}/item?n={{{{ index }}}}&ms=50&name={{{{ item }}}}"
retry = {{ max_attempts = 1 }}
"#
        ),
    );
    let api = TestApi::start(&pool, [inline]).await;
    let worker = TestWorker::start(&pool, fast_settings());
    let names: Vec<String> = (0..8).map(|n| format!("page-{n}")).collect();
    let (status, body) = api
        .call(
            "POST",
            "/api/tasks",
            Some(json!({ "workflow": "pages", "input": { "names": names } })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["taskId"].as_str().unwrap().to_owned();
    let statuses = wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(60)).await;
    worker.shutdown().await;
    assert_eq!(statuses[&id], "succeeded");
    let output: Value =
        sqlx::query_scalar("select output from steps where run_id = $1 and step_id = 'fetch'")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
    let statuses: Vec<i64> = output
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [200; 8], "{output}");
    let (calls, most) = {
        let load = load.lock().unwrap();
        (load.calls.clone(), load.most)
    };
    assert_eq!(calls.len(), 8);
    assert!(calls.values().all(|c| *c == 1), "{calls:?}");
    assert!(most <= 2, "most item calls at once: {most}");
    let workflows: Vec<String> =
        sqlx::query_scalar("select distinct workflow from runs where parent_run_id = $1")
            .bind(&id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(workflows, ["pages.fetch"]);
}

/// 10,000 items: the list is written in chunks and the map completes, every item's
/// output in its place.
#[sqlx::test(migrations = false)]
async fn ten_thousand_items_complete(pool: PgPool) {
    migrate(&pool).await;
    let tiny = definition(
        "tiny",
        r#"
output = "{{ input.item * 2 }}"

[input]
item = { type = "integer" }
index = { type = "integer" }

[[steps]]
id = "s"
kind = "pass"
"#,
    );
    let big = definition(
        "big",
        r#"
[[steps]]
id = "each"
kind = "map"
items = "{{ range(10000) | list }}"
workflow = "tiny"
max_parallel = 500
"#,
    );
    let api = TestApi::start(&pool, [big, tiny]).await;
    let settings = cairn::worker::WorkerSettings {
        concurrency: 64,
        ..fast_settings()
    };
    let workers: Vec<TestWorker> = (0..2)
        .map(|_| TestWorker::start(&pool, settings.clone()))
        .collect();
    let id = submit(&api, "big").await;
    let statuses = wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(600)).await;
    for w in workers {
        w.shutdown().await;
    }
    assert_eq!(statuses[&id], "succeeded");
    let output: Value =
        sqlx::query_scalar("select output from steps where run_id = $1 and step_id = 'each'")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
    let output = output.as_array().unwrap();
    assert_eq!(output.len(), 10_000);
    assert!(
        output
            .iter()
            .enumerate()
            .all(|(i, v)| v.as_i64() == Some(2 * i as i64)),
        "outputs out of place"
    );
}

/// Items whose input the child workflow's schema refuses fail on their own, with the
/// schema's reason, and the items of the same turn around them start all the same.
#[sqlx::test(migrations = false)]
async fn an_item_the_child_schema_refuses_fails_alone(pool: PgPool) {
    migrate(&pool).await;
    let double = definition(
        "double",
        r#"
output = "{{ input.n * 2 }}"

[input]
n = { type = "integer" }

[[steps]]
id = "s"
kind = "pass"
"#,
    );
    let mixed = definition(
        "mixed",
        r#"
[[steps]]
id = "each"
kind = "map"
items = '{{ [1, "two", 3, "four", 5] }}'
workflow = "double"
input = { n = "{{ item }}" }
max_parallel = 5
on_failure = "collect"
"#,
    );
    let api = TestApi::start(&pool, [mixed, double]).await;
    let worker = TestWorker::start(&pool, fast_settings());
    let id = submit(&api, "mixed").await;
    wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(60)).await;
    worker.shutdown().await;
    let (_, run) = api.call("GET", &format!("/api/tasks/{id}"), None).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let output = run["steps"][0]["output"].as_array().unwrap().clone();
    assert_eq!(output.len(), 5, "{output:?}");
    for (i, n) in [(0, 1), (2, 3), (4, 5)] {
        assert_eq!(output[i], json!(n * 2), "{output:?}");
    }
    for i in [1, 3] {
        let error = output[i]["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("input for workflow `double` is invalid"),
            "{output:?}"
        );
    }
    assert_eq!(run["steps"][0]["map"]["failed"], 2, "{run}");
    assert_eq!(children(&pool, &id).await, 3, "refused items start no run");
}
