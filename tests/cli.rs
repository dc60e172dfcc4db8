//! Promises of the operator CLI, kept by running the built `ctl` against a real API:
//! shortened run ids (unique, ambiguous, unknown, too short), asking before deleting or
//! stopping one thing on a terminal and refusing without `--yes` when no one can answer,
//! `--all` over many pages, `logs
//! --follow` across a cut stream (every event once, in order) and giving up when the API
//! is gone; and the schedule edits and backfills behind `ctl schedule update|backfill`.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn::workflow::Registry;
use chrono::{DateTime, Utc};
use common::*;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::AsyncBufReadExt;
use tokio::net::{TcpListener, TcpStream};

const IDLE: &str = r#"
[input]
n = { type = "integer", default = 1 }

[[steps]]
id = "one"
kind = "pass"
output = { ok = true }
"#;

async fn status(pool: &PgPool, id: &str) -> String {
    sqlx::query_scalar("select status from runs where id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The shortest prefix (at least 4 characters) of `id` that no other id in `all` has.
fn unique_prefix(id: &str, all: &[String]) -> String {
    (4..=id.len())
        .map(|n| &id[..n])
        .find(|p| all.iter().filter(|o| o.starts_with(p)).count() == 1)
        .unwrap()
        .to_owned()
}

#[sqlx::test(migrations = false)]
async fn run_ids_can_be_shortened_to_a_unique_prefix(pool: PgPool) {
    migrate(&pool).await;
    let def = definition("idle", IDLE);
    let api = TestApi::start(&pool, vec![def.clone()]).await;
    // No worker: the runs stay queued. Made together, their ids share their first
    // characters (the time part of a ULID).
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(submit(&pool, &def, json!({})).await);
    }
    let common = &ids[0][..4];
    assert!(ids.iter().all(|id| id.starts_with(common)), "{ids:?}");

    // Unique: every command that takes a run id takes the prefix, in either case.
    let short = unique_prefix(&ids[0], &ids);
    assert!(short.len() < 26, "{short}");
    let (code, out, err) = api.ctl(&["task", "show", &short.to_lowercase()]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("Run       {}", ids[0])), "{out}");
    let (code, out, err) = api.ctl(&["task", "logs", &short]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("run_queued"), "{out}");
    let (code, out, err) = api
        .ctl(&["task", "cancel", &short, "--yes", "-o", "json"])
        .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["id"], ids[0]);
    assert_eq!(status(&pool, &ids[0]).await, "cancelled");
    let (code, out, err) = api.ctl(&["task", "retry", &short, "-o", "json"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["id"], ids[0]);
    let (code, out, err) = api.ctl(&["task", "replay", &short, "-o", "json"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["replayOf"],
        ids[0]
    );

    // Ambiguous: an error that lists candidates; nothing is done.
    let (code, _, err) = api.ctl(&["task", "show", common]).await;
    assert_eq!(code, 1);
    assert!(err.contains("ambiguous"), "{err}");
    assert!(ids[1..].iter().all(|id| err.contains(id.as_str())), "{err}");
    let (code, _, err) = api.ctl(&["task", "cancel", common, "--yes"]).await;
    assert_eq!(code, 1, "{err}");
    assert_eq!(status(&pool, &ids[1]).await, "queued");

    // Unknown, too short, not an id.
    let (code, _, err) = api.ctl(&["task", "show", "ZZZZZZ"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no run id starts with `ZZZZZZ`"), "{err}");
    let (code, _, err) = api.ctl(&["task", "logs", &ids[1][..3]]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("too short") && err.contains("at least 4"),
        "{err}"
    );
    let (code, _, err) = api.ctl(&["task", "show", "01J-AB"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("is not a run id"), "{err}");

    // The API's side: a filter that is checked, combines with the others, and pages.
    let (code, body) = api
        .call(
            "GET",
            &format!("/api/tasks?idPrefix={common}&limit=2"),
            None,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 2);
    let cursor = body["nextCursor"].as_str().unwrap().to_owned();
    let (code, rest) = api
        .call(
            "GET",
            &format!("/api/tasks?idPrefix={common}&limit=2&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(code, 200, "{rest}");
    let listed: Vec<String> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["items"].as_array().unwrap())
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    // Three submitted and one replay: two pages hold them all, each once, newest first.
    let stored: Vec<String> =
        sqlx::query_scalar("select id from runs where starts_with(id, $1) order by id desc")
            .bind(common)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(stored.len(), 4);
    assert_eq!(listed, stored);
    assert!(rest["nextCursor"].is_null(), "{rest}");
    let (code, body) = api
        .call(
            "GET",
            &format!("/api/tasks?idPrefix={common}&status=cancelled"),
            None,
        )
        .await;
    assert_eq!(code, 200);
    assert!(
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "cancelled")
    );
    for bad in ["01J-", "x%00", "0123456789012345678901234567"] {
        let (code, body) = api
            .call("GET", &format!("/api/tasks?idPrefix={bad}"), None)
            .await;
        assert_eq!(code, 400, "{bad}: {body}");
    }
    let (code, _) = api
        .call("GET", &format!("/api/tasks?idPrefix={common}&q=idle"), None)
        .await;
    assert_eq!(code, 422, "well-formed, but not together");
}

#[sqlx::test(migrations = false)]
async fn deleting_or_stopping_one_thing_asks_on_a_terminal_and_needs_yes_without_one(pool: PgPool) {
    migrate(&pool).await;
    let def = definition("idle", IDLE);
    let api = TestApi::start(&pool, vec![def.clone()]).await;
    let run = submit(&pool, &def, json!({})).await;

    let (code, _, err) = api.ctl(&["task", "cancel", &run]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("refusing to cancel run") && err.contains("--yes"),
        "{err}"
    );
    assert_eq!(status(&pool, &run).await, "queued", "nothing changed");
    let (code, _, err) = api
        .ctl(&["task", "cancel", &run, "--dry-run", "--yes"])
        .await;
    assert_eq!(code, 1, "a dry run of one run is not a cancel: {err}");
    assert!(err.contains("--dry-run previews a filter"), "{err}");
    assert_eq!(status(&pool, &run).await, "queued");
    // On a terminal it asks; anything but yes changes nothing.
    let (code, out) = on_a_terminal(&api, &format!("task cancel {run}"), "n\n").await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("cancel run {run}? [y/N]")) && out.contains("nothing changed"),
        "{out}"
    );
    assert_eq!(status(&pool, &run).await, "queued");
    let (code, out) = on_a_terminal(&api, &format!("task cancel {run}"), "y\n").await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(status(&pool, &run).await, "cancelled");
    let run = submit(&pool, &def, json!({})).await;
    let (code, _, err) = api.ctl(&["task", "cancel", &run, "--yes"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(status(&pool, &run).await, "cancelled");

    let (code, _, err) = api.ctl(&["dlq", "purge", "1"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("refusing to purge dead letter 1") && err.contains("--yes"),
        "{err}"
    );
    let (code, _, err) = api.ctl(&["dlq", "purge", "1", "-y"]).await;
    assert_eq!(
        code, 1,
        "with --yes it asks the API, which has no such letter"
    );
    assert!(err.contains("404"), "{err}");

    let (code, _, err) = api.ctl(&["token", "revoke", "7"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("refusing to revoke token 7") && err.contains("--yes"),
        "{err}"
    );

    let (code, _, err) = api
        .ctl(&[
            "schedule",
            "add",
            "hourly",
            "--workflow",
            "idle",
            "--cron",
            "0 * * * *",
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = api.ctl(&["schedule", "remove", "hourly"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("refusing to remove schedule hourly") && err.contains("--yes"),
        "{err}"
    );
    let (code, _, _) = api.ctl(&["schedule", "show", "hourly"]).await;
    assert_eq!(code, 0, "still there");
    let (code, _, err) = api.ctl(&["schedule", "remove", "hourly", "--yes"]).await;
    assert_eq!(code, 0, "{err}");
}

/// Runs `ctl ARGS` on a pseudo-terminal (util-linux `script`) typing `answer`; (exit
/// code, what the terminal showed).
async fn on_a_terminal(api: &TestApi, args: &str, answer: &str) -> (i32, String) {
    use tokio::io::AsyncWriteExt;
    let command = format!("'{}' {args}", common::ctl_bin().display());
    let mut child = tokio::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("CAIRN_API_URL", &api.base)
        .env("CAIRN_TOKEN", &api.operator)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(answer.as_bytes()).await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("ctl answers")
        .unwrap();
    drop(stdin);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A workflow whose one step fails for good at once.
fn failing(addr: SocketAddr) -> cairn::workflow::Definition {
    definition(
        "failing",
        &format!(
            r#"
[defaults]
retry = {{ max_attempts = 1 }}

[[steps]]
id = "call"
kind = "http"
method = "POST"
url = "http://{addr}/status/400"
"#
        ),
    )
}

#[sqlx::test(migrations = false)]
async fn all_follows_the_cursor_through_every_page(pool: PgPool) {
    migrate(&pool).await;
    let (addr, _) = spawn_service(&pool, 1).await;
    let def = failing(addr);
    let api = TestApi::start(&pool, vec![def.clone()]).await;
    let mut ids = Vec::new();
    for _ in 0..7 {
        ids.push(submit(&pool, &def, json!({})).await);
    }
    let worker = TestWorker::start(&pool, fast_settings());
    wait_finished(&pool, &ids, Duration::from_secs(60)).await;
    worker.shutdown().await;

    // Tables: one header, every run once, no cursor hint.
    let (code, out, err) = api.ctl(&["task", "list", "--limit", "2", "--all"]).await;
    assert_eq!(code, 0, "{err}");
    for id in &ids {
        assert_eq!(out.matches(id.as_str()).count(), 1, "{id} in\n{out}");
    }
    assert_eq!(out.matches("WORKFLOW").count(), 1, "{out}");
    assert!(!out.contains("(more:"), "{out}");

    // JSON: one document with every item, newest first like each page.
    let (code, out, err) = api
        .ctl(&["task", "list", "--limit", "3", "--all", "-o", "json"])
        .await;
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let listed: Vec<&str> = doc["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let mut newest_first: Vec<&str> = ids.iter().map(String::as_str).collect();
    newest_first.reverse();
    assert_eq!(listed, newest_first);
    assert!(doc["nextCursor"].is_null());

    // Dead letters page the same way.
    let (code, out, err) = api.ctl(&["dlq", "list", "--limit", "2", "--all"]).await;
    assert_eq!(code, 0, "{err}");
    for id in &ids {
        assert_eq!(out.matches(id.as_str()).count(), 1, "{id} in\n{out}");
    }
    let (code, out, err) = api
        .ctl(&["dlq", "list", "--limit", "4", "--all", "-o", "json"])
        .await;
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    let runs: BTreeSet<&str> = doc["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["runId"].as_str().unwrap())
        .collect();
    assert_eq!(runs, ids.iter().map(String::as_str).collect());
    assert_eq!(doc["items"].as_array().unwrap().len(), 7);

    // An empty list is still one document.
    let (code, out, _) = api
        .ctl(&["task", "list", "--status", "running", "--all", "-o", "json"])
        .await;
    assert_eq!(code, 0);
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(doc["items"], json!([]));
}

/// A TCP relay between `ctl` and the API that can cut every open connection, refuse
/// new ones for a while, or go away.
struct Relay {
    addr: SocketAddr,
    open: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    refusing: Arc<AtomicBool>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: &str) -> Relay {
        let target: SocketAddr = target
            .trim_start_matches("http://")
            .parse()
            .expect("api address");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let refusing = Arc::new(AtomicBool::new(false));
        let (conns, refuse) = (open.clone(), refusing.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if refuse.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns.lock().unwrap().push(relay.abort_handle());
            }
        });
        Relay {
            addr,
            open,
            refusing,
            accept,
        }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops every open connection mid-stream.
    fn cut(&self) {
        for c in self.open.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn refuse(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }

    /// Gone for good: nothing listens at its address any more.
    async fn stop(self) {
        self.accept.abort();
        let _ = self.accept.await;
        for c in self.open.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

/// A `ctl task logs --follow -o json` child whose output lines arrive on a channel.
struct Follower {
    child: tokio::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: Vec<Value>,
}

impl Follower {
    fn start(base: &str, token: &str, run: &str, extra: &[&str]) -> Follower {
        let mut child = tokio::process::Command::new(common::ctl_bin())
            .args(["task", "logs", run, "--follow", "-o", "json"])
            .args(extra)
            .env("CAIRN_API_URL", base)
            .env("CAIRN_TOKEN", token)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follower {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads events until one satisfies `until`.
    async fn until(&mut self, what: &str, until: impl Fn(&Value) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("no {what} within 30s; saw {:?}", self.seen))
                .unwrap_or_else(|| panic!("ctl ended before {what}; saw {:?}", self.seen));
            let e: Value = serde_json::from_str(&line).unwrap();
            let done = until(&e);
            self.seen.push(e);
            if done {
                return;
            }
        }
    }

    /// Waits for the process to end: (exit code, rest of stdout as events, stderr).
    async fn end(mut self) -> (i32, Vec<Value>, String) {
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("ctl ends")
            .unwrap();
        while let Some(line) = self.lines.recv().await {
            self.seen.push(serde_json::from_str(&line).unwrap());
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use tokio::io::AsyncReadExt;
            e.read_to_string(&mut err).await.unwrap();
        }
        (status.code().unwrap_or(-1), self.seen, err)
    }
}

/// a → gate (waits for a permit) → c.
fn gated(addr: SocketAddr) -> cairn::workflow::Definition {
    definition(
        "gated",
        &format!(
            r#"
[defaults]
retry = {{ max_attempts = 1 }}

[[steps]]
id = "a"
kind = "http"
method = "POST"
url = "http://{addr}/work"

[[steps]]
id = "b"
kind = "http"
needs = ["a"]
method = "POST"
url = "http://{addr}/gate"

[[steps]]
id = "c"
kind = "http"
needs = ["b"]
method = "POST"
url = "http://{addr}/work"
"#
        ),
    )
}

async fn stored_event_ids(pool: &PgPool, run: &str) -> Vec<i64> {
    sqlx::query_scalar("select id from run_events where run_id = $1 order by id")
        .bind(run)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn logs_follow_resumes_after_a_cut_and_gives_up_when_the_api_is_gone(pool: PgPool) {
    migrate(&pool).await;
    let (addr, seen) = spawn_service(&pool, 1).await;
    let def = gated(addr);
    let api = TestApi::start(&pool, vec![def.clone()]).await;
    let relay = Relay::start(&api.base).await;
    let run = submit(&pool, &def, json!({})).await;
    let worker = TestWorker::start(&pool, fast_settings());

    let mut follower = Follower::start(&relay.base(), &api.operator, &run, &[]);
    follower
        .until("step b started", |e| {
            e["kind"] == "step_started" && e["stepId"] == "b"
        })
        .await;
    // The stream drops, and reconnects fail for a while; meanwhile the run finishes.
    relay.refuse(true);
    relay.cut();
    seen.gate.add_permits(1);
    wait_finished(&pool, std::slice::from_ref(&run), Duration::from_secs(30)).await;
    relay.refuse(false);
    let (code, events, err) = follower.end().await;
    assert_eq!(code, 0, "{err}");
    let printed: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(
        printed,
        stored_event_ids(&pool, &run).await,
        "every event once, in order, across the cut"
    );
    assert_eq!(events.last().unwrap()["kind"], "run_succeeded");

    // Gone for good: a bounded number of reconnects, then exit 1 saying so.
    let run = submit(&pool, &def, json!({})).await;
    let mut follower = Follower::start(&relay.base(), &api.operator, &run, &["--reconnects", "2"]);
    follower
        .until("step b started", |e| {
            e["kind"] == "step_started" && e["stepId"] == "b"
        })
        .await;
    relay.stop().await;
    let (code, _, err) = follower.end().await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "gave up following run {run} after 2 failed reconnects"
        )),
        "{err}"
    );
    seen.gate.add_permits(1);
    worker.shutdown().await;
}

#[sqlx::test(migrations = false)]
async fn logs_follow_is_quiet_when_its_reader_goes_away(pool: PgPool) {
    migrate(&pool).await;
    let (addr, seen) = spawn_service(&pool, 1).await;
    let def = gated(addr);
    let api = TestApi::start(&pool, vec![def.clone()]).await;
    let run = submit(&pool, &def, json!({})).await;
    let worker = TestWorker::start(&pool, fast_settings());
    // `ctl task logs --follow | head -1`: the reader leaves after one line; the next
    // event's write fails, and ctl ends quietly.
    let script = format!(
        "'{}' task logs {run} --follow | head -n 1",
        common::ctl_bin().display()
    );
    let child = tokio::process::Command::new("sh")
        .args(["-c", &script])
        .env("CAIRN_API_URL", &api.base)
        .env("CAIRN_TOKEN", &api.operator)
        .stdin(std::process::Stdio::null())
        .output();
    let releaser = async {
        wait_until(&pool, Duration::from_secs(30), "step b to start", || {
            let pool = pool.clone();
            let run = run.clone();
            async move {
                sqlx::query_scalar::<_, String>(
                    "select status from steps where run_id = $1 and step_id = 'b'",
                )
                .bind(&run)
                .fetch_one(&pool)
                .await
                .unwrap()
                    == "running"
            }
        })
        .await;
        seen.gate.add_permits(1);
    };
    let (out, ()) = tokio::join!(
        async { tokio::time::timeout(Duration::from_secs(60), child).await },
        releaser
    );
    let out = out.expect("ctl ends once its reader is gone").unwrap();
    assert_eq!(out.stdout.iter().filter(|b| **b == b'\n').count(), 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.is_empty(), "{err}");
    worker.shutdown().await;
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn add_schedule(api: &TestApi, name: &str, cron: &str) -> Value {
    let (code, body) = api
        .call(
            "POST",
            "/api/schedules",
            Some(json!({ "name": name, "workflow": "idle", "cron": cron })),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    body
}

#[sqlx::test(migrations = false)]
async fn schedules_are_edited_as_they_are_created(pool: PgPool) {
    migrate(&pool).await;
    let api = TestApi::start(&pool, vec![definition("idle", IDLE)]).await;
    let created = add_schedule(&api, "nightly", "0 6 * * *").await;
    let id = created["id"].as_str().unwrap();

    let (code, out, err) = api
        .ctl(&[
            "schedule",
            "update",
            "nightly",
            "--cron",
            "30 7 * * *",
            "--timezone",
            "Asia/Tokyo",
            "--input",
            r#"{"n": 3}"#,
            "-o",
            "json",
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    let updated: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(updated["cron"], "30 7 * * *");
    assert_eq!(updated["timezone"], "Asia/Tokyo");
    assert_eq!(updated["input"], json!({ "n": 3 }));
    assert_eq!(updated["name"], "nightly", "the name stays");
    assert!(
        updated["recentTicks"].is_array(),
        "the shape of GET: {updated}"
    );
    // The next fire times follow the new expression: 07:30 in Tokyo is 22:30 UTC.
    let next: Vec<DateTime<Utc>> = updated["nextFireTimes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| at(t.as_str().unwrap()))
        .collect();
    assert_eq!(next.len(), 3);
    assert!(
        next.iter()
            .all(|t| t.format("%H:%M").to_string() == "22:30"),
        "{next:?}"
    );
    let cursor: Option<DateTime<Utc>> =
        sqlx::query_scalar("select next_fire_at from schedules where id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(cursor, Some(next[0]), "the scheduler's cursor moved too");
    let (_, shown) = api.call("GET", &format!("/api/schedules/{id}"), None).await;
    assert_eq!(shown, updated);

    // Checked as on create: each bad field named, nothing changed.
    let (code, body) = api
        .call(
            "PATCH",
            "/api/schedules/nightly",
            Some(json!({ "cron": "61 * * * *", "timezone": "Mars/Olympus" })),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    let fields: BTreeSet<&str> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, BTreeSet::from(["cron", "timezone"]));
    let (code, body) = api
        .call(
            "PATCH",
            "/api/schedules/nightly",
            Some(json!({ "input": { "n": "three" } })),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["error"]["details"][0]["field"], "input");
    let (code, body) = api
        .call(
            "PATCH",
            "/api/schedules/nightly",
            Some(json!({ "name": "renamed" })),
        )
        .await;
    assert_eq!(code, 400, "the name cannot change: {body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("name"),
        "{body}"
    );
    let (code, _) = api
        .call(
            "PATCH",
            "/api/schedules/nope",
            Some(json!({ "cron": "* * * * *" })),
        )
        .await;
    assert_eq!(code, 404);
    let (_, after) = api.call("GET", "/api/schedules/nightly", None).await;
    assert_eq!(after["cron"], "30 7 * * *");

    let (code, _, err) = api
        .ctl(&["schedule", "update", "nightly", "--cron", "nope"])
        .await;
    assert_eq!(code, 1);
    assert!(err.contains("cron") && err.contains("422"), "{err}");
    let (code, _, err) = api.ctl(&["schedule", "update", "nightly"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("nothing to change"), "{err}");

    // Pausing through an edit keeps the cursor; resuming moves it to the next tick.
    let (code, body) = api
        .call(
            "PATCH",
            "/api/schedules/nightly",
            Some(json!({ "enabled": false })),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["nextFireTimes"], json!([]));
}

/// Runs a schedule started, by tick time.
async fn schedule_runs(pool: &PgPool, schedule: &str) -> Vec<(DateTime<Utc>, String)> {
    sqlx::query_as(
        "select schedule_tick_at, id from runs where schedule_id = $1 order by schedule_tick_at",
    )
    .bind(schedule)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = false)]
async fn backfill_starts_each_fire_time_once_within_a_bound(pool: PgPool) {
    migrate(&pool).await;
    let registry = Registry::from_definitions([definition("idle", IDLE)]);
    let api = TestApi::start(&pool, vec![definition("idle", IDLE)]).await;
    let created = add_schedule(&api, "hourly", "0 * * * *").await;
    let id = created["id"].as_str().unwrap().to_owned();

    // The scheduler handled 01:00 (its cursor stood there; a pass at 01:00:00.5).
    sqlx::query("update schedules set next_fire_at = $2 where id = $1")
        .bind(&id)
        .bind(at("2026-01-01T01:00:00Z"))
        .execute(&pool)
        .await
        .unwrap();
    let pass = cairn::scheduler::run_due(
        &pool,
        &registry,
        at("2026-01-01T01:00:00.500Z"),
        "test-scheduler",
    )
    .await
    .unwrap();
    assert_eq!(pass.fired, 1);

    let backfill = |from: &str, to: &str| {
        let body = json!({ "from": from, "to": to });
        let path = format!("/api/schedules/{id}/backfill");
        let api = &api;
        async move { api.call("POST", &path, Some(body)).await }
    };
    let (code, body) = backfill("2026-01-01T00:00:00Z", "2026-01-01T05:00:00Z").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["count"], 4, "00, 02, 03, 04 (01 was fired): {body}");
    assert_eq!(body["fireTimes"], 5);
    assert_eq!(body["alreadyHandled"], 1);
    assert_eq!(body["runs"].as_array().unwrap().len(), 4);

    // Again: nothing more. Overlapping: only the new fire times.
    let (code, body) = backfill("2026-01-01T00:00:00Z", "2026-01-01T05:00:00Z").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        (body["count"].as_i64(), body["alreadyHandled"].as_i64()),
        (Some(0), Some(5))
    );
    assert_eq!(body["runs"], json!([]));
    let (code, body) = backfill("2026-01-01T03:00:00+00:00", "2026-01-01T07:00:00Z").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["count"], 2, "05 and 06: {body}");

    // Two at once over the same new range: each fire time starts one run.
    let (a, b) = tokio::join!(
        backfill("2026-01-02T00:00:00Z", "2026-01-02T10:00:00Z"),
        backfill("2026-01-02T00:00:00Z", "2026-01-02T10:00:00Z")
    );
    assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
    assert_eq!(
        a.1["count"].as_i64().unwrap() + b.1["count"].as_i64().unwrap(),
        10
    );

    let runs = schedule_runs(&pool, &id).await;
    let ticks: Vec<DateTime<Utc>> = runs.iter().map(|(t, _)| *t).collect();
    let distinct: BTreeSet<DateTime<Utc>> = ticks.iter().copied().collect();
    assert_eq!(
        ticks.len(),
        distinct.len(),
        "one run per fire time: {ticks:?}"
    );
    assert_eq!(ticks.len(), 7 + 10);
    let kinds: Vec<(String, i64)> = sqlx::query_as(
        "select kind, count(*) from schedule_ticks where schedule_id = $1 group by kind order by kind",
    )
    .bind(&id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        kinds,
        [("backfill".to_owned(), 16), ("on_time".to_owned(), 1)]
    );
    // A backfilled run says which tick started it.
    let (_, shown) = api
        .call("GET", &format!("/api/tasks/{}", runs[0].1), None)
        .await;
    assert_eq!(shown["schedule"]["kind"], "backfill");
    assert_eq!(shown["schedule"]["tickAt"], "2026-01-01T00:00:00Z");

    // Bounded, and the range must be one.
    let minutely = add_schedule(&api, "minutely", "* * * * *").await;
    let (code, body) = api
        .call(
            "POST",
            &format!(
                "/api/schedules/{}/backfill",
                minutely["id"].as_str().unwrap()
            ),
            Some(json!({ "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z" })),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than 1000"),
        "{body}"
    );
    let (code, body) = backfill("2026-01-01T05:00:00Z", "2026-01-01T05:00:00Z").await;
    assert_eq!(code, 422, "from = to: {body}");
    assert_eq!(body["error"]["details"][0]["field"], "to");
    let (code, _) = backfill("2026-01-01T06:00:00Z", "2026-01-01T05:00:00Z").await;
    assert_eq!(code, 422, "from after to");
    let (code, body) = backfill("1900-01-01T00:00:00Z", "2026-01-01T05:00:00Z").await;
    assert_eq!(code, 422, "before 1970");
    assert_eq!(body["error"]["details"][0]["field"], "from");
    let (code, _) = backfill("yesterday", "2026-01-01T05:00:00Z").await;
    assert_eq!(code, 400, "not a time");
    let (code, _) = api
        .call(
            "POST",
            "/api/schedules/nope/backfill",
            Some(json!({ "from": "2026-01-01T00:00:00Z", "to": "2026-01-01T01:00:00Z" })),
        )
        .await;
    assert_eq!(code, 404);
    let total: i64 = sqlx::query_scalar("select count(*) from runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(total, 1 + 16, "refused backfills started nothing");

    // Through ctl, by name.
    let (code, out, err) = api
        .ctl(&[
            "schedule",
            "backfill",
            "hourly",
            "--from",
            "2026-01-03T00:00:00Z",
            "--to",
            "2026-01-03T03:00:00Z",
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("started 3 run(s) for the 3 fire time(s)"),
        "{out}"
    );
    let (code, out, err) = api
        .ctl(&[
            "schedule",
            "backfill",
            "hourly",
            "--from",
            "2026-01-03T00:00:00Z",
            "--to",
            "2026-01-03T03:00:00Z",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["count"], 0);
    let (code, _, err) = api
        .ctl(&[
            "schedule",
            "backfill",
            "hourly",
            "--from",
            "yesterday",
            "--to",
            "today",
        ])
        .await;
    assert_eq!(code, 2);
    assert!(err.contains("RFC 3339"), "{err}");
}
