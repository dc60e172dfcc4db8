//! What steps may reach and how much they may bring back, with real sockets and real
//! workers: internal addresses refused before any connection (by IP, by name, by odd
//! spellings and through redirects), answers cut at the size limit while a worker
//! process's memory stays flat, and credentials in URLs kept out of everything stored
//! and logged. Every service here listens on loopback, which stands in for "internal";
//! nothing is ever sent to another address.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::*;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A listener standing in for an internal service: it counts every connection it
/// accepts, and answers each with a "credential" a step must never get to read.
struct Internal {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
}

async fn internal(bind: &str) -> Option<Internal> {
    let listener = TcpListener::bind(bind).await.ok()?;
    let addr = listener.local_addr().ok()?;
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let body = r#"{"AccessKeyId":"AKIAINTERNAL","SecretAccessKey":"leaked"}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    Some(Internal { addr, accepted })
}

/// The one service the worker is allowed to reach: `/ok`, and `/redirect`, which
/// answers 303 to `target`.
async fn allowed_service(target: String) -> SocketAddr {
    let app = Router::new()
        .route("/ok", get(|| async { Json(json!({ "ok": true })) }))
        .route(
            "/redirect",
            get(move || {
                let target = target.clone();
                async move { (StatusCode::SEE_OTHER, [(header::LOCATION, target)], "") }
            }),
        );
    common::serve(app).await
}

const CALL: &str = r#"
[input]
url = { type = "string" }

[[steps]]
id = "call"
kind = "http"
url = "{{ input.url }}"
retry = { max_attempts = 3, initial_delay = "50ms", jitter = 0 }
"#;

async fn step_error(pool: &PgPool, run: &str) -> String {
    sqlx::query_scalar::<_, Option<String>>(
        "select error from steps where run_id = $1 and step_id = 'call'",
    )
    .bind(run)
    .fetch_one(pool)
    .await
    .unwrap()
    .unwrap_or_default()
}

async fn attempt_count(pool: &PgPool, run: &str) -> i64 {
    sqlx::query_scalar("select count(*) from step_attempts where run_id = $1")
        .bind(run)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn internal_addresses_are_refused_before_any_connection(pool: PgPool) {
    migrate(&pool).await;
    let v4 = internal("127.0.0.1:0").await.expect("a loopback listener");
    let v6 = internal("[::1]:0").await;
    let metadata_url = format!("http://{}/latest/meta-data/iam", v4.addr);
    let allowed = allowed_service(metadata_url.clone()).await;
    let int = v4.addr.port();
    let v6_port = v6.as_ref().map_or(1, |l| l.addr.port());

    // (url, what the error must name)
    let refused: Vec<(String, &str)> = vec![
        (metadata_url.clone(), "127.0.0.1 (loopback"),
        (format!("http://localhost:{int}/"), "(loopback"),
        (format!("http://2130706433:{int}/"), "127.0.0.1 (loopback"),
        (format!("http://0x7f.0.0.1:{int}/"), "127.0.0.1 (loopback"),
        (format!("http://[::1]:{v6_port}/"), "::1 (loopback"),
        (
            format!("http://[::ffff:127.0.0.1]:{int}/"),
            "::ffff:127.0.0.1 (loopback",
        ),
        (format!("http://10.0.0.1:{int}/"), "10.0.0.1 (private"),
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "169.254.169.254 (link-local",
        ),
        (
            format!("http://{allowed}/redirect"),
            "redirected to http://127.0.0.1:",
        ),
        ("file:///etc/passwd".to_owned(), "scheme `file`"),
    ];
    let def = definition("call", CALL);
    let mut settings = fast_settings();
    // Only the allowed service's exact address and port.
    settings.egress_allow =
        cairn::step::EgressAllow::parse(&[allowed.to_string()]).expect("allow entry");
    let worker = TestWorker::start(&pool, settings);

    let mut runs = Vec::new();
    for (url, _) in &refused {
        runs.push(submit(&pool, &def, json!({ "url": url })).await);
    }
    let ok = submit(
        &pool,
        &def,
        json!({ "url": format!("http://{allowed}/ok") }),
    )
    .await;
    let mut all = runs.clone();
    all.push(ok.clone());
    let statuses = wait_finished(&pool, &all, Duration::from_secs(60)).await;
    worker.shutdown().await;

    for ((url, names), run) in refused.iter().zip(&runs) {
        let error = step_error(&pool, run).await;
        println!("{url}\n    -> {error}");
        assert_eq!(statuses[run], "dead", "{url}: {error}");
        assert!(error.contains(names), "{url}: {error}");
        if !url.starts_with("file:") {
            assert!(error.contains("CAIRN_EGRESS_ALLOW"), "{url}: {error}");
        }
        assert_eq!(
            attempt_count(&pool, run).await,
            1,
            "{url}: refusals are fatal"
        );
        let dead_letter: Option<String> =
            sqlx::query_scalar("select error from dead_letters where run_id = $1")
                .bind(run)
                .fetch_optional(&pool)
                .await
                .unwrap();
        assert!(
            dead_letter.is_some_and(|e| e.contains(names)),
            "{url}: the dead letter names the address"
        );
    }
    assert_eq!(
        v4.accepted.load(Ordering::SeqCst),
        0,
        "no request reached the internal IPv4 listener"
    );
    if let Some(v6) = &v6 {
        assert_eq!(
            v6.accepted.load(Ordering::SeqCst),
            0,
            "no request reached the internal IPv6 listener"
        );
    } else {
        println!("no IPv6 loopback here: [::1] was refused, with no listener to count");
    }
    assert_eq!(statuses[&ok], "succeeded");
    let output: Value =
        sqlx::query_scalar("select output from steps where run_id = $1 and step_id = 'call'")
            .bind(&ok)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(output["body"], json!({ "ok": true }));
}

