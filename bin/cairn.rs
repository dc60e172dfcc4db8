//! `cairn`: the services. `migrate`, `api`, `worker`, `scheduler`, and `dev` (api,
//! worker and scheduler in one process). Configuration comes from flags and the
//! environment (see `--help`).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use cairn::config::{ApiArgs, DatabaseArgs, SchedulerArgs, WebhookArgs, WorkerArgs, WorkflowArgs};
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
    /// The API, a worker and a scheduler in one process, for a laptop.
    Dev {
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
    let registry = cairn::workflow::Registry::load_dir(&args.workflows_dir)
        .with_context(|| format!("loading workflows from {}", args.workflows_dir.display()))?;
    tracing::info!(workflows = ?registry.names(), dir = %args.workflows_dir.display(), "workflows loaded");
    Ok(Arc::new(registry))
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

async fn serve_api(
    pool: sqlx::PgPool,
    workflows: Arc<cairn::workflow::Registry>,
    api: &ApiArgs,
    webhook_secret: Option<String>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(&api.listen)
        .await
        .with_context(|| format!("listening on {}", api.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "API listening");
    let mut state = cairn::api::AppState::new(pool, workflows);
    state.cookie_secure = api.cookie_secure;
    state.token_ttl = api.token_ttl.0;
    state.login = Arc::new(cairn::api::auth::LoginGuard::new(
        api.login_rate,
        api.trust_forwarded_for,
    ));
    state.static_dir = Some(api.static_dir.clone());
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
async fn main() -> Result<()> {
    let cli = Cli::parse();
    cairn::telemetry::init(cli.log_json);
    match cli.command {
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
            let pool = connect_api(&db, &api).await?;
            let served = serve_api(
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
            mut db,
            workflows,
            api,
            worker,
            scheduler,
        } => {
            let registry = load_workflows(&workflows)?;
            // Without a database, a private one for as long as this process runs.
            let private = match db.database_url {
                Some(_) => None,
                None => {
                    let dir = cairn::devdb::DevDb::default_dir();
                    let pg = tokio::task::spawn_blocking(move || cairn::devdb::DevDb::start(&dir))
                        .await?
                        .context("starting a private PostgreSQL")?;
                    db.database_url = Some(pg.url());
                    Some(pg)
                }
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
            if let Some(pg) = &private {
                let token = cairn::auth::create_token(
                    &pool,
                    "cairn dev",
                    cairn::auth::Role::Admin,
                    Some(cairn::auth::TOKEN_TTL),
                )
                .await?;
                println!("DATABASE_URL={}", pg.url());
                println!("CAIRN_API_URL=http://{}", api.listen);
                println!("CAIRN_TOKEN={token}");
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
                    api_pool,
                    registry.clone(),
                    &api,
                    worker.webhook.secret(),
                    shutdown.clone()
                ),
                cairn::worker::run(pool.clone(), settings, shutdown.clone()),
                run_scheduler(pool, registry, &scheduler, shutdown.clone()),
            );
            drop(private);
            a?;
            w?;
            s?;
        }
    }
    Ok(())
}

/// Closes a service's connections properly on the way out (the server otherwise logs
/// each as reset by its client), waiting a few seconds at most.
async fn close(pool: sqlx::PgPool) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), pool.close()).await;
}
