//! The wiring of every Cairn process: from flags to connected pools, loaded workflows,
//! settings and a served API. The binaries call it and so do the tests, so what a test
//! starts is what `cairn api`, `cairn worker`, `cairn scheduler` and `cairn dev` start.
//!
//! Above everything else in the house: it may use any module, and none uses it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::AppState;
use crate::config::{ApiArgs, DatabaseArgs, MetricsArgs, SchedulerArgs, WorkerArgs, WorkflowArgs};
use crate::queue::{self, QueueError};
use crate::scheduler::{self, SchedulerError, SchedulerSettings};
use crate::store::{self, StoreError, connect::ConnectError};
use crate::worker::WorkerSettings;
use crate::workflow::{Registry, WorkflowError};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("DATABASE_URL is not set (give --database-url or set DATABASE_URL)")]
    NoDatabase,
    #[error("connecting to the database and applying migrations: {0}")]
    Migrate(#[from] ConnectError<QueueError>),
    #[error("connecting to the database: {0}")]
    Connect(#[from] ConnectError<StoreError>),
    #[error("{what}: {source}")]
    Store {
        what: &'static str,
        source: StoreError,
    },
    /// A workflows folder that is not there: a command started outside the checkout.
    #[error(
        "no workflows folder at {} (looked for {}); run this from the checkout, or point at \
         the folder with --workflows-dir DIR or CAIRN_WORKFLOWS_DIR=DIR",
        absolute.display(),
        given.display()
    )]
    NoWorkflowsDir { absolute: PathBuf, given: PathBuf },
    #[error("loading workflows from {}: {source}", dir.display())]
    Workflows { dir: PathBuf, source: WorkflowError },
    #[error("listening on {addr} ({flag}): {source}")]
    Listen {
        addr: String,
        flag: &'static str,
        source: std::io::Error,
    },
    /// A flag's value that does not parse.
    #[error("{flag}: {message}")]
    Setting { flag: &'static str, message: String },
    #[error("serving the API: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
}

pub type Result<T, E = StartupError> = std::result::Result<T, E>;

/// What a process's pool is for (see [`connect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// A scheduler's, `cairn migrate`'s, `cairn admin`'s: events appended on it notify.
    Plain,
    /// A worker's: events appended on it do not notify (the worker announces them).
    Quiet,
}

/// Connects to `--database-url`, waiting up to `--db-connect-timeout` for a database
/// that is down or restarting, and (unless `--no-migrate`, or `migrate` is false) brings
/// it up to date first.
pub async fn connect(db: &DatabaseArgs, kind: PoolKind, migrate: bool) -> Result<PgPool> {
    let url = database_url(db)?;
    let migrate = migrate && !db.no_migrate;
    let pool = store::connect::retrying("connecting", db.db_connect_timeout.0, || async {
        store::connect::probe(url).await?;
        let pool = match kind {
            PoolKind::Quiet => store::connect_quiet(url, db.db_pool).await,
            PoolKind::Plain => store::connect(url, db.db_pool).await,
        }?;
        if migrate && let Err(e) = queue::migrate(&pool).await {
            pool.close().await;
            return Err(e);
        }
        Ok(pool)
    })
    .await?;
    Ok(pool)
}

/// The API's pool, whose statements time out (`--statement-timeout`). Migrations run
/// first, on a connection of their own: they may rightly take longer than a request.
pub async fn connect_api(db: &DatabaseArgs, api: &ApiArgs) -> Result<PgPool> {
    if !db.no_migrate {
        let one = DatabaseArgs {
            db_pool: 1,
            ..db.clone()
        };
        close(connect(&one, PoolKind::Plain, true).await?).await;
    }
    let url = database_url(db)?;
    Ok(
        store::connect::retrying("connecting", db.db_connect_timeout.0, || async {
            store::connect::probe(url).await?;
            store::connect_api(url, db.db_pool, api.statement_timeout).await
        })
        .await?,
    )
}

fn database_url(db: &DatabaseArgs) -> Result<&str> {
    db.database_url
        .as_deref()
        .filter(|u| !u.trim().is_empty())
        .ok_or(StartupError::NoDatabase)
}

pub use crate::store::close;

/// The workflow definitions in `--workflows-dir`, checked.
pub fn load_workflows(args: &WorkflowArgs) -> Result<Arc<Registry>> {
    let dir = &args.workflows_dir;
    if !dir.is_dir() {
        return Err(StartupError::NoWorkflowsDir {
            absolute: std::path::absolute(dir).unwrap_or_else(|_| dir.clone()),
            given: dir.clone(),
        });
    }
    let registry = Registry::load_dir(dir).map_err(|source| StartupError::Workflows {
        dir: dir.clone(),
        source,
    })?;
    tracing::info!(workflows = ?registry.names(), dir = %dir.display(), "workflows loaded");
    Ok(Arc::new(registry))
}

