//! The HTTP API and `ctl` against a real server on port 0 and a real database: the
//! submit path, its errors (which must change nothing), listing and showing runs.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use sqlx::PgPool;

const GREET: &str = r#"
description = "test"

[input]
name = { type = "string" }
times = { type = "integer", default = 1 }

[[steps]]
id = "greet"
kind = "sql"
query = "select 'hi ' || $1::text as text"
params = ["{{ input.name }}"]

[[steps]]
id = "again"
kind = "sql"
needs = ["greet"]
query = "select $1::text as text"
params = ["{{ steps.greet.output.rows[0].text }}"]
"#;

impl TestApi {
    /// `POST /api/tasks` as the operator, with an `Idempotency-Key` when given.
    async fn post(&self, body: Value, key: Option<&str>) -> (u16, Value) {
        let mut r = self
            .http
            .post(self.url("/api/tasks"))
            .bearer_auth(&self.operator)
            .json(&body);
        if let Some(k) = key {
            r = r.header("Idempotency-Key", k);
        }
        let resp = r.send().await.unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    /// `POST /api/tasks/batch` as the operator.
    async fn batch(&self, body: Value) -> (u16, Value) {
        self.call("POST", "/api/tasks/batch", Some(body)).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }
}

/// The API serving `greet`.
async fn spawn_api(pool: &PgPool) -> TestApi {
    TestApi::start(pool, [definition("greet", GREET)]).await
}

async fn counts(pool: &PgPool) -> (i64, i64, i64) {
    sqlx::query_as(
        "select (select count(*) from runs), (select count(*) from steps),
                (select count(*) from apalis.jobs where job_type = 'cairn.runs')",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = false)]
async fn submit_writes_the_run_and_its_job_together(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn_api(&pool).await;
    let (status, body) = api
        .post(
            json!({ "workflow": "greet", "input": { "name": "Ada" } }),
            None,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "queued");
    let id = body["taskId"].as_str().unwrap();
    assert_eq!(counts(&pool).await, (1, 2, 1));
    let input: Value = sqlx::query_scalar("select input from runs where id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        input,
        json!({ "name": "Ada", "times": 1 }),
        "defaults are applied"
    );
    api.stop.cancel();
}

#[sqlx::test(migrations = false)]
async fn bad_requests_get_clear_errors_and_change_nothing(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn_api(&pool).await;

    let (status, body) = api
        .post(json!({ "workflow": "nope", "input": {} }), None)
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("known workflows: greet")
    );

    let (status, body) = api
        .post(
            json!({ "workflow": "greet", "input": { "name": 3, "extra": true } }),
            None,
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["code"], "invalid_input");
    let fields: Vec<&str> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["extra", "name"]);

    let (status, body) = api.post(json!({ "workflow": "greet" }), None).await;
    assert_eq!(status, 422, "missing required input: {body}");

    let (status, body) = api
        .post(
            json!({ "workflow": "greet", "input": {}, "bogus": 1 }),
            None,
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("bogus"),
        "{body}"
    );

    let resp = api
        .http
        .post(format!("{}/api/tasks", api.base))
        .bearer_auth(&api.operator)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);

    let huge = "x".repeat(2 * 1024 * 1024);
    let (status, body) = api
        .post(
            json!({ "workflow": "greet", "input": { "name": huge } }),
            None,
        )
        .await;
    assert_eq!(status, 413, "{body}");

    let (status, _) = api
        .post(
            json!({ "workflow": "greet", "input": { "name": "a" } }),
            Some(""),
        )
        .await;
    assert_eq!(status, 400, "empty idempotency key");

    assert_eq!(counts(&pool).await, (0, 0, 0), "nothing was written");
    api.stop.cancel();
}

#[sqlx::test(migrations = false)]
async fn an_idempotency_key_returns_the_existing_run(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn_api(&pool).await;
    let req = json!({ "workflow": "greet", "input": { "name": "Ada" } });
    let (s1, first) = api.post(req.clone(), Some("order-42")).await;
    let (s2, second) = api.post(req, Some("order-42")).await;
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(first["taskId"], second["taskId"]);
    let (s3, conflict) = api
        .post(
            json!({ "workflow": "greet", "input": { "name": "Bob" } }),
            Some("order-42"),
        )
        .await;
    assert_eq!(s3, 409);
    assert_eq!(conflict["error"]["details"]["taskId"], first["taskId"]);
    assert_eq!(counts(&pool).await, (1, 2, 1), "one run, one job");
    api.stop.cancel();
}

