//! Helpers shared by the integration tests: a per-test database URL for child
//! processes, an in-process worker and API, a programmable HTTP service for steps to
//! call, and waiting on run completion through `LISTEN` rather than sleeping.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use cairn::workflow::Definition;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

/// Applies Cairn's and apalis' migrations to a test database.
pub async fn migrate(pool: &PgPool) {
    cairn::queue::migrate(pool).await.expect("migrations apply");
}

/// A bearer token with `role`.
pub async fn token(pool: &PgPool, role: cairn::auth::Role) -> String {
    cairn::auth::create_token(pool, "test", role, Some(cairn::auth::TOKEN_TTL))
        .await
        .expect("token")
}

/// `cairn api`'s flags as the binary reads them (with their defaults), from `args`.
pub fn api_args(args: &[&str]) -> cairn::config::ApiArgs {
    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        api: cairn::config::ApiArgs,
    }
    let argv = std::iter::once("cairn-api").chain(args.iter().copied());
    <Flags as clap::Parser>::try_parse_from(argv)
        .expect("API flags parse")
        .api
}

/// The API in this process, wired by [`cairn::startup::Api`] as `cairn api` wires it, on
/// a fresh local port, until dropped; with an admin's, an operator's and a viewer's
/// bearer token.
pub struct TestApi {
    pub base: String,
    pub http: reqwest::Client,
    pub stop: CancellationToken,
    /// The server's state (shared with it: the same memos and limits).
    pub state: cairn::api::AppState,
    /// `http://…/metrics` when started with `--metrics-listen`.
    pub metrics: Option<String>,
    pub admin: String,
    pub operator: String,
    pub viewer: String,
}

impl Drop for TestApi {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A change to the API's state before it serves.
type Adjustment = Box<dyn FnOnce(&mut cairn::api::AppState) + Send>;

/// How a [`TestApi`] is set up: its workflows, flags, webhook secret, and any change to
/// its state the flags cannot make.
pub struct TestApiBuilder {
    pool: PgPool,
    registry: cairn::workflow::Registry,
    args: Vec<String>,
    webhook_secret: Option<String>,
    adjust: Vec<Adjustment>,
    tokens: bool,
}

impl TestApiBuilder {
    pub fn workflows(mut self, defs: impl IntoIterator<Item = Definition>) -> Self {
        self.registry = cairn::workflow::Registry::from_definitions(defs);
        self
    }

    pub fn registry(mut self, registry: cairn::workflow::Registry) -> Self {
        self.registry = registry;
        self
    }

    /// `cairn api` flags, e.g. `["--llm-prices", "m=1/2"]`.
    pub fn flags(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    pub fn webhook_secret(mut self, secret: &str) -> Self {
        self.webhook_secret = Some(secret.to_owned());
        self
    }

    /// Makes no tokens (for tests that count every token there is): `admin`,
    /// `operator` and `viewer` are empty.
    pub fn without_tokens(mut self) -> Self {
        self.tokens = false;
        self
    }

    /// Changes the state before serving (limits a flag does not reach, and the like).
    pub fn adjust(mut self, f: impl FnOnce(&mut cairn::api::AppState) + Send + 'static) -> Self {
        self.adjust.push(Box::new(f));
        self
    }

    pub async fn start(self) -> TestApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port");
        let base = format!("http://{}", listener.local_addr().expect("bound"));
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut api = cairn::startup::Api::build(
            listener,
            self.pool.clone(),
            Arc::new(self.registry),
            &api_args(&args),
            self.webhook_secret,
        )
        .await
        .expect("the API is built");
        for f in self.adjust {
            f(&mut api.state);
        }
        let state = api.state.clone();
        let metrics = api.metrics_addr().map(|a| format!("http://{a}/metrics"));
        let stop = CancellationToken::new();
        tokio::spawn(api.run(stop.clone()));
        use cairn::auth::Role;
        let token = async |role| {
            if self.tokens {
                token(&self.pool, role).await
            } else {
                String::new()
            }
        };
        TestApi {
            base,
            http: reqwest::Client::new(),
            stop,
            state,
            metrics,
            admin: token(Role::Admin).await,
            operator: token(Role::Operator).await,
            viewer: token(Role::Viewer).await,
        }
    }
}

impl TestApi {
    pub fn builder(pool: &PgPool) -> TestApiBuilder {
        TestApiBuilder {
            pool: pool.clone(),
            registry: cairn::workflow::Registry::default(),
            args: Vec::new(),
            webhook_secret: None,
            adjust: Vec::new(),
            tokens: true,
        }
    }

