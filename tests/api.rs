//! The HTTP API and `ctl` against a real server on port 0 and a real database: the
//! submit path, its errors (which must change nothing), listing and showing runs.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cairn::api::{AppState, serve};
use cairn::workflow::Registry;
use common::*;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

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

struct Api {
    base: String,
    http: reqwest::Client,
    stop: CancellationToken,
    /// An operator's bearer token.
    token: String,
}

async fn spawn_api(pool: &PgPool) -> Api {
    let registry = Registry::from_definitions([definition("greet", GREET)]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let state = AppState::new(pool.clone(), Arc::new(registry));
    tokio::spawn(serve(listener, state, stop.clone()));
    Api {
        base,
        http: reqwest::Client::new(),
        stop,
        token: token(pool, cairn::auth::Role::Operator).await,
    }
}

impl Api {
    async fn post(&self, body: Value, key: Option<&str>) -> (u16, Value) {
        let mut r = self
            .http
            .post(format!("{}/api/tasks", self.base))
            .bearer_auth(&self.token)
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

    async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }
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
        .bearer_auth(&api.token)
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

async fn ctl(api: &str, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ctl"))
        .args(args)
        .env("CAIRN_API_URL", api)
        .env("CAIRN_TOKEN", token)
        .env("HOME", std::env::temp_dir())
        .output()
        .await
        .expect("run ctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[sqlx::test(migrations = false)]
async fn ctl_submits_lists_and_shows_runs(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn_api(&pool).await;
    let worker = TestWorker::start(&pool, fast_settings());
    let (base, tok) = (api.base.as_str(), api.token.as_str());

    let (code, out, err) = ctl(
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

    let (code, out, _) = ctl(base, tok, &["task", "show", &id, "-o", "json"]).await;
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

    let (code, out, _) = ctl(base, tok, &["task", "show", &id]).await;
    assert_eq!(code, 0);
    assert!(out.contains("greet") && out.contains("succeeded"), "{out}");

    let (code, out, _) = ctl(base, tok, &["task", "list", "--status", "succeeded"]).await;
    assert_eq!(code, 0);
    assert!(out.contains(&id) && out.contains("succeeded"), "{out}");

    let (code, _, err) = ctl(
        base,
        tok,
        &["task", "submit", "greet", "--input", r#"{"name":1}"#],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("name: expected string, got integer"), "{err}");

    let (code, _, err) = ctl(base, "wrong", &["task", "list"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");

    let (code, _, _) = ctl(base, tok, &["task", "bogus"]).await;
    assert_eq!(code, 2, "usage errors exit 2");

    worker.shutdown().await;
    api.stop.cancel();
}

#[tokio::test]
async fn ctl_validate_reports_located_errors_without_a_database() {
    let dir = std::env::temp_dir().join(format!("cairn-validate-{}", ulid::Ulid::generate()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("good.toml"), GREET).unwrap();
    std::fs::write(
        dir.join("bad.toml"),
        "[[steps]]\nid = \"a\"\nkind = \"sql\"\nquery = \"select 1\"\nneeds = [\"ghost\"]\n",
    )
    .unwrap();
    std::fs::write(dir.join("broken.toml"), "[[steps]\nid = 1\n").unwrap();
    let (code, out, _) = ctl(
        "http://127.0.0.1:1",
        "",
        &["workflow", "validate", dir.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("bad.toml:5:10: step `a` needs unknown step `ghost`"),
        "{out}"
    );
    assert!(out.contains("broken.toml:1:"), "{out}");
    assert!(!out.contains("good.toml"), "{out}");

    let (code, out, _) = ctl(
        "http://127.0.0.1:1",
        "",
        &[
            "workflow",
            "validate",
            dir.join("good.toml").to_str().unwrap(),
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["valid"], true);

    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/workflows");
    let (code, out, _) = ctl(
        "http://127.0.0.1:1",
        "",
        &["workflow", "validate", examples],
    )
    .await;
    assert_eq!(code, 0, "the shipped examples are valid: {out}");
    std::fs::remove_dir_all(&dir).ok();
}
