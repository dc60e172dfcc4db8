//! Alerts when runs die: one signed notification per death, written with the death
//! and delivered at least once, through notifier outages, worker kills and several
//! notifiers; the egress policy and a workflow's `[notify]` apply.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use cairn::scheduler::SystemClock;
use cairn::scheduler::notifier::{self, NotifySettings};
use cairn::step::EgressAllow;
use cairn::step::egress::StepHttp;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "notify-s3cret";

/// A workflow whose only step fails at once (nothing listens on port 1), for good.
fn doomed(name: &str, extra: &str) -> cairn::workflow::Definition {
    definition(
        name,
        &format!(
            "{extra}\n[[steps]]\nid = \"call\"\nkind = \"http\"\nurl = \"http://127.0.0.1:1/\"\nretry = {{ max_attempts = 2, initial_delay = \"10ms\" }}\n"
        ),
    )
}

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    headers: HeaderMap,
    body: Bytes,
    answered: u16,
}

/// A notification endpoint: answers `status` (settable) and records every POST.
struct Receiver {
    status: AtomicU16,
    hits: Mutex<Vec<Hit>>,
}

impl Receiver {
    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
    fn delivered(&self) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| (200..300).contains(&h.answered))
            .collect()
    }
}

async fn hook(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let answered = r.status.load(Ordering::SeqCst);
    r.hits.lock().unwrap().push(Hit {
        headers,
        body,
        answered,
    });
    StatusCode::from_u16(answered).unwrap()
}

/// Serves a receiver on `listener` until the token is cancelled.
fn serve(listener: tokio::net::TcpListener, status: u16) -> (Arc<Receiver>, CancellationToken) {
    let r = Arc::new(Receiver {
        status: AtomicU16::new(status),
        hits: Mutex::default(),
    });
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(r.clone());
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await
            .unwrap();
    });
    (r, stop)
}

async fn receiver(status: u16) -> (Arc<Receiver>, SocketAddr, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (r, stop) = serve(listener, status);
    (r, addr, stop)
}

