//! Promises of `cairn dev` about processes, with real `cairn dev` processes and the
//! private PostgreSQL each starts itself (never the shared test server): killed with
//! SIGKILL it starts again on the same port, token and data, stopping the server the
//! killed one left behind; two in two checkouts run at once without colliding; a second
//! one on a folder in use is refused naming it; started outside a checkout it says in
//! one line what it looked for; SIGTERM stops it without a warning; its log has no
//! colour codes when written to a file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

const WORKFLOW: &str = r#"
[[steps]]
id = "one"
kind = "sleep"
duration = "1ms"
"#;

/// A made-up checkout (`workflows/` with one workflow named `name`) and the user's data
/// home, removed when dropped.
struct Checkout {
    root: PathBuf,
}

impl Checkout {
    fn new(name: &str) -> Checkout {
        let root = std::env::temp_dir().join(format!("cairn-devtest-{}", ulid::Ulid::generate()));
        let workflows = root.join(name).join("workflows");
        std::fs::create_dir_all(&workflows).unwrap();
        std::fs::write(workflows.join(format!("{name}.toml")), WORKFLOW).unwrap();
        Checkout { root }
    }

    /// A second checkout under the same data home.
    fn add(&self, name: &str) {
        let workflows = self.root.join(name).join("workflows");
        std::fs::create_dir_all(&workflows).unwrap();
        std::fs::write(workflows.join(format!("{name}.toml")), WORKFLOW).unwrap();
    }

