//! Liveness and readiness.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::store;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// The process is up.
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok", "version": crate::VERSION }))
}

/// The process can serve: the database answers and its migrations are current.
/// Otherwise 503, saying which: the database is away (and why: refused or broken
/// connections, starting up, shutting down), or it failed the check.
async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let current = store::stats::migrations_current(&state.pool)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "readiness check failed");
            ApiError::DatabaseUnavailable(
                e.unavailable()
                    .unwrap_or("the readiness query failed; see the API's log"),
            )
        })?;
    if !current {
        return Err(ApiError::Unavailable(
            "database migrations are not current; run `cairn migrate`".into(),
        ));
    }
    Ok(Json(json!({ "status": "ready" })))
}
