//! `cairn-bench`: measures Cairn on a fresh database with real `cairn worker` and
//! `cairn api` processes, next to a raw-SQL floor measured in the same run. A tool
//! beside the product, not part of it: the `cairn` binary and library ship without it.
//!
//! The bench creates its own database (`cairn_bench_<ulid>`) through the admin
//! connection in `DATABASE_URL`, applies the migrations, and drops it at the end
//! (unless `--keep`). Workers and the API are the shipped `cairn` binary (`--cairn`, by
//! default the one beside this executable) started as child processes (`cairn worker`,
//! `cairn api`), so what is measured is what ships.
//!
//! Before any scenario it measures the **floor**: a plain table drained by a minimal
//! batched claim-and-delete loop (`delete … where id in (select … for update skip
//! locked limit 100)`) from two connections. Every throughput figure is also reported
//! as a ratio to it, because absolute numbers on shared machines drift.
//!
//! Scenarios (see [`Scenario`]) each start from empty tables, measure, and then verify
//! that every run did what it should (all succeeded, every step checkpointed exactly
//! once). A scenario that fails (a failed check, runs that stop finishing, a process
//! that dies) is reported as an `error` line; the others still run, and `cairn-bench`
//! exits non-zero at the end.
//!
//! Timings come from the database's clock wherever the database records them (a run's
//! `started_at`/`finished_at`, an attempt's `started_at`), so worker start-up and the
//! bench's own polling are not part of any figure.
//!
//! Output: one JSON line per figure on stdout as it is measured
//! (`{"scenario","figure","value","unit","ratio"?,"target"?,"n"?,"note"?}`), then a
//! Markdown table. Progress goes to stderr.

mod db;
mod procs;
mod report;
mod scenarios;

use std::path::PathBuf;
use std::time::Duration;

pub use report::{Figure, OutputFormat};

/// Errors of the bench. A scenario whose runs did not all do what they should is
/// [`BenchError::Incorrect`].
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("DATABASE_URL is not set (give --database-url or set DATABASE_URL)")]
    NoDatabaseUrl,
    #[error("DATABASE_URL is not a URL: {0}")]
    BadUrl(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] cairn_core::store::StoreError),
    #[error(transparent)]
    Engine(#[from] cairn_core::engine::EngineError),
    #[error(transparent)]
    Queue(#[from] cairn_core::queue::QueueError),
    #[error("a bench workflow is invalid: {0}")]
    Workflow(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{0}")]
    Process(String),
    #[error("{scenario}: {what}")]
    Stalled {
        scenario: &'static str,
        what: String,
    },
    #[error("{scenario}: incorrect result: {what}")]
    Incorrect {
        scenario: &'static str,
        what: String,
    },
    #[error("{} scenario(s) failed: {}", .0.len(), .0.join("; "))]
    Failed(Vec<String>),
}

impl BenchError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let what = what.into();
        move |source| BenchError::Io { what, source }
    }
}

pub type Result<T, E = BenchError> = std::result::Result<T, E>;

/// What `--scenario` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Queued one-step no-op runs drained by the workers → runs/s; then a fifth as many
    /// by one worker at concurrency 10 (a small deployment) → runs/s.
    Drain,
    /// Ten-step sequential no-op runs → steps/s.
    Chain,
    /// 1 → 50 parallel → 1 no-op runs → steps/s.
    Fanout,
    /// Idle workers, submissions 10 ms apart → ms from submit to the step's start.
    Pickup,
    /// `POST /api/tasks` over 64 keep-alive connections → runs/s; then ten times as
    /// many runs through `POST /api/tasks/batch`, 500 a request → runs/s; then as many
    /// again, 1,000 a request over one connection → runs/s.
    #[value(name = "submit_http")]
    SubmitHttp,
    /// Drain rate with a large backlog queued vs an empty one; the run list's first page.
    Backlog,
    /// Drain rate over a history of finished runs (`--history`, every table as a
    /// deployment keeps it) vs over empty tables; the run list's first page then.
    History,
    /// Drain rate over `--reap` finished runs past their retention window while the
    /// reaper (`cairn scheduler`) deletes them vs with no reaper; the reaper's rate.
    Retention,
    /// Peak RSS of a worker (drain at high concurrency) and of the API (submit load);
    /// dead tuples in the hot tables after the drain.
    Memory,
    /// Every scenario above, in this order.
    All,
}

