//! One boundary around every route: requests whose path or query carries a NUL are
//! refused before routing (Postgres cannot store one, so it could only end as a 500),
//! and every error answer leaves in the API's shape, `{ "error": { code, message } }`,
//! whoever produced it — a handler, an extractor's rejection (a path segment that is not
//! a number, invalid UTF-8), the router (405), or a layer (413).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ApiError;

/// Most of a non-JSON error body quoted as the error's message.
const QUOTED_MAX: usize = 4 * 1024;

pub async fn boundary(req: Request, next: Next) -> Response {
    let uri = req.uri();
    if has_encoded_nul(uri.path()) || uri.query().is_some_and(has_encoded_nul) {
        return ApiError::bad_request(
            "paths and query strings must not contain NUL characters (%00)",
        )
        .into_response();
    }
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, QUOTED_MAX).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let message = if status.is_server_error() {
        // Server errors stay opaque, as ApiError answers them.
        if !text.is_empty() {
            tracing::error!(status = status.as_u16(), error = %text, "server error");
        }
        "internal server error".to_owned()
    } else if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_lowercase()
    } else {
        text
    };
    let body = json!({ "error": { "code": code(status), "message": message } });
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body.to_string()))
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"))
}

/// A `%00` anywhere (NUL percent-encoded; a raw one cannot be sent in a request line).
fn has_encoded_nul(s: &str) -> bool {
    s.contains("%00")
}

/// The error code for a status, as [`ApiError`] names them.
fn code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "timeout",
        409 => "conflict",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "invalid_input",
        429 => "rate_limited",
        503 => "unavailable",
        s if s >= 500 => "internal",
        _ => "bad_request",
    }
}
