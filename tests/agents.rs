//! Agent work end to end: `llm` steps against a fake OpenAI-compatible server (usage in
//! billing, `Retry-After` honoured), `wait` steps completed by signed webhooks (and
//! timing out into the dead-letter table), child workflows, and the BFF's
//! analyze-a-project flow with no model configured.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use cairn::auth::Role;
use cairn::workflow::{Definition, Registry};
use common::*;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "webhook-test-secret";

struct Api {
    base: String,
    http: reqwest::Client,
    stop: CancellationToken,
    token: String,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn spawn_api(pool: &PgPool, defs: Vec<Definition>) -> Api {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let mut state =
        cairn::api::AppState::new(pool.clone(), Arc::new(Registry::from_definitions(defs)));
    state.webhook_secret = Some(SECRET.into());
    state.prices = Arc::new(cairn::api::projects::Prices::parse("test-model=1000/2000").unwrap());
    tokio::spawn(cairn::api::serve(listener, state, stop.clone()));
    let user = cairn::auth::create_user(
        pool,
        "ops@example.com",
        "Ops",
        "password123",
        Role::Operator,
    )
    .await
    .unwrap();
    let secret = cairn::auth::new_secret("crn_").unwrap();
    cairn::store::users::token_create(
        pool,
        "t",
        &cairn::auth::secret_hash(&secret),
        "operator",
        Some(user.id),
        None,
    )
    .await
    .unwrap();
    Api {
        base,
        http: reqwest::Client::new(),
        stop,
        token: secret,
    }
}

impl Api {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn deliver(&self, body: &Value, ts: i64, secret: &str) -> (u16, Value) {
        let raw = serde_json::to_vec(body).unwrap();
        let resp = self
            .http
            .post(format!("{}/api/webhooks/agent-result", self.base))
            .header("content-type", "application/json")
            .header("x-cairn-timestamp", ts.to_string())
            .header(
                "x-cairn-signature",
                cairn::api::webhooks::sign(secret, ts, &raw),
            )
            .body(raw)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

fn examples() -> Vec<Definition> {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/workflows"));
    Registry::load_dir(dir).unwrap().iter().cloned().collect()
}

/// A fake OpenAI-compatible server: the first call gets 429 with `Retry-After: 1`, then
/// answers JSON; for requests asking for JSON output, the first answer is not JSON.
async fn fake_model() -> (String, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move |headers: HeaderMap, Json(body): Json<Value>| {
            let c = c.clone();
            async move {
                assert_eq!(headers.get("authorization").unwrap(), "Bearer sk-test");
                let n = c.fetch_add(1, Ordering::SeqCst);
                if n == 0 {
                    return (
                        StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "1")],
                        "slow down",
                    )
                        .into_response();
                }
                let wants_json = body.get("response_format").is_some();
                let content = if wants_json && n == 1 {
                    "not json at all".to_owned()
                } else if wants_json {
                    json!({ "verdict": "healthy", "score": 8 }).to_string()
                } else {
                    format!(
                        "Answer to: {}",
                        body["messages"].as_array().unwrap().last().unwrap()["content"]
                    )
                };
                let r: Response = Json(json!({
                    "model": "test-model",
                    "choices": [{ "message": { "role": "assistant", "content": content } }],
                    "usage": { "prompt_tokens": 12, "completion_tokens": 5 },
                }))
                .into_response();
                r
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, calls)
}

#[sqlx::test(migrations = false)]
async fn llm_steps_retry_after_429_validate_json_and_bill_tokens(pool: PgPool) {
    migrate(&pool).await;
    let (base_url, calls) = fake_model().await;
    let def = definition(
        "ask",
        r#"
[input]
topic = { type = "string" }

[[steps]]
id = "judge"
kind = "llm"
prompt = "Judge {{ input.topic }}"
output_schema = { type = "object", required = ["verdict", "score"], properties = { verdict = { type = "string" }, score = { type = "integer", minimum = 0, maximum = 10 } } }
retry = { max_attempts = 4, initial_delay = "100ms", jitter = 0 }
"#,
    );
    let api = spawn_api(&pool, vec![def.clone()]).await;
    let settings = cairn::worker::WorkerSettings {
        llm: Some(cairn::step::LlmConfig {
            base_url,
            api_key: Some("sk-test".into()),
            model: "test-model".into(),
        }),
        ..fast_settings()
    };
    let worker = TestWorker::start(&pool, settings);
    let (status, body) = api
        .call(
            "POST",
            "/api/tasks",
            Some(json!({ "workflow": "ask", "input": { "topic": "Cairn" } })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["taskId"].as_str().unwrap().to_owned();
    let statuses = wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(60)).await;
    worker.shutdown().await;
    assert_eq!(statuses[&id], "succeeded");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "429, then an answer that is not JSON, then a valid one"
    );

    let tries = attempts(&pool, &id, "judge").await;
    assert_eq!(tries.len(), 3);
    assert!(tries[0].3.as_deref().unwrap().contains("429"));
    assert!(
        tries[0].4.unwrap() >= 1000,
        "Retry-After: 1 sets the delay: {:?}",
        tries[0].4
    );
    let waited = (tries[1].1 - tries[0].2.unwrap()).num_milliseconds();
    assert!(
        waited >= 1000,
        "the second attempt began {waited}ms after the 429"
    );
    assert!(tries[1].3.as_deref().unwrap().contains("not JSON"));
    assert_eq!(
        tries[1].4,
        Some(200),
        "the schema failure follows the policy (100ms × 2)"
    );
    let (_, run) = api.call("GET", &format!("/api/tasks/{id}"), None).await;
    assert_eq!(
        run["output"]["judge"]["json"],
        json!({ "verdict": "healthy", "score": 8 })
    );

    let (status, usage) = api.call("GET", "/api/billing/usage?since=1h", None).await;
    assert_eq!(status, 200, "{usage}");
    let line = usage["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["workflow"] == "ask")
        .unwrap()
        .clone();
    assert_eq!(line["user"], "ops@example.com");
    assert_eq!(
        (line["runs"].as_i64(), line["steps"].as_i64()),
        (Some(1), Some(3))
    );
    // Two answered calls were billed (the 429 carried no usage).
    assert_eq!(
        (
            line["promptTokens"].as_i64(),
            line["completionTokens"].as_i64()
        ),
        (Some(24), Some(10))
    );
    let cost = line["estimatedCost"].as_f64().unwrap();
    assert!((cost - 0.044).abs() < 1e-9, "{cost}");
}

const WAITER: &str = r#"
[[steps]]
id = "prepare"
kind = "sql"
query = "select 1 as ok"

[[steps]]
id = "findings"
kind = "wait"
needs = ["prepare"]
timeout = "1h"

[[steps]]
id = "use"
kind = "sql"
needs = ["findings"]
query = "select $1::text as got"
params = ["{{ steps.findings.output.answer }}"]
"#;

async fn run_status(pool: &PgPool, id: &str) -> String {
    sqlx::query_scalar("select status from runs where id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn signed_webhooks_complete_wait_steps_once_and_bad_ones_change_nothing(pool: PgPool) {
    migrate(&pool).await;
    let def = definition("waiter", WAITER);
    let api = spawn_api(&pool, vec![def.clone()]).await;
    let worker = TestWorker::start(&pool, fast_settings());
    let id = submit(&pool, &def, json!({})).await;
    wait_until(&pool, Duration::from_secs(30), "the run to wait", || {
        let (pool, id) = (pool.clone(), id.clone());
        async move { run_status(&pool, &id).await == "waiting" }
    })
    .await;
    let events_before: i64 = sqlx::query_scalar("select count(*) from run_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp();
    let good = json!({ "taskId": id, "stepId": "findings", "result": { "answer": "42" } });

    let (s, _) = api.deliver(&good, now, "wrong-secret").await;
    assert_eq!(s, 401, "bad signature");
    let (s, _) = api.deliver(&good, now - 3600, SECRET).await;
    assert_eq!(s, 401, "stale timestamp");
    let (s, _) = api
        .deliver(
            &json!({ "taskId": "nope", "stepId": "findings", "result": {} }),
            now,
            SECRET,
        )
        .await;
    assert_eq!(s, 404, "unknown task");
    let (s, _) = api
        .deliver(
            &json!({ "taskId": id, "stepId": "prepare", "result": {} }),
            now,
            SECRET,
        )
        .await;
    assert_eq!(s, 409, "not a wait step");
    let events_after: i64 = sqlx::query_scalar("select count(*) from run_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        events_before, events_after,
        "rejected deliveries change nothing"
    );
    assert_eq!(run_status(&pool, &id).await, "waiting");

    let (s, body) = api.deliver(&good, now, SECRET).await;
    assert_eq!((s, body["accepted"].as_bool()), (200, Some(true)));
    let (s, body) = api.deliver(&good, now, SECRET).await;
    assert_eq!(
        (s, body["accepted"].as_bool()),
        (200, Some(false)),
        "a replayed delivery is ignored"
    );
    assert_eq!(
        wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(30)).await[&id],
        "succeeded"
    );
    worker.shutdown().await;
    let (_, run) = api.call("GET", &format!("/api/tasks/{id}"), None).await;
    assert_eq!(run["output"]["use"]["rows"][0]["got"], "42");
    let delivered: i64 = sqlx::query_scalar(
        "select count(*) from run_events where run_id = $1 and kind = 'step_succeeded' and step_id = 'findings'",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(delivered, 1);
}

#[sqlx::test(migrations = false)]
async fn a_wait_that_times_out_follows_its_retry_policy_into_the_dead_letters(pool: PgPool) {
    migrate(&pool).await;
    let def = definition(
        "impatient",
        "[[steps]]\nid = \"reply\"\nkind = \"wait\"\ntimeout = \"1s\"\nretry = { max_attempts = 2, initial_delay = \"100ms\" }\n",
    );
    let worker = TestWorker::start(&pool, fast_settings());
    let id = submit(&pool, &def, json!({})).await;
    assert_eq!(
        wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(60)).await[&id],
        "dead"
    );
    worker.shutdown().await;
    let (attempts, error): (serde_json::Value, String) =
        sqlx::query_as("select attempts, error from dead_letters where run_id = $1")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
    let attempts = attempts.as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    for a in attempts {
        assert!(
            a["error"]
                .as_str()
                .unwrap()
                .contains("no callback arrived within 1s"),
            "{a}"
        );
    }
    assert!(error.contains("no attempts left"), "{error}");
}

#[sqlx::test(migrations = false)]
async fn child_outputs_flow_to_the_parent_and_cancelling_the_parent_cancels_the_child(
    pool: PgPool,
) {
    migrate(&pool).await;
    let child = definition(
        "child",
        "[input]\nn = { type = \"integer\" }\n\n[[steps]]\nid = \"double\"\nkind = \"sql\"\nquery = \"select $1::int * 2 as n\"\nparams = [\"{{ input.n }}\"]\n",
    );
    let parent = definition(
        "parent",
        "[[steps]]\nid = \"call\"\nkind = \"workflow\"\nworkflow = \"child\"\ninput = { n = 21 }\n\n[[steps]]\nid = \"after\"\nkind = \"sql\"\nneeds = [\"call\"]\nquery = \"select $1::int + 0 as n\"\nparams = [\"{{ steps.call.output.double.rows[0].n }}\"]\n",
    );
    let waiter = definition("waiter", WAITER);
    let boss = definition(
        "boss",
        "[[steps]]\nid = \"delegate\"\nkind = \"workflow\"\nworkflow = \"waiter\"\n",
    );
    let api = spawn_api(&pool, vec![child, parent, waiter, boss]).await;
    let worker = TestWorker::start(&pool, fast_settings());

    let (status, body) = api
        .call(
            "POST",
            "/api/agents/workflow",
            Some(json!({ "workflow": "parent", "input": {} })),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["taskId"].as_str().unwrap().to_owned();
    assert_eq!(
        wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(60)).await[&id],
        "succeeded"
    );
    let (_, run) = api.call("GET", &format!("/api/tasks/{id}"), None).await;
    assert_eq!(run["output"]["after"]["rows"][0]["n"], 42, "{run}");
    let child_id: String = sqlx::query_scalar("select id from runs where parent_run_id = $1")
        .bind(&id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(run_status(&pool, &child_id).await, "succeeded");

    let (_, body) = api
        .call(
            "POST",
            "/api/agents/workflow",
            Some(json!({ "workflow": "boss" })),
        )
        .await;
    let boss_id = body["taskId"].as_str().unwrap().to_owned();
    let mut child_of_boss = String::new();
    wait_until(
        &pool,
        Duration::from_secs(30),
        "the child to wait for its callback",
        || {
            let (pool, boss_id) = (pool.clone(), boss_id.clone());
            async move {
                sqlx::query_scalar::<_, String>("select status from runs where parent_run_id = $1")
                    .bind(&boss_id)
                    .fetch_optional(&pool)
                    .await
                    .unwrap()
                    .is_some_and(|s| s == "waiting")
            }
        },
    )
    .await;
    child_of_boss.push_str(
        &sqlx::query_scalar::<_, String>("select id from runs where parent_run_id = $1")
            .bind(&boss_id)
            .fetch_one(&pool)
            .await
            .unwrap(),
    );
    let (status, _) = api
        .call("POST", &format!("/api/tasks/{boss_id}/cancel"), None)
        .await;
    assert_eq!(status, 200);
    let done = wait_finished(
        &pool,
        &[boss_id.clone(), child_of_boss.clone()],
        Duration::from_secs(30),
    )
    .await;
    worker.shutdown().await;
    assert_eq!(done[&boss_id], "cancelled");
    assert_eq!(
        done[&child_of_boss], "cancelled",
        "cancelling the parent cancels the child"
    );
}

#[sqlx::test(migrations = false)]
async fn analyzing_a_project_lands_the_analysis_on_it_without_a_model(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn_api(&pool, examples()).await;
    let worker = TestWorker::start(&pool, fast_settings());
    let (status, project) = api
        .call(
            "POST",
            "/api/projects",
            Some(
                json!({ "name": "Apollo", "description": "Guidance computer. Flies to the moon." }),
            ),
        )
        .await;
    assert_eq!(status, 201, "{project}");
    let pid = project["id"].as_i64().unwrap();
    assert_eq!(project["owner"], "ops@example.com");
    let (status, started) = api
        .call(
            "POST",
            "/api/agents/analyze",
            Some(json!({ "projectId": pid })),
        )
        .await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["status"], "queued");
    let id = started["taskId"].as_str().unwrap().to_owned();
    assert_eq!(
        wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(60)).await[&id],
        "succeeded"
    );

    let (_, summary) = api
        .call(
            "POST",
            "/api/agents/summarize",
            Some(json!({ "projectId": pid })),
        )
        .await;
    let sid = summary["taskId"].as_str().unwrap().to_owned();
    assert_eq!(
        wait_finished(&pool, std::slice::from_ref(&sid), Duration::from_secs(60)).await[&sid],
        "succeeded"
    );
    worker.shutdown().await;

    let (status, shown) = api.call("GET", &format!("/api/projects/{pid}"), None).await;
    assert_eq!(status, 200);
    let analyses = shown["analyses"].as_array().unwrap();
    assert_eq!(analyses.len(), 2);
    let analysis = analyses
        .iter()
        .find(|a| a["taskId"] == id.as_str())
        .unwrap();
    assert_eq!(analysis["status"], "succeeded");
    assert_eq!(analysis["result"]["narratedBy"], "built-in analyze");
    assert!(
        analysis["result"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("Apollo:"),
        "{analysis}"
    );
    assert!(
        !analysis["result"]["findings"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let summary = analyses
        .iter()
        .find(|a| a["taskId"] == sid.as_str())
        .unwrap();
    assert!(
        summary["result"]["summary"]
            .as_str()
            .unwrap()
            .contains("moon"),
        "{summary}"
    );

    let (status, _) = api
        .call(
            "POST",
            "/api/agents/analyze",
            Some(json!({ "projectId": 999999 })),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = api
        .call("POST", "/api/agents/summarize", Some(json!({})))
        .await;
    assert_eq!(status, 422);
}

#[sqlx::test(migrations = false)]
async fn the_nightly_portfolio_report_covers_every_project_with_a_child_analysis(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn_api(&pool, examples()).await;
    let worker = TestWorker::start(&pool, fast_settings());
    for name in ["Apollo", "Gemini"] {
        let (status, _) = api
            .call("POST", "/api/projects", Some(json!({ "name": name })))
            .await;
        assert_eq!(status, 201);
    }
    let (status, body) = api
        .call(
            "POST",
            "/api/agents/workflow",
            Some(json!({ "workflow": "nightly_portfolio_report", "input": {} })),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["taskId"].as_str().unwrap().to_owned();
    assert_eq!(
        wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(60)).await[&id],
        "succeeded"
    );
    worker.shutdown().await;
    let (_, run) = api.call("GET", &format!("/api/tasks/{id}"), None).await;
    let projects = run["output"]["projects"].as_array().unwrap();
    assert_eq!(projects.len(), 2, "{run}");
    assert!(
        projects.iter().all(|p| p["health"].is_string()),
        "{projects:?}"
    );
    assert_eq!(run["output"]["report"]["projects"], 2);
    assert!(
        run["output"]["analyses"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("Gemini:"),
        "{run}"
    );
    let children: i64 = sqlx::query_scalar(
        "select count(*) from runs where parent_run_id = $1 and status = 'succeeded'",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(children, 1);
}