#[sqlx::test(migrations = false)]
async fn a_cidr_on_the_allow_list_lets_names_through_and_allowed_hosts_narrows(pool: PgPool) {
    migrate(&pool).await;
    let allowed = allowed_service("http://localhost:1/".into()).await;
    let narrowed = definition(
        "narrowed",
        r#"
[input]
url = { type = "string" }

[[steps]]
id = "call"
kind = "http"
url = "{{ input.url }}"
allowed_hosts = ["api.example.com", "*.example.org"]
retry = { max_attempts = 3, initial_delay = "50ms", jitter = 0 }
"#,
    );
    let pinned = definition(
        "pinned",
        r#"
[input]
url = { type = "string" }

[[steps]]
id = "call"
kind = "http"
url = "{{ input.url }}"
allowed_hosts = ["127.0.0.1"]
"#,
    );
    let def = definition("call", CALL);
    let mut settings = fast_settings();
    settings.egress_allow = cairn::step::EgressAllow::parse(&["127.0.0.0/8"]).unwrap();
    let worker = TestWorker::start(&pool, settings);
    let by_name = submit(
        &pool,
        &def,
        json!({ "url": format!("http://localhost:{}/ok", allowed.port()) }),
    )
    .await;
    let outside = submit(
        &pool,
        &narrowed,
        json!({ "url": format!("http://{allowed}/ok") }),
    )
    .await;
    // Allowed itself, but redirected to a name outside its allowed_hosts.
    let redirected = submit(
        &pool,
        &pinned,
        json!({ "url": format!("http://{allowed}/redirect") }),
    )
    .await;
    let statuses = wait_finished(
        &pool,
        &[by_name.clone(), outside.clone(), redirected.clone()],
        Duration::from_secs(60),
    )
    .await;
    worker.shutdown().await;
    assert_eq!(
        statuses[&by_name],
        "succeeded",
        "{}",
        step_error(&pool, &by_name).await
    );
    assert_eq!(statuses[&outside], "dead");
    let error = step_error(&pool, &outside).await;
    assert!(
        error.contains("allowed_hosts are api.example.com, *.example.org"),
        "{error}"
    );
    assert_eq!(attempt_count(&pool, &outside).await, 1);
    assert_eq!(statuses[&redirected], "dead");
    let error = step_error(&pool, &redirected).await;
    assert!(
        error.contains("redirected to http://localhost:1/: refused to connect to `localhost`"),
        "{error}"
    );
}

