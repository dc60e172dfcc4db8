//! `POST /api/webhooks/agent-result`: an external agent delivers the result a `wait` step
//! is waiting for. Signed with HMAC-SHA256 over `timestamp.body`
//! (`X-Cairn-Timestamp`: Unix seconds, `X-Cairn-Signature: sha256=<hex>`); stale
//! timestamps (more than five minutes off) and bad signatures get 401 and change
//! nothing; a repeated delivery is accepted once and then ignored.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{ApiError, AppState};
use crate::queue::{self, Wake};
use crate::store;
use crate::store::steps::Delivery;
use crate::workflow::{StepKind, Workflow};

/// How far a signature's timestamp may be from the server's clock.
pub const MAX_SKEW_SECS: i64 = 300;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(agent_result))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentResult {
    task_id: String,
    step_id: String,
    #[schema(value_type = Object)]
    result: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// False when this result had already been delivered (nothing changed).
    accepted: bool,
}

/// The signature of `body` at `timestamp` with `secret`, as sent in `X-Cairn-Signature`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn verify(secret: &str, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), ApiError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let ts: i64 = header("x-cairn-timestamp")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| ApiError::Unauthorized("missing or bad X-Cairn-Timestamp".into()))?;
    if (now - ts).abs() > MAX_SKEW_SECS {
        return Err(ApiError::Unauthorized("stale timestamp".into()));
    }
    let given = header("x-cairn-signature")
        .and_then(|s| s.strip_prefix("sha256="))
        .and_then(|h| hex::decode(h).ok())
        .ok_or_else(|| ApiError::Unauthorized("missing or bad X-Cairn-Signature".into()))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(ApiError::internal)?;
    mac.update(format!("{ts}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| ApiError::Unauthorized("bad signature".into()))
}

/// Delivers an external agent's result to a waiting `wait` step.
#[utoipa::path(post, path = "/api/webhooks/agent-result", tag = "webhooks", request_body = AgentResult,
    security(()),
    params(("X-Cairn-Timestamp" = i64, Header), ("X-Cairn-Signature" = String, Header, description = "sha256=<hex HMAC of `timestamp.body`>")),
    responses((status = 200, body = Accepted), (status = 401, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody),
              (status = 503, body = super::error::ErrorBody)))]
async fn agent_result(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Accepted>, ApiError> {
    let secret = state.webhook_secret.as_deref().ok_or_else(|| {
        ApiError::Unavailable("webhooks are not configured (set CAIRN_WEBHOOK_SECRET)".into())
    })?;
    verify(secret, &headers, &body, chrono::Utc::now().timestamp())?;
    let req: AgentResult = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("bad delivery: {e}")))?;
    let run = store::runs::run_get(&state.pool, &req.task_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no task with id `{}`", req.task_id)))?;
    let definition = store::definitions::definition_get(&state.pool, &run.definition_hash).await?;
    let workflow: Option<Workflow> = definition.and_then(|d| serde_json::from_value(d).ok());
    match workflow
        .as_ref()
        .and_then(|w| w.step(&req.step_id))
        .map(|s| &s.kind)
    {
        Some(StepKind::Wait(_)) => {}
        Some(_) => {
            return Err(ApiError::Conflict {
                message: format!("step `{}` is not a wait step", req.step_id),
                details: None,
            });
        }
        None => {
            return Err(ApiError::NotFound(format!(
                "the task has no step `{}`",
                req.step_id
            )));
        }
    }
    let mut tx = state.pool.begin().await?;
    let delivery =
        store::steps::step_deliver(&mut tx, &req.task_id, &req.step_id, &req.result).await?;
    let accepted = match delivery {
        Delivery::Accepted => {
            queue::enqueue(&mut tx, &[Wake::now(&req.task_id)]).await?;
            true
        }
        Delivery::Duplicate => false,
        Delivery::NotWaiting(status) => {
            return Err(ApiError::Conflict {
                message: format!(
                    "step `{}` is not waiting for a result (it is {status})",
                    req.step_id
                ),
                details: None,
            });
        }
        Delivery::UnknownRun | Delivery::UnknownStep => {
            return Err(ApiError::NotFound("no such task step".into()));
        }
    };
    tx.commit().await?;
    Ok(Json(Accepted { accepted }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_expire() {
        let body = br#"{"taskId":"x"}"#;
        let mut h = HeaderMap::new();
        h.insert("x-cairn-timestamp", "1000".parse().unwrap());
        h.insert(
            "x-cairn-signature",
            sign("s3cret", 1000, body).parse().unwrap(),
        );
        assert!(verify("s3cret", &h, body, 1100).is_ok());
        assert!(verify("other", &h, body, 1100).is_err());
        assert!(verify("s3cret", &h, b"tampered", 1100).is_err());
        assert!(verify("s3cret", &h, body, 1000 + MAX_SKEW_SECS + 1).is_err());
    }
}
