//! A private PostgreSQL for `cairn dev` when no `DATABASE_URL` is given: a cluster made
//! with the local server binaries (`initdb`, `pg_ctl` on `PATH` or under
//! `/usr/lib/postgresql/*/bin`), in a data directory that is kept between runs, on a free
//! port, listening on 127.0.0.1 only, and stopped when dropped.
//!
//! PostgreSQL refuses to run as root; as root the cluster is run as the `postgres`
//! system user.

use std::path::{Path, PathBuf};
use std::process::Command;

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
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A running private cluster; stopped on drop.
pub struct DevDb {
    pg_ctl: PathBuf,
    data: PathBuf,
    run_as: Option<String>,
    port: u16,
    /// The server's command-line options (port, socket directory, settings).
    options: String,
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

fn run(program: &Path, args: &[&str], run_as: Option<&str>, what: &str) -> Result<(), DevDbError> {
    let output = match run_as {
        Some(user) => Command::new("runuser")
            .args(["-u", user, "--"])
            .arg(program)
            .args(args)
            .output()?,
        None => Command::new(program).args(args).output()?,
    };
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

impl DevDb {
    /// The default data directory: `$TMPDIR/cairn-dev/pgdata` (readable by the
    /// `postgres` user when running as root).
    pub fn default_dir() -> PathBuf {
        std::env::temp_dir().join("cairn-dev").join("pgdata")
    }

    /// Creates the cluster if `data` holds none, and starts it.
    pub fn start(data: &Path) -> Result<DevDb, DevDbError> {
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
        std::fs::create_dir_all(data)?;
        if let Some(user) = &run_as {
            // The directory and its parent must be the server user's.
            for dir in [data.parent().unwrap_or(data), data] {
                run(
                    Path::new("chown"),
                    &[&format!("{user}:{user}"), &dir.display().to_string()],
                    None,
                    "chown",
                )?;
            }
            run(
                Path::new("chmod"),
                &["700", &data.display().to_string()],
                None,
                "chmod",
            )?;
        }
        let data_str = data.display().to_string();
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
            )?;
        }
        let port = free_port()?;
        let options = format!("-p {port} -k {data_str} -c listen_addresses=127.0.0.1 -c fsync=off");
        let db = DevDb {
            pg_ctl: bin.join("pg_ctl"),
            data: data.to_owned(),
            run_as,
            port,
            options,
        };
        db.resume()?;
        Ok(db)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again, after [`DevDb::stop`]) on its port, with its options;
    /// waits until it accepts connections.
    pub fn resume(&self) -> Result<(), DevDbError> {
        let data = self.data.display().to_string();
        let log = self.data.join("server.log").display().to_string();
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
        let log = self.data.join("server.log").display().to_string();
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
        let data = self.data.display().to_string();
        if let Err(e) = run(
            &self.pg_ctl,
            &["-D", &data, "-m", "fast", "-w", "stop"],
            self.run_as.as_deref(),
            "pg_ctl stop",
        ) {
            tracing::warn!(error = %e, "stopping the private PostgreSQL failed");
        }
    }
}
