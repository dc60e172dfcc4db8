//! `http` steps: one request, JSON in and out, with a stable `Idempotency-Key`.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use serde_json::{Value, json};

use super::{StepContext, StepError};
use crate::workflow::HttpStep;

/// Largest response body kept as the step's output.
const MAX_BODY: usize = 4 * 1024 * 1024;

pub(super) async fn execute(
    step: &HttpStep,
    cx: &StepContext<'_>,
    timeout: Duration,
) -> Result<Value, StepError> {
    let url = match cx.render(&step.url)? {
        Value::String(s) => s,
        other => other.to_string(),
    };
    let url = reqwest::Url::parse(&url)
        .map_err(|e| StepError::fatal(format!("`{url}` is not a URL: {e}")))?;
    let method = reqwest::Method::from_bytes(step.method.as_bytes())
        .map_err(|e| StepError::fatal(format!("bad method {}: {e}", step.method)))?;

    let mut headers = HeaderMap::new();
    for (name, value) in &step.headers {
        let value = match cx.render(value)? {
            Value::String(s) => s,
            other => other.to_string(),
        };
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| StepError::fatal(format!("bad header name {name}: {e}")))?;
        let value = HeaderValue::from_str(&value)
            .map_err(|e| StepError::fatal(format!("bad value for header {name}: {e}")))?;
        headers.insert(name, value);
    }
    let key = HeaderValue::from_str(&cx.idempotency_key())
        .map_err(|e| StepError::fatal(format!("bad idempotency key: {e}")))?;
    headers.insert("idempotency-key", key);

    let mut request = cx
        .http
        .request(method, url.clone())
        .headers(headers)
        .timeout(timeout);
    if let Some(body) = &step.body {
        request = request.json(&cx.render(body)?);
    }

    let response = request
        .send()
        .await
        .map_err(|e| StepError::retryable(format!("{} {url}: {}", step.method, error_chain(&e))))?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let bytes = response.bytes().await.map_err(|e| {
        StepError::retryable(format!("reading response from {url}: {}", error_chain(&e)))
    })?;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_BODY)]).into_owned();
    let body = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));

    if status.is_success() {
        return Ok(json!({ "status": status.as_u16(), "body": body }));
    }
    let snippet: String = match &body {
        Value::String(s) => s.chars().take(300).collect(),
        other => other.to_string().chars().take(300).collect(),
    };
    let message = format!("{} {url} answered {status}: {snippet}", step.method);
    let code = status.as_u16();
    if status.is_client_error() && code != 408 && code != 429 {
        Err(StepError::fatal(message))
    } else {
        Err(StepError::Retryable {
            message,
            retry_after,
        })
    }
}

/// `Retry-After` as seconds or an HTTP date.
pub(crate) fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v.trim()).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
