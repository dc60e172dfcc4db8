//! Operating Cairn: roles on every endpoint, retry/replay/cancel (one and in bulk),
//! dead-letter redrive, live events with resumption, `ctl` end to end, and `cairn dev`
//! from nothing.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cairn::auth::Role;
use common::*;
use serde_json::{Value, json};
use sqlx::PgPool;

/// Who may call what. Every operation in the OpenAPI document must be listed here.
const ACCESS: &[(&str, &str, Option<Role>)] = &[
    ("post", "/api/auth/login", None),
    ("post", "/api/auth/logout", None),
    ("get", "/api/auth/me", Some(Role::Viewer)),
    ("post", "/api/auth/token", Some(Role::Viewer)),
    ("get", "/api/auth/tokens", Some(Role::Viewer)),
    ("delete", "/api/auth/tokens/{id}", Some(Role::Viewer)),
    ("post", "/api/auth/password", Some(Role::Viewer)),
    ("get", "/api/users", Some(Role::Admin)),
    ("post", "/api/users", Some(Role::Admin)),
    ("patch", "/api/users/{id}", Some(Role::Admin)),
    ("delete", "/api/users/{id}", Some(Role::Admin)),
    ("get", "/api/tokens", Some(Role::Admin)),
    ("post", "/api/tokens", Some(Role::Admin)),
    ("delete", "/api/tokens/{id}", Some(Role::Admin)),
    ("get", "/api/tasks", Some(Role::Viewer)),
    ("post", "/api/tasks", Some(Role::Operator)),
    ("post", "/api/tasks/batch", Some(Role::Operator)),
    ("get", "/api/tasks/{id}", Some(Role::Viewer)),
    ("get", "/api/tasks/{id}/events", Some(Role::Viewer)),
    ("post", "/api/tasks/{id}/retry", Some(Role::Operator)),
    ("post", "/api/tasks/{id}/replay", Some(Role::Operator)),
    ("post", "/api/tasks/{id}/cancel", Some(Role::Operator)),
    ("post", "/api/tasks/{id}/terminate", Some(Role::Operator)),
    ("post", "/api/tasks/{id}/pin", Some(Role::Operator)),
    ("post", "/api/tasks/{id}/unpin", Some(Role::Operator)),
    ("post", "/api/tasks/bulk/{action}", Some(Role::Operator)),
    ("get", "/api/dead-letters", Some(Role::Viewer)),
    ("get", "/api/dead-letters/{id}", Some(Role::Viewer)),
    (
        "post",
        "/api/dead-letters/{id}/redrive",
        Some(Role::Operator),
    ),
    ("post", "/api/dead-letters/{id}/purge", Some(Role::Operator)),
    (
        "post",
        "/api/dead-letters/bulk/{action}",
        Some(Role::Operator),
    ),
    ("get", "/api/events", Some(Role::Viewer)),
    ("get", "/api/workflows", Some(Role::Viewer)),
    ("get", "/api/workflows/{name}", Some(Role::Viewer)),
    ("get", "/api/workflows/{name}/graph", Some(Role::Viewer)),
    ("get", "/api/workers", Some(Role::Viewer)),
    ("get", "/api/overview", Some(Role::Viewer)),
    ("get", "/api/schedules", Some(Role::Viewer)),
    ("post", "/api/schedules", Some(Role::Operator)),
    ("get", "/api/schedules/{id}", Some(Role::Viewer)),
    ("patch", "/api/schedules/{id}", Some(Role::Operator)),
    ("delete", "/api/schedules/{id}", Some(Role::Operator)),
    ("post", "/api/schedules/{id}/backfill", Some(Role::Operator)),
    ("post", "/api/schedules/{id}/pause", Some(Role::Operator)),
    ("post", "/api/schedules/{id}/resume", Some(Role::Operator)),
    ("post", "/api/schedules/{id}/trigger", Some(Role::Operator)),
    ("get", "/api/projects", Some(Role::Viewer)),
    ("post", "/api/projects", Some(Role::Operator)),
    ("get", "/api/projects/{id}", Some(Role::Viewer)),
    ("patch", "/api/projects/{id}", Some(Role::Operator)),
    ("delete", "/api/projects/{id}", Some(Role::Operator)),
    ("post", "/api/agents/analyze", Some(Role::Operator)),
    ("post", "/api/agents/summarize", Some(Role::Operator)),
    ("post", "/api/agents/workflow", Some(Role::Operator)),
    ("get", "/api/billing/usage", Some(Role::Viewer)),
    ("get", "/api/retention", Some(Role::Viewer)),
    ("get", "/api/notifications", Some(Role::Viewer)),
    (
        "post",
        "/api/notifications/{id}/resend",
        Some(Role::Operator),
    ),
    (
        "get",
        "/api/tasks/{id}/steps/{step}/items",
        Some(Role::Viewer),
    ),
    ("post", "/api/webhooks/agent-result", None),
];

