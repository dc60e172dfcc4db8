//! The processes the bench drives: `cairn worker`, `cairn api` and `cairn scheduler`
//! (for its reaper), started from the `cairn` executable against the bench database,
//! stopped with SIGTERM (SIGKILL when they do not stop, and always when dropped); and
//! `cairn admin create-token`, the API's tokens made as an operator makes them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{BenchError, Result, Settings};

/// A running `cairn` child process.
pub(super) struct Service {
    what: String,
    child: Child,
    log: PathBuf,
}

impl Service {
    /// `cairn worker --concurrency N` against `url`.
    pub(super) fn worker(
        s: &Settings,
        url: &str,
        concurrency: usize,
        index: u32,
    ) -> Result<Service> {
        let mut args = vec![
            "worker".to_owned(),
            "--concurrency".to_owned(),
            concurrency.to_string(),
        ];
        if let Some(pool) = s.db_pool {
            args.extend(["--db-pool".to_owned(), pool.to_string()]);
        }
        Service::spawn(s, url, format!("worker-{index}"), &args)
    }

    /// `cairn api` on `listen`, loading the bench workflows.
    pub(super) fn api(s: &Settings, url: &str, listen: &str) -> Result<Service> {
        let mut args = vec![
            "api".to_owned(),
            "--listen".to_owned(),
            listen.to_owned(),
            "--workflows-dir".to_owned(),
            s.dir.join("workflows").display().to_string(),
            "--static-dir".to_owned(),
            s.dir.join("no-static").display().to_string(),
        ];
        if let Some(pool) = s.db_pool {
            args.extend(["--db-pool".to_owned(), pool.to_string()]);
        }
        Service::spawn(s, url, "api".to_owned(), &args)
    }

    /// `cairn scheduler` loading the bench workflows, whose reaper deletes succeeded
    /// runs that finished over an hour ago, in one pass at start.
    pub(super) fn reaper(s: &Settings, url: &str) -> Result<Service> {
        let args: Vec<String> = [
            "scheduler",
            "--workflows-dir",
            &s.dir.join("workflows").display().to_string(),
            "--retain-succeeded",
            "1h",
            "--reaper-interval",
            "1h",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        Service::spawn(s, url, "scheduler".to_owned(), &args)
    }

    /// A new API token with `role` (`operator`, `viewer`), from `cairn admin
    /// create-token` against `url`.
    pub(super) fn create_token(s: &Settings, url: &str, role: &str) -> Result<String> {
        let args = [
            "admin",
            "create-token",
            "--role",
            role,
            "--name",
            "cairn-bench",
        ];
        let out = Command::new(&s.exe)
            .args(args)
            .env("DATABASE_URL", url)
            .env("CAIRN_NO_MIGRATE", "true")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .map_err(BenchError::io(format!(
                "starting `{} {}`",
                s.exe.display(),
                args.join(" ")
            )))?;
        let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() || token.is_empty() {
            return Err(BenchError::Process(format!(
                "`cairn {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(token)
    }

    fn spawn(s: &Settings, url: &str, what: String, args: &[String]) -> Result<Service> {
        let log = s.dir.join(format!("{what}-{}.log", ulid::Ulid::generate()));
        let stderr = std::fs::File::create(&log)
            .map_err(BenchError::io(format!("creating {}", log.display())))?;
        let child = Command::new(&s.exe)
            .args(args)
            .env("DATABASE_URL", url)
            .env("CAIRN_NO_MIGRATE", "true")
            .env("RUST_LOG", "warn")
            .env_remove("CAIRN_LOG_JSON")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(BenchError::io(format!(
                "starting `{} {}`",
                s.exe.display(),
                args.join(" ")
            )))?;
        tracing::info!(process = %what, pid = child.id(), "started");
        Ok(Service { what, child, log })
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error if the process has exited.
    pub(super) fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(BenchError::Process(format!(
                "{} exited ({status}); its log ends:\n{}",
                self.what,
                tail(&self.log)
            ))),
            Err(e) => Err(BenchError::Process(format!("{}: {e}", self.what))),
        }
    }

    /// The process's peak resident set size so far (`VmHWM`), in KiB.
    pub(super) fn peak_rss_kib(&self) -> Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
        let status =
            std::fs::read_to_string(&path).map_err(BenchError::io(format!("reading {path}")))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| BenchError::Process(format!("no VmHWM in {path}")))
    }

    /// CPU time (user + system) the process has used so far, in ms.
    pub(super) fn cpu_ms(&self) -> Result<f64> {
        cpu_ms_of(self.pid())
    }

    /// SIGTERM, then waits up to `grace` for a clean exit; SIGKILL after that.
    pub(super) async fn stop(mut self, grace: Duration) {
        let pid = self.pid().to_string();
        let termed = Command::new("kill")
            .args(["-TERM", &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if termed {
            let deadline = tokio::time::Instant::now() + grace;
            while tokio::time::Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    tracing::info!(process = %self.what, "stopped");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tracing::warn!(process = %self.what, "did not stop in time; killing it");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Linux's `USER_HZ`, the unit of `/proc` CPU times (100 on every mainstream platform).
const CLOCK_TICKS: f64 = 100.0;

/// The whole machine's CPU time so far (ms summed over cores): (busy, total).
pub(super) fn machine_cpu_ms() -> Result<(f64, f64)> {
    let stat =
        std::fs::read_to_string("/proc/stat").map_err(BenchError::io("reading /proc/stat"))?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|t| t.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    if ticks.len() < 8 {
        return Err(BenchError::Process("cannot read /proc/stat".into()));
    }
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let idle = ticks[3] + ticks[4];
    let total: u64 = ticks[..8].iter().sum();
    let ms = |t: u64| t as f64 * 1000.0 / CLOCK_TICKS;
    Ok((ms(total - idle), ms(total)))
}

/// CPU time (ms) of each PostgreSQL backend serving database `db`, by pid: their
/// process titles (`postgres: user db host(port) state`) name the database.
pub(super) fn backend_cpu_ms(db: &str) -> std::collections::HashMap<u32, f64> {
    let mut out = std::collections::HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    let needle = format!(" {db} ");
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(title) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let title = String::from_utf8_lossy(&title);
        if !title.starts_with("postgres: ") || !title.contains(&needle) {
            continue;
        }
        if let Ok(ms) = cpu_ms_of(pid) {
            out.insert(pid, ms);
        }
    }
    out
}

/// CPU time (user + system) this process has used so far, in ms.
pub(super) fn own_cpu_ms() -> Result<f64> {
    cpu_ms_of(std::process::id())
}

/// CPU time (user + system) of process `pid` so far, in ms.
fn cpu_ms_of(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(BenchError::io(format!("reading {path}")))?;
    // After "pid (comm) ": state is field 3, utime 14 and stime 15 (in clock ticks).
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => Ok((user + system) as f64 * 1000.0 / CLOCK_TICKS),
        _ => Err(BenchError::Process(format!(
            "cannot read CPU times from {path}"
        ))),
    }
}

/// Stops every service at once.
pub(super) async fn stop_all(services: Vec<Service>, grace: Duration) {
    futures::future::join_all(services.into_iter().map(|s| s.stop(grace))).await;
}

/// The last lines of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A free local port (there is a small race until the API binds it).
pub(super) fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(BenchError::io("finding a free port"))?;
    let port = listener
        .local_addr()
        .map_err(BenchError::io("finding a free port"))?
        .port();
    Ok(port)
}
