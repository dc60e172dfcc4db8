//! The API's contract at its edge: every bad input is a 4xx in the documented error
//! shape and changes nothing — NUL characters anywhere, durations past what a timestamp
//! can hold, JSON arrays where objects are documented, inputs with a flood of problems,
//! and requests the router itself refuses.

mod common;

use common::*;
use serde_json::{Value, json};
use sqlx::PgPool;

const GREET: &str = r#"
description = "test"

[input]
name = { type = "string" }

[[steps]]
id = "greet"
kind = "pass"
output = { text = "hi {{ input.name }}" }
"#;

const WEBHOOK_SECRET: &str = "contract-secret";

async fn spawn(pool: &PgPool) -> TestApi {
    TestApi::builder(pool)
        .workflows([definition("greet", GREET)])
        .webhook_secret(WEBHOOK_SECRET)
        .start()
        .await
}

/// An answer: status, content type and body.
struct Answer {
    status: u16,
    content_type: String,
    body: Value,
    len: usize,
}

impl TestApi {
    async fn send(&self, method: &str, path: &str, body: Option<&str>) -> Answer {
        let mut r = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(&self.admin);
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        answer(r.send().await.unwrap()).await
    }
}

async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = resp.bytes().await.unwrap();
    Answer {
        status,
        content_type,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        len: bytes.len(),
    }
}

/// A 4xx in the documented shape: `{ "error": { "code", "message", "details"? } }`.
fn assert_refused(a: &Answer, what: &str) {
    assert!(
        (400..500).contains(&a.status),
        "{what}: {} {}",
        a.status,
        a.body
    );
    assert!(
        a.content_type.starts_with("application/json"),
        "{what}: content type {:?}",
        a.content_type
    );
    let error = a.body["error"].as_object().unwrap_or_else(|| {
        panic!("{what}: no error object in {}", a.body);
    });
    assert!(error["code"].is_string(), "{what}: {}", a.body);
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {}",
        a.body
    );
    for key in error.keys() {
        assert!(
            ["code", "message", "details"].contains(&key.as_str()),
            "{what}: unexpected `{key}` in {}",
            a.body
        );
    }
}

/// Row counts of everything a request could write.
async fn snapshot(pool: &PgPool) -> Vec<(String, i64)> {
    let mut counts = Vec::new();
    for table in [
        "runs",
        "steps",
        "run_events",
        "projects",
        "users",
        "api_tokens",
        "schedules",
        "dead_letters",
        "apalis.jobs",
    ] {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select count(*) from {table}")))
                .fetch_one(pool)
                .await
                .unwrap();
        counts.push((table.to_owned(), n));
    }
    let names: Vec<String> = sqlx::query_scalar("select name from projects order by id")
        .fetch_all(pool)
        .await
        .unwrap();
    counts.push((names.join(","), 0));
    counts
}

