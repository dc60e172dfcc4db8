//! What every request passes through before a handler sees it, and what every answer
//! carries on its way out: the API's edge.
//!
//! * [`same_origin`] refuses cross-site requests that would act with a browser's
//!   session cookie (CSRF);
//! * [`timeout`] bounds how long a request may take, answering in the error shape;
//! * [`security_headers`] adds `nosniff`, a Content-Security-Policy, `X-Frame-Options`,
//!   `Referrer-Policy` and, behind HTTPS, `Strict-Transport-Security` to every answer.
//!
//! [`Limits`] holds the settings of these and of the live event streams.

use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::uri::{Authority, Scheme};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Response, Uri, header};
use axum::middleware::Next;
use axum::response::IntoResponse;
use tower_http::set_header::SetResponseHeaderLayer;

use super::auth::session_cookie;
use super::{ApiError, AppState};

/// Settings of the API's edge; [`Limits::default`] is what `cairn api` uses unless
/// configured otherwise (see `config::ApiArgs`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest a request may take before it is answered with 503 (not `/api/events`).
    pub request_timeout: Duration,
    /// Open `/api/events` streams one principal (user, or service token) may hold.
    pub streams_per_principal: usize,
    /// Open `/api/events` streams this process serves in all.
    pub streams_max: usize,
    /// A stream ends after this long; the client reconnects with `Last-Event-ID`.
    pub stream_lifetime: Duration,
    /// How often a stream re-checks its caller's credential (besides at once when a
    /// credential is revoked in this process).
    pub stream_recheck: Duration,
    /// `/metrics` is served on a listener of its own (`--metrics-listen`), so the main
    /// listener has none.
    pub metrics_elsewhere: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_timeout: Duration::from_secs(30),
            streams_per_principal: 8,
            streams_max: 1000,
            stream_lifetime: Duration::from_secs(15 * 60),
            // The authentication cache's lifetime: re-checking sooner would mostly
            // re-read the cache.
            stream_recheck: super::auth::PRINCIPAL_TTL,
            metrics_elsewhere: false,
        }
    }
}

/// The one request that must not time out: live event streams, which are long by
/// design and bounded by [`Limits::stream_lifetime`] instead.
const EVENTS_PATH: &str = "/api/events";

/// Authenticated by the HMAC signature of its body, never by a cookie.
const WEBHOOK_PATH: &str = "/api/webhooks/agent-result";