impl Scenario {
    /// The scenarios `self` stands for, in running order.
    pub fn expand(self) -> Vec<Scenario> {
        use Scenario::*;
        match self {
            All => vec![
                Drain, Chain, Fanout, Pickup, SubmitHttp, Backlog, History, Retention, Memory,
            ],
            one => vec![one],
        }
    }

    /// The scenarios a `--scenario` list stands for, each once, in running order.
    pub fn expand_all(selected: &[Scenario]) -> Vec<Scenario> {
        let wanted: Vec<Scenario> = selected.iter().flat_map(|s| s.expand()).collect();
        Scenario::All
            .expand()
            .into_iter()
            .filter(|s| wanted.contains(s))
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Drain => "drain",
            Scenario::Chain => "chain",
            Scenario::Fanout => "fanout",
            Scenario::Pickup => "pickup",
            Scenario::SubmitHttp => "submit_http",
            Scenario::Backlog => "backlog",
            Scenario::History => "history",
            Scenario::Retention => "retention",
            Scenario::Memory => "memory",
            Scenario::All => "all",
        }
    }

    /// The scenario's size when `--runs` is not given.
    pub fn default_size(self) -> u64 {
        match self {
            Scenario::Drain => 50_000,
            Scenario::Chain => 5_000,
            Scenario::Fanout => 500,
            Scenario::Pickup => 500,
            Scenario::SubmitHttp => 20_000,
            Scenario::Backlog => 100_000,
            Scenario::History => 20_000,
            Scenario::Retention => 20_000,
            Scenario::Memory => 20_000,
            Scenario::All => 0,
        }
    }
}

/// `cairn-bench` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The `cairn` binary to measure; by default the one beside this executable (a
    /// workspace build puts both in the same target folder).
    #[arg(long, env = "CAIRN_BIN")]
    pub cairn: Option<PathBuf>,
    /// Admin connection (a superuser's): the bench creates its own database through it
    /// and drops it at the end.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Which scenarios to run (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub scenario: Vec<Scenario>,
    /// Size of every selected scenario instead of its default (runs; submissions for
    /// pickup; single requests for submit_http, whose batch part submits ten times as
    /// many runs; the backlog for backlog; the runs drained for history and retention).
    /// Defaults: drain 50,000, chain 5,000, fanout 500, pickup 500, submit_http 20,000,
    /// backlog 100,000, history 20,000, retention 20,000, memory 20,000.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub runs: Option<u64>,
    /// Finished runs the history scenario keeps in every table before it drains.
    #[arg(long, default_value_t = 1_000_000)]
    pub history: u64,
    /// Finished runs past their retention window that the retention scenario's reaper
    /// deletes while the workers drain (and that lie there, undeleted, in its drain
    /// without a reaper).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub reap: u64,
    /// The tables' statistics when the workers start: `analyzed` (what autovacuum
    /// leaves a deployment with; `VACUUM ANALYZE` after seeding) or `fresh` (never
    /// analyzed since emptied: how the bench measured before).
    #[arg(long, value_enum, default_value = "analyzed")]
    pub stats: Stats,
    /// `json`: the JSON lines only; `table`: the Markdown table only; `both`.
    #[arg(short = 'o', long = "output", value_enum, default_value = "both")]
    pub output: OutputFormat,
    /// `cairn worker` processes to start.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub workers: u32,
    /// Each worker's `--concurrency` (memory uses --memory-concurrency); the default is
    /// `cairn worker`'s.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Each worker's and the API's `--db-pool`; the product's default when not given.
    #[arg(long)]
    pub db_pool: Option<u32>,
    /// The workers' `--concurrency` in the memory scenario.
    #[arg(long, default_value_t = 200)]
    pub memory_concurrency: usize,
    /// What every step of the bench's workflows is: `pass` (the engine alone: a step
    /// that does no I/O) or `sql` (`select 1`, a read-only transaction of its own).
    #[arg(long, value_enum, default_value = "pass")]
    pub step: BenchStep,
    /// Keep-alive connections submitting over HTTP.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub connections: u32,
    /// Rows the raw-SQL floor drains (before the scenarios, and again after them when
    /// several ran).
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1_000..))]
    pub floor_rows: u64,
    /// SQL run on the bench database after the migrations, for experiments (e.g. a
    /// per-table autovacuum setting, a dropped trigger): the figures then describe
    /// that variant, not the product.
    #[arg(long)]
    pub setup_sql: Option<String>,
    /// Keep the bench database (its name is printed on stderr).
    #[arg(long)]
    pub keep: bool,
}

