//! `cairn`: the services. `migrate`, `api`, `worker`, `scheduler`, and `dev` (api,
//! worker and scheduler in one process). Configuration comes from flags and the
//! environment (see `--help`).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use cairn::config::{
    ApiArgs, DatabaseArgs, DevArgs, SchedulerArgs, WebhookArgs, WorkerArgs, WorkflowArgs,
};
use cairn::worker::WorkerSettings;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    version,
    about = "Durable workflows for AI/agent work, on Postgres alone."
)]
struct Cli {
    /// Log as JSON lines.
    #[arg(long, env = "CAIRN_LOG_JSON", global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Apply Cairn's and apalis' database migrations, then exit.
    Migrate {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Serve the HTTP API.
    Api {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        workflows: WorkflowArgs,
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        webhook: WebhookArgs,
    },
    /// Run workflow steps.
    Worker {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        worker: WorkerArgs,
    },
    /// Start schedules' runs at their cron ticks: each tick once, however many
    /// schedulers run. Syncs the workflow files' `[[schedules]]` on start.
    Scheduler {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        workflows: WorkflowArgs,
        #[command(flatten)]
        scheduler: SchedulerArgs,
    },
    /// Users and tokens, from the shell (e.g. the first admin).
    Admin {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// The API (with the dashboard), a worker and a scheduler in one process, for a
    /// laptop: without DATABASE_URL on a private PostgreSQL in --data-dir, kept between
    /// starts with the same port and token.
    Dev {
        #[command(flatten)]
        dev: DevArgs,
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        workflows: WorkflowArgs,
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        worker: WorkerArgs,
        #[command(flatten)]
        scheduler: SchedulerArgs,
    },
    /// Measure throughput, latency and memory on a fresh database with real worker
    /// and API processes, next to a raw-SQL floor (docs/BENCHMARKS.md).
    Bench(cairn::bench::BenchArgs),
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create a user who can sign in to the dashboard.
    CreateUser {
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "admin")]
        role: cairn::auth::Role,
        /// The password (prefer --password-stdin).
        #[arg(long, conflicts_with = "password_stdin")]
        password: Option<String>,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Create an API token; prints only the token.
    CreateToken {
        #[arg(long)]
        role: cairn::auth::Role,
        #[arg(long, default_value = "cli")]
        name: String,
        /// When the token stops working: a duration (`90d`, `12h`), or `never`.
        #[arg(long, default_value = "90d")]
        expires_in: cairn::config::Ttl,
    },
}

async fn connect(db: &DatabaseArgs, migrate: bool) -> Result<sqlx::PgPool> {
    connect_as(db, migrate, false).await
}

/// `quiet`: events appended on this pool do not notify (workers announce them).
async fn connect_as(db: &DatabaseArgs, migrate: bool, quiet: bool) -> Result<sqlx::PgPool> {
    let url = db
        .database_url
        .as_deref()
        .context("DATABASE_URL is not set (give --database-url or set DATABASE_URL)")?;
    // A database that is down or restarting is waited for, up to --db-connect-timeout.
    let migrate = migrate && !db.no_migrate;
    let pool = cairn::store::connect::retrying("connecting", db.db_connect_timeout.0, || async {
        cairn::store::connect::probe(url).await?;
        let pool = if quiet {
            cairn::store::connect_quiet(url, db.db_pool).await
        } else {
            cairn::store::connect(url, db.db_pool).await
        }?;
        if migrate && let Err(e) = cairn::store::migrate(&pool).await {
            pool.close().await;
            return Err(e);
        }
        Ok(pool)
    })
    .await
    .context("connecting to the database and applying migrations")?;
    Ok(pool)
}

/// The API's pool, whose statements time out (`--statement-timeout`). Migrations run
/// first, on a connection of their own: they may rightly take longer than a request.
async fn connect_api(db: &DatabaseArgs, api: &ApiArgs) -> Result<sqlx::PgPool> {
    if !db.no_migrate {
        let one = DatabaseArgs {
            db_pool: 1,
            ..db.clone()
        };
        close(connect(&one, true).await?).await;
    }
    let url = db
        .database_url
        .as_deref()
        .context("DATABASE_URL is not set (give --database-url or set DATABASE_URL)")?;
    // Waited for like every other pool (see `connect_as`).
    cairn::store::connect::retrying("connecting", db.db_connect_timeout.0, || async {
        cairn::store::connect::probe(url).await?;
        cairn::store::connect_api(url, db.db_pool, api.statement_timeout).await
    })
    .await
    .context("connecting to the database")
}

fn load_workflows(args: &WorkflowArgs) -> Result<Arc<cairn::workflow::Registry>> {
    check_workflows_dir(args)?;
    let registry = cairn::workflow::Registry::load_dir(&args.workflows_dir)
        .with_context(|| format!("loading workflows from {}", args.workflows_dir.display()))?;
    tracing::info!(workflows = ?registry.names(), dir = %args.workflows_dir.display(), "workflows loaded");
    Ok(Arc::new(registry))
}

/// A missing workflows folder is a usage mistake (a command started outside the
/// checkout), told in one line with the way to point at it.
fn check_workflows_dir(args: &WorkflowArgs) -> Result<()> {
    let dir = &args.workflows_dir;
    if !dir.is_dir() {
        let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
        anyhow::bail!(
            "no workflows folder at {} (looked for {}); run this from the checkout, or point \
             at the folder with --workflows-dir DIR or CAIRN_WORKFLOWS_DIR=DIR",
            abs.display(),
            dir.display()
        );
    }
    Ok(())
}

async fn worker_settings(w: &WorkerArgs, db: &DatabaseArgs) -> Result<WorkerSettings> {
    let env: BTreeMap<String, String> = w
        .template_env
        .iter()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
        .filter_map(|n| std::env::var(n).ok().map(|v| (n.to_owned(), v)))
        .collect();
    let egress_allow = w
        .egress_allow()
        .context("CAIRN_EGRESS_ALLOW (--egress-allow)")?;
    // Its own pool, so `sql` steps act with that role's rights only.
    let step_pool = match w
        .step_database_url
        .as_deref()
        .filter(|u| !u.trim().is_empty())
    {
        Some(url) => Some(
            cairn::store::connect(url, db.db_pool)
                .await
                .context("connecting to CAIRN_STEP_DATABASE_URL")?,
        ),
        None => None,
    };
    Ok(WorkerSettings {
        concurrency: w.concurrency.max(1),
        lease: w.lease,
        poll_interval: w.poll_interval,
        shutdown_grace: w.shutdown_grace,
        env,
        llm: w.llm(),
        egress_allow,
        limits: w.limits(),
        step_pool,
        webhook_secret: w.webhook.secret(),
    })
}

fn scheduler_settings(s: &SchedulerArgs) -> cairn::scheduler::SchedulerSettings {
    cairn::scheduler::SchedulerSettings {
        poll_interval: s.scheduler_poll,
        retention: Some(s.retention.settings()),
        ..Default::default()
    }
}

async fn run_scheduler(
    pool: sqlx::PgPool,
    workflows: Arc<cairn::workflow::Registry>,
    args: &SchedulerArgs,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<()> {
    cairn::scheduler::run(
        pool,
        workflows,
        scheduler_settings(args),
        Arc::new(cairn::scheduler::SystemClock),
        shutdown,
    )
    .await?;
    Ok(())
}

async fn bind(addr: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr} (--listen, CAIRN_LISTEN)"))
}

async fn serve_api(
    listener: tokio::net::TcpListener,
    pool: sqlx::PgPool,
    workflows: Arc<cairn::workflow::Registry>,
    api: &ApiArgs,
    webhook_secret: Option<String>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "API listening");
    let mut state = cairn::api::AppState::new(pool, workflows);
    state.cookie_secure = api.cookie_secure;
    state.token_ttl = api.token_ttl.0;
    state.login = Arc::new(cairn::api::auth::LoginGuard::new(
        api.login_rate,
        api.trust_forwarded_for,
    ));
    state.static_dir = api.static_dir().map(ToOwned::to_owned);
    state.webhook_secret = webhook_secret;
    state.prices = Arc::new(
        cairn::api::projects::Prices::parse(&api.llm_prices)
            .map_err(|e| anyhow::anyhow!("CAIRN_LLM_PRICES: {e}"))?,
    );
    state.limits = api.limits();
    match api.metrics_listen.as_deref().map(str::trim) {
        Some(addr) if !addr.is_empty() => {
            let metrics = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr} for metrics"))?;
            tracing::info!(addr = %metrics.local_addr()?, "metrics listening");
            tokio::try_join!(
                cairn::api::serve(listener, state.clone(), shutdown.clone()),
                cairn::api::serve_metrics(metrics, state, shutdown),
            )?;
        }
        _ => cairn::api::serve(listener, state, shutdown).await?,
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cairn::telemetry::init(cli.log_json);
    match run(cli.command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The causes on one line; no backtrace, whatever RUST_BACKTRACE says.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Bench(args) => {
            cairn::bench::run(args).await?;
        }
        Command::Migrate { db } => {
            let pool = connect(&db, false).await?;
            cairn::store::migrate(&pool)
                .await
                .context("applying migrations")?;
            close(pool).await;
            println!("migrations applied");
        }
        Command::Admin { db, command } => {
            let pool = connect(&db, true).await?;
            match command {
                AdminCommand::CreateUser {
                    email,
                    name,
                    role,
                    password,
                    password_stdin,
                } => {
                    let password = match (password, password_stdin) {
                        (Some(p), _) => p,
                        (None, true) => {
                            let mut line = String::new();
                            std::io::stdin()
                                .read_line(&mut line)
                                .context("reading the password")?;
                            line.trim_end_matches(['\n', '\r']).to_owned()
                        }
                        (None, false) => anyhow::bail!("give --password or --password-stdin"),
                    };
                    anyhow::ensure!(
                        password.chars().count() >= 8,
                        "the password must be at least 8 characters"
                    );
                    let user = cairn::auth::create_user(&pool, &email, &name, &password, role)
                        .await
                        .map_err(|e| match e.constraint() {
                            Some("users_email") => anyhow::anyhow!(
                                "a user with the email {email} exists already; change them with \
                                 PATCH /api/users/{{id}} (role, password, disabled) or pick another email"
                            ),
                            _ => e.into(),
                        })?;
                    println!("created {} user {} ({})", user.role, user.email, user.id);
                }
                AdminCommand::CreateToken {
                    role,
                    name,
                    expires_in,
                } => {
                    let token = cairn::auth::create_token(&pool, &name, role, expires_in.0).await?;
                    println!("{token}");
                }
            }
            close(pool).await;
        }
        Command::Api {
            db,
            workflows,
            api,
            webhook,
        } => {
            let registry = load_workflows(&workflows)?;
            let listener = bind(api.listen().unwrap_or(cairn::config::DEFAULT_LISTEN)).await?;
            let pool = connect_api(&db, &api).await?;
            let served = serve_api(
                listener,
                pool.clone(),
                registry,
                &api,
                webhook.secret(),
                cairn::shutdown::on_signal(),
            )
            .await;
            close(pool).await;
            served?;
        }
        Command::Worker { db, worker } => {
            let pool = connect_as(&db, true, true).await?;
            let settings = worker_settings(&worker, &db).await?;
            let step_pool = settings.step_pool.clone();
            let ran =
                cairn::worker::run(pool.clone(), settings, cairn::shutdown::on_signal()).await;
            if let Some(p) = step_pool {
                close(p).await;
            }
            close(pool).await;
            ran?;
        }
        Command::Scheduler {
            db,
            workflows,
            scheduler,
        } => {
            let registry = load_workflows(&workflows)?;
            let pool = connect(&db, true).await?;
            let ran = run_scheduler(
                pool.clone(),
                registry,
                &scheduler,
                cairn::shutdown::on_signal(),
            )
            .await;
            close(pool).await;
            ran?;
        }
        Command::Dev {
            dev,
            db,
            workflows,
            api,
            worker,
            scheduler,
        } => run_dev(dev, db, workflows, api, worker, scheduler).await?,
    }
    Ok(())
}