/// A worker's settings from its flags; with `--step-database-url`, the pool `sql` steps
/// run on (so they act with that role's rights only).
pub async fn worker_settings(w: &WorkerArgs, db: &DatabaseArgs) -> Result<WorkerSettings> {
    let env: BTreeMap<String, String> = w
        .template_env
        .iter()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
        .filter_map(|n| std::env::var(n).ok().map(|v| (n.to_owned(), v)))
        .collect();
    let egress_allow = w.egress_allow().map_err(|e| StartupError::Setting {
        flag: "CAIRN_EGRESS_ALLOW (--egress-allow)",
        message: e.to_string(),
    })?;
    let step_pool =
        match w
            .step_database_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
        {
            Some(url) => Some(store::connect(url, db.db_pool).await.map_err(|source| {
                StartupError::Store {
                    what: "connecting to CAIRN_STEP_DATABASE_URL",
                    source,
                }
            })?),
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

/// Runs a scheduler with its flags until `shutdown`; `notify_loopback` lets its
/// notifier reach loopback (`cairn dev`).
pub async fn run_scheduler(
    pool: PgPool,
    workflows: Arc<Registry>,
    args: &SchedulerArgs,
    notify_loopback: bool,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut notify = args
        .notify
        .settings()
        .map_err(|(flag, message)| StartupError::Setting { flag, message })?;
    if notify_loopback {
        for entry in crate::step::EgressAllow::loopback() {
            notify.egress_allow.push(entry);
        }
    }
    let settings = SchedulerSettings {
        poll_interval: args.scheduler_poll,
        retention: Some(args.retention.settings()),
        notify: Some(notify),
        ..Default::default()
    };
    scheduler::run(
        pool,
        workflows,
        settings,
        Arc::new(scheduler::SystemClock),
        shutdown,
    )
    .await?;
    Ok(())
}

/// Listens on `addr`; `flag` names the setting it came from, for the error.
pub async fn bind(addr: &str, flag: &'static str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Listen {
            addr: addr.to_owned(),
            flag,
            source,
        })
}

/// A worker's or scheduler's `--metrics-listen` listener, bound (so a taken address
/// fails the start), with recording started; `None` without the flag.
pub async fn metrics_listener(args: &MetricsArgs) -> Result<Option<TcpListener>> {
    match args.listen() {
        Some(addr) => {
            let listener = bind(addr, "--metrics-listen, CAIRN_METRICS_LISTEN").await?;
            crate::telemetry::metrics::install();
            Ok(Some(listener))
        }
        None => Ok(None),
    }
}

/// Runs `service` and, while it runs, serves this process's metrics on `listener`.
pub async fn serving_metrics<T, E>(
    listener: Option<TcpListener>,
    service: impl std::future::Future<Output = std::result::Result<T, E>>,
) -> std::result::Result<T, E> {
    let Some(listener) = listener else {
        return service.await;
    };
    let stop = CancellationToken::new();
    let server = tokio::spawn(crate::telemetry::metrics::serve(listener, stop.clone()));
    let out = service.await;
    stop.cancel();
    match server.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "serving metrics failed"),
        Err(e) => tracing::warn!(error = %e, "the metrics server stopped"),
        Ok(Ok(())) => {}
    }
    out
}

/// The API, bound and configured, not yet serving: [`Api::build`] then [`Api::run`].
/// Tests adjust [`Api::state`] in between.
pub struct Api {
    listener: TcpListener,
    /// `--metrics-listen`'s listener, when `/metrics` is served apart.
    metrics: Option<TcpListener>,
    pub state: AppState,
}

impl Api {
    /// The API on `listener` with `api`'s settings, serving `workflows` from `pool` (an
    /// API pool: [`connect_api`]); `webhook_secret` checks agent deliveries.
    pub async fn build(
        listener: TcpListener,
        pool: PgPool,
        workflows: Arc<Registry>,
        api: &ApiArgs,
        webhook_secret: Option<String>,
    ) -> Result<Api> {
        crate::telemetry::metrics::install();
        let mut state = AppState::new(pool, workflows);
        state.cookie_secure = api.cookie_secure;
        state.token_ttl = api.token_ttl.0;
        state.login = Arc::new(crate::api::auth::LoginGuard::new(
            api.login_rate,
            api.trust_forwarded_for,
        ));
        state.static_dir = api.static_dir().map(ToOwned::to_owned);
        state.webhook_secret = webhook_secret;
        state.prices = Arc::new(
            crate::api::projects::Prices::parse(&api.llm_prices).map_err(|message| {
                StartupError::Setting {
                    flag: "CAIRN_LLM_PRICES (--llm-prices)",
                    message,
                }
            })?,
        );
        state.limits = api.limits();
        let metrics = match api.metrics_listen.as_deref().map(str::trim) {
            Some(addr) if !addr.is_empty() => {
                Some(bind(addr, "--metrics-listen, CAIRN_METRICS_LISTEN").await?)
            }
            _ => None,
        };
        Ok(Api {
            listener,
            metrics,
            state,
        })
    }

    /// Where the API listens.
    pub fn addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(StartupError::Serve)
    }

    /// Where `/metrics` is served apart (`--metrics-listen`), if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|m| m.local_addr().ok())
    }

    /// Serves until `shutdown` is cancelled and the open requests are answered.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        tracing::info!(addr = %self.addr()?, "API listening");
        let submits = self.state.submits.clone();
        let events = self.state.events.clone();
        match self.metrics {
            Some(metrics) => {
                if let Ok(addr) = metrics.local_addr() {
                    tracing::info!(%addr, "metrics listening");
                }
                tokio::try_join!(
                    crate::api::serve(self.listener, self.state.clone(), shutdown.clone()),
                    crate::api::serve_metrics(metrics, self.state, shutdown),
                )
                .map_err(StartupError::Serve)?;
            }
            None => crate::api::serve(self.listener, self.state, shutdown)
                .await
                .map_err(StartupError::Serve)?,
        }
        // Every request is answered: the submitter's and the event listener's
        // connections close before the caller closes the API's pool (and `cairn dev`
        // stops its database).
        submits.close().await;
        events.closed().await;
        Ok(())
    }
}
