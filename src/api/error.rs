//! The API's one error type: every failure becomes `{ "error": { code, message, details? } }`
//! with the right status. Server errors are logged in full and answered opaquely.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The body of every error answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// `bad_request`, `unauthorized`, `forbidden`, `not_found`, `method_not_allowed`,
    /// `timeout`, `conflict`, `payload_too_large`, `unsupported_media_type`,
    /// `invalid_input`, `rate_limited`, `unavailable` or `internal`.
    pub code: String,
    /// What went wrong, for a person; at most 4,096 characters.
    pub message: String,
    /// Structured detail where there is some: for invalid input, a list of the problems
    /// (at most 50; a last entry counts the rest), each naming its field.
    #[schema(value_type = Option<Value>)]
    pub details: Option<Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest {
        message: String,
        details: Option<Value>,
    },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    Conflict {
        message: String,
        details: Option<Value>,
    },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{message}")]
    Unprocessable {
        message: String,
        details: Option<Value>,
    },
    /// Too many requests; try again after `retry_after` seconds (`Retry-After`).
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: u64 },
    #[error("{0}")]
    Unavailable(String),
    /// The database cannot be reached right now (it is restarting, or the connection
    /// broke): 503 `unavailable` with `Retry-After`. The reason names the class of
    /// failure only ([`crate::store::connect::unavailable`]); the error is logged.
    #[error("the database is unavailable ({0}); try again shortly")]
    DatabaseUnavailable(&'static str),
    /// Any internal failure; its text is logged, never sent.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            message: message.into(),
            details: None,
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(e.to_string())
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Unprocessable { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
            ApiError::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Unavailable(_) | ApiError::DatabaseUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let (message, details) = match &self {
            ApiError::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                ("internal server error".to_owned(), None)
            }
            ApiError::BadRequest { message, details }
            | ApiError::Conflict { message, details }
            | ApiError::Unprocessable { message, details } => (message.clone(), details.clone()),
            other => (other.to_string(), None),
        };
        let mut error = json!({ "code": code, "message": bounded(message) });
        if let Some(d) = details {
            error["details"] = bounded_details(d);
        }
        let mut response = (status, Json(json!({ "error": error }))).into_response();
        let retry_after = match &self {
            ApiError::TooManyRequests { retry_after, .. } => Some(*retry_after),
            ApiError::DatabaseUnavailable(_) => Some(DATABASE_RETRY_AFTER_SECS),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs.max(1)),
            );
        }
        response
    }
}

/// Longest message an error answer carries, in characters.
const MESSAGE_MAX: usize = 4096;
/// Most entries of a `details` list an error answer carries.
const DETAILS_MAX: usize = 50;

/// However much went wrong, an error answer stays small: an input with a hundred
/// thousand problems must not be answered with megabytes.
fn bounded(message: String) -> String {
    if message.chars().count() <= MESSAGE_MAX {
        return message;
    }
    let mut m: String = message.chars().take(MESSAGE_MAX).collect();
    m.push('…');
    m
}

fn bounded_details(details: Value) -> Value {
    match details {
        Value::Array(mut items) if items.len() > DETAILS_MAX => {
            let more = items.len() - DETAILS_MAX;
            items.truncate(DETAILS_MAX);
            items.push(json!({ "message": format!("and {more} more") }));
            Value::Array(items)
        }
        other => other,
    }
}

/// `Retry-After` on answers given while the database is away: a restart takes seconds.
pub const DATABASE_RETRY_AFTER_SECS: u64 = 2;

impl ApiError {
    /// A failure to reach the database is [`ApiError::DatabaseUnavailable`] (logged at
    /// WARN); anything else is internal.
    fn from_database(e: impl std::fmt::Display, unavailable: Option<&'static str>) -> ApiError {
        match unavailable {
            Some(reason) => {
                tracing::warn!(error = %e, "the database is unavailable");
                ApiError::DatabaseUnavailable(reason)
            }
            None => ApiError::internal(e),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        let unavailable = e.unavailable();
        ApiError::from_database(e, unavailable)
    }
}

impl From<crate::engine::EngineError> for ApiError {
    fn from(e: crate::engine::EngineError) -> Self {
        let unavailable = e.unavailable();
        ApiError::from_database(e, unavailable)
    }
}

impl From<crate::queue::QueueError> for ApiError {
    fn from(e: crate::queue::QueueError) -> Self {
        let unavailable = e.unavailable();
        ApiError::from_database(e, unavailable)
    }
}

impl From<crate::scheduler::SchedulerError> for ApiError {
    fn from(e: crate::scheduler::SchedulerError) -> Self {
        let unavailable = e.unavailable();
        ApiError::from_database(e, unavailable)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        let unavailable = crate::store::connect::unavailable(&e);
        ApiError::from_database(e, unavailable)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge("request body is too large".into())
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(
                "send a JSON body with `Content-Type: application/json`".into(),
            ),
            _ => ApiError::bad_request(r.body_text()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineError;
    use crate::store::StoreError;

    fn refused() -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
    }

    async fn answer(e: ApiError) -> (StatusCode, Option<String>, Value) {
        let response = e.into_response();
        let status = response.status();
        let retry_after = response
            .headers()
            .get(axum::http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let body = serde_json::from_slice(&body).expect("JSON");
        (status, retry_after, body)
    }

    /// However the failure to reach the database travels — a store error, the engine's
    /// (the submit batcher answers with those), or a handler's own transaction — it is
    /// a 503 with `Retry-After`; a statement's own failure stays a 500.
    #[tokio::test]
    async fn the_database_away_is_503_with_retry_after_through_every_layer() {
        let away = [
            ApiError::from(StoreError::Database(refused())),
            ApiError::from(StoreError::Database(sqlx::Error::PoolTimedOut)),
            ApiError::from(EngineError::Store(StoreError::Database(refused()))),
            ApiError::from(EngineError::Database(sqlx::Error::PoolClosed)),
            ApiError::from(refused()),
        ];
        for e in away {
            let (status, retry_after, body) = answer(e).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert_eq!(
                retry_after.as_deref(),
                Some(DATABASE_RETRY_AFTER_SECS.to_string().as_str())
            );
            assert_eq!(body["error"]["code"], "unavailable");
        }
        let (status, retry_after, body) = answer(ApiError::from(StoreError::Database(
            sqlx::Error::RowNotFound,
        )))
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(retry_after, None);
        assert_eq!(body["error"]["message"], "internal server error");
    }
}
