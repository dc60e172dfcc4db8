//! The database being away: telling it apart from other failures, and waiting for it.
//!
//! PostgreSQL restarts — upgrades, failovers, a crash and its recovery — and while it
//! does, every statement fails: connections are refused, reset, or terminated by the
//! server ("terminating connection due to administrator command", SQLSTATE 57P01), and
//! new ones are turned away while it starts up or shuts down (57P03). None of that says
//! anything about the request that hit it. [`unavailable`] recognises this class of
//! failure, so that the API answers it with 503 and `Retry-After` (in `api::error`, its
//! one place) and services retry instead of giving up.
//!
//! A service that starts while the database is away waits for it with [`retrying`]
//! (checking with [`probe`] first, which reports why it cannot connect):
//! each failed try is logged at WARN with its error, the tries back off exponentially,
//! and `--db-connect-timeout` bounds the whole wait. Any other failure (a bad URL, a
//! refused password, a failed migration) ends the wait at once.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use super::StoreError;

/// First pause between tries; doubled after each failure up to [`MAX_DELAY`].
const MIN_DELAY: Duration = Duration::from_millis(250);
/// Longest pause between tries.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// An error that may only mean the database is away for now (see [`unavailable`]):
/// what [`retrying`] waits out.
pub trait Transient: std::fmt::Display {
    /// Why the database cannot be reached right now, or `None` when the error is not
    /// cured by waiting.
    fn unavailable(&self) -> Option<&'static str>;
}

impl Transient for StoreError {
    fn unavailable(&self) -> Option<&'static str> {
        StoreError::unavailable(self)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError<E = StoreError> {
    /// The database stayed away for the whole wait.
    #[error("the database was still unavailable after {waited:?} ({tries} tries): {last}")]
    TimedOut {
        waited: Duration,
        tries: u32,
        /// The last try's error.
        last: String,
    },
    /// A failure that waiting does not cure.
    #[error(transparent)]
    Failed(E),
}

/// Why `e` means the database cannot be reached right now — a connection that could not
/// be opened, broke, or was closed by a server that is restarting — or `None` when the
/// database answered and the failure is the statement's own. The reason names the class
/// only: it is safe to show to clients.
pub fn unavailable(e: &sqlx::Error) -> Option<&'static str> {
    match e {
        sqlx::Error::Io(_) => Some("the connection to the database failed"),
        // A handshake cut short by a restarting server; a TLS misconfiguration lands
        // here too, and a starting service then logs it at every try until it gives up.
        sqlx::Error::Tls(_) => Some("the encrypted connection to the database failed"),
        sqlx::Error::PoolTimedOut => Some("no database connection could be had in time"),
        sqlx::Error::PoolClosed => Some("the database connections are closed"),
        sqlx::Error::WorkerCrashed => Some("the database connection stopped"),
        // What a connection opened while the server restarts can read instead of an
        // answer (e.g. "unexpected response from SSLRequest: 0x00").
        sqlx::Error::Protocol(_) => Some("the database connection broke off"),
        sqlx::Error::Database(db) => {
            let code = db.code();
            match code.as_deref() {
                // connection_exception and its subclasses.
                Some(c) if c.starts_with("08") => Some("the connection to the database failed"),
                Some("57P01") => Some("the database is shutting down (administrator command)"),
                Some("57P02") => Some("the database is restarting after a crash"),
                // cannot_connect_now: "the database system is starting up" (or
                // "shutting down", or "in recovery mode").
                Some("57P03") => Some("the database is starting up or shutting down"),
                Some("53300") => Some("the database has no connection slots left"),
                _ => None,
            }
        }
        _ => None,
    }
}

impl StoreError {
    /// Why this error means the database is away right now (see [`unavailable`]).
    pub fn unavailable(&self) -> Option<&'static str> {
        match self {
            StoreError::Database(e) => unavailable(e),
            StoreError::Migrate(
                sqlx::migrate::MigrateError::Execute(e)
                | sqlx::migrate::MigrateError::ExecuteMigration(e, _),
            ) => unavailable(e),
            _ => None,
        }
    }
}

/// Opens one connection to `url` and closes it: whether the database can be reached
/// now, with the reason it cannot (a pool would retry for its whole acquire timeout and
/// then report only that it timed out). A service calls it before opening its pool.
pub async fn probe(url: &str) -> Result<(), StoreError> {
    use sqlx::Connection;
    let options: sqlx::postgres::PgConnectOptions = url.parse()?;
    let conn = sqlx::PgConnection::connect_with(&options).await?;
    conn.close().await?;
    Ok(())
}

/// Calls `attempt` until it succeeds, for as long as it fails with the database away
/// ([`Transient::unavailable`]), pausing between tries with exponential backoff and
/// jitter and logging each failure at WARN; `what` names the attempt in the log. With a
/// `timeout`, gives up once that much time has passed since the first try (`None`:
/// waits for ever). Any other error is returned at once.
pub async fn retrying<T, E, F, Fut>(
    what: &str,
    timeout: Option<Duration>,
    attempt: F,
) -> Result<T, ConnectError<E>>
where
    E: Transient,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = tokio::time::Instant::now();
    let mut tries = 0u32;
    let mut last = None;
    let backoff = ExponentialBuilder::new()
        .with_min_delay(MIN_DELAY)
        .with_max_delay(MAX_DELAY)
        .with_jitter()
        .without_max_times();
    let waiting = attempt
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e: &E| e.unavailable().is_some())
        .notify(|e: &E, pause: Duration| {
            tries += 1;
            tracing::warn!(error = %e, tries, retry_in = ?pause, "{what}: the database is unavailable; trying again");
            last = Some(e.to_string());
        });
    let outcome = match timeout {
        None => Some(waiting.await),
        Some(limit) => tokio::time::timeout(limit, waiting).await.ok(),
    };
    match outcome {
        Some(done) => done.map_err(ConnectError::Failed),
        None => Err(ConnectError::TimedOut {
            waited: started.elapsed(),
            tries: tries + 1,
            last: last.unwrap_or_else(|| "no try finished".into()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn refused() -> StoreError {
        StoreError::Database(sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )))
    }

    #[tokio::test(start_paused = true)]
    async fn tries_again_while_the_database_is_away_then_succeeds() {
        let calls = AtomicU32::new(0);
        let got = retrying("test", Some(Duration::from_secs(60)), || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0..=3 => Err(refused()),
                _ => Ok(7),
            }
        })
        .await
        .expect("succeeds once the database is back");
        assert_eq!(got, 7);
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_timeout_with_the_last_error() {
        let started = tokio::time::Instant::now();
        let err = retrying("test", Some(Duration::from_secs(10)), || async {
            Err::<(), _>(refused())
        })
        .await
        .expect_err("the database never comes back");
        let ConnectError::TimedOut { tries, last, .. } = err else {
            panic!("not a timeout: {err}");
        };
        assert!(tries > 2, "{tries}");
        assert!(last.contains("refused"), "{last}");
        assert!(started.elapsed() >= Duration::from_secs(10));
        assert!(started.elapsed() < Duration::from_secs(11));
    }

    #[tokio::test(start_paused = true)]
    async fn other_errors_end_the_wait_at_once() {
        let calls = AtomicU32::new(0);
        let err = retrying("test", None, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(StoreError::Invalid("password authentication failed".into()))
        })
        .await
        .expect_err("not retried");
        assert!(matches!(err, ConnectError::Failed(_)), "{err}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
