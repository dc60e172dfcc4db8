//! `/api/events`: Server-Sent Events of run and step changes.
//!
//! One `LISTEN cairn_events` connection per API process (started on first use) wakes
//! every open stream; each stream then reads the events after its cursor from
//! `run_events`, so what it sends is always the durable history, in id order, and a
//! client reconnecting with `Last-Event-ID` misses nothing.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use backon::{ExponentialBuilder, Retryable};
use futures::Stream;
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::{OnceCell, broadcast};
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::Viewer;
use super::extract::AppQuery;
use super::{ApiError, AppState};
use crate::store;

/// Wakes event streams when Postgres announces new events.
#[derive(Default)]
pub struct EventHub {
    /// Sends the id of each announced event; receivers are the open streams.
    tx: OnceCell<broadcast::Sender<i64>>,
}

impl EventHub {
    async fn subscribe(&self, pool: &PgPool) -> broadcast::Receiver<i64> {
        let tx = self
            .tx
            .get_or_init(|| async {
                let (tx, _) = broadcast::channel(1024);
                tokio::spawn(listen(pool.clone(), tx.clone()));
                tx
            })
            .await;
        tx.subscribe()
    }
}

/// Relays notifications until every receiver is gone, reconnecting with backoff.
async fn listen(pool: PgPool, tx: broadcast::Sender<i64>) {
    loop {
        let connect = || async { store::events::event_listener(&pool).await };
        let mut listener = match connect
            .retry(
                ExponentialBuilder::default()
                    .with_max_delay(Duration::from_secs(10))
                    .without_max_times(),
            )
            .notify(
                |e, d| tracing::warn!(error = %e, retry_in = ?d, "event listener cannot connect"),
            )
            .await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "event listener gave up");
                return;
            }
        };
        // A reconnect may have missed notifications: wake everyone to re-read.
        let _ = tx.send(0);
        loop {
            match listener.recv().await {
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

struct Cursor {
    pool: PgPool,
    rx: broadcast::Receiver<i64>,
    after: i64,
    run_id: Option<String>,
    workflow: Option<String>,
    pending: VecDeque<store::events::FeedRow>,
}

/// Live run and step events (`text/event-stream`). Each event's `id` is its run-event id;
/// reconnect with `Last-Event-ID` to resume without gaps.
#[utoipa::path(get, path = "/api/events", tag = "events", params(StreamQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "resume after this event")),
    responses((status = 200, content_type = "text/event-stream", description = "a stream of `run-event` events")))]
async fn stream(
    State(state): State<AppState>,
    _: Viewer,
    headers: HeaderMap,
    AppQuery(q): AppQuery<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
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
    let cursor = Cursor {
        pool: state.pool.clone(),
        rx,
        after,
        run_id: q.run_id,
        workflow: q.workflow,
        pending: VecDeque::new(),
    };
    let stream = futures::stream::unfold(cursor, |mut c| async move {
        loop {
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
            match c.rx.recv().await {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Shared with [`AppState`].
pub type Hub = Arc<EventHub>;
