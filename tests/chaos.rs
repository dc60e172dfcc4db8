//! Chaos: real `cairn api` and `cairn worker` processes on a private PostgreSQL cluster
//! (never the shared test server), while workers are SIGKILLed and the cluster is
//! restarted (`-m fast` and `-m immediate`) under a steady load of submits over HTTP.
//!
//! What must hold throughout: no acknowledged run is lost (each finishes `succeeded`),
//! no checkpointed step runs again (a local counter service records every call with its
//! `Idempotency-Key`, `run/step`, and no call may arrive after that step's checkpoint
//! was committed), no request is answered 500 (503 `unavailable` with `Retry-After` is
//! the answer while the database is away, and the client retries), no service — API,
//! scheduler, workers — exits by itself (the killed workers are restarted by the test,
//! sometimes while the database is restarting), no `deadlock detected` appears in any
//! log, and everything recovers without being restarted. Also: a service started while
//! the database is down waits for it, and `--db-connect-timeout` bounds that wait.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use cairn::devdb::DevDb;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Steps of the test workflow, in order.
const STEPS: [&str; 3] = ["a", "b", "c"];

/// A private cluster in its own directory, removed with it.
struct Cluster {
    db: Option<Arc<DevDb>>,
    dir: PathBuf,
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = std::env::temp_dir().join(format!("cairn-chaos-{}", ulid::Ulid::generate()));
        let data = dir.join("pgdata");
        let db = tokio::task::spawn_blocking(move || DevDb::start(&data))
            .await
            .expect("the start ran")
            .expect("a private PostgreSQL starts");
        Cluster {
            db: Some(Arc::new(db)),
            dir,
        }
    }

    fn db(&self) -> Arc<DevDb> {
        self.db.clone().expect("the cluster is up")
    }

    fn url(&self) -> String {
        self.db().url()
    }

    /// Starts a `pg_ctl` action off the async threads, at once.
    fn begin(&self, what: &'static str) -> tokio::task::JoinHandle<()> {
        let db = self.db();
        tokio::task::spawn_blocking(move || {
            match what {
                "restart fast" => db.restart("fast"),
                "restart immediate" => db.restart("immediate"),
                "stop" => db.stop("fast"),
                "resume" => db.resume(),
                other => panic!("unknown action {other}"),
            }
            .unwrap_or_else(|e| panic!("{what}: {e}"))
        })
    }

    /// Runs a `pg_ctl` action to its end.
    async fn control(&self, what: &'static str) {
        self.begin(what).await.expect("the action ran");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Stops the server first (DevDb's drop), then removes its files.
        self.db.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `cairn` child process with its log; killed when dropped.
struct Service {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Service {
    fn spawn(name: &str, args: &[&str], url: &str, dir: &Path) -> Service {
        let log = dir.join(format!("{name}-{}.log", ulid::Ulid::generate()));
        let stderr = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(args)
            .env("DATABASE_URL", url)
            .env("CAIRN_NO_MIGRATE", "true")
            // The steps' service listens on loopback.
            .env("CAIRN_EGRESS_ALLOW", "127.0.0.0/8")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("cairn starts");
        Service {
            name: name.to_owned(),
            child,
            log,
        }
    }

    fn worker(url: &str, dir: &Path, extra: &[&str]) -> Service {
        let mut args = vec![
            "worker",
            "--concurrency",
            "16",
            "--lease",
            "2s",
            "--poll-interval",
            "100ms",
            "--shutdown-grace",
            "1s",
            "--db-pool",
            "6",
        ];
        args.extend_from_slice(extra);
        Service::spawn("worker", &args, url, dir)
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("process status")
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics, with the end of its log, if the process has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.exited() {
            let log = self.log();
            let _ = std::fs::copy(
                &self.log,
                std::env::temp_dir().join("cairn-chaos-exited.log"),
            );
            let tail: String = log
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            panic!(
                "{} exited by itself ({status}); its log ends:\n{tail}",
                self.name
            );
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The counter service the steps call: when each call arrived, per `Idempotency-Key`.
#[derive(Default)]
struct Calls {
    at: Mutex<HashMap<String, Vec<DateTime<Utc>>>>,
}

async fn hit(
    State(calls): State<Arc<Calls>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, u64>>,
) -> Json<Value> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if let Ok(mut at) = calls.at.lock() {
        at.entry(key).or_default().push(Utc::now());
    }
    // The step's own work takes a little while, so that kills land mid-step.
    tokio::time::sleep(Duration::from_millis(q.get("ms").copied().unwrap_or(0))).await;
    Json(json!({ "ok": true }))
}

async fn spawn_counter() -> (String, Arc<Calls>) {
    let calls = Arc::new(Calls::default());
    let app = Router::new()
        .route("/hit", post(hit))
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a local port");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), calls)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    /// Runs acknowledged by a 201 (or 200 for a retried key), by id.
    acknowledged: Mutex<Vec<String>>,
    requests: AtomicU64,
    unavailable: AtomicU64,
    /// 503s that came without `Retry-After`.
    unavailable_without_retry_after: AtomicU64,
    /// Answers that are neither success nor 503 (500s above all), with their bodies.
    unexpected: Mutex<Vec<String>>,
    /// Requests that got no answer (the API is never restarted, so: none expected).
    transport_errors: AtomicU64,
}

impl Tally {
    /// Counts an answer; `None` for a 503 (send the request again), else its JSON body
    /// (`null` when it was not a success).
    async fn answer(&self, what: &str, response: reqwest::Response) -> Option<Value> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let status = response.status().as_u16();
        if status == 503 {
            self.unavailable.fetch_add(1, Ordering::Relaxed);
            if !response.headers().contains_key("retry-after") {
                self.unavailable_without_retry_after
                    .fetch_add(1, Ordering::Relaxed);
            }
            return None;
        }
        let body = response.text().await.unwrap_or_default();
        if (200..300).contains(&status) {
            return Some(serde_json::from_str(&body).unwrap_or(Value::Null));
        }
        if let Ok(mut unexpected) = self.unexpected.lock() {
            unexpected.push(format!("{what}: {status} {body}"));
        }
        Some(Value::Null)
    }
}

/// Submits runs one after another until `stop`, each with its own `Idempotency-Key`,
/// sending a submit again (same key) while it is answered 503; reads each acknowledged
/// run back once.
async fn client(n: usize, base: String, token: String, tally: Arc<Tally>, stop: CancellationToken) {
    let http = reqwest::Client::builder()
        // Generous: a request waits for a connection for up to the pool's acquire
        // timeout, and a failed shared submit is written again one run at a time.
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client");
    let mut i = 0;
    while !stop.is_cancelled() {
        i += 1;
        let key = format!("chaos-{n}-{i}");
        // Once stopping, a submit still unanswered is given a few more tries only.
        let mut left_after_stop = 20;
        let id = loop {
            if stop.is_cancelled() {
                if left_after_stop == 0 {
                    break None;
                }
                left_after_stop -= 1;
            }
            let sent = http
                .post(format!("{base}/api/tasks"))
                .bearer_auth(&token)
                .header("Idempotency-Key", &key)
                .json(&json!({ "workflow": "chaos", "input": {} }))
                .send()
                .await;
            match sent {
                Ok(response) => {
                    if let Some(body) = tally.answer("submit", response).await {
                        break body["taskId"].as_str().map(str::to_owned);
                    }
                }
                Err(_) => {
                    tally.transport_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            // A client's pause before trying again.
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let Some(id) = id else { continue };
        if let Ok(mut ids) = tally.acknowledged.lock() {
            ids.push(id.clone());
        }
        match http
            .get(format!("{base}/api/tasks/{id}"))
            .bearer_auth(&token)
            .send()
            .await
        {
            Ok(response) => {
                tally.answer("read", response).await;
            }
            Err(_) => {
                tally.transport_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Checkpoints committed so far; `None` while the database is away.
async fn checkpoints(pool: &PgPool) -> Option<i64> {
    sqlx::query_scalar("select count(*) from steps where status = 'succeeded'")
        .fetch_one(pool)
        .await
        .ok()
}

/// Waits until `more` checkpoints were committed after `from`, polling (the database
/// comes and goes, so no listener) under a deadline.
async fn wait_progress(pool: &PgPool, more: i64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let from = loop {
        if let Some(n) = checkpoints(pool).await {
            break n;
        }
        assert!(
            Instant::now() < deadline,
            "the database never came back ({what})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    loop {
        if checkpoints(pool).await.is_some_and(|n| n >= from + more) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no progress after {what}: fewer than {more} checkpoints in 60s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn workflow(dir: &Path, counter: &str) -> PathBuf {
    let workflows = dir.join("workflows");
    std::fs::create_dir_all(&workflows).expect("workflows dir");
    let mut toml = String::from(
        "[defaults]\nretry = { max_attempts = 50, initial_delay = \"100ms\", max_delay = \"1s\" }\n",
    );
    for (i, step) in STEPS.iter().enumerate() {
        let needs = match i {
            0 => String::new(),
            _ => format!("needs = [\"{}\"]\n", STEPS[i - 1]),
        };
        toml.push_str(&format!(
            "\n[[steps]]\nid = \"{step}\"\nkind = \"http\"\nmethod = \"POST\"\nurl = \"{counter}/hit?ms=40\"\n{needs}"
        ));
    }
    std::fs::write(workflows.join("chaos.toml"), toml).expect("workflow file");
    workflows
}

async fn pool(url: &str) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .expect("the private database answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_survive_killed_workers_and_postgres_restarts_under_load() {
    let cluster = Cluster::start().await;
    let url = cluster.url();
    let pool = pool(&url).await;
    cairn::queue::migrate(&pool)
        .await
        .expect("migrations apply");
    let token = cairn::auth::create_token(
        &pool,
        "chaos",
        cairn::auth::Role::Operator,
        Some(cairn::auth::TOKEN_TTL),
    )
    .await
    .expect("token");
    let (counter, calls) = spawn_counter().await;
    let workflows = workflow(&cluster.dir, &counter);
    let workflows = workflows.display().to_string();

    let listen = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{listen}");
    let mut api = Service::spawn(
        "api",
        &["api", "--listen", &listen, "--workflows-dir", &workflows],
        &url,
        &cluster.dir,
    );
    let mut workers = [
        Service::worker(&url, &cluster.dir, &[]),
        Service::worker(&url, &cluster.dir, &[]),
    ];
    let mut scheduler = Service::spawn(
        "scheduler",
        &[
            "scheduler",
            "--workflows-dir",
            &workflows,
            "--scheduler-poll",
            "200ms",
        ],
        &url,
        &cluster.dir,
    );
    // The API is up once it answers.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        api.assert_running();
        assert!(Instant::now() < deadline, "the API never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let tally = Arc::new(Tally::default());
    let stop = CancellationToken::new();
    let clients: Vec<_> = (0..3)
        .map(|n| {
            tokio::spawn(client(
                n,
                base.clone(),
                token.clone(),
                tally.clone(),
                stop.clone(),
            ))
        })
        .collect();

    // Each action waits for some progress since the last, so that every one lands on a
    // system that is busy, and recovered from the one before.
    enum Action {
        Kill(usize),
        Restart(&'static str),
        /// Kill a worker and start its replacement while the database restarts.
        KillDuringRestart(usize, &'static str),
    }
    let actions = [
        Action::Kill(0),
        Action::Restart("restart fast"),
        Action::Kill(1),
        Action::Restart("restart immediate"),
        Action::KillDuringRestart(0, "restart fast"),
        Action::Kill(1),
        Action::KillDuringRestart(1, "restart immediate"),
        Action::Kill(0),
        Action::Restart("restart immediate"),
        Action::Kill(1),
        Action::KillDuringRestart(0, "restart immediate"),
        Action::Restart("restart fast"),
    ];
    let started = Instant::now();
    for (i, action) in actions.iter().enumerate() {
        wait_progress(&pool, 30, &format!("action {i}")).await;
        match action {
            Action::Kill(w) => {
                workers[*w].kill9();
                workers[*w] = Service::worker(&url, &cluster.dir, &[]);
            }
            Action::Restart(how) => cluster.control(how).await,
            Action::KillDuringRestart(w, how) => {
                workers[*w].kill9();
                let restart = cluster.begin(how);
                workers[*w] = Service::worker(&url, &cluster.dir, &[]);
                restart.await.expect("the restart ran");
            }
        }
        api.assert_running();
        scheduler.assert_running();
        for w in &mut workers {
            w.assert_running();
        }
    }
    // Recovered without restarts: work goes on after the last restart.
    wait_progress(&pool, 30, "the last action").await;
    stop.cancel();
    for c in clients {
        c.await.expect("the client ran");
    }
    let chaos_took = started.elapsed();

    let ids = tally.acknowledged.lock().expect("ids").clone();
    assert!(ids.len() >= 50, "too little load: {} runs", ids.len());
    let deadline = Instant::now() + Duration::from_secs(90);
    let statuses: HashMap<String, String> = loop {
        let rows: Vec<(String, String)> =
            sqlx::query_as("select id, status from runs where id = any($1)")
                .bind(&ids)
                .fetch_all(&pool)
                .await
                .expect("statuses");
        let done = rows
            .iter()
            .filter(|(_, s)| matches!(s.as_str(), "succeeded" | "dead" | "cancelled"))
            .count();
        if done == ids.len() || Instant::now() >= deadline {
            break rows.into_iter().collect();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let unexpected = tally.unexpected.lock().expect("answers").clone();
    let deadlocks: usize = [&api, &scheduler]
        .into_iter()
        .chain(workers.iter())
        .map(|s| s.log().matches("deadlock detected").count())
        .sum();
    let summary = format!(
        "{} runs acknowledged, {} requests, {} answered 503, {} answered 500, {} other unexpected answers, {} transport errors, {deadlocks} deadlocks logged by the live services, chaos for {chaos_took:?}",
        ids.len(),
        tally.requests.load(Ordering::Relaxed),
        tally.unavailable.load(Ordering::Relaxed),
        unexpected.iter().filter(|u| u.contains(": 500 ")).count(),
        unexpected.iter().filter(|u| !u.contains(": 500 ")).count(),
        tally.transport_errors.load(Ordering::Relaxed),
    );
    eprintln!("chaos: {summary}");

    assert!(
        unexpected.is_empty(),
        "answers other than success or 503 ({summary}): {:?}",
        &unexpected[..unexpected.len().min(10)]
    );
    assert_eq!(
        tally
            .unavailable_without_retry_after
            .load(Ordering::Relaxed),
        0,
        "503s without Retry-After"
    );
    assert_eq!(
        tally.transport_errors.load(Ordering::Relaxed),
        0,
        "requests the API never answered"
    );
    let lost: Vec<_> = ids
        .iter()
        .filter(|id| !statuses.contains_key(*id))
        .collect();
    assert!(lost.is_empty(), "acknowledged runs lost: {lost:?}");
    let unfinished: Vec<_> = statuses
        .iter()
        .filter(|(_, s)| *s != "succeeded")
        .take(10)
        .collect();
    assert!(
        unfinished.is_empty(),
        "runs that did not succeed ({summary}): {unfinished:?}"
    );

    // No step was called after its checkpoint was committed.
    let committed: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(
        "select run_id, step_id, finished_at from steps
          where run_id = any($1) and status = 'succeeded'",
    )
    .bind(&ids)
    .fetch_all(&pool)
    .await
    .expect("checkpoints");
    assert_eq!(committed.len(), ids.len() * STEPS.len());
    let calls = calls.at.lock().expect("calls").clone();
    let mut called_again = Vec::new();
    let mut repeated = 0;
    for (run, step, at) in &committed {
        let seen = calls
            .get(&format!("{run}/{step}"))
            .cloned()
            .unwrap_or_default();
        assert!(!seen.is_empty(), "{run}/{step} succeeded without a call");
        repeated += seen.len() - 1;
        if seen.iter().any(|t| t > at) {
            called_again.push(format!("{run}/{step}"));
        }
    }
    eprintln!("chaos: {repeated} step calls repeated before their checkpoint (killed mid-step)");
    assert!(
        called_again.is_empty(),
        "steps called again after their checkpoint: {called_again:?}"
    );

    // Nothing exited by itself, everything answers, and no statement deadlocked.
    api.assert_running();
    scheduler.assert_running();
    for w in &mut workers {
        w.assert_running();
    }
    let ready = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz answers");
    assert_eq!(ready.status().as_u16(), 200);
    for service in [&api, &scheduler].into_iter().chain(workers.iter()) {
        assert!(
            !service.log().contains("deadlock detected"),
            "{} logged a deadlock:\n{}",
            service.name,
            service.log()
        );
    }
}

/// Polls `check` every 50 ms until it holds; panics with `what` after `limit`.
async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_started_while_postgres_is_down_wait_for_it() {
    let cluster = Cluster::start().await;
    let url = cluster.url();
    {
        let pool = pool(&url).await;
        cairn::queue::migrate(&pool)
            .await
            .expect("migrations apply");
        pool.close().await;
    }
    cluster.control("stop").await;

    // Bounded: gives up after --db-connect-timeout, saying why.
    let mut bounded = Service::worker(&url, &cluster.dir, &["--db-connect-timeout", "1s"]);
    // Unbounded (0 = for ever): waits, logging each try, then starts.
    let mut worker = Service::worker(&url, &cluster.dir, &["--db-connect-timeout", "0"]);
    let listen = format!("127.0.0.1:{}", free_port());
    let workflows = workflow(&cluster.dir, "http://127.0.0.1:9");
    let mut api = Service::spawn(
        "api",
        &[
            "api",
            "--listen",
            &listen,
            "--workflows-dir",
            &workflows.display().to_string(),
        ],
        &url,
        &cluster.dir,
    );

    eventually(
        Duration::from_secs(30),
        "the bounded worker to give up",
        || bounded.exited().is_some(),
    )
    .await;
    let status = bounded.exited().expect("exited");
    assert!(!status.success(), "gave up, so it failed");
    let log = bounded.log();
    assert!(log.contains("still unavailable after"), "{log}");

    let tries = |s: &Service| s.log().matches("trying again").count();
    eventually(Duration::from_secs(30), "a few logged tries", || {
        tries(&worker) >= 3 && tries(&api) >= 3
    })
    .await;
    worker.assert_running();
    api.assert_running();
    assert!(
        worker.log().contains("WARN"),
        "tries are logged at WARN:\n{}",
        worker.log()
    );

    cluster.control("resume").await;
    let pool = pool(&url).await;
    let token = cairn::auth::create_token(
        &pool,
        "chaos",
        cairn::auth::Role::Operator,
        Some(cairn::auth::TOKEN_TTL),
    )
    .await
    .expect("token");
    let pid = worker.child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let registered: Option<String> =
            sqlx::query_scalar("select id from workers where pid = $1")
                .bind(pid)
                .fetch_optional(&pool)
                .await
                .expect("read workers");
        if registered.is_some() {
            break;
        }
        worker.assert_running();
        assert!(
            Instant::now() < deadline,
            "the worker never started once the database was back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = http.get(format!("http://{listen}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        api.assert_running();
        assert!(Instant::now() < deadline, "the API never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The database goes away under running services: every endpoint answers 503
    // `unavailable` with `Retry-After`, `/readyz` says why, and nothing exits.
    pool.close().await;
    cluster.control("stop").await;
    let submit = http
        .post(format!("http://{listen}/api/tasks"))
        .bearer_auth(&token)
        .json(&json!({ "workflow": "chaos", "input": {} }))
        .send();
    let list = http
        .get(format!("http://{listen}/api/tasks"))
        .bearer_auth(&token)
        .send();
    let ready = http.get(format!("http://{listen}/readyz")).send();
    let (submit, list, ready) = tokio::join!(submit, list, ready);
    for (what, answer) in [("submit", submit), ("list", list), ("readyz", ready)] {
        let answer = answer.unwrap_or_else(|e| panic!("{what} was not answered: {e}"));
        assert_eq!(answer.status().as_u16(), 503, "{what}");
        assert!(
            answer.headers().contains_key("retry-after"),
            "{what} without Retry-After"
        );
        let body: Value = answer.json().await.expect("a JSON error");
        assert_eq!(body["error"]["code"], "unavailable", "{what}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("database is unavailable (")),
            "{what} says why: {body}"
        );
    }
    api.assert_running();
    worker.assert_running();

    cluster.control("resume").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = http.get(format!("http://{listen}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "the API never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    api.assert_running();
    worker.assert_running();
}
