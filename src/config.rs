//! Configuration shared by the binaries: flags with environment fallbacks. The doc
//! comments are the `--help` text; `.env.example` lists the same variables.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Where the database is.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL (`cairn dev` starts a private PostgreSQL without one).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Connections in this process's pool, at least 1 (a worker holds three more of its
    /// own, a scheduler two; `cairn api` one for live event streams, and up to as many
    /// again as the pool, for writing submitted runs).
    #[arg(long, env = "CAIRN_DB_POOL", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub db_pool: u32,
    /// Do not apply migrations on start (run `cairn migrate` yourself).
    #[arg(long, env = "CAIRN_NO_MIGRATE")]
    pub no_migrate: bool,
    /// How long a starting service waits for an unreachable database (refusing
    /// connections, starting up, shutting down), trying again with backoff and logging
    /// each try, before it exits: a duration, or `0` / `never` to wait for ever.
    #[arg(long, env = "CAIRN_DB_CONNECT_TIMEOUT", default_value = "60s")]
    pub db_connect_timeout: Ttl,
}

/// Where workflow definitions are read from.
#[derive(Debug, Clone, Args)]
pub struct WorkflowArgs {
    /// Directory of `*.toml` workflow definitions.
    #[arg(long, env = "CAIRN_WORKFLOWS_DIR", default_value = "./workflows")]
    pub workflows_dir: PathBuf,
}

/// `cairn api`.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Address to listen on [default: 127.0.0.1:8080; `cairn dev`: where it listened
    /// last time, or a free port when 8080 is taken].
    #[arg(long, env = "CAIRN_LISTEN")]
    pub listen: Option<String>,
    /// Serve the dashboard from this directory (e.g. `./frontend/dist`, for working on
    /// it) instead of the copy built into the binary.
    #[arg(long, env = "CAIRN_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,
    /// Mark the session cookie Secure (serve over HTTPS).
    #[arg(long, env = "CAIRN_COOKIE_SECURE")]
    pub cookie_secure: bool,
    /// LLM prices for billing estimates, in USD per million tokens:
    /// `model=prompt/completion,…` (e.g. `gpt-4o-mini=0.15/0.60`).
    #[arg(long, env = "CAIRN_LLM_PRICES", default_value = "")]
    pub llm_prices: String,
    /// How long tokens made through the API live unless the request asks for less (`ctl
    /// login`'s, the dashboard's): a duration (`90d`), or `never`.
    #[arg(long, env = "CAIRN_TOKEN_TTL", default_value = "90d")]
    pub token_ttl: Ttl,
    /// Sign-in attempts allowed per minute from one client address, and for one account
    /// (each a separate budget); past it, 429 with `Retry-After`.
    #[arg(long, env = "CAIRN_LOGIN_RATE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub login_rate: u32,
    /// Take the client address for sign-in limits from the last `X-Forwarded-For` entry
    /// (set this only behind a proxy that appends it, such as a load balancer).
    #[arg(long, env = "CAIRN_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,
    /// Serve `/metrics` on this address instead, without authentication (then it is not
    /// on the main listener, where it needs a viewer). Keep it off the public network.
    #[arg(long, env = "CAIRN_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Longest an API request may take; past it the request is answered with 503.
    /// Live event streams are exempt. At least 100ms.
    #[arg(long, env = "CAIRN_REQUEST_TIMEOUT", default_value = "30s", value_parser = at_least::<100>)]
    pub request_timeout: Duration,
    /// Longest one SQL statement of the API may run (`statement_timeout` on its pool).
    /// At least 100ms (to Postgres, 0 would mean no limit at all).
    #[arg(long, env = "CAIRN_STATEMENT_TIMEOUT", default_value = "30s", value_parser = at_least::<100>)]
    pub statement_timeout: Duration,
    /// Open live event streams (`/api/events`) one user or service token may hold.
    #[arg(long, env = "CAIRN_EVENTS_PER_PRINCIPAL", default_value_t = 8)]
    pub events_per_principal: usize,
    /// Open live event streams this API process serves in all.
    #[arg(long, env = "CAIRN_EVENTS_MAX", default_value_t = 1000)]
    pub events_max: usize,
    /// A live event stream ends after this long; clients reconnect with `Last-Event-ID`.
    /// At least 1s.
    #[arg(long, env = "CAIRN_EVENTS_LIFETIME", default_value = "15m", value_parser = at_least::<1000>)]
    pub events_lifetime: Duration,
}

/// Where `cairn api` listens unless told.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