/// `cairn dev`: on DATABASE_URL, or on a private PostgreSQL in its folder, which also
/// keeps the port and the token from one start to the next.
async fn run_dev(
    dev: DevArgs,
    mut db: DatabaseArgs,
    workflows: WorkflowArgs,
    api: ApiArgs,
    worker: WorkerArgs,
    scheduler: SchedulerArgs,
) -> Result<()> {
    let registry = load_workflows(&workflows)?;
    // Without a database, a private one, in a folder that only this process uses.
    let mut home = match db.database_url {
        Some(_) => None,
        None => {
            let dir = dev
                .data_dir
                .clone()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or_else(|| cairn::devdb::DevDir::default_for(&workflows.workflows_dir));
            Some(cairn::devdb::DevDir::open(&dir)?)
        }
    };
    let listener = match (
        api.listen(),
        home.as_ref().and_then(|h| h.state.listen.clone()),
    ) {
        (Some(addr), _) => bind(addr).await?,
        (None, Some(last)) => match tokio::net::TcpListener::bind(&last).await {
            Ok(l) => l,
            Err(e) => {
                let l = bind("127.0.0.1:0").await?;
                tracing::warn!(
                    addr = %last, error = %e,
                    "where cairn dev listened last time is taken; listening on {} instead (kept for next time)",
                    l.local_addr()?
                );
                l
            }
        },
        // The first start: 8080 unless another program (or another cairn dev) has it.
        (None, None) => match tokio::net::TcpListener::bind(cairn::config::DEFAULT_LISTEN).await {
            Ok(l) => l,
            Err(_) if home.is_some() => bind("127.0.0.1:0").await?,
            Err(e) => {
                return Err(e).context(format!("listening on {}", cairn::config::DEFAULT_LISTEN));
            }
        },
    };
    let addr = listener.local_addr()?;
    let private = match home.as_mut() {
        Some(home) => {
            let started =
                tokio::task::block_in_place(|| home.start_postgres()).with_context(|| {
                    format!("starting a private PostgreSQL in {}", home.path().display())
                })?;
            db.database_url = Some(started.url());
            home.state.listen = Some(addr.to_string());
            Some(started)
        }
        None => None,
    };
    let pool = connect(&db, true).await?;
    let mut settings = worker_settings(&worker, &db).await?;
    for entry in cairn::step::EgressAllow::loopback() {
        settings.egress_allow.push(entry);
    }
    tracing::info!(
        "cairn dev: http steps may reach loopback (127.0.0.0/8, ::1) as well as public \
         addresses; `cairn worker` refuses loopback unless CAIRN_EGRESS_ALLOW lists it"
    );
    if let (Some(home), Some(pg)) = (home.as_mut(), &private) {
        let token = home.token(&pool, dev.new_token).await?;
        home.save()?;
        println!("DATABASE_URL={}", pg.url());
        println!("CAIRN_API_URL=http://{addr}");
        println!("CAIRN_TOKEN={token}");
        println!("CAIRN_DATA_DIR={}", home.path().display());
        tracing::info!(
            dashboard = %format!("http://{addr}/"),
            data = %home.path().display(),
            log = %pg.log().display(),
            "cairn dev is ready; the same port and token next time (--listen, --new-token change them)"
        );
    }
    // The API's own pool, with its statement timeout (the worker's has none).
    let api_db = DatabaseArgs {
        no_migrate: true,
        ..db.clone()
    };
    let api_pool = connect_api(&api_db, &api).await?;
    let shutdown = cairn::shutdown::on_signal();
    let (a, w, s) = tokio::join!(
        serve_api(
            listener,
            api_pool.clone(),
            registry.clone(),
            &api,
            worker.webhook.secret(),
            shutdown.clone()
        ),
        cairn::worker::run(pool.clone(), settings, shutdown.clone()),
        run_scheduler(pool.clone(), registry, &scheduler, shutdown.clone()),
    );
    // Every connection closed before the database stops: it logs nothing as lost.
    close(api_pool).await;
    close(pool).await;
    if let Some(pg) = private {
        tokio::task::block_in_place(|| drop(pg));
    }
    drop(home);
    a?;
    w?;
    s?;
    Ok(())
}

/// Closes a service's connections properly on the way out (the server otherwise logs
/// each as reset by its client), waiting a few seconds at most.
async fn close(pool: sqlx::PgPool) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), pool.close()).await;
}