    /// The API serving `defs`, otherwise as `cairn api` starts by default.
    pub async fn start(pool: &PgPool, defs: impl IntoIterator<Item = Definition>) -> TestApi {
        TestApi::builder(pool).workflows(defs).start().await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `method path` with `body` as JSON, as the operator: the status and the JSON
    /// answer (`null` when it is not JSON).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(&self.operator, method, path, body).await
    }

    /// [`TestApi::call`] with another bearer token.
    pub async fn call_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self
            .http
            .request(method.parse().expect("a method"), self.url(path))
            .bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("the API answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Runs `ctl` against this API as the operator (see [`ctl_at`]).
    pub async fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        ctl_at(&self.base, &self.operator, args).await
    }
}

/// The `ctl` binary (see [`workspace_bin`]).
pub fn ctl_bin() -> std::path::PathBuf {
    workspace_bin("ctl")
}

/// A binary of another crate of the workspace (`ctl`, `cairn-bench`). Cargo gives this
/// crate's tests no `CARGO_BIN_EXE_` for it; it is built beside `cairn`, in the same
/// target folder, by `cargo test` or `cargo nextest run` at the workspace root.
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_cairn"))
        .with_file_name(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: build the workspace (`cargo build`)",
        bin.display()
    );
    bin
}

/// Serves `app` on a free loopback port for the rest of the test; its address.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free loopback port");
    let addr = listener.local_addr().expect("the listener's address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Runs the `ctl` binary against `base` with `token`, in an empty home with standard
/// input not a terminal: (exit code, stdout, stderr).
pub async fn ctl_at(base: &str, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(ctl_bin())
        .args(args)
        .env("CAIRN_API_URL", base)
        .env("CAIRN_TOKEN", token)
        .env("HOME", std::env::temp_dir())
        .env_remove("XDG_CONFIG_HOME")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run ctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A URL for the test's own database, for child processes.
pub fn database_url(pool: &PgPool) -> String {
    let o = pool.connect_options();
    format!(
        "postgres://{}@{}:{}/{}",
        o.get_username(),
        o.get_host(),
        o.get_port(),
        o.get_database().expect("test database has a name")
    )
}

pub fn definition(name: &str, toml: &str) -> Definition {
    Definition::parse(name, &format!("{name}.toml"), toml).expect("test workflow is valid")
}

/// Submits a run directly through the engine (what the API does).
pub async fn submit(pool: &PgPool, def: &Definition, input: Value) -> String {
    let one = [cairn::engine::submit::Item::input(&input)];
    let mut tx = pool.begin().await.expect("begin");
    let submitted = cairn::engine::submit_in(&mut tx, cairn::engine::Submission::of(def, &one))
        .await
        .expect("submit");
    tx.commit().await.expect("commit");
    match submitted.ok().and_then(|mut runs| runs.pop()) {
        Some(run) if run.outcome == cairn::engine::submit::Outcome::Created => run.run_id,
        _ => panic!("submission was not created"),
    }
}

/// A worker running in this process until the returned token is cancelled.
pub struct TestWorker {
    pub stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

impl TestWorker {
    pub fn start(pool: &PgPool, settings: cairn::worker::WorkerSettings) -> TestWorker {
        let stop = CancellationToken::new();
        let pool = pool.clone();
        let token = stop.clone();
        let handle = tokio::spawn(async move {
            cairn::worker::run(pool, settings, token)
                .await
                .expect("worker runs");
        });
        TestWorker { stop, handle }
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.handle.await;
    }
}

pub fn fast_settings() -> cairn::worker::WorkerSettings {
    cairn::worker::WorkerSettings {
        concurrency: 8,
        lease: Duration::from_secs(10),
        poll_interval: Duration::from_millis(200),
        shutdown_grace: Duration::from_secs(5),
        env: Default::default(),
        llm: None,
        // The tests' services listen on loopback, which steps may not reach by default.
        egress_allow: cairn::step::EgressAllow::parse(&["127.0.0.0/8", "::1"])
            .expect("loopback entries parse"),
        limits: Default::default(),
        step_pool: None,
        webhook_secret: None,
    }
}

/// Waits until every run in `ids` has a final status, woken by run events; panics
/// after `limit`.
pub async fn wait_finished(
    pool: &PgPool,
    ids: &[String],
    limit: Duration,
) -> HashMap<String, String> {
    let mut listener = PgListener::connect_with(pool).await.expect("listen");
    listener.listen("cairn_events").await.expect("listen");
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let rows: Vec<(String, String)> =
            sqlx::query_as("select id, status from runs where id = any($1)")
                .bind(ids)
                .fetch_all(pool)
                .await
                .expect("read statuses");
        let finished = rows
            .iter()
            .filter(|(_, s)| matches!(s.as_str(), "succeeded" | "dead" | "cancelled"))
            .count();
        if finished == ids.len() {
            return rows.into_iter().collect();
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            let unfinished: Vec<_> = rows
                .iter()
                .filter(|(_, s)| !matches!(s.as_str(), "succeeded" | "dead" | "cancelled"))
                .take(5)
                .collect();
            panic!(
                "{finished}/{} runs finished in {limit:?}; e.g. {unfinished:?}",
                ids.len()
            );
        }
        // A notification wakes us at once; the timeout only re-checks in case one was
        // missed between the query and the wait.
        let _ = tokio::time::timeout(
            (deadline - now).min(Duration::from_secs(1)),
            listener.recv(),
        )
        .await;
    }
}

/// What the test service saw.
pub struct Seen {
    /// Requests per Idempotency-Key.
    pub requests: Mutex<HashMap<String, u32>>,
    /// Requests for a step whose checkpoint was already committed.
    pub after_checkpoint: AtomicU64,
    pub barrier: tokio::sync::Barrier,
    /// Failures still to answer per key on `/flaky/{n}`.
    pub flaky: Mutex<HashMap<String, u32>>,
    /// While set, `/toggle` answers 500.
    pub failing: std::sync::atomic::AtomicBool,
    /// `/gate` waits for a permit.
    pub gate: tokio::sync::Semaphore,
    /// Requests that entered `/gate`.
    pub gate_entered: AtomicU64,
}

impl Seen {
    pub fn count(&self, key: &str) -> u32 {
        self.requests.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

struct ServiceState {
    seen: Arc<Seen>,
    pool: PgPool,
}

/// A local HTTP service for `http` steps:
/// * `POST /work?ms=N` — answers after N ms; records the key, and whether the step it
///   names (`run/step`) already had a committed checkpoint when the request arrived;
/// * `POST /barrier` — answers once two requests are inside (proves overlap);
/// * `POST /flaky/{n}` — fails with 503 the first n times per key, then succeeds;
/// * `POST /status/{code}` — always answers `code`.
pub async fn spawn_service(pool: &PgPool, barrier_parties: usize) -> (SocketAddr, Arc<Seen>) {
    let seen = Arc::new(Seen {
        requests: Mutex::default(),
        after_checkpoint: AtomicU64::new(0),
        barrier: tokio::sync::Barrier::new(barrier_parties),
        flaky: Mutex::default(),
        failing: std::sync::atomic::AtomicBool::new(true),
        gate: tokio::sync::Semaphore::new(0),
        gate_entered: AtomicU64::new(0),
    });
    let state = Arc::new(ServiceState {
        seen: seen.clone(),
        pool: pool.clone(),
    });
    let app = Router::new()
        .route("/work", post(work))
        .route("/barrier", post(barrier))
        .route("/flaky/{n}", post(flaky))
        .route("/status/{code}", post(status))
        .route("/toggle", post(toggle))
        .route("/gate", post(gate))
        .route("/health", get(|| async { "ok" }))
        .with_state(state);
    let addr = serve(app).await;
    (addr, seen)
}

fn key(headers: &HeaderMap) -> String {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn record(seen: &Seen, key: &str) {
    *seen
        .requests
        .lock()
        .unwrap()
        .entry(key.to_owned())
        .or_default() += 1;
}

async fn work(
    State(s): State<Arc<ServiceState>>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, u64>>,
) -> Json<Value> {
    let key = key(&headers);
    record(&s.seen, &key);
    if let Some((run, step)) = key.split_once('/') {
        let committed: Option<String> = sqlx::query_scalar(
            "select status from steps where run_id = $1 and step_id = $2 and status = 'succeeded'",
        )
        .bind(run)
        .bind(step)
        .fetch_optional(&s.pool)
        .await
        .unwrap_or(None);
        if committed.is_some() {
            s.seen.after_checkpoint.fetch_add(1, Ordering::SeqCst);
        }
    }
    let ms = q.get("ms").copied().unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Json(json!({ "ok": true, "key": key }))
}

async fn barrier(
    State(s): State<Arc<ServiceState>>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    record(&s.seen, &key(&headers));
    match tokio::time::timeout(Duration::from_secs(20), s.seen.barrier.wait()).await {
        Ok(_) => (StatusCode::OK, Json(json!({ "met": true }))),
        Err(_) => (StatusCode::BAD_REQUEST, Json(json!({ "met": false }))),
    }
}

async fn flaky(
    State(s): State<Arc<ServiceState>>,
    Path(n): Path<u32>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    let key = key(&headers);
    record(&s.seen, &key);
    let mut left = s.seen.flaky.lock().unwrap();
    let remaining = left.entry(key).or_insert(n);
    if *remaining > 0 {
        *remaining -= 1;
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "try again" })),
        )
    } else {
        (StatusCode::OK, Json(json!({ "ok": true })))
    }
}

async fn status(
    State(s): State<Arc<ServiceState>>,
    Path(code): Path<u16>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    record(&s.seen, &key(&headers));
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Json(json!({ "code": code })),
    )
}

