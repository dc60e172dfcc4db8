//! Agent work end to end: `llm` steps against a fake OpenAI-compatible server (usage in
//! billing, `Retry-After` honoured), `wait` steps completed by webhooks signed with
//! per-delivery keys (and timing out into the dead-letter table; keys that belong to
//! another run, step or attempt refused), child workflows, and the BFF's
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

const SECRET: &str = "webhook-test-secret";

/// The API with the webhook secret and a price for `test-model`; its operator token is
/// the user `ops@example.com`'s, whom usage is billed to.
async fn spawn_api(pool: &PgPool, defs: Vec<Definition>) -> TestApi {
    let mut api = TestApi::builder(pool)
        .workflows(defs)
        .webhook_secret(SECRET)
        .flags(&["--llm-prices", "test-model=1000/2000"])
        .start()
        .await;
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
    api.operator = secret;
    api
}

impl TestApi {
    /// Posts `body` to the webhook signed at `ts` with `key` (a delivery key, or anything
    /// else a caller might try).
    async fn deliver(&self, body: &Value, ts: i64, key: &str) -> (u16, Value) {
        let raw = serde_json::to_vec(body).unwrap();
        let resp = self
            .http
            .post(format!("{}/api/webhooks/agent-result", self.base))
            .header("content-type", "application/json")
            .header("x-cairn-timestamp", ts.to_string())
            .header(
                "x-cairn-signature",
                cairn::delivery::sign(key, ts, &raw).unwrap(),
            )
            .body(raw)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

/// The key of `attempt` of `step` in `run`, as the API derives it from [`SECRET`].
fn key(run: &str, step: &str, attempt: i32) -> String {
    cairn::delivery::key(SECRET, run, step, attempt).unwrap()
}

/// Worker settings with the webhook secret, so templates can hand out delivery keys.
fn keyed_settings() -> cairn::worker::WorkerSettings {
    cairn::worker::WorkerSettings {
        webhook_secret: Some(SECRET.into()),
        ..fast_settings()
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
    let base = format!("http://{}/v1", common::serve(app).await);
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
    let findings = key(&id, "findings", 1);

    let (s, _) = api.deliver(&good, now, "wrong-key").await;
    assert_eq!(s, 401, "bad signature");
    let (s, _) = api.deliver(&good, now - 3600, &findings).await;
    assert_eq!(s, 401, "stale timestamp");
    let (s, _) = api
        .deliver(
            &json!({ "taskId": "nope", "stepId": "findings", "result": {} }),
            now,
            &key("nope", "findings", 1),
        )
        .await;
    assert_eq!(s, 401, "unknown task: no key can match");
    let (s, _) = api
        .deliver(
            &json!({ "taskId": id, "stepId": "prepare", "result": {} }),
            now,
            &key(&id, "prepare", 1),
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

    let (s, body) = api.deliver(&good, now, &findings).await;
    assert_eq!((s, body["accepted"].as_bool()), (200, Some(true)));
    let (s, body) = api.deliver(&good, now, &findings).await;
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

/// The nightly report over 25 projects: every project gets its own analyze_project run
/// (a child of the report, through its `map` step), no more than five at once, and the
/// report lists every analysis in project order.
#[sqlx::test(migrations = false)]
async fn the_nightly_portfolio_report_analyses_every_project(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn_api(&pool, examples()).await;
    let mut names = Vec::new();
    for n in 0..25 {
        let name = format!("Project {n:02}");
        let (status, _) = api
            .call("POST", "/api/projects", Some(json!({ "name": name })))
            .await;
        assert_eq!(status, 201);
        names.push(name);
    }
    let workers: Vec<TestWorker> = (0..2)
        .map(|_| TestWorker::start(&pool, fast_settings()))
        .collect();
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
        wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(120)).await[&id],
        "succeeded"
    );
    for w in workers {
        w.shutdown().await;
    }
    let (_, run) = api.call("GET", &format!("/api/tasks/{id}"), None).await;
    let projects = run["output"]["projects"].as_array().unwrap();
    assert_eq!(projects.len(), 25, "{run}");
    assert_eq!(run["output"]["report"]["projects"], 25);
    assert_eq!(run["output"]["report"]["failed_analyses"], 0, "{run}");
    let analyses = run["output"]["analyses"].as_array().unwrap();
    assert_eq!(analyses.len(), 25);
    for (analysis, (project, name)) in analyses.iter().zip(projects.iter().zip(&names)) {
        assert_eq!(analysis["projectId"], project["id"], "{analysis}");
        assert!(
            analysis["summary"]
                .as_str()
                .unwrap()
                .starts_with(name.as_str()),
            "{analysis}"
        );
    }
    let children: Vec<(String, i64)> = sqlx::query_as(
        "select status, count(distinct input->>'project_id') from runs
          where parent_run_id = $1 and workflow = 'analyze_project' group by status",
    )
    .bind(&id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        children,
        [("succeeded".to_owned(), 25)],
        "one analysis per project"
    );
    // Never more than `max_parallel` analyses started and not yet finished.
    let most: i64 = sqlx::query_scalar(
        "with edges as (
             select started_at as at, 1 as d from runs where parent_run_id = $1
             union all
             select finished_at, -1 from runs where parent_run_id = $1)
         select max(n) from (select sum(d) over (order by at, d) as n from edges) e",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(most <= 5, "{most} analyses at once");
}

/// A fake external agent: hands every job it is sent to the test, and answers 202.
async fn fake_agent() -> (String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/jobs",
        post(move |Json(job): Json<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(job);
                StatusCode::ACCEPTED
            }
        }),
    );
    let url = format!("http://{}/jobs", common::serve(app).await);
    (url, rx)
}