/// Refuses a cookie-authenticated unsafe request that is not same-origin, or that
/// carries a body other than JSON.
///
/// SECURITY: a browser attaches the session cookie (`SameSite=Lax`) to every request
/// to Cairn's site, including some a foreign page triggers: a form POST from a
/// same-*site* origin (a sibling subdomain), and top-level navigations. `SameSite`
/// alone is therefore not enough, and this check applies to requests that
///
/// * use an unsafe method (not GET, HEAD, OPTIONS or TRACE; safe methods change
///   nothing in this API), and
/// * carry the session cookie and no `Authorization` header: a bearer token is never
///   sent by a browser on its own (and a page cannot add the header cross-origin
///   without a CORS preflight, which this API never grants), and when both are sent
///   the token is what authenticates.
///
/// Such a request passes when the browser says it is same-origin: `Sec-Fetch-Site:
/// same-origin`, else (browsers that do not send `Sec-Fetch-*`, which is only sent to
/// HTTPS and localhost) an `Origin` equal to this server's origin as the browser sees
/// it: the `Host` header's host and port, and the scheme from `X-Forwarded-Proto`
/// (else `https` when cookies are `Secure`, else `http`). None of these can be set
/// by a page: `Sec-Fetch-*`, `Origin` and `Host` are forbidden request headers, and a
/// cross-origin `X-Forwarded-Proto` would need a preflight; so trusting the proxy's
/// header for the scheme gives an attacker nothing. A `Sec-Fetch-Site` or `Origin`
/// that says another origin (including `null`) is refused.
///
/// A request with a body must say `Content-Type: application/json`: a page can send
/// `text/plain`, form or multipart bodies cross-origin without a preflight, JSON it
/// cannot (the browser asks first, and this API never says yes).
///
/// A request with neither `Sec-Fetch-Site` nor `Origin` passes only with a JSON body.
/// Every browser since 2019 sends `Origin` on unsafe methods, so such a request comes
/// from a browser old enough to omit it or from a client outside a browser (scripts
/// reusing a session, test harnesses). A JSON body is what no page can make any
/// browser, old or new, send cross-origin without a granted preflight, so it proves
/// the request is not a forged one; a bodiless or non-JSON one could be a plain form
/// in an old browser, and is refused.
///
/// The webhook is exempt (its signature is its credential, cookies play no part), and
/// so is any request without the cookie, such as sign-in.
pub async fn same_origin(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response<axum::body::Body> {
    if let Err(refusal) = check_same_origin(&req, state.cookie_secure) {
        tracing::info!(method = %req.method(), path = %req.uri().path(), reason = %refusal, "refused a cookie-authenticated request");
        return refusal.into_response();
    }
    next.run(req).await
}

fn check_same_origin(req: &Request, cookie_secure: bool) -> Result<(), ApiError> {
    let headers = req.headers();
    let safe = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    if safe
        || headers.contains_key(header::AUTHORIZATION)
        || session_cookie(headers).is_none()
        || req.uri().path() == WEBHOOK_PATH
    {
        return Ok(());
    }
    let refuse = |why: &str| {
        Err(ApiError::Forbidden(format!(
            "{why}: a request signed in with the session cookie must come from this site's own pages (or use a bearer token)"
        )))
    };
    let body = has_body(headers);
    if body && !is_json(headers) {
        return refuse("only `Content-Type: application/json` bodies are accepted");
    }
    match headers.get("sec-fetch-site").map(HeaderValue::as_bytes) {
        Some(b"same-origin") => Ok(()),
        Some(_) => refuse("cross-origin request refused"),
        None => match headers.get(header::ORIGIN) {
            Some(origin) if origin_matches(origin, headers, req.uri(), cookie_secure) => Ok(()),
            Some(_) => refuse("cross-origin request refused"),
            // A JSON body (checked above): no page could have sent it.
            None if body => Ok(()),
            None => refuse("a request without a body needs an `Origin` header"),
        },
    }
}

/// Whether `origin` (the `Origin` header) is this server's own origin.
fn origin_matches(
    origin: &HeaderValue,
    headers: &HeaderMap,
    uri: &Uri,
    cookie_secure: bool,
) -> bool {
    let Some(origin) = origin.to_str().ok().and_then(|o| o.parse::<Uri>().ok()) else {
        // Includes `null`, the origin of sandboxed frames and some redirects.
        return false;
    };
    let (Some(origin_scheme), Some(origin_authority)) = (origin.scheme(), origin.authority())
    else {
        return false;
    };
    // HTTP/1.1 sends `Host`; HTTP/2 the `:authority` pseudo-header, which hyper puts in
    // the URI.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<Authority>().ok())
        .or_else(|| uri.authority().cloned());
    let Some(host) = host else {
        return false;
    };
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
    {
        Some(p) if p.eq_ignore_ascii_case("https") => Scheme::HTTPS,
        Some(p) if p.eq_ignore_ascii_case("http") => Scheme::HTTP,
        _ if cookie_secure => Scheme::HTTPS,
        _ => Scheme::HTTP,
    };
    let default_port = |s: &Scheme| if *s == Scheme::HTTPS { 443 } else { 80 };
    *origin_scheme == scheme
        && origin_authority.host().eq_ignore_ascii_case(host.host())
        && origin_authority
            .port_u16()
            .unwrap_or(default_port(origin_scheme))
            == host.port_u16().unwrap_or(default_port(&scheme))
        // `Origin` is scheme, host and port only.
        && origin.path() == "/"
        && origin.query().is_none()
        && !origin_authority.as_str().contains('@')
}

fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// Answers 503 in the error shape when a request takes longer than
/// [`Limits::request_timeout`]. The handler's future is dropped: its open transaction
/// rolls back. `/api/events` is exempt.
pub async fn timeout(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response<axum::body::Body> {
    if req.uri().path() == EVENTS_PATH {
        return next.run(req).await;
    }
    let limit = state.limits.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Unavailable(format!(
            "the request took longer than {}",
            humantime::format_duration(limit)
        ))
        .into_response(),
    }
}

/// The dashboard's policy: its own scripts, styles and API only. `img-src data:`
/// serves the inline favicon.
const CSP_DASHBOARD: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'self'; \
     form-action 'self'; frame-ancestors 'none'";
/// Everything else (JSON, text, event streams) is never a document: nothing may load.
const CSP_OTHER: &str = "default-src 'none'; frame-ancestors 'none'";
/// Two years, without subdomains: Cairn cannot know what else lives under its domain.
const HSTS: &str = "max-age=63072000";

/// Adds the security headers to every answer of `router` (see the module doc); HSTS
/// only when `https` (the session cookie is `Secure`, so Cairn is served over HTTPS).
pub fn security_headers<S>(router: Router<S>, https: bool) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let fixed = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    let router = router
        .layer(fixed(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(fixed(header::X_FRAME_OPTIONS, "DENY"))
        .layer(fixed(header::REFERRER_POLICY, "same-origin"))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            |r: &Response<axum::body::Body>| {
                // A 304 has no content type, and its headers replace the cached
                // answer's: the dashboard's own policy must stay with its page.
                if r.status() == axum::http::StatusCode::NOT_MODIFIED {
                    return None;
                }
                let html = r
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("text/html"));
                Some(HeaderValue::from_static(if html {
                    CSP_DASHBOARD
                } else {
                    CSP_OTHER
                }))
            },
        ));
    if https {
        router.layer(fixed(header::STRICT_TRANSPORT_SECURITY, HSTS))
    } else {
        router
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_revalidated_page_keeps_its_own_policy() {
        use tower::ServiceExt;
        let app = security_headers(
            Router::new()
                .route(
                    "/page",
                    axum::routing::get(|| async { axum::response::Html("<p>hi</p>") }),
                )
                .route(
                    "/cached",
                    axum::routing::get(|| async { axum::http::StatusCode::NOT_MODIFIED }),
                )
                .route("/json", axum::routing::get(|| async { axum::Json(1) })),
            false,
        );
        let csp = |path: &'static str| {
            let app = app.clone();
            async move {
                let r = app
                    .oneshot(
                        Request::get(path)
                            .body(axum::body::Body::empty())
                            .expect("request"),
                    )
                    .await
                    .expect("answer");
                r.headers()
                    .get(header::CONTENT_SECURITY_POLICY)
                    .map(|v| v.to_str().unwrap_or_default().to_owned())
            }
        };
        assert_eq!(csp("/page").await.as_deref(), Some(CSP_DASHBOARD));
        assert_eq!(csp("/json").await.as_deref(), Some(CSP_OTHER));
        assert_eq!(csp("/cached").await, None);
    }

    fn request(method: Method, headers: &[(&str, &str)]) -> Request {
        let mut b = Request::builder().method(method).uri("/api/tasks");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(axum::body::Body::empty()).expect("valid request")
    }

    const COOKIE: (&str, &str) = ("cookie", "theme=dark; cairn_session=abc");

    #[test]
    fn same_origin_rules() {
        let ok = |h: &[(&str, &str)], secure| {
            check_same_origin(&request(Method::POST, h), secure).is_ok()
        };
        let host = ("host", "cairn.example:8080");
        // Not cookie-authenticated, or safe: not checked.
        assert!(ok(&[("origin", "https://evil.example")], false));
        assert!(ok(
            &[
                COOKIE,
                ("authorization", "Bearer x"),
                ("origin", "https://evil.example")
            ],
            false
        ));
        assert!(
            check_same_origin(
                &request(Method::GET, &[COOKIE, ("origin", "https://evil.example")]),
                false
            )
            .is_ok()
        );
        // Origin.
        assert!(ok(
            &[COOKIE, host, ("origin", "http://cairn.example:8080")],
            false
        ));
        assert!(ok(
            &[COOKIE, host, ("origin", "http://CAIRN.example:8080")],
            false
        ));
        assert!(!ok(
            &[COOKIE, host, ("origin", "https://evil.example")],
            false
        ));
        assert!(!ok(
            &[COOKIE, host, ("origin", "http://cairn.example")],
            false
        ));
        assert!(!ok(
            &[COOKIE, host, ("origin", "https://cairn.example:8080")],
            false
        ));
        assert!(!ok(&[COOKIE, host, ("origin", "null")], false));
        // Neither header: only a JSON body, which no page can send cross-origin.
        assert!(!ok(&[COOKIE, host], false));
        assert!(ok(
            &[
                COOKIE,
                host,
                ("content-length", "2"),
                ("content-type", "application/json")
            ],
            false
        ));
        assert!(!ok(
            &[
                COOKIE,
                host,
                ("content-length", "2"),
                ("content-type", "text/plain")
            ],
            false
        ));
        // The scheme behind a TLS-terminating proxy.
        let alb = ("host", "cairn.example");
        assert!(ok(
            &[
                COOKIE,
                alb,
                ("x-forwarded-proto", "https"),
                ("origin", "https://cairn.example")
            ],
            false
        ));
        assert!(ok(
            &[COOKIE, alb, ("origin", "https://cairn.example")],
            true
        ));
        assert!(ok(
            &[
                COOKIE,
                ("host", "cairn.example:443"),
                ("origin", "https://cairn.example")
            ],
            true
        ));
        assert!(!ok(
            &[COOKIE, alb, ("origin", "http://cairn.example")],
            true
        ));
        assert!(!ok(
            &[
                COOKIE,
                alb,
                ("x-forwarded-proto", "https"),
                ("origin", "http://cairn.example")
            ],
            false
        ));
        // Fetch metadata wins over Origin.
        assert!(ok(&[COOKIE, ("sec-fetch-site", "same-origin")], false));
        assert!(!ok(
            &[
                COOKIE,
                host,
                ("sec-fetch-site", "same-site"),
                ("origin", "http://cairn.example:8080")
            ],
            false
        ));
        assert!(!ok(&[COOKIE, ("sec-fetch-site", "cross-site")], false));
        // Bodies must be JSON.
        let same = ("sec-fetch-site", "same-origin");
        assert!(ok(&[COOKIE, same, ("content-length", "0")], false));
        assert!(ok(
            &[
                COOKIE,
                same,
                ("content-length", "2"),
                ("content-type", "application/json; charset=utf-8")
            ],
            false
        ));
        assert!(!ok(
            &[
                COOKIE,
                same,
                ("content-length", "2"),
                ("content-type", "text/plain")
            ],
            false
        ));
        assert!(!ok(&[COOKIE, same, ("content-length", "2")], false));
        assert!(!ok(
            &[
                COOKIE,
                same,
                ("transfer-encoding", "chunked"),
                ("content-type", "application/x-www-form-urlencoded")
            ],
            false
        ));
    }
}
