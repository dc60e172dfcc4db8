//! What Cairn's processes export to Prometheus, read as Prometheus reads it: a real
//! `cairn api` and a real `cairn worker`, each on its own metrics listener, scraped and
//! parsed with a Prometheus text parser. Every metric the shipped alert rules
//! (`deploy/prometheus/alerts.yml`) and dashboard (`deploy/grafana/cairn.json`) use is
//! there; counters never go down when retention deletes the runs they counted; and the
//! rules load in Prometheus' own checker where it is installed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cairn::auth::Role;
use chrono::Utc;
use common::{WorkerProcess, database_url, migrate, token, wait_finished};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::time::Instant;

const FINE: &str = r#"
[[steps]]
id = "greet"
kind = "pass"
output = { text = "hi" }
"#;

/// Fails (nothing listens on port 1), is retried once, then dies.
const FLAKY: &str = r#"
[[steps]]
id = "call"
kind = "http"
method = "GET"
url = "http://127.0.0.1:1/"
timeout = "2s"
retry = { max_attempts = 2, initial_delay = "100ms", jitter = 0 }
"#;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A `cairn api` (or `cairn scheduler`) child process, killed when dropped.
struct ApiProcess {
    child: Child,
    dir: PathBuf,
    base: String,
    metrics: String,
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `addr=` of the first line of the log at `log` that says `what`, once there is one.
async fn logged_addr(log: &Path, what: &str, child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(addr) = text
            .lines()
            .find(|l| l.contains(what))
            .and_then(|l| l.split("addr=").nth(1))
        {
            return addr
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the process exited ({status}) before `{what}`:\n{text}");
        }
        assert!(Instant::now() < deadline, "no `{what}` in:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn spawn_api(pool: &PgPool) -> ApiProcess {
    let dir = std::env::temp_dir().join(format!("cairn-metrics-{}", ulid::Ulid::generate()));
    std::fs::create_dir_all(dir.join("workflows")).unwrap();
    std::fs::write(dir.join("workflows/fine.toml"), FINE).unwrap();
    std::fs::write(dir.join("workflows/flaky.toml"), FLAKY).unwrap();
    let log = dir.join("api.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "api",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .current_dir(&dir)
        .env("DATABASE_URL", database_url(pool))
        .env("RUST_LOG", "info")
        .env_remove("CAIRN_WORKFLOWS_DIR")
        .env_remove("CAIRN_METRICS_LISTEN")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("cairn api starts");
    let base = logged_addr(&log, "API listening", &mut child).await;
    let metrics = logged_addr(&log, "metrics listening", &mut child).await;
    ApiProcess {
        child,
        dir,
        base: format!("http://{base}"),
        metrics: format!("http://{metrics}/metrics"),
    }
}

/// Every sample of one scrape, by name and labels; the parse fails the test.
#[derive(Debug, Default)]
struct Scraped {
    /// Names as they appear on sample lines (histograms as `_bucket`, `_sum`, `_count`).
    names: BTreeSet<String>,
    /// Counters' values, by name and sorted labels.
    counters: BTreeMap<String, f64>,
}

async fn scrape(url: &str) -> Scraped {
    let text = reqwest::get(url)
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("scraping {url}: {e}"))
        .text()
        .await
        .unwrap();
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("{url} is not Prometheus text: {e}\n{text}"));
    // Every sample line was understood: each becomes a sample, or a histogram's part.
    let lines = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .count();
    assert!(lines > 0 && !parsed.samples.is_empty(), "{text}");
    let mut out = Scraped::default();
    for s in parsed.samples {
        let labels: BTreeMap<String, String> = s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let key = format!("{}{labels:?}", s.metric);
        match s.value {
            prometheus_parse::Value::Histogram(_) => {
                for part in ["_bucket", "_sum", "_count"] {
                    out.names.insert(format!("{}{part}", s.metric));
                }
            }
            prometheus_parse::Value::Summary(_) => {
                for part in ["", "_sum", "_count"] {
                    out.names.insert(format!("{}{part}", s.metric));
                }
            }
            prometheus_parse::Value::Counter(v) => {
                out.counters.insert(key, v);
                out.names.insert(s.metric);
            }
            _ => {
                out.names.insert(s.metric);
            }
        }
    }
    // A small checked parse of our own as well: every sample line is `name{…} value`.
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let name_end = line.find(['{', ' ']).expect("a sample line has a value");
        let name = &line[..name_end];
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        let value = line.rsplit(' ').next().unwrap();
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value in {line}"
        );
        out.names.insert(name.to_owned());
    }
    out
}

