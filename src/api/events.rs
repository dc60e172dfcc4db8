//! `/api/events`: Server-Sent Events of run and step changes.
//!
//! One `LISTEN cairn_events` connection per API process (started on first use) wakes
//! every open stream; each stream then reads the events after its cursor from
//! `run_events`, so what it sends is always the durable history, in id order, and a
//! client reconnecting with `Last-Event-ID` misses nothing.
//!
//! A stream is bounded: it re-checks its caller's credential every
//! [`Limits::stream_recheck`] and at once when a credential is revoked in this process
//! (ending when it is no longer valid), it ends after [`Limits::stream_lifetime`]
//! (its last message carries the cursor, so `EventSource` and `ctl logs --follow`
//! resume where it stopped), and each principal, and the process in all, may hold only
//! so many open (see [`EventHub::claim`]). When the server shuts down, every stream
//! ends the same way (see [`EventHub::close`]) and the listening connection is closed,
//! so that the server drains at once and quietly.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use backon::{ExponentialBuilder, Retryable};
use futures::Stream;
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::{OnceCell, broadcast, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{Viewer, authenticate};
use super::extract::AppQuery;
use super::guard::Limits;
use super::{ApiError, AppState};
use crate::auth::{Principal, Role};
use crate::store;

/// How long a client refused for too many streams is asked to wait.
const STREAMS_RETRY_AFTER: u64 = 10;

/// Wakes event streams when Postgres announces new events, and counts them.
#[derive(Default)]
pub struct EventHub {
    /// Sends the id of each announced event; receivers are the open streams.
    tx: OnceCell<broadcast::Sender<i64>>,
    /// Open streams, in all and per principal; each [`Slot`] gives its place back when
    /// its stream is dropped.
    open: Mutex<Open>,
    /// Cancelled when the server shuts down: streams end, the listener stops.
    closing: CancellationToken,
    /// The listener's task, once started: awaited by [`EventHub::closed`].
    listening: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_principal: HashMap<String, usize>,
}

/// An open stream's place in [`EventHub`]'s counts, released on drop (the client went
/// away, or the stream ended).
struct Slot {
    hub: Hub,
    principal: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.hub.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_principal.get_mut(&self.principal) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.by_principal.remove(&self.principal);
            }
        }
    }
}

impl EventHub {
    /// A place for one more stream of `principal`, unless it already holds
    /// [`Limits::streams_per_principal`] or the process serves [`Limits::streams_max`].
    fn claim(self: &Arc<Self>, principal: String, limits: &Limits) -> Result<Slot, ApiError> {
        let mut open = self.lock();
        let mine = open.by_principal.get(&principal).copied().unwrap_or(0);
        let refuse = |message: String| ApiError::TooManyRequests {
            message,
            retry_after: STREAMS_RETRY_AFTER,
        };
        if mine >= limits.streams_per_principal {
            return Err(refuse(format!(
                "you already have {mine} open event streams; close one first"
            )));
        }
        if open.total >= limits.streams_max {
            return Err(refuse("this server has too many open event streams".into()));
        }
        open.total += 1;
        *open.by_principal.entry(principal.clone()).or_default() += 1;
        Ok(Slot {
            hub: self.clone(),
            principal,
        })
    }

    /// Ends every open stream (each with its cursor, so its client resumes elsewhere or
    /// later) and stops listening: the server is shutting down.
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// Once [`EventHub::close`] was called: waits until the listener has closed its
    /// connection (at most a few seconds), so that it is closed before the process
    /// closes its pools and exits.
    pub async fn closed(&self) {
        let task = self
            .listening
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(Duration::from_secs(6), task).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        // Every change is a few integer updates: a panic cannot leave one half done.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn subscribe(&self, pool: &PgPool) -> broadcast::Receiver<i64> {
        let tx = self
            .tx
            .get_or_init(|| async {
                let (tx, _) = broadcast::channel(1024);
                let task = tokio::spawn(listen(pool.clone(), tx.clone(), self.closing.clone()));
                *self.listening.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
                tx
            })
            .await;
        tx.subscribe()
    }
}

/// Relays notifications until the server shuts down, reconnecting with backoff, on a
/// connection of its own ([`store::listen_pool`]): one of the API's pool would be held
/// for good (with `--db-pool 1`, no request could be served once a stream opened).
async fn listen(pool: PgPool, tx: broadcast::Sender<i64>, closing: CancellationToken) {
    let pool = store::listen_pool(&pool);
    relay(&pool, &tx, &closing).await;
    store::close(pool).await;
}

async fn relay(pool: &PgPool, tx: &broadcast::Sender<i64>, closing: &CancellationToken) {
    loop {
        let connect = || async { store::events::event_listener(pool).await };
        let connected = connect
            .retry(
                ExponentialBuilder::default()
                    .with_max_delay(Duration::from_secs(10))
                    .without_max_times(),
            )
            .notify(
                |e, d| tracing::warn!(error = %e, retry_in = ?d, "event listener cannot connect"),
            );
        let mut listener = tokio::select! {
            connected = connected => match connected {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "event listener gave up");
                    return;
                }
            },
            _ = closing.cancelled() => return,
        };
        // A reconnect may have missed notifications: wake everyone to re-read.
        let _ = tx.send(0);
        loop {
            let received = tokio::select! {
                received = listener.recv() => received,
                // Dropping the listener closes its connection before the database goes.
                _ = closing.cancelled() => return,
            };
            match received {
                Ok(n) => {
                    let id = serde_json::from_str::<serde_json::Value>(n.payload())
                        .ok()
                        .and_then(|v| v["id"].as_i64())
                        .unwrap_or(0);
                    let _ = tx.send(id);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "event listener lost its connection");
                    break;
                }
            }
        }
    }
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Only this run's events (from its first, unless `Last-Event-ID` or `after` says otherwise).
    run_id: Option<String>,
    /// Only this workflow's events.
    workflow: Option<String>,
    /// Start after this event id (like `Last-Event-ID`).
    after: Option<i64>,
}