/// A service whose every answer is `size` bytes of zeros, written in 64 KiB chunks as
/// long as the reader takes them; `/declared…` paths send `Content-Length`, others
/// end the body by closing. Returns its address and the bytes it managed to write.
async fn firehose(size: u64) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let total = written.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let total = total.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]);
                let declared = request
                    .lines()
                    .next()
                    .is_some_and(|l| l.contains(" /declared"));
                let head = if declared {
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {size}\r\n\r\n"
                    )
                } else {
                    "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\nconnection: close\r\n\r\n"
                        .to_owned()
                };
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'0'; 64 * 1024];
                let mut sent = 0u64;
                while sent < size {
                    let n = chunk.len().min((size - sent) as usize);
                    if socket.write_all(&chunk[..n]).await.is_err() {
                        break;
                    }
                    sent += n as u64;
                    total.fetch_add(n as u64, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, written)
}

fn vm_hwm_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[sqlx::test(migrations = false)]
async fn a_gigabyte_answer_fails_the_step_and_the_worker_stays_small(pool: PgPool) {
    migrate(&pool).await;
    const GIB: u64 = 1024 * 1024 * 1024;
    let (addr, written) = firehose(GIB).await;
    let http = definition("call", CALL);
    let llm = definition(
        "ask",
        r#"
[[steps]]
id = "call"
kind = "llm"
prompt = "Say a lot."
retry = { max_attempts = 1 }
"#,
    );
    let url = database_url(&pool);
    let allow = format!("127.0.0.1:{}", addr.port());
    let llm_base = format!("http://{addr}/v1");
    let worker = WorkerProcess::spawn(
        &url,
        &[
            "--egress-allow",
            &allow,
            "--llm-base-url",
            &llm_base,
            "--poll-interval",
            "200ms",
        ],
    );
    worker.id(&pool).await;
    let before = vm_hwm_kib(worker.pid());

    let streamed = submit(
        &pool,
        &http,
        json!({ "url": format!("http://{addr}/stream") }),
    )
    .await;
    let declared = submit(
        &pool,
        &http,
        json!({ "url": format!("http://{addr}/declared") }),
    )
    .await;
    let model = submit(&pool, &llm, json!({})).await;
    let ids = [streamed.clone(), declared.clone(), model.clone()];
    let statuses = wait_finished(&pool, &ids, Duration::from_secs(120)).await;
    let hwm = vm_hwm_kib(worker.pid());
    let sent = written.load(Ordering::SeqCst);
    println!(
        "worker VmHWM: {before} KiB when idle, {hwm} KiB after three 1 GiB answers; \
         the service managed to write {} MiB in all",
        sent / (1024 * 1024)
    );
    for id in &ids {
        let error = step_error(&pool, id).await;
        println!("{id}: {error}");
        assert_eq!(statuses[id], "dead", "{error}");
        assert!(
            error.contains("larger than the 4 MiB limit"),
            "a size error: {error}"
        );
        assert_eq!(attempt_count(&pool, id).await, 1, "size errors are fatal");
    }
    assert!(
        step_error(&pool, &declared)
            .await
            .contains("Content-Length: 1073741824"),
        "refused on its Content-Length"
    );
    assert!(hwm < 200 * 1024, "peak RSS {hwm} KiB is over 200 MiB");
    assert!(
        sent < 256 * 1024 * 1024,
        "the reads stopped early: {sent} bytes were written"
    );
}

/// Answers `/status/500` with 500, and `/status/404` with 404.
async fn failing_service() -> SocketAddr {
    let app = Router::new().route(
        "/status/{code}",
        post(
            |axum::extract::Path(code): axum::extract::Path<u16>, _h: HeaderMap| async move {
                (
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    Json(json!({ "error": "no" })),
                )
            },
        ),
    );
    common::serve(app).await
}