/// The metric names a PromQL text uses: Cairn's own (`cairn_…`) and the process
/// metrics (`process_…`).
fn metric_names(promql: &str) -> BTreeSet<String> {
    promql
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("cairn_") || t.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// The names `deploy/prometheus/alerts.yml`'s expressions use.
fn alert_names() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo("deploy/prometheus/alerts.yml")).unwrap();
    // Each rule's `expr:` is a one-line or a folded (`>-`) scalar: the lines after it
    // that are indented deeper belong to it.
    let mut exprs = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(at) = line.find("expr:") else {
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        exprs.push_str(&line[at + 5..]);
        while let Some(next) = lines.peek() {
            let deeper = next.len() - next.trim_start().len() > indent;
            if !deeper || next.trim().is_empty() {
                break;
            }
            exprs.push('\n');
            exprs.push_str(next);
            lines.next();
        }
        exprs.push('\n');
    }
    let names = metric_names(&exprs);
    assert!(
        text.matches("- alert:").count() >= 4 && !names.is_empty(),
        "{text}"
    );
    names
}

/// The names `deploy/grafana/cairn.json`'s queries use.
fn dashboard_names() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo("deploy/grafana/cairn.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&dashboard, &mut exprs);
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "{} panels", panels.len());
    assert!(
        panels
            .iter()
            .all(|p| p["targets"].as_array().is_some_and(|t| !t.is_empty())),
        "every panel queries something"
    );
    metric_names(&exprs.join("\n"))
}

/// `promtool check rules`, where Prometheus' tools are installed (CI installs them).
#[test]
fn the_alert_rules_load_in_promtool() {
    let file = repo("deploy/prometheus/alerts.yml");
    match Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool check rules:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("promtool is not installed (apt-get install prometheus): rules not loaded");
        }
        Err(e) => panic!("running promtool: {e}"),
    }
    // Whatever promtool says: every rule names what it alerts on.
    assert!(!alert_names().is_empty());
}