/// Every event and every step of every run: what a refused delivery must not change.
async fn snapshot(pool: &PgPool) -> (i64, Vec<(String, String, String, i32)>) {
    let events: i64 = sqlx::query_scalar("select count(*) from run_events")
        .fetch_one(pool)
        .await
        .unwrap();
    let steps = sqlx::query_as(
        "select run_id, step_id, status, attempts from steps order by run_id, step_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    (events, steps)
}

async fn step_is(pool: &PgPool, run: &str, step: &str, status: &str, attempts: i32) -> bool {
    sqlx::query_scalar::<_, bool>(
        "select status = $3 and attempts = $4 from steps where run_id = $1 and step_id = $2",
    )
    .bind(run)
    .bind(step)
    .bind(status)
    .bind(attempts)
    .fetch_optional(pool)
    .await
    .unwrap()
    .unwrap_or(false)
}

#[sqlx::test(migrations = false)]
async fn the_research_agent_completes_its_wait_step_with_the_key_it_was_sent(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn_api(&pool, examples()).await;
    let worker = TestWorker::start(&pool, keyed_settings());
    let (agent_url, mut jobs) = fake_agent().await;
    let (status, body) = api
        .call(
            "POST",
            "/api/agents/workflow",
            Some(json!({
                "workflow": "research_with_external_agent",
                "input": { "question": "Why is the sky blue?", "agent_url": agent_url },
            })),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["taskId"].as_str().unwrap().to_owned();

    let job = tokio::time::timeout(Duration::from_secs(30), jobs.recv())
        .await
        .expect("the agent was sent the job")
        .unwrap();
    assert_eq!(job["task_id"], id.as_str());
    assert_eq!(job["step_id"], "findings");
    assert_eq!(job["callback"], "/api/webhooks/agent-result");
    let sent = job["key"].as_str().unwrap().to_owned();
    assert_eq!(sent, key(&id, "findings", 1), "the documented derivation");

    wait_until(&pool, Duration::from_secs(30), "the run to wait", || {
        let (pool, id) = (pool.clone(), id.clone());
        async move { run_status(&pool, &id).await == "waiting" }
    })
    .await;
    let result = json!({
        "taskId": id,
        "stepId": "findings",
        "result": { "text": "Rayleigh scattering favours short wavelengths. Blue light scatters most." },
    });
    let now = chrono::Utc::now().timestamp();
    let (s, body) = api.deliver(&result, now, &sent).await;
    assert_eq!((s, body["accepted"].as_bool()), (200, Some(true)), "{body}");
    let (s, body) = api.deliver(&result, now, &sent).await;
    assert_eq!(
        (s, body["accepted"].as_bool()),
        (200, Some(false)),
        "a repeated delivery is ignored"
    );
    assert_eq!(
        wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(30)).await[&id],
        "succeeded"
    );
    worker.shutdown().await;
    let (_, run) = api.call("GET", &format!("/api/tasks/{id}"), None).await;
    assert!(
        run["output"]["findings"]["text"]
            .as_str()
            .unwrap()
            .contains("Rayleigh"),
        "{run}"
    );
    assert!(jobs.try_recv().is_err(), "the agent was asked once");
}

const TWO_WAITS: &str = r#"
[[steps]]
id = "findings"
kind = "wait"
timeout = "1h"

[[steps]]
id = "review"
kind = "wait"
timeout = "1h"
"#;

#[sqlx::test(migrations = false)]
async fn a_key_completes_only_its_own_run_and_step(pool: PgPool) {
    migrate(&pool).await;
    let def = definition("two_waits", TWO_WAITS);
    let api = spawn_api(&pool, vec![def.clone()]).await;
    let worker = TestWorker::start(&pool, keyed_settings());
    let a = submit(&pool, &def, json!({})).await;
    let b = submit(&pool, &def, json!({})).await;
    wait_until(&pool, Duration::from_secs(30), "both runs to wait", || {
        let (pool, a, b) = (pool.clone(), a.clone(), b.clone());
        async move {
            run_status(&pool, &a).await == "waiting" && run_status(&pool, &b).await == "waiting"
        }
    })
    .await;
    let before = snapshot(&pool).await;
    let now = chrono::Utc::now().timestamp();
    let a_findings = key(&a, "findings", 1);
    let to = |run: &str, step: &str| json!({ "taskId": run, "stepId": step, "result": { "by": "intruder" } });

    let (s, _) = api.deliver(&to(&b, "findings"), now, &a_findings).await;
    assert_eq!(s, 401, "a's key on b's step");
    let (s, _) = api.deliver(&to(&a, "review"), now, &a_findings).await;
    assert_eq!(s, 401, "findings' key on review");
    let (s, _) = api
        .deliver(&to(&a, "findings"), now, &key(&a, "findings", 2))
        .await;
    assert_eq!(s, 401, "a later attempt's key");
    let (s, _) = api.deliver(&to(&a, "findings"), now, SECRET).await;
    assert_eq!(s, 401, "the webhook secret itself is no delivery key");
    assert_eq!(
        snapshot(&pool).await,
        before,
        "refused deliveries change nothing"
    );

    let (s, body) = api
        .deliver(
            &json!({ "taskId": a, "stepId": "findings", "result": { "by": "agent" } }),
            now,
            &a_findings,
        )
        .await;
    assert_eq!((s, body["accepted"].as_bool()), (200, Some(true)), "{body}");
    wait_until(
        &pool,
        Duration::from_secs(30),
        "a to take the result",
        || {
            let (pool, a) = (pool.clone(), a.clone());
            async move { step_is(&pool, &a, "findings", "succeeded", 1).await }
        },
    )
    .await;
    worker.shutdown().await;
    assert!(step_is(&pool, &a, "review", "waiting", 1).await);
    assert!(step_is(&pool, &b, "findings", "waiting", 1).await);
    assert!(step_is(&pool, &b, "review", "waiting", 1).await);
}

#[sqlx::test(migrations = false)]
async fn a_wait_step_re_armed_by_an_operator_refuses_the_earlier_attempts_key(pool: PgPool) {
    migrate(&pool).await;
    let def = definition("waiter", WAITER);
    let api = spawn_api(&pool, vec![def.clone()]).await;
    let worker = TestWorker::start(&pool, keyed_settings());
    let id = submit(&pool, &def, json!({})).await;
    wait_until(&pool, Duration::from_secs(30), "the run to wait", || {
        let (pool, id) = (pool.clone(), id.clone());
        async move { run_status(&pool, &id).await == "waiting" }
    })
    .await;
    let first = key(&id, "findings", 1);
    let result = json!({ "taskId": id, "stepId": "findings", "result": { "answer": "old" } });

    let (s, body) = api
        .call("POST", &format!("/api/tasks/{id}/cancel"), None)
        .await;
    assert_eq!(s, 200, "{body}");
    let (s, _) = api
        .deliver(&result, chrono::Utc::now().timestamp(), &first)
        .await;
    assert_eq!(s, 401, "the cancelled attempt's key, after the cancel");
    let (s, body) = api
        .call("POST", &format!("/api/tasks/{id}/retry"), None)
        .await;
    assert_eq!(s, 200, "{body}");
    wait_until(
        &pool,
        Duration::from_secs(30),
        "the wait to be re-armed",
        || {
            let (pool, id) = (pool.clone(), id.clone());
            async move {
                step_is(&pool, &id, "findings", "waiting", 2).await
                    && run_status(&pool, &id).await == "waiting"
            }
        },
    )
    .await;

    let before = snapshot(&pool).await;
    let (s, _) = api
        .deliver(&result, chrono::Utc::now().timestamp(), &first)
        .await;
    assert_eq!(s, 401, "a delivery for the attempt before the retry");
    assert_eq!(
        snapshot(&pool).await,
        before,
        "the refused replay changes nothing"
    );

    let fresh = json!({ "taskId": id, "stepId": "findings", "result": { "answer": "42" } });
    let (s, body) = api
        .deliver(
            &fresh,
            chrono::Utc::now().timestamp(),
            &key(&id, "findings", 2),
        )
        .await;
    assert_eq!((s, body["accepted"].as_bool()), (200, Some(true)), "{body}");
    assert_eq!(
        wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(30)).await[&id],
        "succeeded"
    );
    worker.shutdown().await;
    let (_, run) = api.call("GET", &format!("/api/tasks/{id}"), None).await;
    assert_eq!(run["output"]["use"]["rows"][0]["got"], "42");
}

#[sqlx::test(migrations = false)]
async fn without_the_secret_a_template_asking_for_a_key_names_the_setting(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn_api(&pool, examples()).await;
    let worker = TestWorker::start(&pool, fast_settings());
    let (agent_url, mut jobs) = fake_agent().await;
    let (status, body) = api
        .call(
            "POST",
            "/api/agents/workflow",
            Some(json!({
                "workflow": "research_with_external_agent",
                "input": { "question": "Why?", "agent_url": agent_url },
            })),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["taskId"].as_str().unwrap().to_owned();
    assert_eq!(
        wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(30)).await[&id],
        "dead"
    );
    worker.shutdown().await;
    let error: String = sqlx::query_scalar("select error from dead_letters where run_id = $1")
        .bind(&id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(error.contains("CAIRN_WEBHOOK_SECRET"), "{error}");
    assert!(jobs.try_recv().is_err(), "nothing was sent to the agent");
}