#[sqlx::test(migrations = false)]
async fn every_endpoint_checks_every_role(pool: PgPool) {
    migrate(&pool).await;
    let api = TestApi::start(&pool, vec![]).await;

    // The table covers exactly the operations the API serves.
    let doc = serde_json::to_value(cairn::api::openapi()).unwrap();
    let mut served = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                served.insert((method.clone(), path.clone()));
            }
        }
    }
    let listed: BTreeSet<(String, String)> = ACCESS
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        served, listed,
        "an endpoint is missing from the access table (or gone from the API)"
    );

    let tokens = [
        (Some(Role::Viewer), token(&pool, Role::Viewer).await),
        (Some(Role::Operator), token(&pool, Role::Operator).await),
        (Some(Role::Admin), token(&pool, Role::Admin).await),
        (None, String::new()),
    ];
    for (method, path, needs) in ACCESS {
        let url = format!(
            "{}{}",
            api.base,
            path.replace("{id}", "1")
                .replace("{name}", "none")
                .replace("{action}", "retry")
                .replace("{step}", "s")
        );
        for (role, tok) in &tokens {
            let mut r = api
                .http
                .request(method.to_uppercase().parse().unwrap(), &url);
            if role.is_some() {
                r = r.bearer_auth(tok);
            }
            if *method != "get" && *method != "delete" {
                r = r.json(&json!({}));
            }
            let status = r.send().await.unwrap().status().as_u16();
            let allowed = match (needs, role) {
                (None, _) => true,
                (Some(n), Some(r)) => r >= n,
                (Some(_), None) => false,
            };
            if allowed {
                assert!(
                    status != 401 && status != 403,
                    "{method} {path} as {role:?}: {status}"
                );
            } else if role.is_none() {
                assert_eq!(status, 401, "{method} {path} without credentials");
            } else {
                assert_eq!(status, 403, "{method} {path} as {role:?}");
            }
        }
    }
    // A wrong token is not anonymous: it is refused.
    let status = api
        .http
        .get(format!("{}/api/tasks", api.base))
        .bearer_auth("crn_nope")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 401);
    // The document served matches the one generated from the handlers.
    let served_doc: Value = api
        .http
        .get(format!("{}/api/openapi.json", api.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served_doc, doc);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
}

fn chain(addr: std::net::SocketAddr, name: &str, b_url: &str) -> cairn::workflow::Definition {
    definition(
        name,
        &format!(
            r#"
[defaults]
retry = {{ max_attempts = 1 }}

[[steps]]
id = "a"
kind = "http"
method = "POST"
url = "http://{addr}/work"

[[steps]]
id = "b"
kind = "http"
needs = ["a"]
method = "POST"
url = "http://{addr}{b_url}"

[[steps]]
id = "c"
kind = "http"
needs = ["b"]
method = "POST"
url = "http://{addr}/work"

[[steps]]
id = "d"
kind = "http"
needs = ["c"]
method = "POST"
url = "http://{addr}/work"
"#
        ),
    )
}