#[sqlx::test(migrations = false)]
async fn api_and_worker_export_every_metric_the_alerts_and_dashboard_use(pool: PgPool) {
    migrate(&pool).await;
    let api = spawn_api(&pool).await;
    let mut worker = WorkerProcess::spawn_with(
        &database_url(&pool),
        &["--metrics-listen", "127.0.0.1:0"],
        &[("RUST_LOG", "info"), ("CAIRN_POLL_INTERVAL", "50ms")],
    );
    let log = worker.log.clone();
    let worker_metrics = format!(
        "http://{}/metrics",
        logged_addr(&log, "metrics listening", &mut worker.child).await
    );

    // A run that succeeds, one whose step is retried and then dies, through the API.
    let operator = token(&pool, Role::Operator).await;
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for workflow in ["fine", "fine", "flaky"] {
        let answer: Value = http
            .post(format!("{}/api/tasks", api.base))
            .bearer_auth(&operator)
            .json(&json!({ "workflow": workflow, "input": {} }))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(answer["taskId"].as_str().unwrap().to_owned());
    }
    let finished = wait_finished(&pool, &ids, Duration::from_secs(60)).await;
    assert_eq!(finished[&ids[0]], "succeeded");
    assert_eq!(finished[&ids[2]], "dead");

    let mut wanted = alert_names();
    wanted.extend(dashboard_names());
    wanted.retain(|n| !FROM_SCHEDULERS.contains(&n.as_str()));
    // Every name used is exported, by the API or the worker (the API's rendering is
    // cached for a few seconds: scrape until it shows the runs).
    let deadline = Instant::now() + Duration::from_secs(30);
    let (from_api, from_worker) = loop {
        let (a, w) = (scrape(&api.metrics).await, scrape(&worker_metrics).await);
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|n| !a.names.contains(*n) && !w.names.contains(*n))
            .collect();
        let counted = a
            .counters
            .get(r#"cairn_runs_submitted_total{"workflow": "fine"}"#)
            .copied();
        if missing.is_empty() && counted == Some(2.0) {
            break (a, w);
        }
        assert!(
            Instant::now() < deadline,
            "not exported: {missing:?} (submitted: {counted:?})\napi: {:?}\nworker: {:?}",
            a.names,
            w.names
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let c = |s: &Scraped, key: &str| s.counters.get(key).copied().unwrap_or(0.0);
    assert_eq!(
        c(
            &from_worker,
            r#"cairn_runs_finished_total{"status": "succeeded", "workflow": "fine"}"#
        ),
        2.0,
        "{:?}",
        from_worker.counters
    );
    assert_eq!(
        c(
            &from_worker,
            r#"cairn_dead_letters_total{"workflow": "flaky"}"#
        ),
        1.0
    );
    assert_eq!(
        c(
            &from_worker,
            r#"cairn_step_attempts_total{"kind": "http", "outcome": "failed", "workflow": "flaky"}"#
        ),
        2.0
    );
    assert_eq!(
        c(
            &from_worker,
            r#"cairn_step_retries_total{"kind": "http", "workflow": "flaky"}"#
        ),
        1.0
    );
    // Routes are path templates, never raw paths with ids in them.
    assert!(
        from_api
            .counters
            .keys()
            .any(|k| k.contains(r#""route": "/api/tasks""#) && k.contains(r#""status": "201""#)),
        "{:?}",
        from_api.counters
    );
    assert!(
        from_api
            .counters
            .keys()
            .filter(|k| k.starts_with("cairn_http_requests_total"))
            .all(|k| !ids.iter().any(|id| k.contains(id.as_str())))
    );

    // Retention deletes the runs; nothing they were counted in goes down.
    let settings = cairn::scheduler::reaper::ReaperSettings {
        succeeded: Some(Duration::from_secs(1)),
        dead: Some(Duration::from_secs(1)),
        share: 1.0,
        ..Default::default()
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let pass = cairn::scheduler::reaper::pass(
        &pool,
        &settings,
        Utc::now() + chrono::Duration::days(1),
        "metrics-test",
        &stop,
    )
    .await
    .unwrap();
    assert!(
        matches!(&pass, cairn::scheduler::reaper::Pass::Done(r) if r.runs_deleted() == 3),
        "{pass:?}"
    );
    let left: i64 = sqlx::query_scalar("select count(*) from runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    // A request after the deletion, and the API's rendering that counts it: made after
    // the deletion (renderings are cached for a few seconds).
    let health =
        r#"cairn_http_requests_total{"method": "GET", "route": "/healthz", "status": "200"}"#;
    let healthy = c(&from_api, health);
    http.get(format!("{}/healthz", api.base))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let api_after = loop {
        let a = scrape(&api.metrics).await;
        if c(&a, health) > healthy {
            break a;
        }
        assert!(Instant::now() < deadline, "{:?}", a.counters);
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let worker_after = scrape(&worker_metrics).await;
    for (before, after, url) in [
        (&from_api, &api_after, &api.metrics),
        (&from_worker, &worker_after, &worker_metrics),
    ] {
        for (key, value) in &before.counters {
            let now = after.counters.get(key).copied();
            assert!(
                now.is_some_and(|n| n >= *value),
                "{key} went from {value} to {now:?} at {url}"
            );
        }
    }
    drop(worker);
}

/// What only schedulers export (their notifier's); `a_scheduler_serves_its_own_metrics`
/// checks them.
const FROM_SCHEDULERS: [&str; 1] = ["cairn_notification_deliveries_total"];

/// `cairn scheduler --metrics-listen` serves its own metrics (the runs its ticks
/// submit are counted there), its notifier's among them: a notification its target
/// cannot take is counted by outcome, under the name the alert rules use.
#[sqlx::test(migrations = false)]
async fn a_scheduler_serves_its_own_metrics(pool: PgPool) {
    migrate(&pool).await;
    let dir = std::env::temp_dir().join(format!("cairn-metrics-{}", ulid::Ulid::generate()));
    std::fs::create_dir_all(dir.join("workflows")).unwrap();
    std::fs::write(dir.join("workflows/fine.toml"), FINE).unwrap();
    // A run's death, as its dead letter's trigger records it; the target is a private
    // address the egress policy refuses, so the notifier gives it up at once.
    sqlx::query(
        "insert into notifications (event, run_id, workflow, step_id, error, step_attempts)
         values ('run.dead', 'r1', 'fine', 's', 'boom', 3)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let log = dir.join("scheduler.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["scheduler", "--metrics-listen", "127.0.0.1:0"])
        .current_dir(&dir)
        .env("DATABASE_URL", database_url(&pool))
        .env("CAIRN_NOTIFY_URL", "http://127.0.0.1:9/hook")
        .env_remove("CAIRN_NOTIFY_EGRESS_ALLOW")
        .env("RUST_LOG", "info")
        .env_remove("CAIRN_WORKFLOWS_DIR")
        .env_remove("CAIRN_METRICS_LISTEN")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("cairn scheduler starts");
    let addr = logged_addr(&log, "metrics listening", &mut child).await;
    let scheduler = ApiProcess {
        child,
        dir,
        base: String::new(),
        metrics: format!("http://{addr}/metrics"),
    };
    let failed = r#"cairn_notification_deliveries_total{"event": "run.dead", "outcome": "failed"}"#;
    let deadline = Instant::now() + Duration::from_secs(30);
    let scraped = loop {
        let scraped = scrape(&scheduler.metrics).await;
        if scraped.counters.get(failed) == Some(&1.0) {
            break scraped;
        }
        assert!(Instant::now() < deadline, "{:?}", scraped.counters);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let state: String = sqlx::query_scalar("select state from notifications")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(state, "failed");
    for name in ["cairn_build_info", "process_resident_memory_bytes"] {
        assert!(scraped.names.contains(name), "{:?}", scraped.names);
    }
    let used = alert_names();
    for name in FROM_SCHEDULERS {
        assert!(used.contains(name), "no alert rule uses {name}");
        assert!(scraped.names.contains(name), "{:?}", scraped.names);
    }
}
