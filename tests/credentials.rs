//! Credentials on a live API: tokens follow their user (role, disabling, expiry),
//! owners list and revoke their own tokens, a password change ends the other sessions,
//! and sign-in is throttled, costs the same for unknown and known emails and cannot
//! stall other requests.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::auth::Role;
use common::*;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "correct horse battery";

/// The API with `cairn api`'s `flags`, serving no workflow, with no token but those the
/// test makes (it counts them).
async fn spawn(pool: &PgPool, flags: &[&str]) -> TestApi {
    TestApi::builder(pool)
        .flags(flags)
        .without_tokens()
        .start()
        .await
}

/// How a request authenticates.
#[derive(Clone, Copy)]
enum As<'a> {
    Token(&'a str),
    Session(&'a str),
}

impl TestApi {
    async fn request(
        &self,
        who: As<'_>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        r = match who {
            As::Token(t) => r.bearer_auth(t),
            // What the dashboard sends: the cookie, from the API's own origin.
            As::Session(s) => r
                .header("cookie", format!("cairn_session={s}"))
                .header("origin", &self.base),
        };
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    /// Signs in; the session cookie's value, or the status and body of the refusal.
    async fn login(
        &self,
        email: &str,
        password: &str,
    ) -> Result<String, (u16, Value, Option<String>)> {
        let resp = self
            .http
            .post(format!("{}/api/auth/login", self.base))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let session = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix("cairn_session="))
            .and_then(|v| v.split(';').next())
            .map(str::to_owned);
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match (status, session) {
            (200, Some(s)) => Ok(s),
            (status, _) => Err((
                status,
                resp.json().await.unwrap_or(Value::Null),
                retry_after,
            )),
        }
    }

    /// A personal token made through a session (what `ctl login` does).
    async fn personal_token(&self, session: &str) -> Value {
        let (status, body) = self
            .request(
                As::Session(session),
                "POST",
                "/api/auth/token",
                Some(json!({ "name": "laptop" })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }
}

async fn user(pool: &PgPool, email: &str, role: Role) -> i64 {
    cairn::auth::create_user(pool, email, "", PASSWORD, role)
        .await
        .unwrap()
        .id
}

#[sqlx::test(migrator = "cairn::store::MIGRATOR")]
async fn a_token_acts_with_its_users_current_role_and_stops_with_the_user(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn(&pool, &[]).await;
    let admin = token(&pool, Role::Admin).await;
    let id = user(&pool, "ada@example.com", Role::Admin).await;
    let session = api.login("ada@example.com", PASSWORD).await.unwrap();
    let minted = api.personal_token(&session).await;
    assert_eq!(minted["role"], "admin");
    let expires = minted["expiresAt"]
        .as_str()
        .expect("tokens expire by default");
    let expires = chrono::DateTime::parse_from_rfc3339(expires).unwrap();
    let days = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_days();
    assert!((89..=90).contains(&days), "expires in {days} days");
    let personal = minted["token"].as_str().unwrap().to_owned();
    let (status, _) = api
        .request(As::Token(&personal), "GET", "/api/users", None)
        .await;
    assert_eq!(status, 200, "an admin's token acts as an admin");

    // Demoted: the token is a viewer's now, and mints only viewer tokens.
    let (status, _) = api
        .request(
            As::Token(&admin),
            "PATCH",
            &format!("/api/users/{id}"),
            Some(json!({ "role": "viewer" })),
        )
        .await;
    assert_eq!(status, 200);
    let (status, me) = api
        .request(As::Token(&personal), "GET", "/api/auth/me", None)
        .await;
    assert_eq!((status, me["user"]["role"].as_str()), (200, Some("viewer")));
    let (status, body) = api
        .request(As::Token(&personal), "GET", "/api/users", None)
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = api
        .request(
            As::Token(&personal),
            "POST",
            "/api/tokens",
            Some(json!({ "name": "x", "role": "admin" })),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = api
        .request(
            As::Token(&personal),
            "POST",
            "/api/auth/token",
            Some(json!({ "name": "again" })),
        )
        .await;
    assert_eq!(
        (status, body["role"].as_str()),
        (201, Some("viewer")),
        "{body}"
    );
    let again = body["token"].as_str().unwrap().to_owned();
    let (status, me) = api
        .request(As::Session(&session), "GET", "/api/auth/me", None)
        .await;
    assert_eq!((status, me["user"]["role"].as_str()), (200, Some("viewer")));

    // Promoted back: the first token has its own (admin) role again; the second one
    // never had more than viewer.
    api.request(
        As::Token(&admin),
        "PATCH",
        &format!("/api/users/{id}"),
        Some(json!({ "role": "admin" })),
    )
    .await;
    let (status, _) = api
        .request(As::Token(&personal), "GET", "/api/users", None)
        .await;
    assert_eq!(status, 200);
    let (status, _) = api
        .request(As::Token(&again), "GET", "/api/users", None)
        .await;
    assert_eq!(status, 403);

    // Disabled: neither its tokens nor its sessions work, and the sessions are gone.
    let (status, _) = api
        .request(
            As::Token(&admin),
            "PATCH",
            &format!("/api/users/{id}"),
            Some(json!({ "disabled": true })),
        )
        .await;
    assert_eq!(status, 200);
    for who in [
        As::Token(&personal),
        As::Token(&again),
        As::Session(&session),
    ] {
        let (status, _) = api.request(who, "GET", "/api/auth/me", None).await;
        assert_eq!(status, 401);
    }
    let sessions: i64 = sqlx::query_scalar("select count(*) from sessions where user_id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(sessions, 0);
    let (status, _, _) = api.login("ada@example.com", PASSWORD).await.unwrap_err();
    assert_eq!(status, 401);
}

#[sqlx::test(migrator = "cairn::store::MIGRATOR")]
async fn tokens_expire_and_owners_list_and_revoke_their_own(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn(&pool, &[]).await;
    user(&pool, "op@example.com", Role::Operator).await;
    user(&pool, "other@example.com", Role::Operator).await;
    let session = api.login("op@example.com", PASSWORD).await.unwrap();
    let mine = api.personal_token(&session).await;
    let other_session = api.login("other@example.com", PASSWORD).await.unwrap();
    let theirs = api.personal_token(&other_session).await;

    // Asked-for lifetimes are bounded.
    let (status, body) = api
        .request(
            As::Session(&session),
            "POST",
            "/api/auth/token",
            Some(json!({ "name": "x", "expiresInDays": 400 })),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, short) = api
        .request(
            As::Session(&session),
            "POST",
            "/api/auth/token",
            Some(json!({ "name": "short", "expiresInDays": 1 })),
        )
        .await;
    assert_eq!(status, 201);

    // Only my own tokens, never a secret.
    let (status, list) = api
        .request(As::Session(&session), "GET", "/api/auth/tokens", None)
        .await;
    assert_eq!(status, 200);
    let ids: Vec<i64> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![mine["id"].as_i64().unwrap(), short["id"].as_i64().unwrap()]
    );
    assert!(!list.to_string().contains(mine["token"].as_str().unwrap()));
    assert!(list["items"][0]["expiresAt"].is_string());

    // Someone else's token: not mine to revoke (and untouched).
    let (status, _) = api
        .request(
            As::Session(&session),
            "DELETE",
            &format!("/api/auth/tokens/{}", theirs["id"]),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let theirs_secret = theirs["token"].as_str().unwrap();
    assert_eq!(
        api.request(As::Token(theirs_secret), "GET", "/api/auth/me", None)
            .await
            .0,
        200
    );

    // Revoking my own takes effect at once.
    let mine_secret = mine["token"].as_str().unwrap();
    assert_eq!(
        api.request(As::Token(mine_secret), "GET", "/api/auth/me", None)
            .await
            .0,
        200
    );
    let (status, _) = api
        .request(
            As::Token(mine_secret),
            "DELETE",
            &format!("/api/auth/tokens/{}", mine["id"]),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        api.request(As::Token(mine_secret), "GET", "/api/auth/me", None)
            .await
            .0,
        401
    );

    // An expired token stops working.
    let short_secret = short["token"].as_str().unwrap();
    sqlx::query("update api_tokens set expires_at = now() - interval '1 second' where id = $1")
        .bind(short["id"].as_i64().unwrap())
        .execute(&pool)
        .await
        .unwrap();
    let (status, body) = api
        .request(As::Token(short_secret), "GET", "/api/auth/me", None)
        .await;
    assert_eq!(status, 401, "{body}");

    // A service token's own token is itself; an admin sees every token.
    let service = token(&pool, Role::Admin).await;
    let (status, own) = api
        .request(As::Token(&service), "GET", "/api/auth/tokens", None)
        .await;
    assert_eq!(status, 200, "{own}");
    assert_eq!(own["items"].as_array().unwrap().len(), 1);
    assert_eq!(own["items"][0]["userId"], Value::Null);
    let (status, all) = api
        .request(As::Token(&service), "GET", "/api/tokens", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(all["items"].as_array().unwrap().len(), 4);
}

#[sqlx::test(migrator = "cairn::store::MIGRATOR")]
async fn a_password_change_ends_the_users_other_sessions(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn(&pool, &[]).await;
    let id = user(&pool, "ada@example.com", Role::Viewer).await;
    let here = api.login("ada@example.com", PASSWORD).await.unwrap();
    let elsewhere = api.login("ada@example.com", PASSWORD).await.unwrap();
    for s in [&here, &elsewhere] {
        assert_eq!(
            api.request(As::Session(s), "GET", "/api/auth/me", None)
                .await
                .0,
            200
        );
    }

    let change =
        |current: &str, new: &str| json!({ "currentPassword": current, "newPassword": new });
    let (status, body) = api
        .request(
            As::Session(&here),
            "POST",
            "/api/auth/password",
            Some(change("wrong password", "a new password")),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = api
        .request(
            As::Session(&here),
            "POST",
            "/api/auth/password",
            Some(change(PASSWORD, "short")),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = api
        .request(
            As::Session(&here),
            "POST",
            "/api/auth/password",
            Some(change(PASSWORD, "a new password")),
        )
        .await;
    assert_eq!(status, 204, "{body}");

    assert_eq!(
        api.request(As::Session(&here), "GET", "/api/auth/me", None)
            .await
            .0,
        200
    );
    assert_eq!(
        api.request(As::Session(&elsewhere), "GET", "/api/auth/me", None)
            .await
            .0,
        401
    );
    assert_eq!(
        api.login("ada@example.com", PASSWORD).await.unwrap_err().0,
        401
    );
    let again = api
        .login("ada@example.com", "a new password")
        .await
        .unwrap();

    // An admin setting the password ends every session.
    let admin = token(&pool, Role::Admin).await;
    let (status, _) = api
        .request(
            As::Token(&admin),
            "PATCH",
            &format!("/api/users/{id}"),
            Some(json!({ "password": "set by admin" })),
        )
        .await;
    assert_eq!(status, 200);
    for s in [&here, &again] {
        assert_eq!(
            api.request(As::Session(s), "GET", "/api/auth/me", None)
                .await
                .0,
            401
        );
    }
}

#[sqlx::test(migrator = "cairn::store::MIGRATOR")]
async fn sign_in_is_throttled_per_address_and_per_account(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn(&pool, &[]).await;
    user(&pool, "ada@example.com", Role::Viewer).await;

    // 30 wrong passwords: the first ten are judged, the rest refused unjudged.
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..30 {
        match api.login("ada@example.com", "wrong password").await {
            Ok(_) => panic!("a wrong password signed in"),
            Err((status, body, ra)) => {
                if status == 429 {
                    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
                    retry_after = ra;
                }
                statuses.push(status);
            }
        }
    }
    // Ten a minute, refilled continuously: a slow machine may have earned one or two
    // more by the end.
    let judged = statuses.iter().filter(|s| **s == 401).count();
    assert!((10..=12).contains(&judged), "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        30 - judged,
        "{statuses:?}"
    );
    assert!(statuses[..10].iter().all(|s| *s == 401), "{statuses:?}");
    let retry_after: u64 = retry_after.expect("429 says when").parse().unwrap();
    assert!(
        (1..=60).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    // The right password is refused too while the budget is spent.
    assert_eq!(
        api.login("ada@example.com", PASSWORD).await.unwrap_err().0,
        429
    );

    // Per account: another address would be refused for this account, but another
    // account from a fresh budget is not held back by it.
    let api = spawn(&pool, &["--login-rate", "5", "--trust-forwarded-for"]).await;
    let from = |ip: &str| {
        let http = api.http.clone();
        let base = api.base.clone();
        let ip = ip.to_owned();
        async move {
            http.post(format!("{base}/api/auth/login"))
                .header("x-forwarded-for", format!("203.0.113.9, {ip}"))
                .json(&json!({ "email": "ada@example.com", "password": "wrong password" }))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for i in 0..5 {
        assert_eq!(from(&format!("198.51.100.{i}")).await, 401);
    }
    assert_eq!(
        from("198.51.100.77").await,
        429,
        "the account's budget is spent"
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[sqlx::test(migrator = "cairn::store::MIGRATOR")]
async fn unknown_and_known_emails_cost_the_same(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn(&pool, &["--login-rate", "1000"]).await;
    user(&pool, "ada@example.com", Role::Viewer).await;
    // The decoy hash is made once, off the clock.
    let _ = api.login("warm@example.com", "x").await;

    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..8 {
        let t = Instant::now();
        assert_eq!(
            api.login("ada@example.com", "wrong password")
                .await
                .unwrap_err()
                .0,
            401
        );
        known.push(t.elapsed());
        let t = Instant::now();
        let email = format!("nobody{i}@example.com");
        assert_eq!(
            api.login(&email, "wrong password").await.unwrap_err().0,
            401
        );
        unknown.push(t.elapsed());
    }
    let (known, unknown) = (median(known), median(unknown));
    let ratio = unknown.as_secs_f64() / known.as_secs_f64();
    assert!(
        (0.5..=2.0).contains(&ratio),
        "unknown {unknown:?} vs known {known:?}: an attacker can tell them apart"
    );
}

#[sqlx::test(migrator = "cairn::store::MIGRATOR")]
async fn a_sign_in_flood_does_not_stall_other_requests(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn(&pool, &["--login-rate", "100000"]).await;
    user(&pool, "ada@example.com", Role::Viewer).await;
    let stop = CancellationToken::new();
    let judged = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let progress = Arc::new(tokio::sync::Notify::new());
    let flood: Vec<_> = (0..16)
        .map(|_| {
            let (http, base, stop, judged) = (
                api.http.clone(),
                api.base.clone(),
                stop.clone(),
                judged.clone(),
            );
            let progress = progress.clone();
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    let status = http
                        .post(format!("{base}/api/auth/login"))
                        .json(&json!({ "email": "ada@example.com", "password": "wrong password" }))
                        .send()
                        .await
                        .unwrap()
                        .status();
                    assert_eq!(status.as_u16(), 401);
                    judged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    progress.notify_one();
                }
            })
        })
        .collect();
    // The flood is under way once a few attempts were judged.
    while judged.load(std::sync::atomic::Ordering::Relaxed) < 4 {
        progress.notified().await;
    }
    let mut took = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let resp = api
            .http
            .get(format!("{}/healthz", api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        took.push(t.elapsed());
    }
    stop.cancel();
    for f in flood {
        f.await.unwrap();
    }
    let judged = judged.load(std::sync::atomic::Ordering::Relaxed);
    let slowest = *took.iter().max().unwrap();
    let typical = median(took);
    assert!(judged >= 8, "the flood ran: {judged} attempts judged");
    assert!(
        typical < Duration::from_millis(100),
        "/healthz took {typical:?} (slowest {slowest:?}) during a sign-in flood"
    );
}
