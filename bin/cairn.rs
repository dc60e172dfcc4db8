//! `cairn`: the services. `migrate`, `api`, `worker`, `scheduler`, and `dev` (api,
//! worker and scheduler in one process). Configuration comes from flags and the
//! environment (see `--help`).

use anyhow::{Context, Result};
use cairn::config::{
    ApiArgs, DatabaseArgs, DevArgs, MetricsArgs, SchedulerArgs, WebhookArgs, WorkerArgs,
    WorkflowArgs,
};
use cairn::startup::{self, PoolKind, close};
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
        #[command(flatten)]
        metrics: MetricsArgs,
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
        #[command(flatten)]
        metrics: MetricsArgs,
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

/// The flag an API address comes from, for errors.
const LISTEN_FLAG: &str = "--listen, CAIRN_LISTEN";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let _traces = cairn::telemetry::init(cli.log_json);
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
        Command::Migrate { db } => {
            let pool = startup::connect(&db, PoolKind::Plain, false).await?;
            cairn::queue::migrate(&pool)
                .await
                .context("applying migrations")?;
            close(pool).await;
            println!("migrations applied");
        }
        Command::Admin { db, command } => {
            let pool = startup::connect(&db, PoolKind::Plain, true).await?;
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
            let registry = startup::load_workflows(&workflows)?;
            let listener = startup::bind(
                api.listen().unwrap_or(cairn::config::DEFAULT_LISTEN),
                LISTEN_FLAG,
            )
            .await?;
            let pool = startup::connect_api(&db, &api).await?;
            let served = async {
                startup::Api::build(listener, pool.clone(), registry, &api, webhook.secret())
                    .await?
                    .run(cairn::shutdown::on_signal())
                    .await
            }
            .await;
            close(pool).await;
            served?;
        }
        Command::Worker {
            db,
            worker,
            metrics,
        } => {
            let metrics = startup::metrics_listener(&metrics).await?;
            let pool = startup::connect(&db, PoolKind::Quiet, true).await?;
            let settings = startup::worker_settings(&worker, &db).await?;
            let step_pool = settings.step_pool.clone();
            let ran = startup::serving_metrics(
                metrics,
                cairn::worker::run(pool.clone(), settings, cairn::shutdown::on_signal()),
            )
            .await;
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
            metrics,
        } => {
            let registry = startup::load_workflows(&workflows)?;
            let metrics = startup::metrics_listener(&metrics).await?;
            let pool = startup::connect(&db, PoolKind::Plain, true).await?;
            let ran = startup::serving_metrics(
                metrics,
                startup::run_scheduler(
                    pool.clone(),
                    registry,
                    &scheduler,
                    false,
                    cairn::shutdown::on_signal(),
                ),
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
    let registry = startup::load_workflows(&workflows)?;
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
        (Some(addr), _) => startup::bind(addr, LISTEN_FLAG).await?,
        (None, Some(last)) => match tokio::net::TcpListener::bind(&last).await {
            Ok(l) => l,
            Err(e) => {
                let l = startup::bind("127.0.0.1:0", LISTEN_FLAG).await?;
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
            Err(_) if home.is_some() => startup::bind("127.0.0.1:0", LISTEN_FLAG).await?,
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
    let pool = startup::connect(&db, PoolKind::Plain, true).await?;
    let mut settings = startup::worker_settings(&worker, &db).await?;
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
    let api_pool = startup::connect_api(&api_db, &api).await?;
    let server = startup::Api::build(
        listener,
        api_pool.clone(),
        registry.clone(),
        &api,
        worker.webhook.secret(),
    )
    .await?;
    let shutdown = cairn::shutdown::on_signal();
    let (a, w, s) = tokio::join!(
        server.run(shutdown.clone()),
        cairn::worker::run(pool.clone(), settings, shutdown.clone()),
        startup::run_scheduler(pool.clone(), registry, &scheduler, true, shutdown.clone()),
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
