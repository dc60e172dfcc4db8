//! The API's edge on a real socket: cross-site requests with the session cookie are
//! refused (and change nothing) while bearer tokens are unaffected; live event streams
//! end when their token is revoked and at their maximum lifetime, and are limited per
//! principal; `/metrics` needs a viewer or its own listener; every answer carries the
//! security headers; a request past its time limit, or a statement past the pool's,
//! answers in the error shape; the streams' listener never takes a connection of the
//! pool the requests need.

mod common;

use std::time::Duration;

use cairn::api::guard::Limits;
use cairn::auth::Role;
use common::*;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::time::Instant;

const GREET: &str = r#"
description = "test"

[input]
name = { type = "string", default = "you" }

[[steps]]
id = "greet"
kind = "sql"
query = "select 'hi ' || $1::text as text"
params = ["{{ input.name }}"]
"#;

const EVIL: &str = "https://evil.example";

/// The API serving `greet` with `limits`.
async fn spawn_api(pool: &PgPool, limits: Limits) -> TestApi {
    greet_api(pool)
        .adjust(move |s| s.limits = limits)
        .start()
        .await
}

fn greet_api(pool: &PgPool) -> TestApiBuilder {
    TestApi::builder(pool).workflows([definition("greet", GREET)])
}

impl TestApi {
    /// Signs a new user with `role` in; the `cookie` header value of their session.
    async fn session(&self, pool: &PgPool, email: &str, role: Role) -> String {
        cairn::auth::create_user(pool, email, "", "correct horse", role)
            .await
            .unwrap();
        let login = self
            .http
            .post(self.url("/api/auth/login"))
            .json(&json!({ "email": email, "password": "correct horse" }))
            .send()
            .await
            .unwrap();
        assert_eq!(login.status().as_u16(), 200);
        let set = login.headers()["set-cookie"].to_str().unwrap();
        set.split(';').next().unwrap().to_owned()
    }

