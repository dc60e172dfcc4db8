//! What `cairn dev` keeps between starts, so that a laptop's Cairn behaves the same every
//! morning: a folder per user and checkout ([`DevDir`]) holding a private PostgreSQL
//! ([`DevDb`]), the port the API listened on and its admin token. The folder is locked
//! while a `cairn dev` uses it, so that two of them never share one, and a server left
//! running by a `cairn dev` that was killed is recognised and stopped before starting
//! again. Every failure names the folder, the log and what to do.
//!
//! The private cluster is made with the local server binaries (`initdb`, `pg_ctl` on
//! `PATH` or under `/usr/lib/postgresql/*/bin`), listens on 127.0.0.1 only, and is
//! stopped when dropped. PostgreSQL refuses to run as root; as root the cluster is run
//! as the `postgres` system user, who must be able to reach the folder.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum DevDbError {
    #[error(
        "no PostgreSQL server binaries found (looked for initdb and pg_ctl on PATH and in /usr/lib/postgresql/*/bin); install PostgreSQL or set DATABASE_URL"
    )]
    NoBinaries,
    #[error(
        "running as root needs the `postgres` system user to own the cluster, and there is none"
    )]
    NoPostgresUser,
    #[error(
        "the postgres user cannot write to {dir}: as root the private PostgreSQL runs as postgres, so every folder above it must be enterable by others (chmod o+x); or give --data-dir (CAIRN_DATA_DIR) a folder it can reach, such as /var/lib/cairn/dev"
    )]
    Unreachable { dir: PathBuf },
    #[error(
        "another cairn dev{pid} uses {dir}; stop it, or give this one a folder of its own with --data-dir (CAIRN_DATA_DIR)"
    )]
    Busy { dir: PathBuf, pid: String },
    #[error(
        "initdb could not make a cluster in {data}: {detail}\n  fix: remove {data} if an earlier attempt left it half made, or give --data-dir (CAIRN_DATA_DIR) another folder"
    )]
    Init { data: PathBuf, detail: String },
    #[error(
        "PostgreSQL did not start in {data}: {detail}\n  log: {log}{tail}\n  fix: stop whatever else uses this folder (`{stop}`), or start afresh with `cairn dev --data-dir <another folder>`"
    )]
    Start {
        data: PathBuf,
        log: PathBuf,
        detail: String,
        tail: String,
        stop: String,
    },
    #[error(
        "a PostgreSQL (pid {pid}) that an earlier cairn dev left running in {data} did not stop: {detail}\n  log: {log}\n  fix: `kill {pid}`, then start cairn dev again"
    )]
    Leftover {
        pid: u32,
        data: PathBuf,
        log: PathBuf,
        detail: String,
    },
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> DevDbError + '_ {
    move |source| DevDbError::File {
        path: path.to_owned(),
        source,
    }
}

/// A running private cluster; stopped on drop.
pub struct DevDb {
    pg_ctl: PathBuf,
    data: PathBuf,
    run_as: Option<String>,
    port: u16,
    /// The server's command-line options (port, socket directory, settings).
    options: String,
    /// Whether this value started the server, and so stops it when dropped.
    started: bool,
}

fn find_bin_dir() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn command(program: &Path, args: &[&str], run_as: Option<&str>) -> Command {
    match run_as {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(program).args(args);
            c
        }
        None => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
    }
}