#[sqlx::test(migrations = false)]
async fn credentials_in_urls_never_reach_errors_events_dead_letters_or_logs(pool: PgPool) {
    migrate(&pool).await;
    const PASSWORD: &str = "hunter2-pass";
    const TOKEN: &str = "tok3n-value";
    let service = failing_service().await;
    // A port nothing listens on: the connection is refused (a reqwest error).
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let urls = [
        format!("http://alice:{PASSWORD}@{service}/status/500?token={TOKEN}"),
        format!("http://alice:{PASSWORD}@{service}/status/404?token={TOKEN}&x=1"),
        format!("http://alice:{PASSWORD}@127.0.0.1:{closed}/status/500?token={TOKEN}"),
        format!("http://alice:{PASSWORD}@10.0.0.1/x?token={TOKEN}"),
    ];
    // The URLs come from the worker's environment, as secrets do, so the run's input
    // holds none of them.
    let def = definition(
        "secret_call",
        r#"
[input]
which = { type = "integer" }

[[steps]]
id = "call"
kind = "http"
method = "POST"
url = "{{ [env.SECRET_URL_0, env.SECRET_URL_1, env.SECRET_URL_2, env.SECRET_URL_3][input.which] }}"
retry = { max_attempts = 2, initial_delay = "50ms", jitter = 0 }
"#,
    );
    let db = database_url(&pool);
    let envs: Vec<(String, String)> = urls
        .iter()
        .enumerate()
        .map(|(i, u)| (format!("SECRET_URL_{i}"), u.clone()))
        .collect();
    let mut env_refs: Vec<(&str, &str)> =
        envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env_refs.push(("RUST_LOG", "info,cairn=debug"));
    let worker = WorkerProcess::spawn_with(
        &db,
        &[
            "--template-env",
            "SECRET_URL_0,SECRET_URL_1,SECRET_URL_2,SECRET_URL_3",
            "--poll-interval",
            "200ms",
        ],
        &env_refs,
    );
    let mut ids = Vec::new();
    for which in 0..urls.len() {
        ids.push(submit(&pool, &def, json!({ "which": which })).await);
    }
    let statuses = wait_finished(&pool, &ids, Duration::from_secs(60)).await;

    // Everything stored about the runs, and what the API answers a viewer.
    let stored: String = sqlx::query_scalar(
        "select coalesce(string_agg(t, E'\\n'), '') from (
             select row_to_json(r)::text as t from runs r where id = any($1)
             union all select row_to_json(s)::text from steps s where run_id = any($1)
             union all select row_to_json(a)::text from step_attempts a where run_id = any($1)
             union all select row_to_json(e)::text from run_events e where run_id = any($1)
             union all select row_to_json(d)::text from dead_letters d where run_id = any($1)
         ) as everything",
    )
    .bind(&ids)
    .fetch_one(&pool)
    .await
    .unwrap();
    let api = TestApi::start(&pool, [def.clone()]).await;
    let viewer = api.viewer.clone();
    let client = api.http.clone();
    let mut answers = String::new();
    for id in &ids {
        for path in [
            format!("/api/tasks/{id}"),
            format!("/api/tasks/{id}/events"),
        ] {
            let response = client
                .get(api.url(&path))
                .bearer_auth(&viewer)
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success(), "{path}");
            answers.push_str(&response.text().await.unwrap());
        }
    }
    let dead = client
        .get(api.url("/api/dead-letters"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    answers.push_str(&dead.text().await.unwrap());
    drop(api);
    let log_path = worker.log.clone();
    drop(worker);
    let log = std::fs::read_to_string(&log_path).expect("the worker's log");

    for (id, url) in ids.iter().zip(&urls) {
        let error = step_error(&pool, id).await;
        println!("{}\n    -> {error}", url);
        assert_eq!(statuses[id], "dead", "{error}");
        assert!(!error.is_empty());
    }
    assert!(
        log.contains("worker started"),
        "the log was captured: {log}"
    );
    for (what, text) in [
        ("stored rows", &stored),
        ("API answers", &answers),
        ("worker's log", &log),
    ] {
        assert!(!text.is_empty(), "{what}");
        assert!(!text.contains(PASSWORD), "the password is in the {what}");
        assert!(!text.contains(TOKEN), "the token is in the {what}");
        assert!(!text.contains("alice"), "the user name is in the {what}");
    }
    assert!(
        stored.contains(&format!("POST http://{service}/status/500 answered 500")),
        "errors still say where: {stored}"
    );
}

#[sqlx::test(migrations = false)]
async fn outputs_and_sql_results_are_capped(pool: PgPool) {
    migrate(&pool).await;
    let sql = |query: &str| {
        definition(
            "q",
            &format!(
                "[[steps]]\nid = \"call\"\nkind = \"sql\"\nquery = \"{query}\"\nretry = {{ max_attempts = 3, initial_delay = \"50ms\" }}\n"
            ),
        )
    };
    let small = sql("select g from generate_series(1, 5) as g order by g desc");
    let wide = sql("select g, repeat('x', 200) as pad from generate_series(1, 50000) as g");
    let long = sql("select g from generate_series(1, 300000) as g");
    sqlx::query("create table bulk (g int)")
        .execute(&pool)
        .await
        .unwrap();
    let bulk = definition(
        "w",
        "[[steps]]\nid = \"call\"\nkind = \"sql\"\nmode = \"write\"\nquery = \"insert into bulk select g from generate_series(1, 200000) as g returning g\"\n",
    );
    let pass = definition(
        "p",
        r#"
[input]
big = { type = "string" }

[[steps]]
id = "call"
kind = "pass"
output = { text = "{{ input.big }}" }
retry = { max_attempts = 3, initial_delay = "50ms" }
"#,
    );
    let mut settings = fast_settings();
    settings.limits.max_output_bytes = 64 * 1024;
    let worker = TestWorker::start(&pool, settings);
    let small_run = submit(&pool, &small, json!({})).await;
    let wide_run = submit(&pool, &wide, json!({})).await;
    let long_run = submit(&pool, &long, json!({})).await;
    let big_run = submit(&pool, &pass, json!({ "big": "y".repeat(100 * 1024) })).await;
    let bulk_run = submit(&pool, &bulk, json!({})).await;
    let ids = [
        small_run.clone(),
        wide_run.clone(),
        long_run.clone(),
        big_run.clone(),
        bulk_run.clone(),
    ];
    let statuses = wait_finished(&pool, &ids, Duration::from_secs(60)).await;
    worker.shutdown().await;

    assert_eq!(statuses[&small_run], "succeeded");
    let output: Value =
        sqlx::query_scalar("select output from steps where run_id = $1 and step_id = 'call'")
            .bind(&small_run)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        output,
        json!({ "rows": [{"g": 5}, {"g": 4}, {"g": 3}, {"g": 2}, {"g": 1}], "rowCount": 5 })
    );
    for (run, says) in [
        (&wide_run, "bytes as JSON, more than the 64 KiB limit"),
        (&long_run, "the query returned more than 100000 rows"),
        (
            &big_run,
            "the step's output is larger than the 64 KiB limit",
        ),
    ] {
        let error = step_error(&pool, run).await;
        println!("{error}");
        assert_eq!(statuses[run], "dead", "{error}");
        assert!(error.contains(says), "{error}");
        assert_eq!(attempt_count(&pool, run).await, 1, "size errors are fatal");
    }
    let kept: i64 = sqlx::query_scalar("select count(*) from bulk")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kept, 0, "the oversized write was rolled back");
}