#[sqlx::test(migrations = false)]
async fn runs_are_listed_newest_first_with_keyset_pages_and_filters(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn_api(&pool).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let (_, b) = api
            .post(
                json!({ "workflow": "greet", "input": { "name": format!("n{i}") } }),
                None,
            )
            .await;
        ids.push(b["taskId"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut path = "/api/tasks?limit=2".to_owned();
    loop {
        let (status, page) = api.get(&path).await;
        assert_eq!(status, 200);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|i| i["id"].as_str().unwrap().to_owned()));
        match page["nextCursor"].as_str() {
            Some(c) => path = format!("/api/tasks?limit=2&cursor={c}"),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "every run once, newest first");

    let (_, queued) = api.get("/api/tasks?status=queued&workflow=greet").await;
    assert_eq!(queued["items"].as_array().unwrap().len(), 5);
    let (_, none) = api.get("/api/tasks?status=dead").await;
    assert_eq!(none["items"].as_array().unwrap().len(), 0);
    let (status, body) = api.get("/api/tasks?status=exploded").await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expected one of")
    );
    let (status, _) = api.get("/api/tasks/does-not-exist").await;
    assert_eq!(status, 404);
    api.stop.cancel();
}

#[sqlx::test(migrations = false)]
async fn ctl_submits_lists_and_shows_runs(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn_api(&pool).await;
    let worker = TestWorker::start(&pool, fast_settings());
    let (base, tok) = (api.base.as_str(), api.operator.as_str());

    let (code, out, err) = ctl_at(
        base,
        tok,
        &[
            "task",
            "submit",
            "greet",
            "--input",
            r#"{"name":"Ada"}"#,
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let submitted: Value = serde_json::from_str(&out).unwrap();
    let id = submitted["id"].as_str().unwrap().to_owned();
    wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(30)).await;

    let (code, out, _) = ctl_at(base, tok, &["task", "show", &id, "-o", "json"]).await;
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["status"], "succeeded");
    let steps = shown["steps"].as_array().unwrap();
    assert_eq!(
        steps
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["greet", "again"]
    );
    for s in steps {
        assert_eq!(s["status"], "succeeded");
        assert_eq!(s["attempts"].as_array().unwrap().len(), 1);
    }
    assert_eq!(shown["output"]["again"]["rows"][0]["text"], "hi Ada");

    let (code, out, _) = ctl_at(base, tok, &["task", "show", &id]).await;
    assert_eq!(code, 0);
    assert!(out.contains("greet") && out.contains("succeeded"), "{out}");

    let (code, out, _) = ctl_at(base, tok, &["task", "list", "--status", "succeeded"]).await;
    assert_eq!(code, 0);
    assert!(out.contains(&id) && out.contains("succeeded"), "{out}");

    let (code, _, err) = ctl_at(
        base,
        tok,
        &["task", "submit", "greet", "--input", r#"{"name":1}"#],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("name: expected string, got integer"), "{err}");

    let (code, _, err) = ctl_at(base, "wrong", &["task", "list"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");

    let (code, _, _) = ctl_at(base, tok, &["task", "bogus"]).await;
    assert_eq!(code, 2, "usage errors exit 2");

    worker.shutdown().await;
    api.stop.cancel();
}

/// Tasks for a batch: `{ input: { name: "n<i>" } }` for each i.
fn named_tasks(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({ "input": { "name": format!("n{i}") } }))
        .collect()
}

async fn run_queued_events(pool: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from run_events where kind = 'run_queued'")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn a_batch_queues_every_run_with_its_job_in_one_transaction(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn_api(&pool).await;
    let (status, body) = api
        .batch(json!({ "workflow": "greet", "tasks": named_tasks(500) }))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["workflow"], "greet");
    let tasks = body["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 500);
    assert!(
        tasks
            .iter()
            .all(|t| t["outcome"] == "created" && t["status"] == "queued"),
        "{body}"
    );
    assert_eq!(counts(&pool).await, (500, 1000, 500));
    assert_eq!(run_queued_events(&pool).await, 500);

    // Answers come in the order of the tasks, each with the run made from its input
    // (defaults applied).
    let inputs: std::collections::HashMap<String, Value> =
        sqlx::query_as::<_, (String, Value)>("select id, input from runs")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    for (i, t) in tasks.iter().enumerate() {
        let id = t["taskId"].as_str().unwrap();
        assert_eq!(inputs[id], json!({ "name": format!("n{i}"), "times": 1 }));
    }
    // Every job wakes one of the runs.
    let unwoken: i64 = sqlx::query_scalar(
        "select count(*) from runs where id not in
           (select convert_from(job, 'utf8')::jsonb ->> 'run_id' from apalis.jobs
             where job_type = 'cairn.runs')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(unwoken, 0);
    // One transaction wrote all of it.
    let writers: i64 = sqlx::query_scalar(
        "select count(distinct x) from (
             select xmin::text x from runs union all select xmin::text from steps
             union all select xmin::text from run_events
             union all select xmin::text from apalis.jobs) t",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(writers, 1, "runs, steps, events and jobs share one xmin");
    api.stop.cancel();
}

#[sqlx::test(migrations = false)]
async fn a_batch_with_a_bad_task_names_it_and_writes_nothing(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn_api(&pool).await;
    let (status, _) = api
        .post(
            json!({ "workflow": "greet", "input": { "name": "Ada" } }),
            None,
        )
        .await;
    assert_eq!(status, 201);
    let before = (counts(&pool).await, run_queued_events(&pool).await);

    let mut tasks = named_tasks(5);
    tasks[1] = json!({ "input": { "name": 3 } });
    tasks[3] = json!({ "input": { "name": "x", "extra": 1 }, "idempotencyKey": "" });
    let (status, body) = api
        .batch(json!({ "workflow": "greet", "tasks": tasks }))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_input");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("2 of 5 tasks") && message.contains("task 1: input.name"),
        "{message}"
    );
    assert_eq!(
        body["error"]["details"],
        json!([
            { "index": 1, "errors": [
                { "field": "input.name", "message": "expected string, got integer" } ] },
            { "index": 3, "errors": [
                { "field": "input.extra",
                  "message": "unknown field; expected one of: name, times" },
                { "field": "idempotencyKey", "message": "must be 1 to 255 characters" } ] },
        ])
    );
    assert_eq!(
        (counts(&pool).await, run_queued_events(&pool).await),
        before,
        "nothing was written"
    );
    api.stop.cancel();
}

#[sqlx::test(migrations = false)]
async fn batches_too_large_empty_or_unknown_are_refused_and_change_nothing(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn_api(&pool).await;

    let (status, body) = api
        .batch(json!({ "workflow": "greet", "tasks": named_tasks(1001) }))
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("at most 1000 tasks") && message.contains("1001"),
        "{message}"
    );

    let (status, body) = api.batch(json!({ "workflow": "greet", "tasks": [] })).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`tasks` is empty")
    );

    let (status, body) = api
        .batch(json!({ "workflow": "nope", "tasks": named_tasks(2) }))
        .await;
    assert_eq!(status, 404, "{body}");

    let (status, body) = api
        .batch(json!({ "workflow": "greet", "tasks": [{ "input": {}, "bogus": 1 }] }))
        .await;
    assert_eq!(status, 400, "unknown fields are refused: {body}");

    let viewer = token(&pool, cairn::auth::Role::Viewer).await;
    let (status, body) = api
        .call_as(
            &viewer,
            "POST",
            "/api/tasks/batch",
            Some(json!({ "workflow": "greet", "tasks": named_tasks(2) })),
        )
        .await;
    assert_eq!(status, 403, "{body}");

    // A thousand tasks with large inputs fit although one request's limit is 1 MiB.
    let big = "x".repeat(2000);
    let tasks: Vec<Value> = (0..1000)
        .map(|_| json!({ "input": { "name": big } }))
        .collect();
    assert_eq!(counts(&pool).await, (0, 0, 0), "nothing was written");
    let (status, body) = api
        .batch(json!({ "workflow": "greet", "tasks": tasks }))
        .await;
    assert_eq!(status, 201, "{}", body["error"]);
    assert_eq!(counts(&pool).await, (1000, 2000, 1000));
    api.stop.cancel();
}

#[sqlx::test(migrations = false)]
async fn idempotency_keys_in_a_batch_work_as_on_single_submits(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn_api(&pool).await;
    let (_, earlier) = api
        .post(
            json!({ "workflow": "greet", "input": { "name": "Ada" } }),
            Some("k-earlier"),
        )
        .await;
    let earlier = earlier["taskId"].as_str().unwrap().to_owned();

    let batch = json!({ "workflow": "greet", "tasks": [
        { "input": { "name": "Ada" }, "idempotencyKey": "k-earlier" },
        { "input": { "name": "Bob" }, "idempotencyKey": "k-earlier" },
        { "input": { "name": "Cy" }, "idempotencyKey": "k-new" },
        { "input": { "name": "Cy", "times": 1 }, "idempotencyKey": "k-new" },
        { "input": { "name": "Dee" }, "idempotencyKey": "k-new" },
        { "input": { "name": "Eve" } },
    ]});
    let (status, body) = api.batch(batch.clone()).await;
    assert_eq!(status, 201, "{body}");
    let tasks = body["tasks"].as_array().unwrap();
    let outcomes: Vec<&str> = tasks
        .iter()
        .map(|t| t["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "existing", "conflict", "created", "existing", "conflict", "created"
        ]
    );
    let id = |i: usize| tasks[i]["taskId"].as_str().unwrap().to_owned();
    assert_eq!((id(0), id(1)), (earlier.clone(), earlier.clone()));
    assert_eq!(
        (id(3), id(4)),
        (id(2), id(2)),
        "a repeated key names the first run"
    );
    assert_ne!(id(5), id(2));
    assert_eq!(counts(&pool).await, (3, 6, 3), "two new runs, two new jobs");

    // The same batch again queues nothing: 200, and the same answers but for the
    // keyless task, which is a new run each time.
    let (status, again) = api.batch(batch).await;
    assert_eq!(status, 201, "the keyless task is queued again: {again}");
    let again = again["tasks"].as_array().unwrap();
    let outcomes: Vec<&str> = again
        .iter()
        .map(|t| t["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "existing", "conflict", "existing", "existing", "conflict", "created"
        ]
    );
    for i in 0..5 {
        assert_eq!(again[i]["taskId"], tasks[i]["taskId"], "task {i}");
    }
    assert_eq!(counts(&pool).await, (4, 8, 4));

    let (status, keyed_only) = api
        .batch(json!({ "workflow": "greet", "tasks": [
            { "input": { "name": "Cy" }, "idempotencyKey": "k-new" } ] }))
        .await;
    assert_eq!(status, 200, "nothing new was queued: {keyed_only}");
    assert_eq!(keyed_only["tasks"][0]["taskId"], tasks[2]["taskId"]);
    api.stop.cancel();
}

#[sqlx::test(migrations = false)]
async fn a_failed_submit_does_not_mark_its_definition_stored(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn_api(&pool).await;
    let hash = definition("greet", GREET).hash;
    let definitions = || async {
        sqlx::query_scalar::<_, i64>("select count(*) from workflow_definitions")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    // Sabotage: every run insert fails, after the definition was written.
    sqlx::raw_sql(
        "create function refuse() returns trigger language plpgsql as
           $$ begin raise exception 'refused for the test'; end $$;
         create trigger refuse before insert on runs execute function refuse();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let req = json!({ "workflow": "greet", "input": { "name": "Ada" } });
    let (status, _) = api.post(req.clone(), None).await;
    assert_eq!(status, 500);
    let (status, _) = api
        .batch(json!({ "workflow": "greet", "tasks": named_tasks(3) }))
        .await;
    assert_eq!(status, 500);
    assert!(!api.state.definitions.contains(&hash));
    assert_eq!(definitions().await, 0, "rolled back with the run");

    sqlx::query("drop trigger refuse on runs")
        .execute(&pool)
        .await
        .unwrap();
    let (status, _) = api.post(req.clone(), None).await;
    assert_eq!(status, 201);
    assert!(api.state.definitions.contains(&hash));
    assert_eq!(definitions().await, 1);

    // Were the row to vanish under the running API, the next submit stores it again.
    sqlx::query("truncate runs, steps, step_attempts, run_events, apalis.jobs, workflow_definitions cascade")
        .execute(&pool)
        .await
        .unwrap();
    let (status, body) = api.post(req, None).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = api
        .batch(json!({ "workflow": "greet", "tasks": named_tasks(2) }))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(definitions().await, 1);
    assert_eq!(counts(&pool).await, (3, 6, 3));
    api.stop.cancel();
}

/// A token not remembered yet (or no longer) met by a burst of requests is looked up
/// once: the others wait for that lookup instead of each writing the token's
/// `last_used_at`, one after another behind the row's lock.
#[sqlx::test(migrations = false)]
async fn a_burst_of_requests_looks_a_token_up_once(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn_api(&pool).await;
    let secret = token(&pool, cairn::auth::Role::Viewer).await;
    sqlx::raw_sql(
        "create table token_lookups (at timestamptz not null default clock_timestamp());
         create function count_lookup() returns trigger language plpgsql as
           $$ begin insert into token_lookups default values; return new; end $$;
         create trigger count_lookup after update on api_tokens
           for each row execute function count_lookup();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let burst = (0..32).map(|_| api.call_as(&secret, "GET", "/api/tasks", None));
    let answers = futures::future::join_all(burst).await;
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    let lookups: i64 = sqlx::query_scalar("select count(*) from token_lookups")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(lookups, 1, "32 requests at once with one new token");
    api.stop.cancel();
}

#[sqlx::test(migrations = false)]
async fn revoking_a_token_or_logging_out_takes_effect_at_once(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn_api(&pool).await;
    let admin = token(&pool, cairn::auth::Role::Admin).await;
    let (status, created) = api
        .call_as(
            &admin,
            "POST",
            "/api/tokens",
            Some(json!({ "name": "ci", "role": "operator" })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_i64().unwrap();

    assert_eq!(api.call_as(&secret, "GET", "/api/tasks", None).await.0, 200);
    // Revoked behind this API's back (as another API process would): it remembers the
    // token for up to PRINCIPAL_TTL.
    sqlx::query("update api_tokens set revoked_at = now() where id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    assert!(cairn::api::auth::PRINCIPAL_TTL <= Duration::from_secs(5));
    assert_eq!(
        api.call_as(&secret, "GET", "/api/tasks", None).await.0,
        200,
        "remembered"
    );
    // Revoked through this API: refused from the next request on.
    let (status, _) = api
        .call_as(&admin, "DELETE", &format!("/api/tokens/{id}"), None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(api.call_as(&secret, "GET", "/api/tasks", None).await.0, 401);

    // A session ends at logout, although it was just used.
    cairn::auth::create_user(
        &pool,
        "ada@example.com",
        "Ada",
        "correct horse",
        cairn::auth::Role::Viewer,
    )
    .await
    .unwrap();
    let login = api
        .http
        .post(format!("{}/api/auth/login", api.base))
        .json(&json!({ "email": "ada@example.com", "password": "correct horse" }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 200);
    let cookie = login
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let me = |cookie: String| {
        let r = api
            .http
            .get(format!("{}/api/auth/me", api.base))
            .header("cookie", cookie);
        async move { r.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(me(cookie.clone()).await, 200);
    let logout = api
        .http
        .post(format!("{}/api/auth/logout", api.base))
        .header("cookie", cookie.clone())
        .header("origin", &api.base)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status().as_u16(), 204);
    assert_eq!(me(cookie).await, 401);
    api.stop.cancel();
}

#[sqlx::test(migrations = false)]
async fn concurrent_submits_share_transactions_and_keep_their_answers(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn_api(&pool).await;
    let answers = futures::future::join_all((0..50).map(|i| {
        api.post(
            json!({ "workflow": "greet", "input": { "name": format!("n{i}") } }),
            None,
        )
    }))
    .await;
    let mut ids = std::collections::BTreeSet::new();
    for (i, (status, body)) in answers.iter().enumerate() {
        assert_eq!(*status, 201, "{body}");
        let id = body["taskId"].as_str().unwrap();
        ids.insert(id.to_owned());
        let input: Value = sqlx::query_scalar("select input from runs where id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(
            input["name"],
            format!("n{i}"),
            "each answer names its own run"
        );
    }
    assert_eq!(ids.len(), 50);
    assert_eq!(counts(&pool).await, (50, 100, 50));
    let transactions: i64 = sqlx::query_scalar("select count(distinct xmin::text) from runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(transactions < 50, "{transactions} transactions for 50 runs");

    // One key sent twenty times at once: one run, and every answer names it.
    let answers = futures::future::join_all((0..20).map(|_| {
        api.post(
            json!({ "workflow": "greet", "input": { "name": "Ada" } }),
            Some("same-key"),
        )
    }))
    .await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    let existing = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!((created, existing), (1, 19), "{answers:?}");
    let first = &answers[0].1["taskId"];
    assert!(answers.iter().all(|(_, b)| &b["taskId"] == first));
    assert_eq!(counts(&pool).await, (51, 102, 51));
    api.stop.cancel();
}

#[sqlx::test(migrations = false)]
async fn a_run_the_database_refuses_fails_only_its_own_submit(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn_api(&pool).await;
    sqlx::raw_sql(
        "create function poison() returns trigger language plpgsql as $$
         begin
             if new.input ->> 'name' = 'poison' then raise exception 'poisoned'; end if;
             return new;
         end $$;
         create trigger poison before insert on runs for each row execute function poison();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let answers = futures::future::join_all((0..30).map(|i| {
        let name = if i == 15 {
            "poison".to_owned()
        } else {
            format!("n{i}")
        };
        api.post(
            json!({ "workflow": "greet", "input": { "name": name } }),
            None,
        )
    }))
    .await;
    for (i, (status, body)) in answers.iter().enumerate() {
        let expected = if i == 15 { 500 } else { 201 };
        assert_eq!(*status, expected, "submit {i}: {body}");
    }
    assert_eq!(counts(&pool).await, (29, 58, 29));
    api.stop.cancel();
}