/// Whom a stream counts against: a user (whatever credential they use), or a
/// service token by its secret's hash (service tokens belong to no user).
fn principal_key(p: &Principal, headers: &HeaderMap) -> String {
    if let Some(id) = p.user_id {
        return format!("user:{id}");
    }
    let secret = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .or_else(|| super::auth::session_cookie(headers))
        .unwrap_or_default();
    format!("secret:{}", crate::auth::secret_hash(secret))
}

struct Cursor {
    /// [`EventHub::closing`].
    closing: CancellationToken,
    pool: PgPool,
    rx: broadcast::Receiver<i64>,
    after: i64,
    run_id: Option<String>,
    workflow: Option<String>,
    pending: VecDeque<store::events::FeedRow>,
    /// To re-check the caller: the server's state and the request's credentials.
    state: AppState,
    headers: HeaderMap,
    /// Changes when a credential is revoked in this process; the sender lives in
    /// `state.principals`.
    revocations: watch::Receiver<u64>,
    /// A revocation was announced: re-check before sending anything more.
    recheck_now: bool,
    next_check: Instant,
    ends_at: Instant,
    /// The stream has said its last message.
    done: bool,
    _slot: Slot,
}

impl Cursor {
    /// Whether the caller's credential still admits a viewer.
    async fn caller_valid(&self) -> bool {
        match authenticate(&self.state, &self.headers).await {
            Ok(Some(p)) => p.role >= Role::Viewer,
            Ok(None) => false,
            Err(e) => {
                tracing::debug!(error = %e, "an event stream's caller is no longer valid");
                false
            }
        }
    }
}

/// Live run and step events (`text/event-stream`). Each event's `id` is its run-event id;
/// reconnect with `Last-Event-ID` to resume without gaps. A stream ends after a while
/// (15 minutes by default; its last message is an `id` alone) and when its credential
/// stops being valid; too many open streams answer 429.
#[utoipa::path(get, path = "/api/events", tag = "events", params(StreamQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "resume after this event")),
    responses((status = 200, content_type = "text/event-stream", description = "a stream of `run-event` events"),
        (status = 429, description = "too many open streams", body = super::error::ErrorBody)))]
async fn stream(
    State(state): State<AppState>,
    Viewer(caller): Viewer,
    headers: HeaderMap,
    AppQuery(q): AppQuery<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let limits = state.limits;
    let slot = state
        .events
        .claim(principal_key(&caller, &headers), &limits)?;
    // Subscribed before anything else can happen: a revocation from here on is seen.
    let revocations = state.principals.subscribe();
    let rx = state.events.subscribe(&state.pool).await;
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let after = match (last.or(q.after), &q.run_id) {
        (Some(id), _) => id,
        (None, Some(_)) => 0,
        (None, None) => store::events::event_last_id(&state.pool).await?,
    };
    let closing = state.events.closing.clone();
    let cursor = Cursor {
        closing,
        pool: state.pool.clone(),
        rx,
        after,
        run_id: q.run_id,
        workflow: q.workflow,
        pending: VecDeque::new(),
        state: state.clone(),
        headers,
        revocations,
        recheck_now: false,
        next_check: Instant::now() + limits.stream_recheck,
        ends_at: Instant::now() + limits.stream_lifetime,
        done: false,
        _slot: slot,
    };
    let stream = futures::stream::unfold(cursor, move |mut c| async move {
        if c.done {
            return None;
        }
        loop {
            let now = Instant::now();
            if now >= c.ends_at || c.closing.is_cancelled() {
                // An `id` without data sets the client's last event id without
                // dispatching anything: a client that saw no events in this stream
                // still resumes from where it stood.
                c.done = true;
                return Some((Ok(Event::default().id(c.after.to_string())), c));
            }
            if c.recheck_now
                || !matches!(c.revocations.has_changed(), Ok(false))
                || now >= c.next_check
            {
                c.revocations.borrow_and_update();
                if !c.caller_valid().await {
                    return None;
                }
                c.recheck_now = false;
                c.next_check = Instant::now() + limits.stream_recheck;
            }
            if let Some(e) = c.pending.pop_front() {
                c.after = e.id;
                let data = json!({
                    "id": e.id, "runId": e.run_id, "workflow": e.workflow, "at": e.at,
                    "kind": e.kind, "stepId": e.step_id, "data": e.data,
                });
                let event = Event::default()
                    .id(e.id.to_string())
                    .event("run-event")
                    .data(data.to_string());
                return Some((Ok(event), c));
            }
            match store::events::event_feed(
                &c.pool,
                c.after,
                c.run_id.as_deref(),
                c.workflow.as_deref(),
                500,
            )
            .await
            {
                Ok(rows) if !rows.is_empty() => {
                    c.pending.extend(rows);
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reading events for a stream failed"),
            }
            tokio::select! {
                woken = c.rx.recv() => match woken {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                revoked = c.revocations.changed() => match revoked {
                    Ok(()) => c.recheck_now = true,
                    // Revocations can no longer be heard (cannot happen while the
                    // state lives): stop rather than serve unchecked.
                    Err(_) => return None,
                },
                _ = tokio::time::sleep_until(c.next_check.min(c.ends_at)) => {}
                _ = c.closing.cancelled() => {}
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Shared with [`AppState`].
pub type Hub = Arc<EventHub>;