#[sqlx::test(migrator = "cairn::store::MIGRATOR")]
async fn nul_characters_anywhere_are_refused_and_change_nothing(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn(&pool).await;
    // Something to point at: a project, a run and a user.
    let project = api
        .send("POST", "/api/projects", Some(r#"{"name":"p"}"#))
        .await;
    assert_eq!(project.status, 201, "{}", project.body);
    let project = project.body["id"].as_i64().unwrap();
    let run = api
        .send(
            "POST",
            "/api/tasks",
            Some(r#"{"workflow":"greet","input":{"name":"x"}}"#),
        )
        .await;
    assert_eq!(run.status, 201, "{}", run.body);
    let run = run.body["taskId"].as_str().unwrap().to_owned();
    let before = snapshot(&pool).await;

    let nul = r"a\u0000b";
    let bodies: Vec<(&str, String, String)> = vec![
        (
            "POST",
            "/api/projects".into(),
            format!(r#"{{"name":"{nul}"}}"#),
        ),
        (
            "PATCH",
            format!("/api/projects/{project}"),
            format!(r#"{{"name":"{nul}"}}"#),
        ),
        (
            "POST",
            "/api/tasks".into(),
            format!(r#"{{"workflow":"greet","input":{{"name":"{nul}"}}}}"#),
        ),
        (
            "POST",
            "/api/tasks".into(),
            format!(r#"{{"workflow":"{nul}","input":{{}}}}"#),
        ),
        (
            "POST",
            "/api/tasks/batch".into(),
            format!(r#"{{"workflow":"greet","tasks":[{{"input":{{"name":"{nul}"}}}}]}}"#),
        ),
        (
            "POST",
            "/api/tasks/batch".into(),
            format!(
                r#"{{"workflow":"greet","tasks":[{{"input":{{"name":"x"}},"idempotencyKey":"{nul}"}}]}}"#
            ),
        ),
        (
            "POST",
            "/api/schedules".into(),
            format!(
                r#"{{"name":"s","workflow":"greet","cron":"0 6 * * *","input":{{"name":"{nul}"}}}}"#
            ),
        ),
        (
            "POST",
            "/api/users".into(),
            format!(r#"{{"email":"{nul}@example.com","password":"long enough","role":"viewer"}}"#),
        ),
        (
            "POST",
            "/api/tokens".into(),
            format!(r#"{{"name":"{nul}","role":"viewer"}}"#),
        ),
        (
            "POST",
            "/api/auth/token".into(),
            format!(r#"{{"name":"{nul}"}}"#),
        ),
        (
            "POST",
            "/api/auth/login".into(),
            format!(r#"{{"email":"{nul}","password":"x"}}"#),
        ),
        (
            "POST",
            format!("/api/tasks/{run}/replay"),
            format!(r#"{{"input":{{"name":"{nul}"}}}}"#),
        ),
        // A key that is itself a NUL.
        (
            "POST",
            "/api/tasks".into(),
            r#"{"workflow":"greet","input":{"\u0000":1}}"#.into(),
        ),
    ];
    for (method, path, body) in &bodies {
        let a = api.send(method, path, Some(body)).await;
        assert_refused(&a, &format!("{method} {path} {body}"));
    }
    for path in [
        "/api/tasks?q=%00",
        "/api/tasks?workflow=%00",
        "/api/tasks?cursor=%00",
        "/api/tasks/%00",
        "/api/dead-letters?workflow=a%00b",
        "/api/projects?q=%00",
        "/api/workflows/%00",
    ] {
        let a = api.send("GET", path, None).await;
        assert_refused(&a, path);
        assert_eq!(a.status, 400, "{path}");
    }

    // The webhook, correctly signed, with a NUL in its task id.
    let body = format!(r#"{{"taskId":"{nul}","stepId":"s","result":{{}}}}"#);
    let ts = chrono::Utc::now().timestamp();
    let resp = api
        .http
        .post(format!("{}/api/webhooks/agent-result", api.base))
        .header("content-type", "application/json")
        .header("x-cairn-timestamp", ts.to_string())
        .header(
            "x-cairn-signature",
            cairn::delivery::sign(
                &cairn::delivery::key(WEBHOOK_SECRET, nul, "s", 1).unwrap(),
                ts,
                body.as_bytes(),
            )
            .unwrap(),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_refused(&answer(resp).await, "webhook");

    assert_eq!(
        snapshot(&pool).await,
        before,
        "a refused request wrote something"
    );
}

#[sqlx::test(migrator = "cairn::store::MIGRATOR")]
async fn arrays_where_objects_are_documented_are_refused_and_change_nothing(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn(&pool).await;
    let project = api
        .send("POST", "/api/projects", Some(r#"{"name":"p"}"#))
        .await;
    let project = project.body["id"].as_i64().unwrap();
    let run = api
        .send(
            "POST",
            "/api/tasks",
            Some(r#"{"workflow":"greet","input":{"name":"x"}}"#),
        )
        .await;
    let run = run.body["taskId"].as_str().unwrap().to_owned();
    let before = snapshot(&pool).await;

    for (method, path, body) in [
        ("POST", "/api/tasks".to_owned(), r#"["greet",{"name":"x"}]"#),
        ("POST", "/api/projects".to_owned(), r#"["p"]"#),
        (
            "PATCH",
            format!("/api/projects/{project}"),
            r#"["renamed",null]"#,
        ),
        (
            "POST",
            "/api/tasks/batch".to_owned(),
            r#"["greet",[{"input":{"name":"x"}}]]"#,
        ),
        (
            "POST",
            format!("/api/tasks/{run}/replay"),
            r#"[{"name":"y"}]"#,
        ),
        ("POST", "/api/tasks".to_owned(), r#""greet""#),
        ("POST", "/api/tasks".to_owned(), "null"),
        ("POST", "/api/tasks".to_owned(), "  "),
    ] {
        let a = api.send(method, &path, Some(body)).await;
        assert_refused(&a, &format!("{method} {path} {body}"));
    }
    // Not JSON at all.
    let resp = api
        .http
        .post(format!("{}/api/tasks", api.base))
        .bearer_auth(&api.admin)
        .header("content-type", "text/plain")
        .body(r#"{"workflow":"greet","input":{"name":"x"}}"#)
        .send()
        .await
        .unwrap();
    let a = answer(resp).await;
    assert_refused(&a, "text/plain");
    assert_eq!(a.status, 415);
    assert_eq!(
        snapshot(&pool).await,
        before,
        "a refused request wrote something"
    );
}

#[sqlx::test(migrator = "cairn::store::MIGRATOR")]
async fn durations_are_range_checked(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn(&pool).await;
    let before = snapshot(&pool).await;
    // Longer than any history: all of it, not a timestamp Postgres cannot store.
    for path in [
        "/api/tasks?since=7000y",
        "/api/dead-letters?since=7000y",
        "/api/billing/usage?since=7000y",
        "/api/tasks?since=999999999y",
    ] {
        let a = api.send("GET", path, None).await;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
    }
    for (method, path, body) in [
        (
            "POST",
            "/api/tasks/bulk/cancel",
            Some(r#"{"filter":{"since":"7000y"},"dryRun":true}"#),
        ),
        (
            "POST",
            "/api/dead-letters/bulk/purge",
            Some(r#"{"filter":{"since":"7000y"},"dryRun":true}"#),
        ),
    ] {
        let a = api.send(method, path, body).await;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
    }
    // Not durations as documented.
    for (method, path, body) in [
        ("GET", "/api/tasks?since=", None),
        ("GET", "/api/tasks?since=1hour", None),
        ("GET", "/api/dead-letters?since=1h%2030m", None),
        ("GET", "/api/billing/usage?until=-1d", None),
        ("GET", "/api/overview?window=9999999999s", None),
        (
            "POST",
            "/api/tasks/bulk/cancel",
            Some(r#"{"filter":{"until":"soon"},"dryRun":true}"#),
        ),
    ] {
        let a = api.send(method, path, body).await;
        assert_refused(&a, path);
        assert_eq!(a.status, 400, "{path}: {}", a.body);
    }
    // A long but storable look-back is fine.
    assert_eq!(
        api.send("GET", "/api/tasks?since=50y", None).await.status,
        200
    );
    assert_eq!(snapshot(&pool).await, before);
}

#[sqlx::test(migrator = "cairn::store::MIGRATOR")]
async fn a_flood_of_problems_is_answered_briefly(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn(&pool).await;
    let before = snapshot(&pool).await;

    // 90,000 unknown keys: about 1 MB of input.
    let keys: serde_json::Map<String, Value> =
        (0..90_000).map(|i| (format!("k{i}"), json!(1))).collect();
    let body = json!({ "workflow": "greet", "input": keys }).to_string();
    assert!(body.len() < cairn::api::MAX_BODY, "{}", body.len());
    let a = api.send("POST", "/api/tasks", Some(&body)).await;
    assert_refused(&a, "90,000 unknown keys");
    assert_eq!(a.status, 422);
    assert!(a.len < 64 * 1024, "a {}-byte answer", a.len);
    let details = a.body["error"]["details"].as_array().unwrap();
    assert!(details.len() <= 51, "{} details", details.len());
    assert!(a.body.to_string().contains("more"), "{}", a.body);

    // A batch whose every task is wrong.
    let tasks: Vec<Value> = (0..1000)
        .map(|i| json!({ "input": { "nope": i, "other": i } }))
        .collect();
    let body = json!({ "workflow": "greet", "tasks": tasks }).to_string();
    let a = api.send("POST", "/api/tasks/batch", Some(&body)).await;
    assert_refused(&a, "a batch of wrong tasks");
    assert_eq!(a.status, 422);
    assert!(a.len < 64 * 1024, "a {}-byte answer", a.len);
    assert_eq!(snapshot(&pool).await, before);
}

#[sqlx::test(migrator = "cairn::store::MIGRATOR")]
async fn what_the_router_refuses_is_answered_in_the_error_shape(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn(&pool).await;
    for (method, path, status) in [
        ("GET", "/api/projects/abc", 400),
        ("GET", "/api/projects/99999999999999999999", 400),
        ("GET", "/api/tasks/%FF%FE", 400),
        ("PUT", "/api/tasks", 405),
        ("DELETE", "/api/workers", 405),
        ("GET", "/api/nothing/here", 404),
    ] {
        let a = api.send(method, path, None).await;
        assert_refused(&a, &format!("{method} {path}"));
        assert_eq!(a.status, status, "{method} {path}: {}", a.body);
    }
    // Too large a body.
    let big = format!(
        r#"{{"workflow":"greet","input":{{"name":"{}"}}}}"#,
        "x".repeat(cairn::api::MAX_BODY)
    );
    let a = api.send("POST", "/api/tasks", Some(&big)).await;
    assert_refused(&a, "too large");
    assert_eq!(a.status, 413);
}

/// What makes the document exact beyond OpenAPI's own schema (which CI checks with
/// openapi-spec-validator in scripts/fuzz.sh): ids that name one operation each, every
/// answer described, and every error an operation can give documented.
#[test]
fn the_openapi_document_documents_every_answer() {
    let doc = cairn::api::openapi();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let mut ids = std::collections::BTreeSet::new();
    let public = [
        "/api/auth/login",
        "/api/auth/logout",
        "/api/webhooks/agent-result",
    ];
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let what = format!("{method} {path}");
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(
                ids.insert(id.to_owned()),
                "{what}: operationId `{id}` repeats"
            );
            let responses = op["responses"].as_object().unwrap();
            for (status, r) in responses {
                assert!(
                    r["description"].as_str().is_some_and(|d| !d.is_empty()),
                    "{what} {status}: no description"
                );
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        r["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{what} {status}"
                    );
                }
            }
            let mut needed = vec!["400", "503"];
            if public.contains(&path.as_str()) {
                assert_eq!(op["security"], json!([{}]), "{what} needs no credentials");
            } else {
                needed.extend(["401", "403"]);
            }
            if path.contains('{') {
                needed.push("404");
            }
            if op.get("requestBody").is_some() {
                needed.extend(["413", "415", "422"]);
            }
            for status in needed {
                assert!(
                    responses.contains_key(status),
                    "{what}: {status} undocumented"
                );
            }
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["in"] == "path" || p["in"] == "query" {
                    assert_ne!(
                        p["schema"]["type"], "integer",
                        "{what} {}: an integer in a URL is documented as digits",
                        p["name"]
                    );
                }
            }
        }
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    assert!(
        schemas.contains_key("RunBulkRequest") && schemas.contains_key("DeadLetterBulkRequest")
    );
    assert!(!schemas.contains_key("BulkRequest"), "one schema per name");
    assert!(ids.len() >= 50, "{} operations documented", ids.len());
}
