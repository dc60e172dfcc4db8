//! Rate limits per key (`rate_limit = { key, per_minute }` on a step), shared by every
//! worker through Postgres: measured by a local service that notes when each call came.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::json;
use sqlx::PgPool;

use common::{TestWorker, definition, fast_settings, migrate, submit, wait_finished};

#[derive(Default)]
struct Calls {
    /// When each call of `/call` arrived.
    at: Vec<Instant>,
    /// When `/throttle` answered 429, and the calls it answered 200 after that.
    throttled_at: Option<Instant>,
    ok_after_throttle: Vec<Instant>,
}

type Shared = Arc<Mutex<Calls>>;

async fn call(State(calls): State<Shared>) -> &'static str {
    calls.lock().unwrap().at.push(Instant::now());
    "ok"
}

/// The first call is told to come back in 3 s (429); later ones succeed.
async fn throttle(State(calls): State<Shared>) -> (StatusCode, HeaderMap, &'static str) {
    let mut c = calls.lock().unwrap();
    let mut headers = HeaderMap::new();
    if c.throttled_at.is_none() {
        c.throttled_at = Some(Instant::now());
        headers.insert("retry-after", "3".parse().unwrap());
        return (StatusCode::TOO_MANY_REQUESTS, headers, "slow down");
    }
    c.ok_after_throttle.push(Instant::now());
    (StatusCode::OK, headers, "ok")
}

async fn spawn_provider() -> (SocketAddr, Shared) {
    let calls = Shared::default();
    let app = Router::new()
        .route("/call", post(call))
        .route("/throttle", post(throttle))
        .with_state(calls.clone());
    let addr = common::serve(app).await;
    (addr, calls)
}

fn limited(
    name: &str,
    addr: SocketAddr,
    path: &str,
    per_minute: u32,
) -> cairn::workflow::Definition {
    definition(
        name,
        &format!(
            r#"
[defaults]
retry = {{ max_attempts = 5, initial_delay = "100ms" }}

[[steps]]
id = "call"
kind = "http"
method = "POST"
url = "http://{addr}{path}"
rate_limit = {{ key = "provider", per_minute = {per_minute} }}
"#
        ),
    )
}

/// 12 runs, two workflows naming the same key at 60 a minute, 2 workers: the calls come
/// one a second, never faster, and every run succeeds without a failed attempt. Runs
/// that would wait more than a moment park until their turn (`step_rate_limited`).
#[sqlx::test(migrations = false)]
async fn calls_sharing_a_key_stay_within_its_rate_across_workers(pool: PgPool) {
    migrate(&pool).await;
    let (addr, calls) = spawn_provider().await;
    let one = limited("one", addr, "/call", 60);
    let two = limited("two", addr, "/call", 60);
    let mut ids = Vec::new();
    for i in 0..12 {
        let def = if i % 2 == 0 { &one } else { &two };
        ids.push(submit(&pool, def, json!({})).await);
    }
    let workers = [
        TestWorker::start(&pool, fast_settings()),
        TestWorker::start(&pool, fast_settings()),
    ];
    let statuses = wait_finished(&pool, &ids, Duration::from_secs(90)).await;
    for w in workers {
        w.shutdown().await;
    }
    assert!(statuses.values().all(|s| s == "succeeded"), "{statuses:?}");
    let failed: i64 =
        sqlx::query_scalar("select count(*) from step_attempts where status <> 'succeeded'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        failed, 0,
        "waiting for the rate limit is not a failed attempt"
    );
    let parked: i64 =
        sqlx::query_scalar("select count(*) from run_events where kind = 'step_rate_limited'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(parked > 0, "some runs parked for their turn");

    let at = calls.lock().unwrap().at.clone();
    assert_eq!(at.len(), 12);
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    // The turns are one second apart; a call arrives some moment after its turn (the
    // worker's HTTP request, a parked run's wake-up), so between any two calls k places
    // apart lie at least k seconds less that moment. On a loaded machine (every test at
    // once on two cores) that moment reached 0.5 s, so it is given 1.5 s: no window
    // holds more than two calls beyond what the rate allows — where without the limit
    // the twelve calls would come within a fraction of a second.
    const LATE: Duration = Duration::from_millis(1500);
    for i in 0..at.len() {
        for j in i + 1..at.len() {
            let turns = Duration::from_secs((j - i) as u64);
            assert!(
                at[j] - at[i] + LATE >= turns,
                "calls {i} and {j} came {:?} apart, {turns:?} of turns between them; gaps {gaps:?}",
                at[j] - at[i]
            );
        }
    }
}

/// A provider's 429 with `Retry-After: 3` holds every call of the key back for 3 s, not
/// just the run that got it.
#[sqlx::test(migrations = false)]
async fn retry_after_holds_back_the_whole_key(pool: PgPool) {
    migrate(&pool).await;
    let (addr, calls) = spawn_provider().await;
    // A fast limit, so that only the 429 spaces the calls.
    let def = limited("fast", addr, "/throttle", 6000);
    let first = submit(&pool, &def, json!({})).await;
    let worker = TestWorker::start(&pool, fast_settings());
    let deadline = Instant::now() + Duration::from_secs(30);
    while calls.lock().unwrap().throttled_at.is_none() {
        assert!(Instant::now() < deadline, "the provider was never called");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Other runs of the key, submitted right after the 429.
    let mut ids = vec![first];
    for _ in 0..3 {
        ids.push(submit(&pool, &def, json!({})).await);
    }
    let statuses = wait_finished(&pool, &ids, Duration::from_secs(60)).await;
    worker.shutdown().await;
    assert!(statuses.values().all(|s| s == "succeeded"), "{statuses:?}");
    let c = calls.lock().unwrap();
    let throttled = c.throttled_at.unwrap();
    assert_eq!(c.ok_after_throttle.len(), 4);
    let earliest = c
        .ok_after_throttle
        .iter()
        .map(|t| *t - throttled)
        .min()
        .unwrap();
    assert!(
        earliest >= Duration::from_millis(2800),
        "a call came {earliest:?} after the 429 that asked for 3 s"
    );
}
