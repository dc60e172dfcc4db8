//! The API's input boundary: extractors whose rejections speak the API's error shape,
//! and which refuse, before any handler sees them, what the database would refuse later
//! (or worse, accept): bodies that are not JSON objects and strings with NUL characters
//! (Postgres stores neither `\u0000` in text nor in jsonb).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use super::ApiError;

/// A JSON object body deserialized into `T`, rejected with [`ApiError`]: a body of
/// another content type, one that is not an object (serde would take an array for a
/// struct, field by field), one with a NUL in any string, or one that does not fit `T`.
pub struct AppJson<T>(pub T);

impl<S, T> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(&req) {
            return Err(ApiError::UnsupportedMediaType(
                "send a JSON body with `Content-Type: application/json`".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge("request body is too large".into())
            } else {
                ApiError::bad_request(format!("cannot read the request body: {e}"))
            }
        })?;
        check_object(&bytes)?;
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(v)) => Ok(AppJson(v)),
            Err(e) => whole_numbers(&bytes).map(AppJson).ok_or_else(|| e.into()),
        }
    }
}

/// Like [`AppJson`], but an empty body (or one of white space alone) is `T::default()`:
/// for actions whose every parameter is optional.
pub struct OptionalJson<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let empty = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == "0")
            || (req.headers().get(header::CONTENT_TYPE).is_none()
                && req.headers().get(header::CONTENT_LENGTH).is_none()
                && req.headers().get(header::TRANSFER_ENCODING).is_none());
        if empty {
            return Ok(OptionalJson(T::default()));
        }
        let AppJson(v) = AppJson::<T>::from_request(req, state).await?;
        Ok(OptionalJson(v))
    }
}

/// JSON (and JSON Schema) says `2.0` is the integer 2; serde does not. Only when a body
/// failed to deserialize, its numbers with no fraction are read as integers and it is
/// tried once more, so the common case pays nothing.
fn whole_numbers<T: DeserializeOwned>(json: &[u8]) -> Option<T> {
    fn fix(v: &mut serde_json::Value) -> bool {
        match v {
            serde_json::Value::Number(n) if n.is_f64() => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                    *v = serde_json::Value::from(f as i64);
                    true
                }
                _ => false,
            },
            // Every element is fixed: no short circuit.
            serde_json::Value::Array(items) => {
                let mut changed = false;
                for i in items {
                    changed |= fix(i);
                }
                changed
            }
            serde_json::Value::Object(m) => {
                let mut changed = false;
                for i in m.values_mut() {
                    changed |= fix(i);
                }
                changed
            }
            _ => false,
        }
    }
    let mut value: serde_json::Value = serde_json::from_slice(json).ok()?;
    if !fix(&mut value) {
        return None;
    }
    serde_json::from_value(value).ok()
}

/// Refuses JSON text that is not an object, or that holds a NUL in any string.
pub(crate) fn check_object(json: &[u8]) -> Result<(), ApiError> {
    let object = json
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    if !object {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    if has_escaped_nul(json) {
        return Err(ApiError::bad_request(
            "strings must not contain NUL characters (\\u0000)",
        ));
    }
    Ok(())
}

/// `application/json` or `application/<something>+json`.
fn is_json(req: &Request) -> bool {
    let Some(ct) = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Whether JSON text holds a `\u0000` escape (an odd run of backslashes before `u0000`;
/// `\\u0000` is a backslash and the text `u0000`). Raw NUL bytes are not valid JSON and
/// fail to parse anyway.
fn has_escaped_nul(json: &[u8]) -> bool {
    json.windows(5).enumerate().any(|(i, w)| {
        w == b"u0000" && {
            let backslashes = json[..i].iter().rev().take_while(|b| **b == b'\\').count();
            backslashes % 2 == 1
        }
    })
}

/// `Query<T>` that rejects with [`ApiError`] (a JSON 400 naming the bad parameter).
/// NULs in a query or path never reach it: [`super::boundary`] refuses them first.
pub struct AppQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for AppQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(v) = axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        Ok(AppQuery(v))
    }
}

#[cfg(test)]
mod tests {
    use super::has_escaped_nul;

    #[test]
    fn escaped_nuls_are_found_and_escaped_backslashes_are_not() {
        assert!(has_escaped_nul(br#"{"name":"a\u0000b"}"#));
        assert!(has_escaped_nul(br#"{"a\u0000":1}"#));
        assert!(has_escaped_nul(br#"{"x":"\\\u0000"}"#));
        assert!(!has_escaped_nul(br#"{"x":"\\u0000"}"#));
        assert!(!has_escaped_nul(br#"{"x":"u0000"}"#));
        assert!(!has_escaped_nul(br#"{"x":"\u0001"}"#));
    }
}