fn run(program: &Path, args: &[&str], run_as: Option<&str>, what: &str) -> Result<(), DevDbError> {
    let output = command(program, args, run_as).output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(DevDbError::Command {
            what: what.to_owned(),
            detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

fn free_port() -> Result<u16, DevDbError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The last `n` lines of a log, indented, or nothing when it cannot be read.
fn log_tail(log: &Path, n: usize) -> String {
    let Ok(text) = std::fs::read_to_string(log) else {
        return String::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("\n    {l}"))
        .collect()
}

/// Whether `pid` is a process that runs with `data` as its working directory, as a
/// PostgreSQL server does (its own data directory).
fn serves(pid: u32, data: &Path) -> bool {
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"));
    match (cwd, data.canonicalize()) {
        (Ok(cwd), Ok(data)) => cwd == data,
        // Not ours to inspect: judge by its name.
        _ => std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim() == "postgres" || c.trim() == "postmaster"),
    }
}

impl DevDb {
    /// Creates the cluster if `data` holds none, and starts it on a free port.
    pub fn start(data: &Path) -> Result<DevDb, DevDbError> {
        DevDb::start_on(data, None)
    }

    /// Creates the cluster if `data` holds none, and starts it on `port` when that is
    /// free (else on a free one). A server an earlier process left running in `data` is
    /// stopped first: call this only while no live process uses `data` (see [`DevDir`]).
    pub fn start_on(data: &Path, port: Option<u16>) -> Result<DevDb, DevDbError> {
        let bin = find_bin_dir().ok_or(DevDbError::NoBinaries)?;
        let run_as = if is_root() {
            let known = Command::new("id")
                .args(["-u", "postgres"])
                .output()?
                .status
                .success();
            if !known {
                return Err(DevDbError::NoPostgresUser);
            }
            Some("postgres".to_owned())
        } else {
            None
        };
        std::fs::create_dir_all(data).map_err(file_error(data))?;
        let data_str = data.display().to_string();
        if let Some(user) = &run_as {
            run(
                Path::new("chown"),
                &[&format!("{user}:{user}"), &data_str],
                None,
                "chown",
            )?;
            run(Path::new("chmod"), &["700", &data_str], None, "chmod")?;
            if run(Path::new("test"), &["-w", &data_str], Some(user), "test").is_err() {
                return Err(DevDbError::Unreachable {
                    dir: data.to_owned(),
                });
            }
        }
        if !data.join("PG_VERSION").is_file() {
            run(
                &bin.join("initdb"),
                &[
                    "-D",
                    &data_str,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
                run_as.as_deref(),
                "initdb",
            )
            .map_err(|e| DevDbError::Init {
                data: data.to_owned(),
                detail: match e {
                    DevDbError::Command { detail, .. } => detail.replace('\n', " "),
                    e => e.to_string(),
                },
            })?;
        }
        let mut db = DevDb {
            pg_ctl: bin.join("pg_ctl"),
            data: data.to_owned(),
            run_as,
            port: 0,
            options: String::new(),
            started: false,
        };
        // First, so that the port a leftover server holds is free again.
        db.clear_leftover()?;
        db.port = match port {
            Some(p) if p != 0 && port_free(p) => p,
            _ => free_port()?,
        };
        db.options = format!(
            "-p {} -k {data_str} -c listen_addresses=127.0.0.1 -c fsync=off",
            db.port
        );
        db.resume()?;
        db.started = true;
        Ok(db)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log.
    pub fn log(&self) -> PathBuf {
        self.data.join("server.log")
    }

    /// The command that stops this cluster, for messages.
    fn stop_command(&self) -> String {
        let runuser = match &self.run_as {
            Some(u) => format!("runuser -u {u} -- "),
            None => String::new(),
        };
        format!(
            "{runuser}{} -D {} stop",
            self.pg_ctl.display(),
            self.data.display()
        )
    }

    /// Stops a server that an earlier process left running in this data directory (a
    /// `cairn dev` killed with SIGKILL leaves its PostgreSQL behind), and forgets the
    /// lock file of one whose process id now belongs to an unrelated process.
    fn clear_leftover(&self) -> Result<(), DevDbError> {
        let pidfile = self.data.join("postmaster.pid");
        let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
        else {
            return Ok(());
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            // Gone: PostgreSQL replaces a lock file whose process is dead.
            return Ok(());
        }
        if !serves(pid, &self.data) {
            tracing::info!(pid, file = %pidfile.display(), "removing a stale PostgreSQL lock file: its process id now belongs to another process");
            return std::fs::remove_file(&pidfile).map_err(file_error(&pidfile));
        }
        tracing::info!(pid, data = %self.data.display(), "stopping the PostgreSQL an earlier cairn dev left running");
        self.stop("fast").map_err(|e| DevDbError::Leftover {
            pid,
            data: self.data.clone(),
            log: self.log(),
            detail: e.to_string(),
        })
    }

    /// Starts the server (again, after [`DevDb::stop`]) on its port, with its options;
    /// waits until it accepts connections.
    pub fn resume(&self) -> Result<(), DevDbError> {
        let data = self.data.display().to_string();
        let log = self.log().display().to_string();
        run(
            &self.pg_ctl,
            &[
                "-D",
                &data,
                "-o",
                &self.options,
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "start",
            ],
            self.run_as.as_deref(),
            "pg_ctl start",
        )
        .map_err(|e| DevDbError::Start {
            data: self.data.clone(),
            log: self.log(),
            detail: match e {
                DevDbError::Command { detail, .. } => detail.replace('\n', " "),
                e => e.to_string(),
            },
            tail: log_tail(&self.log(), 5),
            stop: self.stop_command(),
        })
    }

    /// Stops the server until [`DevDb::resume`]; `mode` as in [`DevDb::restart`]. For
    /// failure tests.
    pub fn stop(&self, mode: &str) -> Result<(), DevDbError> {
        let data = self.data.display().to_string();
        run(
            &self.pg_ctl,
            &["-D", &data, "-m", mode, "-w", "-t", "60", "stop"],
            self.run_as.as_deref(),
            "pg_ctl stop",
        )
    }

    /// Restarts the server on the same port, stopping it with `mode`: `fast` (clients
    /// are disconnected, a clean shutdown) or `immediate` (no shutdown at all: the
    /// start recovers from the WAL, as after a crash). Waits until it accepts
    /// connections again. For failure tests.
    pub fn restart(&self, mode: &str) -> Result<(), DevDbError> {
        let data = self.data.display().to_string();
        // The server keeps the options it was started with; its output must go to the
        // log, or this process's pipe would stay open for as long as the server runs.
        let log = self.log().display().to_string();
        run(
            &self.pg_ctl,
            &[
                "-D", &data, "-l", &log, "-m", mode, "-w", "-t", "60", "restart",
            ],
            self.run_as.as_deref(),
            "pg_ctl restart",
        )
    }
}

impl Drop for DevDb {
    fn drop(&mut self) {
        if !self.started {
            return;
        }
        let data = self.data.display().to_string();
        if let Err(e) = run(
            &self.pg_ctl,
            &["-D", &data, "-m", "fast", "-w", "stop"],
            self.run_as.as_deref(),
            "pg_ctl stop",
        ) {
            tracing::warn!(error = %e, log = %self.log().display(), "stopping the private PostgreSQL failed");
        }
    }
}

/// What `cairn dev` reuses on its next start.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevState {
    /// Where the API listened.
    pub listen: Option<String>,
    /// The private PostgreSQL's port.
    pub postgres_port: Option<u16>,
    /// The admin token printed as `CAIRN_TOKEN`.
    pub token: Option<String>,
}

/// A `cairn dev` folder, locked for as long as this value lives (the lock goes with the
/// process, however it ends).
pub struct DevDir {
    dir: PathBuf,
    _lock: File,
    pub state: DevState,
}

const LOCK: &str = "cairn-dev.lock";
const STATE: &str = "cairn-dev.json";

impl DevDir {
    /// The folder `cairn dev` uses unless told otherwise: one per user and workflows
    /// folder (so two checkouts never share one), under `$XDG_DATA_HOME/cairn` (default
    /// `~/.local/share/cairn`); as root, under `/var/lib/cairn` unless `XDG_DATA_HOME`
    /// is set, because the `postgres` user cannot enter `/root`.
    pub fn default_for(workflows_dir: &Path) -> PathBuf {
        let base = match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            Some(xdg) => PathBuf::from(xdg),
            None if is_root() => PathBuf::from("/var/lib"),
            None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
                Some(home) => PathBuf::from(home).join(".local/share"),
                None => std::env::temp_dir(),
            },
        };
        let abs = std::path::absolute(workflows_dir)
            .ok()
            .and_then(|p| p.canonicalize().ok().or(Some(p)))
            .unwrap_or_else(|| workflows_dir.to_owned());
        let hash = crate::workflow::content_hash(&abs.to_string_lossy());
        // The checkout's name, for a person listing the folder.
        let name: String = abs
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let name = if name.is_empty() { "root".into() } else { name };
        base.join("cairn")
            .join(format!("dev-{name}-{}", &hash[..8]))
    }

    /// Creates and locks `dir`, and reads what earlier starts kept there.
    pub fn open(dir: &Path) -> Result<DevDir, DevDbError> {
        std::fs::create_dir_all(dir).map_err(file_error(dir))?;
        let dir = dir.canonicalize().map_err(file_error(dir))?;
        let lock_path = dir.join(LOCK);
        let mut lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(file_error(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let pid = std::fs::read_to_string(&lock_path)
                    .ok()
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .map(|p| format!(" (pid {p})"))
                    .unwrap_or_default();
                return Err(DevDbError::Busy { dir, pid });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(file_error(&lock_path)(e)),
        }
        lock.set_len(0).map_err(file_error(&lock_path))?;
        writeln!(lock, "{}", std::process::id()).map_err(file_error(&lock_path))?;
        let state_path = dir.join(STATE);
        let state = match std::fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %state_path.display(), error = %e, "unreadable; starting with a new port and token");
                DevState::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => DevState::default(),
            Err(e) => return Err(file_error(&state_path)(e)),
        };
        Ok(DevDir {
            dir,
            _lock: lock,
            state,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The private PostgreSQL's data directory.
    pub fn pgdata(&self) -> PathBuf {
        self.dir.join("pgdata")
    }

    /// Writes [`DevDir::state`], readable by this user only (it holds a token).
    pub fn save(&self) -> Result<(), DevDbError> {
        let path = self.dir.join(STATE);
        let tmp = self.dir.join(format!("{STATE}.tmp"));
        let json = serde_json::to_vec_pretty(&self.state)
            .map_err(|e| file_error(&path)(std::io::Error::other(e)))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp).map_err(file_error(&tmp))?;
        f.write_all(&json).map_err(file_error(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(file_error(&path))
    }

    /// Starts the private PostgreSQL on the port it had last time when that is free.
    pub fn start_postgres(&mut self) -> Result<DevDb, DevDbError> {
        let db = DevDb::start_on(&self.pgdata(), self.state.postgres_port)?;
        self.state.postgres_port = Some(db.port());
        Ok(db)
    }

    /// The admin token to print: the one kept from earlier starts while it still works
    /// (unless `rotate`, which revokes it), else a new one, kept for next time.
    pub async fn token(&mut self, pool: &sqlx::PgPool, rotate: bool) -> Result<String, DevDbError> {
        use crate::store::users;
        if let Some(old) = self.state.token.clone() {
            let live = users::token_use(pool, &crate::auth::secret_hash(&old)).await?;
            match live {
                Some(t) if rotate => {
                    users::token_revoke(pool, t.id).await?;
                }
                Some(_) => return Ok(old),
                None => {}
            }
        }
        let token = crate::auth::create_token(
            pool,
            "cairn dev",
            crate::auth::Role::Admin,
            Some(crate::auth::TOKEN_TTL),
        )
        .await?;
        self.state.token = Some(token.clone());
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_folder_is_per_workflows_folder() {
        let a = DevDir::default_for(Path::new("/srv/one/workflows"));
        let b = DevDir::default_for(Path::new("/srv/two/workflows"));
        assert_ne!(a, b);
        assert_eq!(a, DevDir::default_for(Path::new("/srv/one/workflows")));
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("dev-one-") && name.len() == "dev-one-".len() + 8,
            "{name}"
        );
        assert!(a.parent().unwrap().ends_with("cairn"), "{}", a.display());
    }

    #[test]
    fn a_folder_is_used_by_one_cairn_dev_at_a_time() {
        let dir = std::env::temp_dir().join(format!("cairn-devdir-{}", ulid::Ulid::generate()));
        let mut first = DevDir::open(&dir).unwrap();
        first.state.listen = Some("127.0.0.1:9".into());
        first.save().unwrap();
        match DevDir::open(&dir) {
            Err(DevDbError::Busy { pid, .. }) => {
                assert_eq!(pid, format!(" (pid {})", std::process::id()))
            }
            other => panic!("{:?}", other.map(|d| d.state)),
        }
        drop(first);
        let again = DevDir::open(&dir).unwrap();
        assert_eq!(again.state.listen.as_deref(), Some("127.0.0.1:9"));
        drop(again);
        let _ = std::fs::remove_dir_all(dir);
    }
}
