//! `POST /api/webhooks/agent-result`: an external agent delivers the result a `wait` step
//! is waiting for.
//!
//! The credential is per delivery (see [`crate::delivery`]): the agent signs
//! `"{timestamp}.{body}"` with HMAC-SHA256 keyed by the key the worker handed it for that
//! run, step and attempt (`X-Cairn-Timestamp`: Unix seconds, `X-Cairn-Signature:
//! sha256=<hex>`). The key is derived again here from the body's `taskId` and `stepId`
//! and the step's current attempt, read under the step's lock in the transaction that
//! delivers, so a key cannot complete another run's step, another step, or an attempt
//! the step has moved past (a retry, or an operator re-arming it). Stale timestamps (more
//! than five minutes off) and signatures that match no waiting step get 401 and change
//! nothing, and say nothing about which runs exist; a repeated delivery is accepted once
//! and then ignored.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{ApiError, AppState};
use crate::delivery::{self, DeliveryError};
use crate::engine::{self, Delivered};
use crate::store;
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

/// The signed parts of a delivery's headers.
struct Signature {
    timestamp: i64,
    mac: Vec<u8>,
}

/// Reads `X-Cairn-Timestamp` and `X-Cairn-Signature`, refusing a timestamp more than
/// [`MAX_SKEW_SECS`] from `now`.
fn signature(headers: &HeaderMap, now: i64) -> Result<Signature, ApiError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let timestamp: i64 = header("x-cairn-timestamp")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| ApiError::Unauthorized("missing or bad X-Cairn-Timestamp".into()))?;
    if (now - timestamp).abs() > MAX_SKEW_SECS {
        return Err(ApiError::Unauthorized("stale timestamp".into()));
    }
    let mac = header("x-cairn-signature")
        .and_then(|s| s.strip_prefix("sha256="))
        .and_then(|h| hex::decode(h).ok())
        .ok_or_else(|| ApiError::Unauthorized("missing or bad X-Cairn-Signature".into()))?;
    Ok(Signature { timestamp, mac })
}

/// The one answer for every delivery whose signature matches no step's awaited attempt
/// (wrong key, unknown run or step), so it reveals nothing about what exists.
fn bad_signature() -> ApiError {
    ApiError::Unauthorized("bad signature".into())
}

/// Checks the signature against the key of the attempt `target` awaits.
fn authenticate(
    secret: &str,
    req: &AgentResult,
    target: &store::steps::DeliveryTarget,
    sig: &Signature,
    body: &[u8],
) -> Result<(), ApiError> {
    let attempt = delivery::awaited_attempt(target.status, target.attempts);
    let key =
        delivery::key(secret, &req.task_id, &req.step_id, attempt).map_err(ApiError::internal)?;
    delivery::verify(&key, sig.timestamp, body, &sig.mac).map_err(|e| match e {
        DeliveryError::Mismatch => bad_signature(),
        e @ DeliveryError::Key => ApiError::internal(e),
    })
}

/// Delivers an external agent's result to a waiting `wait` step.
#[utoipa::path(post, path = "/api/webhooks/agent-result", tag = "webhooks", request_body = AgentResult,
    security(()),
    description = "Completes a waiting `wait` step with an external agent's result. The credential is per delivery: \
the agent signs with the key the worker handed it for this run, step and attempt (templates: \
`run.deliveries.<step>.key`), which is `hex(HMAC-SHA256(CAIRN_WEBHOOK_SECRET, \"cairn-delivery/v1:{taskId}:{stepId}:{attempt}\"))`. \
`X-Cairn-Signature` is `sha256=` and the hex HMAC-SHA256 of `\"{X-Cairn-Timestamp}.{raw body}\"` keyed with that key's 64 hex \
characters (as bytes). A signature made with another run's, step's or attempt's key (including an attempt the step has \
moved past through a retry) gets 401 and changes nothing, as do unknown tasks and steps and timestamps more than 300 s off. \
A repeated delivery of an accepted result answers `accepted: false`.",
    params(("X-Cairn-Timestamp" = i64, Header, description = "Unix seconds; at most 300 s from the server's clock"),
           ("X-Cairn-Signature" = String, Header, description = "`sha256=<hex HMAC-SHA256(key, \"{timestamp}.{raw body}\")>`, key = the delivery key for this run, step and attempt")),
    responses((status = 200, body = Accepted), (status = 401, body = super::error::ErrorBody),
              (status = 400, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody),
              (status = 503, body = super::error::ErrorBody)))]
async fn agent_result(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Accepted>, ApiError> {
    let secret = state.webhook_secret.as_deref().ok_or_else(|| {
        ApiError::Unavailable("webhooks are not configured (set CAIRN_WEBHOOK_SECRET)".into())
    })?;
    let sig = signature(&headers, chrono::Utc::now().timestamp())?;
    super::extract::check_object(&body)?;
    let req: AgentResult = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("bad delivery: {e}")))?;
    // The step's kind, read before the transaction (a definition never changes) and
    // reported only to a caller whose signature holds.
    let Some(run) = store::runs::run_get(&state.pool, &req.task_id).await? else {
        return Err(bad_signature());
    };
    let definition = store::definitions::definition_get(&state.pool, &run.definition_hash).await?;
    let workflow: Option<Workflow> = definition.and_then(|d| serde_json::from_value(d).ok());
    let is_wait = match workflow.as_ref().and_then(|w| w.step(&req.step_id)) {
        Some(step) => matches!(step.kind, StepKind::Wait(_)),
        None => return Err(bad_signature()),
    };

    // Judged with the run and the step locked: the credential is the awaited attempt's.
    let delivered = engine::deliver(
        &state.pool,
        &req.task_id,
        &req.step_id,
        &req.result,
        |target| {
            authenticate(secret, &req, target, &sig, &body)?;
            if !is_wait {
                return Err(ApiError::Conflict {
                    message: format!("step `{}` is not a wait step", req.step_id),
                    details: None,
                });
            }
            Ok(())
        },
    )
    .await?;
    let accepted = match delivered {
        Delivered::Accepted => true,
        Delivered::Duplicate => false,
        Delivered::Unknown => return Err(bad_signature()),
        Delivered::Refused(e) => return Err(e),
        Delivered::NotWaiting(status) => {
            return Err(ApiError::Conflict {
                message: format!(
                    "step `{}` is not waiting for a result (it is {status})",
                    req.step_id
                ),
                details: None,
            });
        }
    };
    Ok(Json(Accepted { accepted }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_expire_and_signatures_must_be_hex() {
        let mut h = HeaderMap::new();
        h.insert("x-cairn-timestamp", "1000".parse().unwrap());
        h.insert("x-cairn-signature", "sha256=00ff".parse().unwrap());
        let sig = signature(&h, 1100).unwrap();
        assert_eq!((sig.timestamp, sig.mac), (1000, vec![0, 255]));
        assert!(signature(&h, 1000 + MAX_SKEW_SECS + 1).is_err());
        h.insert("x-cairn-signature", "sha256=zz".parse().unwrap());
        assert!(signature(&h, 1100).is_err());
        h.remove("x-cairn-timestamp");
        assert!(signature(&h, 1100).is_err());
    }
}
