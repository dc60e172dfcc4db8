//! Priorities: a run's priority is a head start in the queue, in minutes.

mod common;

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;

use common::{TestApi, TestWorker, definition, fast_settings, migrate, wait_finished};

const ONE: &str = "[[steps]]\nid = \"s\"\nkind = \"pass\"\n";

/// 200 runs queued at the default priority, then one at priority 10: a worker takes the
/// high one among its first, and every run finishes.
#[sqlx::test(migrations = false)]
async fn a_high_priority_run_starts_among_the_first_claimed(pool: PgPool) {
    migrate(&pool).await;
    let api = TestApi::start(&pool, [definition("one", ONE)]).await;
    let tasks: Vec<_> = (0..200).map(|_| json!({ "input": {} })).collect();
    let (code, body) = api
        .call(
            "POST",
            "/api/tasks/batch",
            Some(json!({ "workflow": "one", "tasks": tasks })),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let mut ids: Vec<String> = body["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskId"].as_str().unwrap().to_owned())
        .collect();
    let (code, body) = api
        .call(
            "POST",
            "/api/tasks",
            Some(json!({ "workflow": "one", "input": {}, "priority": 10 })),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let high = body["taskId"].as_str().unwrap().to_owned();
    ids.push(high.clone());
    let (_, shown) = api.call("GET", &format!("/api/tasks/{high}"), None).await;
    assert_eq!(shown["priority"], 10, "{shown}");

    let mut settings = fast_settings();
    settings.concurrency = 2;
    let worker = TestWorker::start(&pool, settings);
    let statuses = wait_finished(&pool, &ids, Duration::from_secs(120)).await;
    worker.shutdown().await;
    assert!(statuses.values().all(|s| s == "succeeded"));
    // The order the runs were leased in (each run is leased once).
    let order: Vec<String> =
        sqlx::query_scalar("select run_id from run_events where kind = 'run_running' order by id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(order.len(), 201);
    let rank = order.iter().position(|id| *id == high).unwrap();
    // A worker at concurrency 2 takes 3 runs at a time (one ahead).
    assert!(rank < 3, "the high priority run was leased {rank}th of 201");
}

/// Out of range is a 422, and so is a batch's; `ctl task submit --priority` sends it.
#[sqlx::test(migrations = false)]
async fn priorities_out_of_range_are_refused(pool: PgPool) {
    migrate(&pool).await;
    let api = TestApi::start(&pool, [definition("one", ONE)]).await;
    for p in [-1, 1001] {
        let (code, body) = api
            .call(
                "POST",
                "/api/tasks",
                Some(json!({ "workflow": "one", "input": {}, "priority": p })),
            )
            .await;
        assert_eq!(code, 422, "{body}");
        assert!(body.to_string().contains("priority is 0 to 1000"), "{body}");
        let (code, body) = api
            .call(
                "POST",
                "/api/tasks/batch",
                Some(json!({ "workflow": "one", "tasks": [{ "input": {} }], "priority": p })),
            )
            .await;
        assert_eq!(code, 422, "{body}");
    }
    let (code, out, err) = api
        .ctl(&["task", "submit", "one", "--priority", "7", "-o", "json"])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    let priority: i16 = sqlx::query_scalar("select priority from runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(priority, 7);
    let (code, _, err) = api
        .ctl(&["task", "submit", "one", "--priority", "1001"])
        .await;
    assert_ne!(code, 0);
    assert!(err.contains("1001"), "{err}");
}