#[sqlx::test(migrations = false)]
async fn sql_steps_run_as_the_step_role_when_one_is_set(pool: PgPool) {
    migrate(&pool).await;
    let role = format!(
        "cairn_steps_{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    );
    for statement in [
        format!("create role {role} login"),
        "create table shared_facts (fact text)".to_owned(),
        "insert into shared_facts values ('water is wet')".to_owned(),
        format!("grant select on shared_facts to {role}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&pool)
            .await
            .unwrap();
    }
    let o = pool.connect_options();
    let step_url = format!(
        "postgres://{role}@{}:{}/{}",
        o.get_host(),
        o.get_port(),
        o.get_database().unwrap()
    );
    let step_pool = cairn::store::connect(&step_url, 2)
        .await
        .expect("step pool");
    let read = |query: &str| {
        definition(
            "q",
            &format!(
                "[[steps]]\nid = \"call\"\nkind = \"sql\"\nquery = \"{query}\"\nretry = {{ max_attempts = 2, initial_delay = \"50ms\" }}\n"
            ),
        )
    };
    let allowed = read("select fact, current_user as who from shared_facts");
    let denied = read("select count(*) from api_tokens");
    let mut settings = fast_settings();
    settings.step_pool = Some(step_pool.clone());
    let worker = TestWorker::start(&pool, settings);
    let ok = submit(&pool, &allowed, json!({})).await;
    let no = submit(&pool, &denied, json!({})).await;
    let statuses = wait_finished(&pool, &[ok.clone(), no.clone()], Duration::from_secs(60)).await;
    worker.shutdown().await;
    step_pool.close().await;

    assert_eq!(
        statuses[&ok],
        "succeeded",
        "{}",
        step_error(&pool, &ok).await
    );
    let output: Value =
        sqlx::query_scalar("select output from steps where run_id = $1 and step_id = 'call'")
            .bind(&ok)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(output["rows"][0]["who"], json!(role));
    assert_eq!(statuses[&no], "dead");
    let error = step_error(&pool, &no).await;
    assert!(error.contains("permission denied"), "{error}");
    assert_eq!(attempt_count(&pool, &no).await, 1);

    for statement in [format!("drop owned by {role}"), format!("drop role {role}")] {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&pool)
            .await
            .unwrap();
    }
}

/// Answers 401 quoting the `Authorization` header it was sent, as careless services do.
async fn echoing_service() -> SocketAddr {
    let app = Router::new().route(
        "/echo",
        post(|h: HeaderMap| async move {
            let sent = h
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({ "error": format!("invalid credentials: {sent}") })),
            )
        }),
    );
    common::serve(app).await
}

