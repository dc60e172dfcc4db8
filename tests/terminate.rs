//! Terminate (`POST /api/tasks/{id}/terminate`, `ctl task cancel --now`): a running
//! step is stopped at once, not at its end; its attempt is recorded `terminated`, the
//! steps after it never start, and child runs are terminated with their parent.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::PgPool;

use common::{TestApi, TestWorker, definition, fast_settings, migrate, spawn_service, wait_until};

/// A 60 s step, then a step that must never start once the run is terminated.
fn slow(addr: SocketAddr) -> cairn::workflow::Definition {
    definition(
        "slow",
        &format!(
            r#"
[[steps]]
id = "long"
kind = "http"
method = "POST"
url = "http://{addr}/work?ms=60000"
timeout = "120s"

[[steps]]
id = "after"
kind = "pass"
needs = ["long"]
"#
        ),
    )
}

fn parent() -> cairn::workflow::Definition {
    definition(
        "parent",
        r#"
[[steps]]
id = "child"
kind = "workflow"
workflow = "slow"
timeout = "120s"

[[steps]]
id = "after"
kind = "pass"
needs = ["child"]
"#,
    )
}

async fn status(pool: &PgPool, id: &str) -> String {
    sqlx::query_scalar("select status from runs where id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits until `run`'s step `long` has an attempt running.
async fn long_step_running(pool: &PgPool, run: &str) {
    wait_until(
        pool,
        Duration::from_secs(30),
        "the long step to start",
        || async {
            let running: i64 = sqlx::query_scalar(
                "select count(*) from step_attempts
              where run_id = $1 and step_id = 'long' and status = 'running'",
            )
            .bind(run)
            .fetch_one(pool)
            .await
            .unwrap();
            running == 1
        },
    )
    .await;
}

/// Submits a run of `slow` and waits until its long step is running.
async fn slow_run_started(api: &TestApi, pool: &PgPool) -> String {
    let (code, body) = api
        .call(
            "POST",
            "/api/tasks",
            Some(json!({ "workflow": "slow", "input": {} })),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let run = body["taskId"].as_str().unwrap().to_owned();
    long_step_running(pool, &run).await;
    run
}

/// The statuses of `run`'s attempts of `step`.
async fn attempt_statuses(pool: &PgPool, run: &str, step: &str) -> Vec<String> {
    sqlx::query_scalar(
        "select status from step_attempts where run_id = $1 and step_id = $2 order by attempt",
    )
    .bind(run)
    .bind(step)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Waits until `run` is cancelled; how long that took.
async fn cancelled_within(pool: &PgPool, run: &str, from: Instant) -> Duration {
    wait_until(
        pool,
        Duration::from_secs(10),
        "the run to be cancelled",
        || async { status(pool, run).await == "cancelled" },
    )
    .await;
    from.elapsed()
}

#[sqlx::test(migrations = false)]
async fn terminating_stops_the_running_step_at_once(pool: PgPool) {
    migrate(&pool).await;
    let (addr, _seen) = spawn_service(&pool, 1).await;
    let api = TestApi::start(&pool, [slow(addr), parent()]).await;
    let worker = TestWorker::start(&pool, fast_settings());

    // A running step, stopped at once.
    let run = slow_run_started(&api, &pool).await;
    let asked = Instant::now();
    let (code, body) = api
        .call("POST", &format!("/api/tasks/{run}/terminate"), None)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "running", "{body}");
    let took = cancelled_within(&pool, &run, asked).await;
    eprintln!("terminated a running step in {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} for a 60 s step"
    );
    assert_eq!(attempt_statuses(&pool, &run, "long").await, ["terminated"]);
    assert!(attempt_statuses(&pool, &run, "after").await.is_empty());
    let steps: Vec<(String, String)> =
        sqlx::query_as("select step_id, status from steps where run_id = $1 order by step_id")
            .bind(&run)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        steps,
        [
            ("after".to_owned(), "cancelled".to_owned()),
            ("long".to_owned(), "cancelled".to_owned())
        ]
    );
    let kinds: Vec<String> = sqlx::query_scalar(
        "select kind from run_events where run_id = $1 and kind in
           ('run_terminate_requested', 'step_terminated', 'run_cancelled') order by id",
    )
    .bind(&run)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        kinds,
        [
            "run_terminate_requested",
            "step_terminated",
            "run_cancelled"
        ]
    );

    // A parent waiting on a child: both go, the child's running step stopped at once.
    let (code, body) = api
        .call(
            "POST",
            "/api/tasks",
            Some(json!({ "workflow": "parent", "input": {} })),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let parent_run = body["taskId"].as_str().unwrap().to_owned();
    wait_until(&pool, Duration::from_secs(30), "the child run", || async {
        let children: i64 =
            sqlx::query_scalar("select count(*) from runs where parent_run_id = $1")
                .bind(&parent_run)
                .fetch_one(&pool)
                .await
                .unwrap();
        children == 1
    })
    .await;
    let child: String = sqlx::query_scalar("select id from runs where parent_run_id = $1")
        .bind(&parent_run)
        .fetch_one(&pool)
        .await
        .unwrap();
    long_step_running(&pool, &child).await;
    let asked = Instant::now();
    let (code, body) = api
        .call("POST", &format!("/api/tasks/{parent_run}/terminate"), None)
        .await;
    assert_eq!(code, 200, "{body}");
    let took = cancelled_within(&pool, &child, asked).await;
    eprintln!("terminated a child's running step in {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(status(&pool, &parent_run).await, "cancelled");
    assert_eq!(
        attempt_statuses(&pool, &child, "long").await,
        ["terminated"]
    );
    assert!(
        attempt_statuses(&pool, &parent_run, "after")
            .await
            .is_empty()
    );

    // From the operator CLI.
    let third = slow_run_started(&api, &pool).await;
    let (code, out, err) = api.ctl(&["task", "cancel", &third, "--now", "--yes"]).await;
    assert_eq!(code, 0, "{out}{err}");
    cancelled_within(&pool, &third, Instant::now()).await;
    assert_eq!(
        attempt_statuses(&pool, &third, "long").await,
        ["terminated"]
    );
    let (code, _, err) = api
        .ctl(&["task", "cancel", "--now", "--status", "running"])
        .await;
    assert_ne!(code, 0);
    assert!(err.contains("--now terminates one run"), "{err}");

    // A finished run cannot be terminated.
    let (code, body) = api
        .call("POST", &format!("/api/tasks/{run}/terminate"), None)
        .await;
    assert_eq!(code, 409, "{body}");
    worker.shutdown().await;
}