/// Checks a POST's signature as a receiver would: HMAC-SHA256 of
/// `"{X-Cairn-Timestamp}.{raw body}"` keyed with the shared secret.
fn verify(hit: &Hit, secret: &str) {
    let header = |n: &str| {
        hit.headers
            .get(n)
            .unwrap_or_else(|| panic!("{n} is sent"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    let timestamp: i64 = header("x-cairn-timestamp").parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - timestamp).abs() < 300);
    let signature = header("x-cairn-signature");
    let hex_mac = signature.strip_prefix("sha256=").expect("sha256= prefix");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(&hit.body);
    mac.verify_slice(&hex::decode(hex_mac).unwrap())
        .expect("the signature verifies with the shared secret");
}

fn settings(url: Option<String>, allow: &[&str]) -> NotifySettings {
    NotifySettings {
        url: url.map(|u| u.parse().unwrap()),
        secret: Some(SECRET.into()),
        egress_allow: EgressAllow::parse(allow).unwrap(),
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        poll: Duration::from_millis(100),
        timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

/// Delivers what is due now, once, in this process.
async fn deliver_now(pool: &PgPool, s: &NotifySettings) -> usize {
    let client = StepHttp::new(s.egress_allow.clone()).client(&[]).unwrap();
    notifier::deliver_due(pool, s, &client, &SystemClock)
        .await
        .expect("delivery round")
}

/// Runs a workflow run to its death with an in-process worker.
async fn die(pool: &PgPool, def: &cairn::workflow::Definition) -> String {
    let worker = TestWorker::start(pool, fast_settings());
    let id = submit(pool, def, json!({})).await;
    let statuses = wait_finished(pool, std::slice::from_ref(&id), Duration::from_secs(60)).await;
    assert_eq!(statuses[&id], "dead");
    worker.shutdown().await;
    id
}

async fn notification_state(pool: &PgPool, run: &str) -> Option<(String, i32, Option<String>)> {
    sqlx::query_as(
        "select state, deliveries, last_error from notifications where run_id = $1 order by id",
    )
    .bind(run)
    .fetch_optional(pool)
    .await
    .unwrap()
}

async fn count(pool: &PgPool, run: &str) -> i64 {
    sqlx::query_scalar("select count(*) from notifications where run_id = $1")
        .bind(run)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn wait_state(pool: &PgPool, run: &str, state: &str, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let now = notification_state(pool, run).await;
        if now.as_ref().is_some_and(|(s, _, _)| s == state) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "notification of {run} never became {state}; it is {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `cairn scheduler` child process (which runs the notifier), killed when dropped.
struct SchedulerProcess {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl SchedulerProcess {
    fn spawn(database_url: &str, envs: &[(&str, &str)]) -> SchedulerProcess {
        let dir =
            std::env::temp_dir().join(format!("cairn-test-scheduler-{}", ulid::Ulid::generate()));
        let workflows = dir.join("workflows");
        std::fs::create_dir_all(&workflows).unwrap();
        let log = std::fs::File::create(dir.join("scheduler.log")).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("scheduler")
            .env("DATABASE_URL", database_url)
            .env("CAIRN_NO_MIGRATE", "true")
            .env("CAIRN_WORKFLOWS_DIR", &workflows)
            .env("CAIRN_NOTIFY_SECRET", SECRET)
            .env("CAIRN_NOTIFY_RETRY_MIN", "100ms")
            .env("CAIRN_NOTIFY_RETRY_MAX", "300ms")
            .env("CAIRN_NOTIFY_POLL", "200ms")
            .env("RUST_LOG", "warn")
            .envs(envs.iter().copied())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn cairn scheduler");
        SchedulerProcess { child, dir }
    }
}

impl Drop for SchedulerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[sqlx::test(migrations = false)]
async fn a_dead_run_sends_exactly_one_signed_notification(pool: PgPool) {
    migrate(&pool).await;
    let (rx, addr, _stop) = receiver(200).await;
    let def = doomed("doomed", "");
    let api = TestApi::start(&pool, [def.clone()]).await;
    // Two notifiers share the outbox: each row goes to one of them.
    let s = settings(Some(format!("http://{addr}/hook")), &["127.0.0.1"]);
    let stop = CancellationToken::new();
    let notifiers: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(notifier::run(
                pool.clone(),
                s.clone(),
                Arc::new(SystemClock),
                stop.clone(),
            ))
        })
        .collect();

    let id = die(&pool, &def).await;
    wait_state(&pool, &id, "delivered", Duration::from_secs(30)).await;
    // Delivered is final: nothing sends it again. Another death, to be sure the
    // notifiers kept going, then the count.
    let other = die(&pool, &def).await;
    wait_state(&pool, &other, "delivered", Duration::from_secs(30)).await;
    stop.cancel();
    for n in notifiers {
        n.await.unwrap().unwrap();
    }

    let hits: Vec<Hit> = rx
        .hits()
        .into_iter()
        .filter(|h| serde_json::from_slice::<Value>(&h.body).unwrap()["taskId"] == id.as_str())
        .collect();
    assert_eq!(hits.len(), 1, "exactly one POST for the death");
    let hit = &hits[0];
    verify(hit, SECRET);
    let body: Value = serde_json::from_slice(&hit.body).unwrap();
    assert_eq!(body["event"], "run.dead");
    assert_eq!(body["workflow"], "doomed");
    assert_eq!(body["step"], "call");
    assert_eq!(body["attempts"], 2);
    assert!(body["error"].as_str().unwrap().len() > 3, "{body}");
    assert!(body["url"].is_null(), "no dashboard URL configured");
    let text = body["text"].as_str().unwrap();
    assert!(text.contains(&id) && text.contains("`call`"), "{text}");
    assert_eq!(
        hit.headers["idempotency-key"].to_str().unwrap(),
        body["id"].as_str().unwrap()
    );
    assert_eq!(hit.headers["x-cairn-event"], "run.dead");
    assert_eq!(rx.hits().len(), 2, "one POST per death, no more");

    // The API and ctl show it, delivered, and never the target URL.
    let (status, page) = api
        .call("GET", &format!("/api/notifications?taskId={id}"), None)
        .await;
    assert_eq!(status, 200, "{page}");
    let item = &page["items"][0];
    assert_eq!(item["state"], "delivered", "{page}");
    assert_eq!(item["deliveries"], 1);
    assert_eq!(item["lastStatus"], 200);
    assert!(item["deliveredAt"].is_string());
    assert!(!page.to_string().contains(&addr.to_string()));
    let (status, body) = api.call("GET", "/api/notifications?state=nope", None).await;
    assert_eq!(status, 400, "{body}");
    let (code, out, err) = api.ctl(&["notify", "list"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&id) && out.contains("delivered"), "{out}");
    let (code, out, err) = api.ctl(&["notify", "list", "--state", "failed"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("No notifications"), "{out}");
}

#[sqlx::test(migrations = false)]
async fn a_notification_survives_a_notifier_outage_and_arrives_once(pool: PgPool) {
    migrate(&pool).await;
    // The endpoint is down (nothing listens), then answers 503, then 200.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hook = format!("http://127.0.0.1:{port}/hook");
    let _scheduler = SchedulerProcess::spawn(
        &database_url(&pool),
        &[
            ("CAIRN_NOTIFY_URL", &hook),
            ("CAIRN_NOTIFY_EGRESS_ALLOW", "127.0.0.1"),
        ],
    );
    let id = die(&pool, &doomed("doomed", "")).await;

    let tried = |min: i32| {
        let pool = pool.clone();
        let id = id.clone();
        move || {
            let pool = pool.clone();
            let id = id.clone();
            async move {
                notification_state(&pool, &id)
                    .await
                    .is_some_and(|(s, n, _)| s == "pending" && n >= min)
            }
        }
    };
    wait_until(
        &pool,
        Duration::from_secs(30),
        "failed POSTs while down",
        tried(2),
    )
    .await;
    let (_, down_tries, down_error) = notification_state(&pool, &id).await.unwrap();
    assert!(down_error.is_some(), "the refused connection is recorded");

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let (rx, _stop) = serve(listener, 503);
    wait_until(
        &pool,
        Duration::from_secs(30),
        "503 answers",
        tried(down_tries + 2),
    )
    .await;
    assert!(rx.hits().len() >= 2);
    let last_status: Option<i32> =
        sqlx::query_scalar("select last_status from notifications where run_id = $1")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(last_status, Some(503));

    rx.status.store(200, Ordering::SeqCst);
    wait_state(&pool, &id, "delivered", Duration::from_secs(30)).await;
    let delivered = rx.delivered();
    assert_eq!(delivered.len(), 1, "delivered once");
    verify(&delivered[0], SECRET);
    // Every try was the same event under the same idempotency key.
    let keys: std::collections::HashSet<_> = rx
        .hits()
        .iter()
        .map(|h| h.headers["idempotency-key"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 1);
    assert_eq!(count(&pool, &id).await, 1);
}

#[sqlx::test(migrations = false)]
async fn a_worker_killed_right_after_a_death_loses_no_notification(pool: PgPool) {
    migrate(&pool).await;
    let (rx, addr, _stop) = receiver(200).await;
    let url = database_url(&pool);
    let mut worker = WorkerProcess::spawn(&url, &["--poll-interval", "100ms"]);
    worker.id(&pool).await;
    let def = doomed("doomed", "");
    let id = submit(&pool, &def, json!({})).await;
    let statuses = wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(60)).await;
    assert_eq!(statuses[&id], "dead");
    worker.kill9();
    // The notification committed with the death, before anything else happened.
    assert_eq!(count(&pool, &id).await, 1);
    wait_state(&pool, &id, "pending", Duration::from_secs(1)).await;

    let hook = format!("http://{addr}/hook");
    let _scheduler = SchedulerProcess::spawn(
        &url,
        &[
            ("CAIRN_NOTIFY_URL", &hook),
            ("CAIRN_NOTIFY_EGRESS_ALLOW", "127.0.0.1"),
        ],
    );
    wait_state(&pool, &id, "delivered", Duration::from_secs(30)).await;
    let delivered = rx.delivered();
    assert_eq!(delivered.len(), 1);
    verify(&delivered[0], SECRET);
    let body: Value = serde_json::from_slice(&delivered[0].body).unwrap();
    assert_eq!(body["taskId"], id.as_str());
}

#[sqlx::test(migrations = false)]
async fn the_egress_policy_refuses_a_private_endpoint_unless_allowed(pool: PgPool) {
    migrate(&pool).await;
    let (rx, addr, _stop) = receiver(200).await;
    let def = doomed("doomed", "");
    for host in [addr.to_string(), format!("localhost:{}", addr.port())] {
        let id = die(&pool, &def).await;
        let refused = settings(Some(format!("http://{host}/hook")), &[]);
        assert_eq!(deliver_now(&pool, &refused).await, 1);
        let (state, _, error) = notification_state(&pool, &id).await.unwrap();
        assert_eq!(state, "failed", "{host}: {error:?}");
        let error = error.unwrap();
        assert!(
            error.contains("refused") && error.contains("CAIRN_NOTIFY_EGRESS_ALLOW"),
            "{error}"
        );
    }
    assert!(rx.hits().is_empty(), "nothing reached the private address");

    let id = die(&pool, &def).await;
    let allowed = settings(Some(format!("http://{addr}/hook")), &["127.0.0.1"]);
    assert_eq!(deliver_now(&pool, &allowed).await, 1);
    assert_eq!(notification_state(&pool, &id).await.unwrap().0, "delivered");
    assert_eq!(rx.delivered().len(), 1);
}

#[sqlx::test(migrations = false)]
async fn a_workflows_notify_table_disables_or_redirects_its_alerts(pool: PgPool) {
    migrate(&pool).await;
    let (cluster, cluster_addr, _a) = receiver(200).await;
    let (own, own_addr, _b) = receiver(200).await;
    let s = settings(Some(format!("http://{cluster_addr}/hook")), &["127.0.0.1"]);

    let quiet = doomed("quiet", "[notify]\nenabled = false\n");
    let id = die(&pool, &quiet).await;
    assert_eq!(count(&pool, &id).await, 0, "nothing is written");
    assert_eq!(deliver_now(&pool, &s).await, 0);

    let elsewhere = doomed(
        "elsewhere",
        &format!("[notify]\nurl = \"http://{own_addr}/hook\"\n"),
    );
    let id = die(&pool, &elsewhere).await;
    assert_eq!(deliver_now(&pool, &s).await, 1);
    assert_eq!(notification_state(&pool, &id).await.unwrap().0, "delivered");
    assert!(
        cluster.hits().is_empty(),
        "sends nothing about `quiet`, nor about `elsewhere` here"
    );
    assert_eq!(own.delivered().len(), 1);
    verify(&own.delivered()[0], SECRET);

    // Without a URL anywhere, the event is recorded as skipped.
    let plain = doomed("plain", "");
    let id = die(&pool, &plain).await;
    assert_eq!(deliver_now(&pool, &settings(None, &[])).await, 1);
    let (state, deliveries, why) = notification_state(&pool, &id).await.unwrap();
    assert_eq!((state.as_str(), deliveries), ("skipped", 1));
    assert!(why.unwrap().contains("CAIRN_NOTIFY_URL"));
}

#[test]
fn notify_table_mistakes_are_located() {
    let parse = |extra: &str| {
        cairn::workflow::Definition::parse(
            "wf",
            "wf.toml",
            &format!("{extra}\n[[steps]]\nid = \"a\"\nkind = \"pass\"\n"),
        )
    };
    let errors = |extra: &str| match parse(extra) {
        Err(cairn::workflow::WorkflowError::Invalid(d)) => {
            d.iter().map(ToString::to_string).collect::<Vec<_>>()
        }
        other => panic!("{extra:?} should not parse: {other:?}"),
    };
    let e = errors("[notify]\nurl = \"ftp://example.com/x\"");
    assert!(
        e[0].starts_with("wf.toml:2:7:") && e[0].contains("not an absolute http"),
        "{e:?}"
    );
    let e = errors("[notify]\nurl = \"https://example.com/x\"\nenabled = false");
    assert!(e[0].starts_with("wf.toml:3:"), "{e:?}");
    let e = errors("[notify]\nurls = \"https://example.com/x\"");
    assert!(e[0].contains("urls"), "{e:?}");
    let ok = parse("[notify]\nurl = \"https://hooks.example.com/T0/B0\"").unwrap();
    let n = ok.workflow.notify.unwrap();
    assert_eq!(n.url.as_deref(), Some("https://hooks.example.com/T0/B0"));
    assert!(n.enabled);
}

#[sqlx::test(migrations = false)]
async fn a_failed_schedule_tick_is_sent_only_when_asked(pool: PgPool) {
    migrate(&pool).await;
    let (rx, addr, _stop) = receiver(200).await;
    sqlx::query(
        "insert into schedules (id, name, workflow, cron, source)
         values ('01SCHED', 'nightly', 'gone', '0 3 * * *', 'api')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let registry = cairn::workflow::Registry::default();
    let tick = || async {
        match cairn::scheduler::trigger(&pool, &registry, "nightly", "test", chrono::Utc::now())
            .await
            .unwrap()
        {
            cairn::scheduler::Triggered::Failed(_) => {}
            other => panic!("the tick should fail: {other:?}"),
        }
    };
    let states = || async {
        sqlx::query_scalar::<_, String>(
            "select state from notifications where event = 'schedule.tick_failed' order by id",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let mut s = settings(Some(format!("http://{addr}/hook")), &["127.0.0.1"]);

    tick().await;
    assert_eq!(deliver_now(&pool, &s).await, 1);
    assert_eq!(states().await, ["skipped"]);
    assert!(rx.hits().is_empty());

    s.tick_failures = true;
    tick().await;
    assert_eq!(deliver_now(&pool, &s).await, 1);
    assert_eq!(states().await, ["skipped", "delivered"]);
    let hit = &rx.delivered()[0];
    verify(hit, SECRET);
    let body: Value = serde_json::from_slice(&hit.body).unwrap();
    assert_eq!(body["event"], "schedule.tick_failed");
    assert_eq!(body["scheduleId"], "01SCHED");
    assert_eq!(body["workflow"], "gone");
    assert!(body["text"].as_str().unwrap().contains("could not start"));
}

#[sqlx::test(migrations = false)]
async fn the_reaper_deletes_finished_notifications_past_their_window(pool: PgPool) {
    migrate(&pool).await;
    let (_rx, addr, _stop) = receiver(200).await;
    let def = doomed("doomed", "");
    let delivered = die(&pool, &def).await;
    deliver_now(
        &pool,
        &settings(Some(format!("http://{addr}/hook")), &["127.0.0.1"]),
    )
    .await;
    let failed = die(&pool, &def).await;
    deliver_now(&pool, &settings(Some(format!("http://{addr}/hook")), &[])).await;
    let pending = die(&pool, &def).await;
    // Forty days on, all three are past the succeeded window (7 days) and the failed
    // one is past the dead window (30 days); pending ones always stay.
    sqlx::query(
        "update notifications set created_at = created_at - interval '40 days',
                finished_at = finished_at - interval '40 days',
                delivered_at = delivered_at - interval '40 days'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let now = chrono::Utc::now();
    let settings = cairn::scheduler::reaper::ReaperSettings {
        dead: None,
        ..Default::default()
    };
    let pass =
        cairn::scheduler::reaper::pass(&pool, &settings, now, "test", &CancellationToken::new())
            .await
            .unwrap();
    let cairn::scheduler::reaper::Pass::Done(report) = pass else {
        panic!("the pass ran")
    };
    assert_eq!(report.deleted.get("notifications"), Some(&1), "{report:?}");
    assert_eq!(count(&pool, &delivered).await, 0);
    assert_eq!(
        count(&pool, &failed).await,
        1,
        "failed ones follow the dead window (kept)"
    );
    assert_eq!(count(&pool, &pending).await, 1);

    let settings = cairn::scheduler::reaper::ReaperSettings::default();
    cairn::scheduler::reaper::pass(&pool, &settings, now, "test", &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(count(&pool, &failed).await, 0);
    assert_eq!(count(&pool, &pending).await, 1);
}

/// The list's filters are documented as exactly what they accept: an empty `state` or
/// `before` (`?state=&before=`) is refused with a 400, so the OpenAPI document must not
/// offer it as valid (the API fuzzer sent it and was refused).
#[test]
fn the_list_filters_are_documented_as_what_they_accept() {
    let doc = serde_json::to_value(cairn::api::openapi()).expect("the OpenAPI document");
    let params = doc["paths"]["/api/notifications"]["get"]["parameters"]
        .as_array()
        .expect("parameters");
    let pattern = |name: &str| {
        params
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["schema"]["pattern"].as_str())
            .map(str::to_owned)
    };
    assert_eq!(
        pattern("state").as_deref(),
        Some("^(pending|delivered|skipped|failed)$")
    );
    assert_eq!(pattern("before").as_deref(), Some("^[0-9]{1,18}$"));
}

/// A notification given up while its target answered 500 is sent again by one operator
/// command once the target is fixed: pending again with a fresh round of attempts, then
/// delivered under the same idempotency key. Only failed or skipped ones can be resent,
/// and only by an operator.
#[sqlx::test(migrations = false)]
async fn an_operator_resends_a_notification_that_was_given_up(pool: PgPool) {
    migrate(&pool).await;
    let (rx, addr, _stop) = receiver(500).await;
    let mut s = settings(Some(format!("http://{addr}/hook")), &["127.0.0.1"]);
    s.max_deliveries = 2;
    let id = die(&pool, &doomed("doomed", "")).await;
    // Two 500s, the round's maximum: given up.
    assert_eq!(deliver_now(&pool, &s).await, 1);
    sqlx::query("update notifications set next_attempt_at = now() where run_id = $1")
        .bind(&id)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(deliver_now(&pool, &s).await, 1);
    let (state, deliveries, _) = notification_state(&pool, &id).await.unwrap();
    assert_eq!((state.as_str(), deliveries), ("failed", 2));
    assert_eq!(
        deliver_now(&pool, &s).await,
        0,
        "a failed one is not retried"
    );

    let api = TestApi::start(&pool, []).await;
    let (_, page) = api
        .call("GET", "/api/notifications?state=failed", None)
        .await;
    let nid = page["items"][0]["id"].as_str().unwrap().to_owned();
    let resend = format!("/api/notifications/{nid}/resend");
    let (status, _) = api
        .call_as(&api.viewer, "POST", &resend, Some(json!({})))
        .await;
    assert_eq!(status, 403, "a viewer cannot resend");

    // The target is fixed; the operator's one command.
    rx.status.store(200, Ordering::SeqCst);
    let (code, out, err) = api.ctl(&["notify", "resend", &nid]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("pending again"), "{out}");
    let (state, deliveries, _) = notification_state(&pool, &id).await.unwrap();
    assert_eq!((state.as_str(), deliveries), ("pending", 2));
    assert_eq!(deliver_now(&pool, &s).await, 1);
    let (state, deliveries, error) = notification_state(&pool, &id).await.unwrap();
    assert_eq!((state.as_str(), deliveries, error), ("delivered", 3, None));
    let hits = rx.hits();
    assert_eq!(hits.len(), 3);
    let keys: std::collections::HashSet<_> = hits
        .iter()
        .map(|h| h.headers["idempotency-key"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        keys.len(),
        1,
        "one event, one key, however often it is sent"
    );
    let (_, page) = api
        .call("GET", &format!("/api/notifications?taskId={id}"), None)
        .await;
    assert_eq!(page["items"][0]["resends"], 1);
    assert_eq!(page["items"][0]["deliveries"], 3);

    // Delivered: nothing to resend. Unknown: not found.
    let (status, body) = api.call("POST", &resend, Some(json!({}))).await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = api
        .call("POST", "/api/notifications/999999/resend", Some(json!({})))
        .await;
    assert_eq!(status, 404);
}