#[sqlx::test(migrations = false)]
async fn template_environment_values_are_redacted_from_errors(pool: PgPool) {
    migrate(&pool).await;
    const KEY: &str = "sk-live-0123456789abcdef";
    let service = echoing_service().await;
    let def = definition(
        "keyed_call",
        &format!(
            r#"
[[steps]]
id = "call"
kind = "http"
method = "POST"
url = "http://{service}/echo"
headers = {{ authorization = "Bearer {{{{ env.API_KEY }}}}" }}
retry = {{ max_attempts = 1 }}
"#
        ),
    );
    let mut settings = fast_settings();
    settings.env.insert("API_KEY".into(), KEY.into());
    let worker = TestWorker::start(&pool, settings);
    let id = submit(&pool, &def, json!({})).await;
    let statuses = wait_finished(&pool, std::slice::from_ref(&id), Duration::from_secs(30)).await;
    worker.shutdown().await;
    assert_eq!(statuses[&id], "dead");

    let stored: String = sqlx::query_scalar(
        "select coalesce(string_agg(t, E'\\n'), '') from (
             select row_to_json(s)::text as t from steps s where run_id = $1
             union all select row_to_json(a)::text from step_attempts a where run_id = $1
             union all select row_to_json(e)::text from run_events e where run_id = $1
             union all select row_to_json(d)::text from dead_letters d where run_id = $1
         ) as everything",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(!stored.contains(KEY), "the key is stored: {stored}");
    assert!(
        stored.contains("invalid credentials: Bearer [redacted API_KEY]"),
        "the error still says what happened: {stored}"
    );
}