impl ApiArgs {
    /// `--listen` unless unset or empty.
    pub fn listen(&self) -> Option<&str> {
        self.listen
            .as_deref()
            .map(str::trim)
            .filter(|l| !l.is_empty())
    }

    /// `--static-dir` unless unset or empty.
    pub fn static_dir(&self) -> Option<&std::path::Path> {
        self.static_dir
            .as_deref()
            .filter(|d| !d.as_os_str().is_empty())
    }

    /// The API's edge settings these flags give.
    pub fn limits(&self) -> crate::api::guard::Limits {
        crate::api::guard::Limits {
            request_timeout: self.request_timeout,
            streams_per_principal: self.events_per_principal,
            streams_max: self.events_max,
            stream_lifetime: self.events_lifetime,
            metrics_elsewhere: self
                .metrics_listen
                .as_ref()
                .is_some_and(|a| !a.trim().is_empty()),
            ..Default::default()
        }
    }
}

/// The webhook secret, read by the API (`cairn api` takes it on its own) and by workers
/// (as part of [`WorkerArgs`]); `cairn dev` takes it once for both.
#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// Secret the per-delivery keys of `POST /api/webhooks/agent-result` are derived from
    /// (HMAC-SHA256 over run, step and attempt). The API needs it to check deliveries
    /// (without it the webhook answers 503); workers need it to hand agents their keys
    /// (`run.deliveries` in templates). Agents never need it.
    #[arg(long, env = "CAIRN_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
}

impl WebhookArgs {
    /// The secret, unless unset or empty.
    pub fn secret(&self) -> Option<String> {
        self.webhook_secret.clone().filter(|s| !s.is_empty())
    }
}

/// A lifetime: a duration (`90d`, `12h`), or `never` / `0` for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(pub Option<Duration>);

impl std::str::FromStr for Ttl {
    type Err = String;

    fn from_str(s: &str) -> Result<Ttl, String> {
        match s.trim() {
            "never" | "0" => Ok(Ttl(None)),
            d => humantime::parse_duration(d)
                .map(|d| Ttl(Some(d)))
                .map_err(|e| format!("`{d}`: {e} (a duration such as 90d, or `never`)")),
        }
    }
}

/// `cairn worker`.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Runs advanced at once by this process.
    #[arg(long, env = "CAIRN_CONCURRENCY", default_value_t = 128)]
    pub concurrency: usize,
    /// How long a worker owns a run without renewing; a killed worker's runs resume
    /// elsewhere after at most this long. At least 1s: a shorter lease expires between
    /// the heartbeats that renew it, and the run would pass from worker to worker.
    #[arg(long, env = "CAIRN_LEASE", default_value = "30s", value_parser = at_least::<1000>)]
    pub lease: Duration,
    /// Fallback poll interval for wake-ups. New runs are announced and picked up at once;
    /// timers and retries are not announced, and this bounds how late they (and anything
    /// announced while the worker's listening connection was down) are picked up. At
    /// least 10ms.
    #[arg(long, env = "CAIRN_POLL_INTERVAL", default_value = "200ms", value_parser = at_least::<10>)]
    pub poll_interval: Duration,
    /// On SIGTERM, how long running steps may take to finish before their runs are
    /// handed back to the queue.
    #[arg(long, env = "CAIRN_SHUTDOWN_GRACE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Comma-separated environment variables that templates may read as `env.NAME`.
    #[arg(long, env = "CAIRN_TEMPLATE_ENV", value_delimiter = ',')]
    pub template_env: Vec<String>,
    /// OpenAI-compatible API base for `llm` steps (e.g. https://api.openai.com/v1,
    /// http://127.0.0.1:11434/v1). Without it, `llm` steps fail and examples use the
    /// built-in steps.
    #[arg(long, env = "CAIRN_LLM_BASE_URL")]
    pub llm_base_url: Option<String>,
    /// API key sent as a bearer token to the model server.
    #[arg(long, env = "CAIRN_LLM_API_KEY", hide_env_values = true)]
    pub llm_api_key: Option<String>,
    /// Model `llm` steps use unless they name one.
    #[arg(long, env = "CAIRN_LLM_MODEL", default_value = "gpt-4o-mini")]
    pub llm_model: String,
    /// Hosts, IP addresses or CIDRs that `http` steps may reach although they are not
    /// public (comma-separated; each with an optional `:port`), e.g. a deployment's own
    /// services: `10.0.0.0/8,billing.internal,127.0.0.1:9000`. By default steps reach
    /// public addresses only. `cairn dev` adds loopback.
    #[arg(long, env = "CAIRN_EGRESS_ALLOW", value_delimiter = ',')]
    pub egress_allow: Vec<String>,
    /// Largest response body an `http` or `llm` step reads (bytes, or e.g. `4MiB`); a
    /// larger one fails the step. Steps may set less with `max_response_bytes`.
    #[arg(long, env = "CAIRN_MAX_RESPONSE_BYTES", default_value = "4MiB", value_parser = crate::workflow::parse_size)]
    pub max_response_bytes: u64,
    /// Largest step output stored, as JSON (bytes, or e.g. `4MiB`); a larger one fails
    /// the step. It also bounds what a `sql` step's query may return.
    #[arg(long, env = "CAIRN_MAX_OUTPUT_BYTES", default_value = "4MiB", value_parser = crate::workflow::parse_size)]
    pub max_output_bytes: u64,
    /// PostgreSQL URL `sql` steps run on, as a role with only the rights workflows need;
    /// without it they run on the worker's own connection, which can change anything
    /// Cairn stores.
    #[arg(long, env = "CAIRN_STEP_DATABASE_URL", hide_env_values = true)]
    pub step_database_url: Option<String>,
    #[command(flatten)]
    pub webhook: WebhookArgs,
}