/// The planner's statistics when a scenario's workers start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stats {
    /// Every hot table analyzed after seeding, as autovacuum leaves a deployment.
    Analyzed,
    /// Never analyzed since the tables were emptied.
    Fresh,
}

/// The step every bench workflow is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchStep {
    /// `kind = "pass"`: no I/O, what the engine costs on its own.
    Pass,
    /// `kind = "sql"`, `select 1`: one read-only transaction a step.
    Sql,
}

/// The settings a scenario runs with, resolved from [`BenchArgs`].
#[derive(Debug, Clone)]
struct Settings {
    step: BenchStep,
    stats: Stats,
    history: u64,
    reap: u64,
    runs: Option<u64>,
    workers: u32,
    concurrency: usize,
    db_pool: Option<u32>,
    memory_concurrency: usize,
    connections: u32,
    floor_rows: u64,
    /// The `cairn` binary: started as `cairn worker` / `cairn api`.
    exe: PathBuf,
    /// Workflow files for the API, and the children's logs.
    dir: PathBuf,
}

impl Settings {
    fn size(&self, scenario: Scenario) -> u64 {
        self.runs.unwrap_or_else(|| scenario.default_size())
    }
}

/// The `cairn` binary to start: `given`, or `cairn` beside this executable.
fn cairn_binary(given: Option<&std::path::Path>) -> Result<PathBuf> {
    let exe = match given {
        Some(path) => path.to_path_buf(),
        None => std::env::current_exe()
            .map_err(BenchError::io("finding this executable"))?
            .with_file_name(format!("cairn{}", std::env::consts::EXE_SUFFIX)),
    };
    if exe.is_file() {
        Ok(exe)
    } else {
        Err(BenchError::Process(format!(
            "no cairn binary at {}: build the workspace's binaries \
             (`cargo build --release --bins`) or name one with --cairn",
            exe.display()
        )))
    }
}

/// How long the bench waits without any progress before it calls a scenario stalled.
const STALL: Duration = Duration::from_secs(90);

/// Runs the selected scenarios, printing figures as they come; returns them all. Errors
/// (including incorrect results) come after whatever was measured has been printed.
pub async fn run(args: BenchArgs) -> Result<Vec<Figure>> {
    let admin_url = args
        .database_url
        .clone()
        .filter(|u| !u.trim().is_empty())
        .ok_or(BenchError::NoDatabaseUrl)?;
    let exe = cairn_binary(args.cairn.as_deref())?;
    let name = format!(
        "cairn_bench_{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    );
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).map_err(BenchError::io(format!("creating {}", dir.display())))?;
    let settings = Settings {
        step: args.step,
        stats: args.stats,
        history: args.history,
        reap: args.reap,
        runs: args.runs,
        workers: args.workers,
        concurrency: args.concurrency.max(1),
        db_pool: args.db_pool,
        memory_concurrency: args.memory_concurrency.max(1),
        connections: args.connections,
        floor_rows: args.floor_rows,
        exe,
        dir: dir.clone(),
    };
    let mut out = report::Output::new(args.output);

    let database = db::BenchDb::create(&admin_url, &name).await?;
    tracing::info!(database = %name, dir = %dir.display(), "bench database created");
    let selected = Scenario::expand_all(&args.scenario);
    let result = match &args.setup_sql {
        Some(sql) => {
            out.emit(Figure::absent(
                "setup",
                "setup_sql",
                "",
                &format!("an experiment, not the product: {sql}"),
            ));
            database.setup(sql).await
        }
        None => Ok(()),
    };
    let result = match result {
        Ok(()) => scenarios::run_all(&database, &settings, &selected, &mut out).await,
        Err(e) => Err(e),
    };
    let dropped = if args.keep {
        tracing::info!(database = %name, "kept the bench database (--keep)");
        database.close().await;
        Ok(())
    } else {
        database.drop_database().await
    };
    out.finish();
    if result.is_ok() && !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!(
            "bench: workflow files and worker/API logs are in {}",
            dir.display()
        );
    }
    result?;
    dropped?;
    Ok(out.into_figures())
}