async fn toggle(
    State(s): State<Arc<ServiceState>>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    record(&s.seen, &key(&headers));
    if s.seen.failing.load(Ordering::SeqCst) {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": "failing on purpose" })),
        )
    } else {
        (StatusCode::OK, Json(json!({ "ok": true })))
    }
}

async fn gate(State(s): State<Arc<ServiceState>>, headers: HeaderMap) -> Json<Value> {
    record(&s.seen, &key(&headers));
    s.seen.gate_entered.fetch_add(1, Ordering::SeqCst);
    if let Ok(permit) = s.seen.gate.acquire().await {
        permit.forget();
    }
    Json(json!({ "passed": true }))
}

/// Waits until `check` holds, re-checking on every run event; panics after `limit`.
pub async fn wait_until<F, Fut>(pool: &PgPool, limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut listener = PgListener::connect_with(pool).await.expect("listen");
    listener.listen("cairn_events").await.expect("listen");
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        let now = tokio::time::Instant::now();
        assert!(now < deadline, "timed out waiting for {what}");
        let _ = tokio::time::timeout(
            (deadline - now).min(Duration::from_millis(500)),
            listener.recv(),
        )
        .await;
    }
}

/// Attempts of a step, in order: (status, started, finished, error, retry delay ms).
pub async fn attempts(
    pool: &PgPool,
    run: &str,
    step: &str,
) -> Vec<(
    String,
    chrono::DateTime<chrono::Utc>,
    Option<chrono::DateTime<chrono::Utc>>,
    Option<String>,
    Option<i64>,
)> {
    sqlx::query_as(
        "select status, started_at, finished_at, error, retry_delay_ms from step_attempts
          where run_id = $1 and step_id = $2 order by attempt",
    )
    .bind(run)
    .bind(step)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// A `cairn worker` child process, killed when dropped.
pub struct WorkerProcess {
    pub child: std::process::Child,
    /// Where its standard output and error go.
    pub log: std::path::PathBuf,
}

impl WorkerProcess {
    pub fn spawn(database_url: &str, args: &[&str]) -> WorkerProcess {
        WorkerProcess::spawn_with(database_url, args, &[])
    }

    /// With more environment variables (`envs` override the defaults set here).
    pub fn spawn_with(database_url: &str, args: &[&str], envs: &[(&str, &str)]) -> WorkerProcess {
        let log =
            std::env::temp_dir().join(format!("cairn-test-worker-{}.log", ulid::Ulid::generate()));
        let stderr = std::fs::File::create(&log).expect("worker log file");
        let stdout = stderr.try_clone().expect("worker log file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("worker")
            .args(args)
            .env("DATABASE_URL", database_url)
            .env("CAIRN_NO_MIGRATE", "true")
            // The tests' services listen on loopback (`--egress-allow` overrides this).
            .env("CAIRN_EGRESS_ALLOW", "127.0.0.0/8,::1")
            .env("RUST_LOG", "warn")
            .envs(envs.iter().copied())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn cairn worker");
        WorkerProcess { child, log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }

    /// The worker id it registered, once it has.
    pub async fn id(&self, pool: &PgPool) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let id: Option<String> = sqlx::query_scalar(
                "select id from workers where pid = $1 order by started_at desc limit 1",
            )
            .bind(self.pid())
            .fetch_optional(pool)
            .await
            .unwrap();
            if let Some(id) = id {
                return id;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "worker {} never registered",
                self.pid()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