impl WorkerArgs {
    /// The egress allow list, checked.
    pub fn egress_allow(&self) -> Result<crate::step::EgressAllow, crate::step::EgressError> {
        crate::step::EgressAllow::parse(&self.egress_allow)
    }

    pub fn limits(&self) -> crate::step::Limits {
        crate::step::Limits {
            max_response_bytes: self.max_response_bytes,
            max_output_bytes: self.max_output_bytes,
        }
    }

    pub fn llm(&self) -> Option<crate::step::LlmConfig> {
        self.llm_base_url
            .as_ref()
            .filter(|u| !u.trim().is_empty())
            .map(|base_url| crate::step::LlmConfig {
                base_url: base_url.clone(),
                api_key: self.llm_api_key.clone().filter(|k| !k.is_empty()),
                model: self.llm_model.clone(),
            })
    }
}

/// `cairn worker`'s and `cairn scheduler`'s own metrics (the API serves its own at
/// `/metrics`; `cairn dev` serves the one process's there).
#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// Serve this process's metrics (Prometheus text at `/metrics`) on this address,
    /// without authentication, e.g. `0.0.0.0:9090`. Keep it off the public network.
    /// Without it the process records no metrics.
    #[arg(long, env = "CAIRN_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
}

impl MetricsArgs {
    /// `--metrics-listen` unless unset or empty.
    pub fn listen(&self) -> Option<&str> {
        self.metrics_listen
            .as_deref()
            .map(str::trim)
            .filter(|l| !l.is_empty())
    }
}

/// `cairn scheduler`.
#[derive(Debug, Clone, Args)]
pub struct SchedulerArgs {
    /// Longest sleep between checks for due schedules. A scheduler otherwise sleeps until
    /// the next tick, and wakes at once when a schedule is added, retimed or resumed.
    #[arg(long, env = "CAIRN_SCHEDULER_POLL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub scheduler_poll: Duration,
    #[command(flatten)]
    pub retention: RetentionArgs,
    #[command(flatten)]
    pub notify: NotifyArgs,
}

/// Alerts: where the notifier in `cairn scheduler` and `cairn dev` sends the events
/// the database records when runs die (docs/OPERATIONS.md, "Alerts").
#[derive(Debug, Clone, Args)]
pub struct NotifyArgs {
    /// Endpoint that gets a signed JSON POST (`run.dead`, with a Slack-compatible
    /// `text`) when a run dies. A workflow's `[notify] url` replaces it for its runs.
    /// Without either, nothing is sent (the events are recorded as skipped).
    #[arg(long, env = "CAIRN_NOTIFY_URL", hide_env_values = true)]
    pub notify_url: Option<String>,
    /// Secret each POST is signed with: `X-Cairn-Signature: sha256=<hex
    /// HMAC-SHA256(secret, "{X-Cairn-Timestamp}.{raw body}")>`. Without it, unsigned.
    #[arg(long, env = "CAIRN_NOTIFY_SECRET", hide_env_values = true)]
    pub notify_secret: Option<String>,
    /// Send `schedule.tick_failed` too: a schedule's tick could not start its run.
    #[arg(long, env = "CAIRN_NOTIFY_TICK_FAILURES")]
    pub notify_tick_failures: bool,
    /// Non-public hosts, addresses or CIDRs the notifier may reach (comma-separated,
    /// as CAIRN_EGRESS_ALLOW): by default it reaches public addresses only. `cairn dev`
    /// adds loopback.
    #[arg(long, env = "CAIRN_NOTIFY_EGRESS_ALLOW", value_delimiter = ',')]
    pub notify_egress_allow: Vec<String>,
    /// The dashboard's public address (e.g. `https://cairn.example.com`): events link to
    /// the run there (`url`). Without it, `url` is null.
    #[arg(long, env = "CAIRN_DASHBOARD_URL")]
    pub dashboard_url: Option<String>,
    /// Longest one POST may take.
    #[arg(long, env = "CAIRN_NOTIFY_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub notify_timeout: Duration,
    /// Delay before the first retry of a failed POST; each next one doubles, up to
    /// --notify-retry-max.
    #[arg(long, env = "CAIRN_NOTIFY_RETRY_MIN", default_value = "1s", value_parser = humantime::parse_duration)]
    pub notify_retry_min: Duration,
    #[arg(long, env = "CAIRN_NOTIFY_RETRY_MAX", default_value = "10m", value_parser = humantime::parse_duration)]
    pub notify_retry_max: Duration,
    /// POSTs of one event before it is given up (`failed`).
    #[arg(long, env = "CAIRN_NOTIFY_MAX_ATTEMPTS", default_value_t = 25, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub notify_max_attempts: u32,
    /// Longest sleep between looks for due events (new ones wake the notifier at once).
    #[arg(long, env = "CAIRN_NOTIFY_POLL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub notify_poll: Duration,
}