async fn step_statuses(pool: &PgPool, run: &str) -> Vec<(String, String, i32)> {
    sqlx::query_as("select step_id, status, attempts from steps where run_id = $1 order by step_id")
        .bind(run)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn retry_resumes_at_the_failed_step_and_replay_reruns_from_a_step(pool: PgPool) {
    migrate(&pool).await;
    let (addr, seen) = spawn_service(&pool, 1).await;
    let def = chain(addr, "chain", "/toggle");
    let api = TestApi::start(&pool, vec![def.clone()]).await;
    let worker = TestWorker::start(&pool, fast_settings());

    let id = submit(&pool, &def, json!({})).await;
    assert_eq!(
        wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(30)).await[&id],
        "dead"
    );
    let (status, _) = api
        .call(
            "POST",
            &format!("/api/tasks/{id}/replay"),
            Some(json!({ "fromStep": "nope" })),
        )
        .await;
    assert_eq!(status, 422);

    seen.failing.store(false, Ordering::SeqCst);
    let (status, body) = api
        .call("POST", &format!("/api/tasks/{id}/retry"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "queued");
    assert_eq!(
        wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(30)).await[&id],
        "succeeded"
    );
    assert_eq!(
        seen.count(&format!("{id}/a")),
        1,
        "a was checkpointed and must not run again"
    );
    assert_eq!(seen.count(&format!("{id}/b")), 2);
    assert_eq!(
        step_statuses(&pool, &id).await,
        [
            ("a".into(), "succeeded".into(), 1),
            ("b".into(), "succeeded".into(), 2),
            ("c".into(), "succeeded".into(), 1),
            ("d".into(), "succeeded".into(), 1)
        ]
    );
    let dead: i64 = sqlx::query_scalar("select count(*) from dead_letters")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(dead, 0, "a retried run leaves the dead-letter queue");
    let (status, _) = api
        .call("POST", &format!("/api/tasks/{id}/retry"), None)
        .await;
    assert_eq!(status, 409, "only dead runs can be retried");

    let (status, body) = api
        .call(
            "POST",
            &format!("/api/tasks/{id}/replay"),
            Some(json!({ "fromStep": "c" })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["replayOf"], id.as_str());
    let replay = body["taskId"].as_str().unwrap().to_owned();
    assert_eq!(
        wait_finished(
            &pool,
            std::slice::from_ref(&replay),
            Duration::from_secs(30)
        )
        .await[&replay],
        "succeeded"
    );
    for (step, times) in [("a", 0), ("b", 0), ("c", 1), ("d", 1)] {
        assert_eq!(
            seen.count(&format!("{replay}/{step}")),
            times,
            "replay ran {step} {times} times"
        );
    }
    let (_, shown) = api.call("GET", &format!("/api/tasks/{replay}"), None).await;
    assert_eq!(shown["replayOf"], id.as_str());
    worker.shutdown().await;
}

#[sqlx::test(migrations = false)]
async fn bulk_retry_dry_runs_then_retries_five_hundred_in_batches(pool: PgPool) {
    migrate(&pool).await;
    let def = definition(
        "divide",
        "[[steps]]\nid = \"x\"\nkind = \"sql\"\nquery = \"select 1 / 0\"\n",
    );
    let api = TestApi::start(&pool, vec![def.clone()]).await;
    let mut ids = Vec::new();
    for _ in 0..500 {
        ids.push(submit(&pool, &def, json!({})).await);
    }
    let worker = TestWorker::start(
        &pool,
        cairn::worker::WorkerSettings {
            concurrency: 32,
            ..fast_settings()
        },
    );
    let statuses = wait_finished(&pool, &ids, Duration::from_secs(120)).await;
    worker.shutdown().await;
    assert!(statuses.values().all(|s| s == "dead"));

    let (status, dry) = api
        .call(
            "POST",
            "/api/tasks/bulk/retry",
            Some(json!({ "filter": { "status": "dead", "workflow": "divide" }, "dryRun": true })),
        )
        .await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(
        (dry["matched"].as_u64(), dry["processed"].as_u64()),
        (Some(500), Some(0))
    );
    assert_eq!(dry["ids"].as_array().unwrap().len(), 100);
    let still_dead: i64 = sqlx::query_scalar("select count(*) from runs where status = 'dead'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(still_dead, 500, "a dry run changes nothing");
    let (status, _) = api
        .call(
            "POST",
            "/api/tasks/bulk/retry",
            Some(json!({ "filter": {}, "dryRun": false })),
        )
        .await;
    assert_eq!(status, 400, "an empty filter is refused");

    let (status, done) = api
        .call(
            "POST",
            "/api/tasks/bulk/retry",
            Some(json!({ "filter": { "status": "dead" }, "dryRun": false })),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(done["processed"].as_u64(), Some(500));
    let (queued, transactions, letters): (i64, i64, i64) = sqlx::query_as(
        "select count(*), count(distinct xmin::text), (select count(*) from dead_letters)
           from runs where status = 'queued'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(queued, 500);
    assert_eq!(transactions, 5, "500 runs retried in batches of 100");
    assert_eq!(letters, 0);
}

#[sqlx::test(migrations = false)]
async fn cancelling_a_running_step_stops_the_run_there(pool: PgPool) {
    migrate(&pool).await;
    let (addr, seen) = spawn_service(&pool, 1).await;
    let def = chain(addr, "gated", "/gate");
    let api = TestApi::start(&pool, vec![def.clone()]).await;
    let worker = TestWorker::start(&pool, fast_settings());
    let id = submit(&pool, &def, json!({})).await;
    let s = seen.clone();
    wait_until(
        &pool,
        Duration::from_secs(30),
        "step b to be running",
        || {
            let s = s.clone();
            async move { s.gate_entered.load(Ordering::SeqCst) == 1 }
        },
    )
    .await;
    let (status, body) = api
        .call("POST", &format!("/api/tasks/{id}/cancel"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["status"], "running",
        "a running run stops at the next step boundary"
    );
    seen.gate.add_permits(1);
    assert_eq!(
        wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(30)).await[&id],
        "cancelled"
    );
    worker.shutdown().await;
    assert_eq!(seen.count(&format!("{id}/c")), 0, "no successor started");
    let states = step_statuses(&pool, &id).await;
    assert_eq!(states[0], ("a".into(), "succeeded".into(), 1));
    assert_eq!(states[1].1, "cancelled");
    assert_eq!((states[2].1.as_str(), states[2].2), ("cancelled", 0));
    assert_eq!((states[3].1.as_str(), states[3].2), ("cancelled", 0));
    let (status, _) = api
        .call("POST", &format!("/api/tasks/{id}/cancel"), None)
        .await;
    assert_eq!(status, 409);

    // A queued run is cancelled at once and never starts.
    let queued = submit(&pool, &def, json!({})).await;
    let (_, body) = api
        .call("POST", &format!("/api/tasks/{queued}/cancel"), None)
        .await;
    assert_eq!(body["status"], "cancelled");
    let worker = TestWorker::start(&pool, fast_settings());
    let (status, _) = api.call("GET", &format!("/api/tasks/{queued}"), None).await;
    assert_eq!(status, 200);
    worker.shutdown().await;
    assert_eq!(seen.count(&format!("{queued}/a")), 0);
}

async fn read_events(
    resp: &mut reqwest::Response,
    buf: &mut String,
    until: impl Fn(&Value) -> bool,
) -> Vec<(i64, Value)> {
    let mut out = Vec::new();
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let id = block
                .lines()
                .find_map(|l| l.strip_prefix("id:"))
                .map(|v| v.trim().parse::<i64>().unwrap());
            let data = block
                .lines()
                .find_map(|l| l.strip_prefix("data:"))
                .map(|d| serde_json::from_str::<Value>(d.trim()).unwrap());
            if let (Some(id), Some(data)) = (id, data) {
                let stop = until(&data);
                out.push((id, data));
                if stop {
                    return out;
                }
            }
        }
        let chunk = tokio::time::timeout(Duration::from_secs(30), resp.chunk())
            .await
            .expect("events keep coming")
            .unwrap()
            .expect("stream open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[sqlx::test(migrations = false)]
async fn live_events_arrive_in_order_and_resume_after_a_reconnect(pool: PgPool) {
    migrate(&pool).await;
    let (addr, seen) = spawn_service(&pool, 1).await;
    let def = chain(addr, "gated", "/gate");
    let api = TestApi::start(&pool, vec![def.clone()]).await;
    let id = submit(&pool, &def, json!({})).await;
    let url = format!("{}/api/events?runId={id}", api.base);
    let mut first = api
        .http
        .get(&url)
        .bearer_auth(&api.operator)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status().as_u16(), 200);
    let worker = TestWorker::start(&pool, fast_settings());
    let mut buf = String::new();
    let part1 = read_events(&mut first, &mut buf, |e| {
        e["kind"] == "step_started" && e["stepId"] == "b"
    })
    .await;
    drop(first);
    let last = part1.last().unwrap().0;

    // While disconnected, the run goes on.
    seen.gate.add_permits(1);
    wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(30)).await;
    let mut second = api
        .http
        .get(&url)
        .bearer_auth(&api.operator)
        .header("Last-Event-ID", last.to_string())
        .send()
        .await
        .unwrap();
    let mut buf = String::new();
    let part2 = read_events(&mut second, &mut buf, |e| e["kind"] == "run_succeeded").await;
    worker.shutdown().await;

    let seen_ids: Vec<i64> = part1.iter().chain(&part2).map(|(id, _)| *id).collect();
    let stored: Vec<i64> =
        sqlx::query_scalar("select id from run_events where run_id = $1 order by id")
            .bind(&id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        seen_ids, stored,
        "every event once, in order, across the reconnect"
    );
    let steps: Vec<String> = part1
        .iter()
        .chain(&part2)
        .filter(|(_, e)| e["kind"] == "step_succeeded")
        .map(|(_, e)| e["stepId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(steps, ["a", "b", "c", "d"]);
}

#[sqlx::test(migrations = false)]
async fn ctl_submit_show_retry_and_redrive(pool: PgPool) {
    migrate(&pool).await;
    let (addr, seen) = spawn_service(&pool, 1).await;
    let def = chain(addr, "chain", "/toggle");
    let api = TestApi::start(&pool, vec![def.clone()]).await;
    let worker = TestWorker::start(&pool, fast_settings());

    let (code, out, err) = api.ctl(&["task", "submit", "chain", "-o", "json"]).await;
    assert_eq!(code, 0, "{err}");
    let id = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(30)).await;

    let (code, out, _) = api.ctl(&["task", "show", &id]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("Status    dead") && out.contains("answered 500"),
        "{out}"
    );

    let (code, out, _) = api
        .ctl(&["task", "retry", "--status", "dead", "--dry-run"])
        .await;
    assert_eq!(code, 0);
    assert!(
        out.contains("1 matched (dry run") && out.contains(&id),
        "{out}"
    );
    let (code, _, err) = api.ctl(&["task", "retry", "--status", "dead"]).await;
    assert_eq!(
        code, 1,
        "bulk without --yes and without a terminal is refused"
    );
    assert!(err.contains("--yes"), "{err}");

    let (code, out, _) = api.ctl(&["task", "retry", &id, "-o", "json"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["status"],
        "queued"
    );
    wait_until(
        &pool,
        Duration::from_secs(30),
        "the retried run to die again",
        || {
            let pool = pool.clone();
            let id = id.clone();
            async move {
                sqlx::query_scalar::<_, i64>("select count(*) from dead_letters where run_id = $1")
                    .bind(&id)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
                    == 1
            }
        },
    )
    .await;

    let (code, out, _) = api.ctl(&["dlq", "list", "-o", "json"]).await;
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(&out).unwrap();
    let letter = list["items"][0]["id"].as_i64().unwrap();
    assert_eq!(list["items"][0]["runId"], id.as_str());
    let (code, out, _) = api.ctl(&["dlq", "show", &letter.to_string()]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("Step      b") && out.contains("Attempts"),
        "{out}"
    );
    let (_, table, _) = api.ctl(&["dlq", "list"]).await;
    assert!(table.contains(&id), "{table}");

    seen.failing.store(false, Ordering::SeqCst);
    let (code, out, err) = api.ctl(&["dlq", "redrive", &letter.to_string()]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&id), "{out}");
    wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(30)).await;
    let (code, out, _) = api.ctl(&["task", "show", &id, "-o", "json"]).await;
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["status"], "succeeded");
    let b = shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "b")
        .unwrap()
        .clone();
    assert_eq!(b["attempts"].as_array().unwrap().len(), 3, "{b}");
    let (code, out, _) = api.ctl(&["task", "logs", &id]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("run_retried") && out.contains("run_succeeded"),
        "{out}"
    );
    let (code, out, _) = api.ctl(&["task", "logs", &id, "--follow"]).await;
    assert_eq!(code, 0, "follow ends when the run has finished");
    assert!(
        out.trim_end().ends_with("run_succeeded") || out.contains("run_succeeded"),
        "{out}"
    );
    let (code, out, _) = api.ctl(&["worker", "list", "-o", "json"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (code, out, _) = api.ctl(&["workflow", "graph", "chain"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("a --> b") && out.contains("c --> d"), "{out}");
    worker.shutdown().await;
}

#[tokio::test]
async fn cairn_dev_starts_from_nothing() {
    let tmp = std::env::temp_dir().join(format!("cairn-dev-test-{}", ulid::Ulid::generate()));
    std::fs::create_dir_all(&tmp).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["dev", "--listen", &listen])
        .env_remove("DATABASE_URL")
        .env("TMPDIR", &tmp)
        .env(
            "CAIRN_WORKFLOWS_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/workflows"),
        )
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let token = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(t) = line.strip_prefix("CAIRN_TOKEN=") {
                return t.to_owned();
            }
        }
        panic!("cairn dev exited without printing a token");
    })
    .await
    .expect("cairn dev printed its token");
    let http = reqwest::Client::new();
    let base = format!("http://{listen}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let submitted: Value = http
        .post(format!("{base}/api/tasks"))
        .bearer_auth(&token)
        .json(&json!({ "workflow": "hello", "input": { "name": "dev" } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = submitted["taskId"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let run: Value = http
            .get(format!("{base}/api/tasks/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if run["status"] == "succeeded" {
            assert_eq!(run["output"]["said"], "hello, dev");
            break;
        }
        assert!(run["status"] != "dead", "{run}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run never finished: {run}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    let _ = std::process::Command::new("rm")
        .args(["-rf", &tmp.display().to_string()])
        .status();
}

#[sqlx::test(migrations = false)]
async fn metrics_and_text_search_report_what_is_there(pool: PgPool) {
    migrate(&pool).await;
    let def = definition(
        "slow_one",
        "[[steps]]\nid = \"nap\"\nkind = \"sleep\"\nduration = \"1h\"\n",
    );
    let api = TestApi::start(&pool, vec![def.clone()]).await;
    // Submitted through the API, which counts what it submits.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (status, body) = api
            .call(
                "POST",
                "/api/tasks",
                Some(json!({ "workflow": "slow_one", "input": {} })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["taskId"].as_str().unwrap().to_owned());
    }
    let a = &ids[0];

    let text = api
        .http
        .get(format!("{}/metrics", api.base))
        .bearer_auth(&api.operator)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "cairn_queue_depth{workflow=\"slow_one\"} 2",
        "cairn_queue_oldest_age_seconds{workflow=\"slow_one\"}",
        "cairn_workers_alive 0",
        "cairn_runs_stuck 0",
        "cairn_runs_submitted_total{workflow=\"slow_one\"} 2",
        "cairn_build_info{version=",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(
            line.starts_with("cairn_") || line.starts_with("process_"),
            "{line}"
        );
    }

    let (_, found) = api
        .call(
            "GET",
            &format!("/api/tasks?q={}", &a[a.len() - 8..].to_lowercase()),
            None,
        )
        .await;
    let ids: Vec<&str> = found["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a.as_str()]);
    let (_, by_workflow) = api.call("GET", "/api/tasks?q=SLOW_ONE", None).await;
    assert_eq!(by_workflow["items"].as_array().unwrap().len(), 2);
    let (_, none) = api
        .call("GET", "/api/tasks?q=nothing-like-this", None)
        .await;
    assert_eq!(none["items"].as_array().unwrap().len(), 0);
}

#[sqlx::test(migrations = false)]
async fn ctl_login_saves_a_personal_token_used_afterwards(pool: PgPool) {
    migrate(&pool).await;
    let api = TestApi::start(&pool, vec![]).await;
    cairn::auth::create_user(
        &pool,
        "ada@example.com",
        "Ada",
        "correct horse",
        Role::Viewer,
    )
    .await
    .unwrap();
    let home = std::env::temp_dir().join(format!("cairn-login-{}", ulid::Ulid::generate()));
    std::fs::create_dir_all(&home).unwrap();
    let run = |args: Vec<&'static str>, stdin: &'static str| {
        let (base, home) = (api.base.clone(), home.clone());
        async move {
            use tokio::io::AsyncWriteExt;
            let mut child = tokio::process::Command::new(common::ctl_bin())
                .args(&args)
                .env("CAIRN_API_URL", &base)
                .env_remove("CAIRN_TOKEN")
                .env_remove("XDG_CONFIG_HOME")
                .env("HOME", &home)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(stdin.as_bytes())
                .await
                .unwrap();
            let out = child.wait_with_output().await.unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (code, _, err) = run(vec!["task", "list"], "").await;
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");
    let (code, _, err) = run(
        vec!["login", "--email", "ada@example.com", "--password-stdin"],
        "wrong password\n",
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("wrong email or password"), "{err}");
    let (code, out, err) = run(
        vec!["login", "--email", "ada@example.com", "--password-stdin"],
        "correct horse\n",
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("signed in as ada@example.com (viewer)"),
        "{out}"
    );
    let saved = std::fs::read_to_string(home.join(".config/cairn/ctl.json")).unwrap();
    assert!(saved.contains("crn_"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.join(".config/cairn/ctl.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the token file is private");
    }
    let (code, out, err) = run(vec!["task", "list"], "").await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no runs"), "{out}");
    // A viewer's token cannot submit.
    let (code, _, err) = run(vec!["task", "submit", "x"], "").await;
    assert_eq!(code, 1);
    assert!(err.contains("403"), "{err}");
    std::fs::remove_dir_all(&home).ok();
}

#[sqlx::test(migrations = false)]
async fn unknown_api_paths_and_bad_queries_get_json_errors(pool: PgPool) {
    migrate(&pool).await;
    let api = TestApi::start(&pool, vec![]).await;
    let (status, body) = api.call("GET", "/api/nothing/here", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (status, body) = api.call("POST", "/api/nothing", Some(json!({}))).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = api.call("GET", "/api/tasks?limit=many", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    let (status, body) = api.call("GET", "/api/tasks?bogus=1", None).await;
    assert_eq!(status, 400, "{body}");
}

#[sqlx::test(migrations = false)]
async fn ctl_says_how_to_authenticate_and_is_quiet_on_a_closed_pipe(pool: PgPool) {
    migrate(&pool).await;
    let api = TestApi::start(&pool, vec![]).await;
    let home = tempfile_dir();
    let run = async |token: Option<&str>| {
        let mut c = tokio::process::Command::new(common::ctl_bin());
        c.args(["task", "list"])
            .env("CAIRN_API_URL", &api.base)
            .env("HOME", &home)
            .env_remove("CAIRN_TOKEN")
            .env_remove("XDG_CONFIG_HOME")
            .stdin(std::process::Stdio::null());
        if let Some(t) = token {
            c.env("CAIRN_TOKEN", t);
        }
        let out = c.output().await.unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(None).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("CAIRN_TOKEN") && err.contains("ctl login"),
        "{err}"
    );
    let (code, err) = run(Some("crn_nope")).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("refused") && err.contains("ctl login"),
        "{err}"
    );

    // `ctl … | head`: the reader goes away after ten bytes of a 90 KB answer.
    let stderr = home.join("stderr");
    let script = format!(
        "{} completions bash 2>{} | head -c 10 >/dev/null; exit ${{PIPESTATUS[0]}}",
        common::ctl_bin().display(),
        stderr.display()
    );
    let status = tokio::process::Command::new("bash")
        .args(["-c", &script])
        .status()
        .await
        .unwrap();
    let err = std::fs::read_to_string(&stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(err, "", "nothing to say about a closed pipe");
}

/// A fresh directory of this test's own.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cairn-ctl-{}", ulid::Ulid::generate()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[sqlx::test(migrations = false)]
async fn ctl_pages_with_cursors_checks_its_values_and_stops_waiting_when_told(pool: PgPool) {
    migrate(&pool).await;
    let def = definition(
        "idle",
        r#"
[[steps]]
id = "one"
kind = "pass"
output = { ok = true }
"#,
    );
    let api = TestApi::start(&pool, vec![def.clone()]).await;
    // No worker runs: the runs stay queued.
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(submit(&pool, &def, json!({})).await);
    }

    let (code, first, err) = api.ctl(&["task", "list", "--limit", "2"]).await;
    assert_eq!(code, 0, "{err}");
    let cursor = first
        .lines()
        .find_map(|l| l.strip_prefix("(more: add --cursor "))
        .and_then(|l| l.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no cursor in {first}"))
        .to_owned();
    let (code, rest, err) = api
        .ctl(&["task", "list", "--limit", "2", "--cursor", &cursor])
        .await;
    assert_eq!(code, 0, "{err}");
    let listed = |text: &str| ids.iter().filter(|id| text.contains(id.as_str())).count();
    assert_eq!((listed(&first), listed(&rest)), (2, 1), "{first}\n{rest}");
    assert!(!rest.contains("(more:"), "{rest}");

    // Values are checked before anything is sent, naming what is allowed.
    let (code, _, err) = api.ctl(&["task", "list", "--status", "finished"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("succeeded") && err.contains("cancelled"),
        "{err}"
    );
    let (code, _, err) = api.ctl(&["task", "list", "--limit", "501"]).await;
    assert_eq!(code, 2, "{err}");

    // --wait gives up when told, saying where the run is.
    let (code, _, err) = api
        .ctl(&["task", "submit", "idle", "--wait", "--timeout", "300ms"])
        .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is still queued after 300ms"), "{err}");
}