    /// A new token with `role` made through the API: (id, secret).
    async fn new_token(&self, role: &str) -> (i64, String) {
        let r = self
            .http
            .post(self.url("/api/tokens"))
            .bearer_auth(&self.admin)
            .json(&json!({ "name": "edge", "role": role }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let body: Value = r.json().await.unwrap();
        (
            body["id"].as_i64().unwrap(),
            body["token"].as_str().unwrap().to_owned(),
        )
    }

    async fn events(&self, token: &str, query: &str) -> reqwest::Response {
        self.http
            .get(self.url(&format!("/api/events{query}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }
}

async fn answer(r: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = r.send().await.unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

fn assert_forbidden((status, body): &(u16, Value)) {
    assert_eq!(*status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden", "{body}");
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Reads a response to its end; the time it took and everything it sent.
async fn read_to_end(mut r: reqwest::Response, limit: Duration) -> (Duration, String) {
    let start = Instant::now();
    let mut text = String::new();
    tokio::time::timeout(limit, async {
        while let Some(chunk) = r.chunk().await.expect("the stream ends cleanly") {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the stream was still open after {limit:?}; it sent {text:?}"));
    (start.elapsed(), text)
}

#[sqlx::test(migrations = false)]
async fn cross_origin_cookie_requests_are_refused_and_change_nothing(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn_api(&pool, Limits::default()).await;
    let cookie = api.session(&pool, "op@example.com", Role::Operator).await;
    let admin_cookie = api.session(&pool, "admin@example.com", Role::Admin).await;
    let run = submit(&pool, &definition("greet", GREET), json!({})).await;
    let submit_body = json!({ "workflow": "greet", "input": { "name": "x" } });
    let post = |path: &str| api.http.post(api.url(path)).header("cookie", &cookie);

    // Submit from another site, as JSON (a page would need a preflight, but the
    // Origin alone is reason enough), or with fetch metadata saying cross-site.
    assert_forbidden(&answer(post("/api/tasks").header("origin", EVIL).json(&submit_body)).await);
    assert_forbidden(
        &answer(
            post("/api/tasks")
                .header("sec-fetch-site", "cross-site")
                .header("origin", EVIL)
                .json(&submit_body),
        )
        .await,
    );
    assert_forbidden(
        &answer(
            post("/api/tasks")
                .header("sec-fetch-site", "same-site")
                .json(&submit_body),
        )
        .await,
    );
    assert_forbidden(
        &answer(
            post("/api/tasks")
                .header("origin", "null")
                .json(&submit_body),
        )
        .await,
    );
    // The replay the report found: a `text/plain` body from another origin…
    let plain = |r: reqwest::RequestBuilder| {
        r.header("content-type", "text/plain")
            .body(r#"{"input":{"name":"http://127.0.0.1:1/"}}"#)
    };
    assert_forbidden(
        &answer(plain(
            post(&format!("/api/tasks/{run}/replay")).header("origin", EVIL),
        ))
        .await,
    );
    // …and even from this site's own origin, or with no Origin at all.
    assert_forbidden(
        &answer(plain(
            post(&format!("/api/tasks/{run}/replay")).header("origin", &api.base),
        ))
        .await,
    );
    assert_forbidden(&answer(plain(post(&format!("/api/tasks/{run}/replay")))).await);
    assert_forbidden(
        &answer(
            post(&format!("/api/tasks/{run}/replay"))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("origin", &api.base)
                .body("a=b"),
        )
        .await,
    );
    // Bodiless actions: cross-origin, or with neither Origin nor fetch metadata.
    assert_forbidden(
        &answer(post(&format!("/api/tasks/{run}/cancel")).header("origin", EVIL)).await,
    );
    assert_forbidden(&answer(post(&format!("/api/tasks/{run}/cancel"))).await);
    // Other unsafe methods too.
    let viewer: i64 =
        cairn::auth::create_user(&pool, "v@example.com", "", "correct horse", Role::Viewer)
            .await
            .unwrap()
            .id;
    assert_forbidden(
        &answer(
            api.http
                .delete(api.url(&format!("/api/users/{viewer}")))
                .header("cookie", &admin_cookie)
                .header("origin", EVIL),
        )
        .await,
    );
    assert_forbidden(
        &answer(
            api.http
                .patch(api.url(&format!("/api/users/{viewer}")))
                .header("cookie", &admin_cookie)
                .header("origin", EVIL)
                .json(&json!({ "role": "admin" })),
        )
        .await,
    );

    // Nothing changed: one run, still queued; the viewer is still a viewer.
    assert_eq!(count(&pool, "select count(*) from runs").await, 1);
    assert_eq!(
        count(
            &pool,
            "select count(*) from runs where status = 'queued' and cancel_requested_at is null"
        )
        .await,
        1
    );
    let role: String = sqlx::query_scalar("select role from users where id = $1")
        .bind(viewer)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(role, "viewer");
    // Reading cross-origin is not refused here (the browser keeps the answer from the
    // page; CORS is never granted).
    let (status, _) = answer(
        api.http
            .get(api.url("/api/tasks"))
            .header("cookie", &cookie)
            .header("origin", EVIL),
    )
    .await;
    assert_eq!(status, 200);
}

#[sqlx::test(migrations = false)]
async fn same_origin_cookie_requests_are_accepted(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn_api(&pool, Limits::default()).await;
    let cookie = api.session(&pool, "op@example.com", Role::Operator).await;
    let submit_body = json!({ "workflow": "greet", "input": { "name": "x" } });
    let post = |path: &str| api.http.post(api.url(path)).header("cookie", &cookie);

    // What the dashboard's fetch sends: Origin (and Sec-Fetch-Site over HTTPS).
    let (status, body) = answer(
        post("/api/tasks")
            .header("origin", &api.base)
            .json(&submit_body),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let run = body["taskId"].as_str().unwrap().to_owned();
    let (status, body) = answer(
        post("/api/tasks")
            .header("sec-fetch-site", "same-origin")
            .header("origin", &api.base)
            .json(&submit_body),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // Behind a proxy that terminates TLS: the browser's origin is https.
    let host = api.base.trim_start_matches("http://");
    let (status, body) = answer(
        post("/api/tasks")
            .header("x-forwarded-proto", "https")
            .header("origin", format!("https://{host}"))
            .json(&submit_body),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // A JSON body without Origin (a script reusing a session): no page can send it.
    let (status, body) = answer(post("/api/tasks").json(&submit_body)).await;
    assert_eq!(status, 201, "{body}");
    // A bodiless action from the dashboard.
    let (status, body) =
        answer(post(&format!("/api/tasks/{run}/cancel")).header("origin", &api.base)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(count(&pool, "select count(*) from runs").await, 4);
}

#[sqlx::test(migrations = false)]
async fn bearer_tokens_are_not_subject_to_the_origin_check(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn_api(&pool, Limits::default()).await;
    let operator = token(&pool, Role::Operator).await;
    let (status, body) = answer(
        api.http
            .post(api.url("/api/tasks"))
            .bearer_auth(&operator)
            .header("origin", EVIL)
            .json(&json!({ "workflow": "greet", "input": { "name": "x" } })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let run = body["taskId"].as_str().unwrap().to_owned();
    // Bodiless, no Origin: `ctl task cancel`.
    let (status, body) = answer(
        api.http
            .post(api.url(&format!("/api/tasks/{run}/cancel")))
            .bearer_auth(&operator),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // A token with a cookie beside it: the token is what authenticates.
    let cookie = api.session(&pool, "op@example.com", Role::Operator).await;
    let (status, body) = answer(
        api.http
            .post(api.url("/api/tasks"))
            .bearer_auth(&operator)
            .header("cookie", &cookie)
            .header("origin", EVIL)
            .json(&json!({ "workflow": "greet" })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // Sign-in carries no cookie yet, and is JSON only.
    cairn::auth::create_user(&pool, "v@example.com", "", "correct horse", Role::Viewer)
        .await
        .unwrap();
    let (status, body) = answer(
        api.http
            .post(api.url("/api/auth/login"))
            .json(&json!({ "email": "v@example.com", "password": "correct horse" })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// The event streams' listener holds a connection of its own: an API whose pool has a
/// single connection still answers while a stream is open, and the stream still hears
/// of new events.
#[sqlx::test(migrations = false)]
async fn an_api_with_a_pool_of_one_connection_answers_while_a_stream_is_open(pool: PgPool) {
    migrate(&pool).await;
    let one = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap();
    let api = greet_api(&one).start().await;
    let mut stream = api.events(&api.viewer, "").await;
    assert_eq!(stream.status().as_u16(), 200);
    // The listener is connected once its session listens (the test's own listener,
    // on the test's pool, is not one of the API's).
    wait_until(&pool, Duration::from_secs(10), "the API to listen", || {
        let pool = pool.clone();
        async move {
            count(
                &pool,
                "select count(*) from pg_stat_activity
                  where datname = current_database() and query ilike 'listen%cairn_events%'
                    and pid <> pg_backend_pid()",
            )
            .await
                >= 2
        }
    })
    .await;
    let (status, created) = answer(
        api.http
            .post(api.url("/api/tasks"))
            .bearer_auth(&api.admin)
            .json(&json!({ "workflow": "greet", "input": {} })),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let task = created["taskId"].as_str().unwrap().to_owned();
    let heard = tokio::time::timeout(Duration::from_secs(10), async {
        let mut text = String::new();
        while let Some(chunk) = stream.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains(&task) {
                return text;
            }
        }
        text
    })
    .await
    .expect("the stream heard of the new run");
    assert!(heard.contains("run_queued"), "{heard}");
}

#[sqlx::test(migrations = false)]
async fn a_stream_ends_at_once_when_its_token_is_revoked(pool: PgPool) {
    migrate(&pool).await;
    // Periodic re-checks far away: only the revocation can end the stream in time.
    let api = spawn_api(
        &pool,
        Limits {
            stream_recheck: Duration::from_secs(600),
            ..Limits::default()
        },
    )
    .await;
    let (id, viewer) = api.new_token("viewer").await;
    let stream = api.events(&viewer, "").await;
    assert_eq!(stream.status().as_u16(), 200);
    let revoke = api
        .http
        .delete(api.url(&format!("/api/tokens/{id}")))
        .bearer_auth(&api.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status().as_u16(), 204);
    let (took, _) = read_to_end(stream, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(5), "ended after {took:?}");
    // And it cannot come back.
    assert_eq!(api.events(&viewer, "").await.status().as_u16(), 401);
}

#[sqlx::test(migrations = false)]
async fn a_stream_notices_a_revocation_made_elsewhere(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn_api(
        &pool,
        Limits {
            stream_recheck: Duration::from_millis(200),
            ..Limits::default()
        },
    )
    .await;
    let (id, viewer) = api.new_token("viewer").await;
    let stream = api.events(&viewer, "").await;
    assert_eq!(stream.status().as_u16(), 200);
    // As another API process would: this one hears nothing, and its cache keeps the
    // token for up to PRINCIPAL_TTL.
    sqlx::query("update api_tokens set revoked_at = now() where id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let limit = cairn::api::auth::PRINCIPAL_TTL + Duration::from_secs(5);
    read_to_end(stream, limit).await;
}

#[sqlx::test(migrations = false)]
async fn streams_are_limited_per_principal_and_in_all(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn_api(
        &pool,
        Limits {
            streams_per_principal: 2,
            streams_max: 3,
            ..Limits::default()
        },
    )
    .await;
    let (_, viewer) = api.new_token("viewer").await;
    let first = api.events(&viewer, "").await;
    let second = api.events(&viewer, "").await;
    assert_eq!(first.status().as_u16(), 200);
    assert_eq!(second.status().as_u16(), 200);
    let third = api.events(&viewer, "").await;
    assert_eq!(third.status().as_u16(), 429);
    let retry_after: u64 = third.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    // Another principal has its own allowance, up to the process's limit.
    let (_, other) = api.new_token("viewer").await;
    let fourth = api.events(&other, "").await;
    assert_eq!(fourth.status().as_u16(), 200);
    let fifth = api.events(&other, "").await;
    assert_eq!(fifth.status().as_u16(), 429);
    assert!(fifth.headers().contains_key("retry-after"));
    drop((first, second, fourth));
}

#[sqlx::test(migrations = false)]
async fn a_stream_ends_at_its_lifetime_and_is_never_cut_by_the_request_timeout(pool: PgPool) {
    migrate(&pool).await;
    let lifetime = Duration::from_millis(1500);
    let api = spawn_api(
        &pool,
        Limits {
            stream_lifetime: lifetime,
            request_timeout: Duration::from_millis(100),
            ..Limits::default()
        },
    )
    .await;
    // No other request to this API: they would have 100 ms.
    let viewer = token(&pool, Role::Viewer).await;
    let run = submit(&pool, &definition("greet", GREET), json!({})).await;
    let last: i64 = count(&pool, "select max(id) from run_events").await;
    let stream = api.events(&viewer, &format!("?runId={run}")).await;
    assert_eq!(stream.status().as_u16(), 200);
    let (took, text) = read_to_end(stream, lifetime + Duration::from_secs(10)).await;
    assert!(
        took >= lifetime - Duration::from_millis(100),
        "ended after {took:?}"
    );
    // The run's events, then an `id` alone: where a reconnecting client resumes.
    assert!(text.contains("event: run-event"), "{text}");
    let end = text.trim_end().rsplit("\n\n").next().unwrap().trim();
    assert_eq!(end, format!("id: {last}"), "{text}");
}

#[sqlx::test(migrations = false)]
async fn metrics_need_a_viewer_or_their_own_listener(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn_api(&pool, Limits::default()).await;
    let anonymous = api.http.get(api.url("/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let viewer = token(&pool, Role::Viewer).await;
    let scraped = api
        .http
        .get(api.url("/metrics"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status().as_u16(), 200);
    let text = scraped.text().await.unwrap();
    assert!(text.contains("cairn_build_info"), "{text}");
    // Within the cache's lifetime, a scrape reuses the rendering.
    submit(&pool, &definition("greet", GREET), json!({})).await;
    let again = api
        .http
        .get(api.url("/metrics"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(again, text);

    // On a listener of its own: open there, absent from the main one.
    let main = greet_api(&pool)
        .flags(&["--metrics-listen", "127.0.0.1:0"])
        .start()
        .await;
    let metrics = main
        .metrics
        .clone()
        .expect("metrics on a listener of their own");
    let open = main.http.get(&metrics).send().await.unwrap();
    assert_eq!(open.status().as_u16(), 200);
    assert!(open.text().await.unwrap().contains("cairn_queue_depth"));
    let gone = main
        .http
        .get(main.url("/metrics"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status().as_u16(), 404);
}

fn assert_security_headers(r: &reqwest::Response, what: &str) {
    let h = r.headers();
    let get = |name: &str| {
        h.get(name)
            .unwrap_or_else(|| panic!("{what}: no {name}"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(get("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(get("x-frame-options"), "DENY", "{what}");
    assert_eq!(get("referrer-policy"), "same-origin", "{what}");
    assert!(
        get("content-security-policy").contains("frame-ancestors 'none'"),
        "{what}"
    );
}

#[sqlx::test(migrations = false)]
async fn every_answer_carries_the_security_headers(pool: PgPool) {
    migrate(&pool).await;
    let dir = std::env::temp_dir().join(format!("cairn-edge-{}", ulid::Ulid::generate()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("index.html"),
        "<!doctype html><title>Cairn</title>",
    )
    .unwrap();
    let api = greet_api(&pool)
        .flags(&["--static-dir", dir.to_str().unwrap()])
        .start()
        .await;
    let cookie = api.session(&pool, "v@example.com", Role::Viewer).await;
    let answers = [
        ("/healthz", api.http.get(api.url("/healthz"))),
        ("/api/tasks (401)", api.http.get(api.url("/api/tasks"))),
        (
            "/api/nope (404)",
            api.http.get(api.url("/api/nope")).bearer_auth(&api.admin),
        ),
        (
            "/api/openapi.json",
            api.http.get(api.url("/api/openapi.json")),
        ),
        (
            "a refused cross-origin request",
            api.http
                .post(api.url("/api/auth/logout"))
                .header("cookie", &cookie)
                .header("origin", EVIL),
        ),
        ("the dashboard", api.http.get(api.url("/runs/123"))),
    ];
    for (what, r) in answers {
        let r = r.send().await.unwrap();
        assert_security_headers(&r, what);
        assert!(
            !r.headers().contains_key("strict-transport-security"),
            "{what}"
        );
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        if what == "the dashboard" {
            assert!(csp.contains("script-src 'self'"), "{csp}");
            assert!(csp.contains("connect-src 'self'"), "{csp}");
        } else {
            assert!(csp.starts_with("default-src 'none'"), "{what}: {csp}");
        }
    }
    // Behind HTTPS (Secure cookies): HSTS as well.
    let https = greet_api(&pool).flags(&["--cookie-secure"]).start().await;
    let r = https.http.get(https.url("/healthz")).send().await.unwrap();
    assert_security_headers(&r, "/healthz over https");
    assert!(
        r.headers()["strict-transport-security"]
            .to_str()
            .unwrap()
            .starts_with("max-age=")
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Holds `lock table runs` until dropped: any request that reads runs waits for it.
async fn lock_runs(pool: &PgPool) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("lock table runs in access exclusive mode")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

#[sqlx::test(migrations = false)]
async fn a_request_past_its_time_answers_in_the_error_shape(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn_api(
        &pool,
        Limits {
            request_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
    )
    .await;
    let viewer = token(&pool, Role::Viewer).await;
    // Authenticated before the lock, so only the list itself waits on it.
    assert_eq!(
        answer(api.http.get(api.url("/api/auth/me")).bearer_auth(&viewer))
            .await
            .0,
        200
    );
    let lock = lock_runs(&pool).await;
    let start = Instant::now();
    let (status, body) = answer(api.http.get(api.url("/api/tasks")).bearer_auth(&viewer)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("300ms"),
        "{body}"
    );
    assert!(start.elapsed() < Duration::from_secs(10));
    lock.rollback().await.unwrap();
    // The server goes on serving.
    assert_eq!(
        answer(api.http.get(api.url("/api/tasks")).bearer_auth(&viewer))
            .await
            .0,
        200
    );
}

#[sqlx::test(migrations = false)]
async fn the_api_pool_cancels_long_statements(pool: PgPool) {
    migrate(&pool).await;
    let api_pool = cairn::store::connect_api(&database_url(&pool), 2, Duration::from_millis(300))
        .await
        .unwrap();
    let timeout: String = sqlx::query_scalar("show statement_timeout")
        .fetch_one(&api_pool)
        .await
        .unwrap();
    assert_eq!(timeout, "300ms");
    let api = greet_api(&api_pool).start().await;
    let viewer = token(&pool, Role::Viewer).await;
    assert_eq!(
        answer(api.http.get(api.url("/api/auth/me")).bearer_auth(&viewer))
            .await
            .0,
        200
    );
    let lock = lock_runs(&pool).await;
    let start = Instant::now();
    let (status, body) = answer(api.http.get(api.url("/api/tasks")).bearer_auth(&viewer)).await;
    // Cancelled by the database long before the request's own 30 s.
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "internal", "{body}");
    assert!(start.elapsed() < Duration::from_secs(10));
    lock.rollback().await.unwrap();
    drop(api);
    api_pool.close().await;
}

#[sqlx::test(migrations = false)]
async fn ctl_logs_follow_reconnects_across_stream_ends(pool: PgPool) {
    migrate(&pool).await;
    // Streams of 300 ms, a run of 3 s or more: `--follow` sees several streams end.
    let api = spawn_api(
        &pool,
        Limits {
            stream_lifetime: Duration::from_millis(300),
            ..Limits::default()
        },
    )
    .await;
    let def = definition(
        "napper",
        "[[steps]]\nid = \"nap\"\nkind = \"sleep\"\nduration = \"3s\"\n\n\
         [[steps]]\nid = \"after\"\nkind = \"sql\"\nneeds = [\"nap\"]\nquery = \"select 1 as one\"\n",
    );
    let run = submit(&pool, &def, json!({})).await;
    let worker = TestWorker::start(&pool, fast_settings());
    let viewer = token(&pool, Role::Viewer).await;
    let follow = tokio::process::Command::new(common::ctl_bin())
        .args(["task", "logs", &run, "--follow"])
        .env("CAIRN_API_URL", &api.base)
        .env("CAIRN_TOKEN", &viewer)
        .env("HOME", std::env::temp_dir())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), follow)
        .await
        .expect("ctl logs --follow ends when the run does")
        .expect("run ctl");
    worker.shutdown().await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("run_succeeded"), "{stdout}");
    // Every event once, in order: nothing lost or repeated across reconnections.
    let printed: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    let stored: i64 = sqlx::query_scalar("select count(*) from run_events where run_id = $1")
        .bind(&run)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(printed.len() as i64, stored, "{stdout}");
}