impl NotifyArgs {
    /// The notifier's settings these flags give; `Err` names the flag that is wrong.
    pub fn settings(
        &self,
    ) -> Result<crate::scheduler::notifier::NotifySettings, (&'static str, String)> {
        let some = |s: &Option<String>| {
            s.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let url = match some(&self.notify_url) {
            None => None,
            Some(u) => match reqwest::Url::parse(&u) {
                Ok(parsed)
                    if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() =>
                {
                    Some(parsed)
                }
                // The URL itself stays out of the message: it may carry a credential.
                _ => {
                    return Err((
                        "CAIRN_NOTIFY_URL (--notify-url)",
                        "not an absolute http:// or https:// URL".to_owned(),
                    ));
                }
            },
        };
        let egress_allow =
            crate::step::EgressAllow::parse(&self.notify_egress_allow).map_err(|e| {
                (
                    "CAIRN_NOTIFY_EGRESS_ALLOW (--notify-egress-allow)",
                    e.to_string(),
                )
            })?;
        Ok(crate::scheduler::notifier::NotifySettings {
            url,
            secret: some(&self.notify_secret),
            tick_failures: self.notify_tick_failures,
            egress_allow,
            dashboard_url: some(&self.dashboard_url),
            timeout: self.notify_timeout,
            retry_min: self.notify_retry_min,
            retry_max: self.notify_retry_max.max(self.notify_retry_min),
            max_deliveries: self.notify_max_attempts,
            poll: self.notify_poll.max(Duration::from_millis(50)),
        })
    }
}

/// Retention: how long finished runs are kept, and the reaper that deletes them, which
/// runs in `cairn scheduler` and `cairn dev` (one at a time in a cluster; see
/// docs/OPERATIONS.md).
#[derive(Debug, Clone, Args)]
pub struct RetentionArgs {
    /// Delete succeeded runs (with their steps, attempts, events and ticks) this long
    /// after they finished: a duration (`7d`, `36h`), or `0` / `forever` to keep them.
    /// Pinned runs are always kept.
    #[arg(long, env = "CAIRN_RETAIN_SUCCEEDED", default_value = "7d")]
    pub retain_succeeded: RetainFor,
    /// Delete cancelled runs this long after they finished (`0` / `forever`: keep).
    #[arg(long, env = "CAIRN_RETAIN_CANCELLED", default_value = "7d")]
    pub retain_cancelled: RetainFor,
    /// Delete dead runs (and their dead letters) this long after they died (`0` /
    /// `forever`: keep).
    #[arg(long, env = "CAIRN_RETAIN_DEAD", default_value = "30d")]
    pub retain_dead: RetainFor,
    /// Time between two passes of the reaper (at least 1s). Each pass deletes
    /// everything due, in batches.
    #[arg(long, env = "CAIRN_REAPER_INTERVAL", default_value = "1m", value_parser = at_least::<1000>)]
    pub reaper_interval: Duration,
    /// Runs (or other rows) the reaper deletes per transaction.
    #[arg(long, env = "CAIRN_REAPER_BATCH", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub reaper_batch: u32,
    /// The largest share of its time the reaper spends deleting runs (above 0, at most
    /// 1): after each batch it rests so that deleting a large backlog does not take
    /// the database's CPUs from the workers. `1`: no rest.
    #[arg(long, env = "CAIRN_REAPER_SHARE", default_value_t = crate::scheduler::reaper::DEFAULT_SHARE, value_parser = reaper_share)]
    pub reaper_share: f64,
}

impl RetentionArgs {
    /// The reaper's settings these flags give.
    pub fn settings(&self) -> crate::scheduler::reaper::ReaperSettings {
        crate::scheduler::reaper::ReaperSettings {
            succeeded: self.retain_succeeded.0,
            cancelled: self.retain_cancelled.0,
            dead: self.retain_dead.0,
            interval: self.reaper_interval,
            batch: self.reaper_batch,
            share: self.reaper_share,
            ..Default::default()
        }
    }
}

fn reaper_share(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x > 0.0 && x <= 1.0 => Ok(x),
        _ => Err(format!(
            "`{s}` is not a share above 0 and at most 1 (e.g. 0.25)"
        )),
    }
}