    fn xdg(&self) -> PathBuf {
        self.root.join("xdg")
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        // A server a failed test left behind: every pgdata's postmaster, stopped.
        for pidfile in glob_pidfiles(&self.xdg()) {
            if let Some(pid) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.lines().next().map(|l| l.trim().to_owned()))
            {
                let _ = Command::new("kill").args(["-QUIT", &pid]).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn glob_pidfiles(xdg: &Path) -> Vec<PathBuf> {
    let Ok(dirs) = std::fs::read_dir(xdg.join("cairn")) else {
        return Vec::new();
    };
    dirs.filter_map(|d| d.ok())
        .map(|d| d.path().join("pgdata").join("postmaster.pid"))
        .filter(|p| p.is_file())
        .collect()
}

/// A running `cairn dev` and what it printed.
struct Dev {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    env: Vec<(String, String)>,
}

impl Dev {
    /// Starts `cairn dev` in `cwd` with only the environment a person would have: no
    /// DATABASE_URL (the tests' own), no listen address, no static folder.
    fn spawn(cwd: &Path, xdg: &Path, args: &[&str]) -> Dev {
        let tag = ulid::Ulid::generate();
        let out = xdg.parent().unwrap().join(format!("dev-{tag}.out"));
        let err = xdg.parent().unwrap().join(format!("dev-{tag}.err"));
        let child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("dev")
            .args(args)
            .current_dir(cwd)
            .env_remove("DATABASE_URL")
            .env_remove("CAIRN_LISTEN")
            .env_remove("CAIRN_STATIC_DIR")
            .env_remove("CAIRN_DATA_DIR")
            .env_remove("CAIRN_WORKFLOWS_DIR")
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .env("XDG_DATA_HOME", xdg)
            .env("CAIRN_SHUTDOWN_GRACE", "2s")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("cairn dev starts");
        Dev {
            child,
            out,
            err,
            env: Vec::new(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    fn printed(&self, name: &str) -> Option<String> {
        let out = std::fs::read_to_string(&self.out).unwrap_or_default();
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")).map(str::to_owned))
    }

    /// Waits until it has printed its settings and answers `/readyz`.
    async fn ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let http = reqwest::Client::new();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("cairn dev exited ({status}):\n{}", self.log());
            }
            if let Some(url) = self
                .printed("CAIRN_DATA_DIR")
                .and(self.printed("CAIRN_API_URL"))
                && http
                    .get(format!("{url}/readyz"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            {
                self.env = [
                    "DATABASE_URL",
                    "CAIRN_API_URL",
                    "CAIRN_TOKEN",
                    "CAIRN_DATA_DIR",
                ]
                .iter()
                .map(|n| (n.to_string(), self.printed(n).unwrap()))
                .collect();
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cairn dev not ready in 120 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn get(&self, name: &str) -> &str {
        &self.env.iter().find(|(n, _)| n == name).unwrap().1
    }

    /// SIGTERM, then waits for it to exit; its status and its log.
    async fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "cairn dev still runs 30 s after SIGTERM:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn api(dev: &Dev, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .request(method, format!("{}{path}", dev.get("CAIRN_API_URL")))
        .bearer_auth(dev.get("CAIRN_TOKEN"));
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.expect("the API answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Lines of a log at WARN or ERROR.
fn warnings(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR ") || l.contains("Broken pipe"))
        .collect()
}

fn postmaster_pid(data_dir: &str) -> Option<u32> {
    std::fs::read_to_string(Path::new(data_dir).join("pgdata/postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

#[tokio::test]
async fn killed_with_sigkill_it_starts_again_with_the_same_port_token_and_data() {
    let checkout = Checkout::new("alpha");
    let cwd = checkout.root.join("alpha");
    // A port of its own rather than 8080, which a test running beside this one may take
    // while this cairn dev is down; kept like any other.
    let mut first = Dev::spawn(&cwd, &checkout.xdg(), &["--listen", "127.0.0.1:0"]);
    first.ready().await;
    let data_dir = first.get("CAIRN_DATA_DIR").to_owned();
    assert!(
        Path::new(&data_dir).starts_with(checkout.xdg().join("cairn"))
            && Path::new(&data_dir)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("dev-alpha-"),
        "the default folder is per user and checkout: {data_dir}"
    );
    let (status, created) = api(
        &first,
        reqwest::Method::POST,
        "/api/tasks",
        Some(json!({"workflow": "alpha"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let task = created["taskId"].as_str().unwrap().to_owned();

    // A second cairn dev on the same folder is refused, naming it and the first.
    let second = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["dev", "--data-dir", &data_dir, "--listen", "127.0.0.1:0"])
        .current_dir(&cwd)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "another cairn dev (pid {}) uses {data_dir}",
            first.child.id()
        )) && said.contains("--data-dir"),
        "{said}"
    );

    // SIGKILL: its PostgreSQL stays behind, holding the folder and the port.
    let before: Vec<(String, String)> = first.env.clone();
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let leftover = postmaster_pid(&data_dir).expect("the killed cairn dev left its server");
    assert!(Path::new(&format!("/proc/{leftover}")).exists());

    let mut again = Dev::spawn(&cwd, &checkout.xdg(), &[]);
    again.ready().await;
    assert_eq!(
        again.env, before,
        "the same folder, database, port and token"
    );
    assert!(
        again
            .log()
            .contains("stopping the PostgreSQL an earlier cairn dev left running"),
        "{}",
        again.log()
    );
    assert!(
        !Path::new(&format!("/proc/{leftover}")).exists()
            || postmaster_pid(&data_dir) != Some(leftover)
    );
    let (status, shown) = api(
        &again,
        reqwest::Method::GET,
        &format!("/api/tasks/{task}"),
        None,
    )
    .await;
    assert_eq!(
        status, 200,
        "the run submitted before the kill is still there: {shown}"
    );

    // SIGTERM: a clean stop says nothing alarming, and stops the server.
    let again_env = again.env.clone();
    let (status, log) = again.terminate().await;
    assert!(status.success(), "{status}\n{log}");
    assert_eq!(warnings(&log), Vec::<&str>::new(), "{log}");
    assert!(
        !log.contains('\x1b'),
        "colour codes in a log written to a file:\n{log}"
    );
    assert_eq!(postmaster_pid(&data_dir), None, "its PostgreSQL stopped");

    // Asked for a new token: the old one stops working, the port stays.
    let mut rotated = Dev::spawn(&cwd, &checkout.xdg(), &["--new-token"]);
    rotated.ready().await;
    let earlier = |name: &str| again_env.iter().find(|(n, _)| n == name).unwrap().1.clone();
    assert_eq!(rotated.get("CAIRN_API_URL"), earlier("CAIRN_API_URL"));
    assert_ne!(rotated.get("CAIRN_TOKEN"), earlier("CAIRN_TOKEN"));
    assert_eq!(
        api(&rotated, reqwest::Method::GET, "/api/tasks", None)
            .await
            .0,
        200
    );
    let old = reqwest::Client::new()
        .get(format!("{}/api/tasks", earlier("CAIRN_API_URL")))
        .bearer_auth(earlier("CAIRN_TOKEN"))
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 401);
    let (status, log) = rotated.terminate().await;
    assert!(status.success(), "{log}");
}

#[tokio::test]
async fn two_in_two_checkouts_run_at_once() {
    let checkout = Checkout::new("alpha");
    checkout.add("beta");
    let mut a = Dev::spawn(&checkout.root.join("alpha"), &checkout.xdg(), &[]);
    let mut b = Dev::spawn(&checkout.root.join("beta"), &checkout.xdg(), &[]);
    a.ready().await;
    b.ready().await;
    for name in ["DATABASE_URL", "CAIRN_API_URL", "CAIRN_DATA_DIR"] {
        assert_ne!(a.get(name), b.get(name), "{name}");
    }
    for (dev, own) in [(&a, "alpha"), (&b, "beta")] {
        let (status, list) = api(dev, reqwest::Method::GET, "/api/workflows", None).await;
        assert_eq!(status, 200);
        let names: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|w| w["name"].as_str())
            .collect();
        assert_eq!(names, [own], "each serves its own checkout's workflows");
    }
    // An event stream open while it stops: ended at once, without a warning.
    let mut events = reqwest::Client::new()
        .get(format!("{}/api/events", a.get("CAIRN_API_URL")))
        .bearer_auth(a.get("CAIRN_TOKEN"))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let (sa, la) = a.terminate().await;
    while let Ok(Some(_)) = events.chunk().await {}
    let (sb, lb) = b.terminate().await;
    assert!(sa.success() && sb.success(), "{la}\n{lb}");
    assert_eq!(warnings(&la), Vec::<&str>::new(), "{la}");
    assert_eq!(warnings(&lb), Vec::<&str>::new(), "{lb}");
}

#[test]
fn outside_a_checkout_it_says_in_one_line_what_it_looked_for() {
    let checkout = Checkout::new("alpha");
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("dev")
        .current_dir(&checkout.root)
        .env_remove("DATABASE_URL")
        .env_remove("CAIRN_WORKFLOWS_DIR")
        .env("XDG_DATA_HOME", checkout.xdg())
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    let wanted = checkout.root.canonicalize().unwrap().join("workflows");
    assert!(
        lines[0].starts_with("error: no workflows folder at ")
            && (lines[0].contains(&wanted.display().to_string())
                || lines[0].contains(&checkout.root.join("workflows").display().to_string()))
            && lines[0].contains("--workflows-dir")
            && lines[0].contains("CAIRN_WORKFLOWS_DIR"),
        "{err}"
    );
    assert!(!checkout.xdg().exists(), "nothing was created");
}
