//! `http` steps: one request, JSON in and out, with a stable `Idempotency-Key`.
//!
//! The request goes through the worker's egress policy ([`super::egress`]): refused
//! addresses, schemes and redirect targets fail the step for good. The answer is read
//! up to a size limit and no further. Errors name the URL without its userinfo and
//! query ([`redact`]), which may carry credentials.

use std::time::Duration;

use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use serde_json::{Value, json};

pub(crate) use super::egress::redact;
use super::egress::{self, EgressError};
use super::{StepContext, StepError};
use crate::workflow::HttpStep;

/// Why the step failed, fatal unless the egress policy says a retry might help.
fn egress_error(method: &str, url: &Url, e: &EgressError) -> StepError {
    let message = format!("{method} {}: {e}", redact(url));
    if e.is_retryable() {
        StepError::retryable(message)
    } else {
        StepError::fatal(message)
    }
}

pub(super) async fn execute(
    step: &HttpStep,
    cx: &StepContext<'_>,
    timeout: Duration,
) -> Result<Value, StepError> {
    let url = match cx.render(&step.url)? {
        Value::String(s) => s,
        other => other.to_string(),
    };
    // The text may carry credentials: the error names neither it nor the parser's view.
    let url = Url::parse(&url)
        .map_err(|e| StepError::fatal(format!("the step's url is not a URL: {e}")))?;
    let method = reqwest::Method::from_bytes(step.method.as_bytes())
        .map_err(|e| StepError::fatal(format!("bad method {}: {e}", step.method)))?;
    let client = cx
        .egress
        .client(&step.allowed_hosts)
        .map_err(|e| egress_error(&step.method, &url, &e))?;
    // An IP-literal host never reaches the resolver: checked here, before any socket.
    client
        .rules
        .check_url(&url)
        .map_err(|e| egress_error(&step.method, &url, &e))?;

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
    // The step's own `traceparent` header, if it sets one, wins.
    if !headers.contains_key("traceparent")
        && let Ok(parent) = HeaderValue::from_str(cx.traceparent)
    {
        headers.insert("traceparent", parent);
    }

    let mut request = client
        .client
        .request(method, url.clone())
        .headers(headers)
        .timeout(timeout);
    if let Some(body) = &step.body {
        request = request.json(&cx.render(body)?);
    }

    let shown = redact(&url);
    let response = request.send().await.map_err(|e| {
        if let Some(refused) = egress::find_egress_error(&e) {
            return egress_error(&step.method, &url, refused);
        }
        StepError::retryable(format!("{} {shown}: {}", step.method, reqwest_error(e)))
    })?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let limit = step
        .max_response_bytes
        .map_or(cx.limits.max_response_bytes, |m| {
            m.min(cx.limits.max_response_bytes)
        });
    let bytes = read_body(response, limit, &format!("{} {shown}", step.method)).await?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    drop(bytes);
    let body = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));

    if status.is_success() {
        return Ok(json!({ "status": status.as_u16(), "body": body }));
    }
    let snippet: String = match &body {
        Value::String(s) => s.chars().take(300).collect(),
        other => other.to_string().chars().take(300).collect(),
    };
    let message = format!("{} {shown} answered {status}: {snippet}", step.method);
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

/// A reqwest error with its causes, without the URL it carries.
pub(crate) fn reqwest_error(e: reqwest::Error) -> String {
    error_chain(&e.without_url())
}

/// Reads a response body of at most `limit` bytes, chunk by chunk, so a service that
/// answers more costs at most `limit` bytes of memory: a `Content-Length` over the
/// limit is refused before reading, and the read stops as soon as the body passes it.
/// Both are fatal: the same request would get the same answer. `what` names the
/// request in the error.
pub(crate) async fn read_body(
    mut response: reqwest::Response,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, StepError> {
    let too_large = |size: String| {
        StepError::fatal(format!(
            "{what}: the response is larger than the {} limit ({size}); raise \
             max_response_bytes, or CAIRN_MAX_RESPONSE_BYTES (--max-response-bytes) for the \
             worker, if this is expected",
            format_bytes(limit)
        ))
    };
    if let Some(length) = response.content_length()
        && length > limit
    {
        return Err(too_large(format!("Content-Length: {length}")));
    }
    let capacity = response
        .content_length()
        .unwrap_or(0)
        .min(limit)
        .min(64 * 1024);
    let mut body = Vec::with_capacity(capacity as usize);
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        StepError::retryable(format!(
            "{what}: reading the response: {}",
            reqwest_error(e)
        ))
    })? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(too_large(format!(
                "more than {} bytes read",
                body.len() + chunk.len()
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `4 MiB`, `512 KiB`, `100 bytes`.
pub(crate) fn format_bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
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
    fn urls_lose_userinfo_and_query() {
        let u = Url::parse("https://user:hunter2@example.com:8443/a/b?token=t0k#frag").unwrap();
        assert_eq!(redact(&u), "https://example.com:8443/a/b");
        let u = Url::parse("http://[::1]/x?y=1").unwrap();
        assert_eq!(redact(&u), "http://[::1]/x");
    }

    #[test]
    fn byte_sizes_read_well() {
        assert_eq!(format_bytes(4 * 1024 * 1024), "4 MiB");
        assert_eq!(format_bytes(512 * 1024), "512 KiB");
        assert_eq!(format_bytes(1000), "1000 bytes");
    }

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