/// A duration of at least `MIN_MS` milliseconds. A shorter one is a usage error that
/// names the least allowed: a zero lease, poll or timeout starts a process that spins,
/// refuses everything or has no limit at all, rather than one that says why.
fn at_least<const MIN_MS: u64>(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("`{s}`: {e}"))?;
    let min = Duration::from_millis(MIN_MS);
    if d < min {
        return Err(format!(
            "`{s}` is shorter than {}",
            humantime::format_duration(min)
        ));
    }
    Ok(d)
}

/// How long something is kept: a duration (`7d`, `36h`), or `0` / `forever` for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetainFor(pub Option<Duration>);

impl std::str::FromStr for RetainFor {
    type Err = String;

    fn from_str(s: &str) -> Result<RetainFor, String> {
        match s.trim() {
            "forever" | "0" => Ok(RetainFor(None)),
            d => match humantime::parse_duration(d) {
                Ok(d) if d.is_zero() => Ok(RetainFor(None)),
                Ok(d) => Ok(RetainFor(Some(d))),
                Err(e) => Err(format!(
                    "`{d}`: {e} (a duration such as 7d or 36h, or `forever`)"
                )),
            },
        }
    }
}

/// `cairn dev`'s own: where it keeps its private PostgreSQL, port and token.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Folder for the private PostgreSQL (without DATABASE_URL), its log, and the port
    /// and token `cairn dev` reuses on every start [default: one per user and
    /// workflows folder: `$XDG_DATA_HOME/cairn/dev-<folder>-<hash>`, i.e. under
    /// `~/.local/share`; as root `/var/lib/cairn/…` unless XDG_DATA_HOME is set].
    #[arg(long, env = "CAIRN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Revoke the token kept from earlier starts and print a new one.
    #[arg(long)]
    pub new_token: bool,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Worker {
        #[command(flatten)]
        worker: WorkerArgs,
        #[command(flatten)]
        db: DatabaseArgs,
    }

    #[derive(Debug, Parser)]
    struct Api {
        #[command(flatten)]
        api: ApiArgs,
    }

    /// `args` (a command, a flag, a value) refused as an invalid value, with an error
    /// that names the flag and `least`.
    fn refused<P: Parser + std::fmt::Debug>(args: [&str; 3], least: &str) {
        let e = P::try_parse_from(args).unwrap_err();
        assert_eq!(
            e.kind(),
            clap::error::ErrorKind::ValueValidation,
            "{args:?}"
        );
        let said = e.to_string();
        assert!(said.contains(args[1]) && said.contains(least), "{said}");
    }

    /// Values that would start a process that spins, refuses everything or has no
    /// limit are refused before anything starts, naming the least allowed.
    #[test]
    fn zero_durations_and_an_empty_pool_are_usage_errors() {
        refused::<Worker>(["worker", "--lease", "0s"], "1s");
        refused::<Worker>(["worker", "--lease", "500ms"], "1s");
        refused::<Worker>(["worker", "--poll-interval", "0s"], "10ms");
        refused::<Worker>(["worker", "--db-pool", "0"], "1");
        refused::<Api>(["api", "--request-timeout", "0s"], "100ms");
        refused::<Api>(["api", "--statement-timeout", "0s"], "100ms");
        refused::<Api>(["api", "--events-lifetime", "0s"], "1s");
        let ok =
            Worker::try_parse_from(["worker", "--lease", "1s", "--poll-interval", "10ms"]).unwrap();
        assert_eq!(ok.worker.lease, Duration::from_secs(1));
        assert_eq!(ok.worker.poll_interval, Duration::from_millis(10));
    }
}
