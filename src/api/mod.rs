//! The HTTP API: the backend-for-frontend the dashboard and `ctl` talk to.
//!
//! JSON in `camelCase`; errors always have the shape of [`error::ErrorBody`]. Every
//! `/api` handler declares the role it needs through an extractor ([`auth::Viewer`],
//! [`auth::Operator`], [`auth::Admin`]), and carries a `#[utoipa::path]`, from which the
//! OpenAPI document at `/api/openapi.json` is generated. The server is a function of
//! (listener, state, shutdown), so tests bind port 0. Every other path is the
//! dashboard ([`assets`]).

mod assets;
pub mod auth;
mod boundary;
mod dead_letters;
mod doc;
pub mod error;
mod events;
mod extract;
pub mod guard;
mod health;
mod metrics;
mod notifications;
pub mod projects;
mod retention;
mod schedules;
mod tasks;
pub mod webhooks;
mod workers;
mod workflows;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::routing::get;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::engine::Submitter;
use crate::store::definitions::DefinitionsStored;
use crate::workflow::Registry;

pub use assets::embedded as dashboard_embedded;
pub use error::ApiError;

/// Largest accepted request body.
pub const MAX_BODY: usize = 1024 * 1024;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub workflows: Arc<Registry>,
    /// Mark the session cookie `Secure` (behind HTTPS).
    pub cookie_secure: bool,
    /// Serve the dashboard from this directory instead of the copy built into the
    /// binary (see [`assets`]).
    pub static_dir: Option<std::path::PathBuf>,
    /// Wakes `/api/events` streams.
    pub events: events::Hub,
    /// Verifies `/api/webhooks/agent-result` signatures; webhooks are off without it.
    pub webhook_secret: Option<String>,
    /// LLM prices for billing estimates.
    pub prices: Arc<projects::Prices>,
    /// Definitions already committed to `pool`'s database: submits skip storing them.
    pub definitions: Arc<DefinitionsStored>,
    /// Recently authenticated tokens and sessions (see [`auth::PRINCIPAL_TTL`]).
    pub principals: Arc<auth::Principals>,
    /// Writes concurrent `POST /api/tasks` together (see [`Submitter`]).
    pub submits: Arc<Submitter>,
    /// Sign-in attempts left per client address and account.
    pub login: Arc<auth::LoginGuard>,
    /// How long tokens made through the API live unless asked for less (`None`: never).
    pub token_ttl: Option<std::time::Duration>,
    /// Request timeout, event stream limits, where `/metrics` is served.
    pub limits: guard::Limits,
    /// The last `/metrics` rendering.
    metrics: Arc<metrics::Cache>,
}

impl AppState {
    pub fn new(pool: PgPool, workflows: Arc<Registry>) -> AppState {
        let definitions = Arc::new(DefinitionsStored::default());
        AppState {
            submits: Arc::new(Submitter::new(pool.clone(), definitions.clone())),
            definitions,
            pool,
            workflows,
            cookie_secure: false,
            static_dir: None,
            events: Arc::default(),
            webhook_secret: None,
            prices: Arc::default(),
            principals: Arc::default(),
            login: Arc::default(),
            token_ttl: Some(crate::auth::TOKEN_TTL),
            limits: guard::Limits::default(),
            metrics: Arc::default(),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Cairn API", description = "Durable workflows for AI/agent work, on Postgres alone."),
    modifiers(&Security),
    security(("bearer" = []), ("session" = [])),
    components(schemas(error::ErrorBody))
)]
struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(auth::SESSION_COOKIE))),
        );
    }
}

fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(auth::routes())
        .merge(tasks::routes())
        .merge(schedules::routes())
        .merge(dead_letters::routes())
        .merge(events::routes())
        .merge(workflows::routes())
        .merge(workers::routes())
        .merge(projects::routes())
        .merge(retention::routes())
        .merge(notifications::routes())
        .merge(webhooks::routes())
}

/// The OpenAPI document of every `/api` route, completed (see [`doc`]).
pub fn openapi() -> serde_json::Value {
    doc::complete(api_routes().into_openapi())
}

pub fn router(state: AppState) -> Router {
    let (api, doc) = api_routes().split_for_parts();
    let doc = Arc::new(doc::complete(doc));
    let request_id = HeaderName::from_static("x-request-id");
    // The dashboard: every path that is not the API's.
    let api = api.fallback_service(assets::router(state.static_dir.as_deref()));
    // `/metrics` for viewers, unless it has a listener of its own.
    let api = match state.limits.metrics_elsewhere {
        true => api,
        false => api.route("/metrics", get(metrics::metrics)),
    };
    let app = api
        // Unknown API paths answer in the API's error shape, not with the dashboard.
        .route(
            "/api/{*rest}",
            axum::routing::any(|| async { ApiError::NotFound("no such endpoint".into()) }),
        )
        .route(
        "/api/openapi.json",
        get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc.as_ref().clone()) }
        }),
    )
    .merge(health::router())
    .layer(DefaultBodyLimit::max(MAX_BODY))
    .layer(axum::middleware::from_fn(boundary::boundary))
    .layer(axum::middleware::from_fn_with_state(state.clone(), guard::timeout))
    .layer(axum::middleware::from_fn_with_state(state.clone(), guard::same_origin))
    .layer(
        TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }),
    )
    .layer(PropagateRequestIdLayer::new(request_id.clone()))
    .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
    .layer(axum::middleware::from_fn(metrics::count_requests));
    guard::security_headers(app, state.cookie_secure).with_state(state)
}

/// `/metrics` alone, unauthenticated, for a listener only the monitoring network
/// reaches (`--metrics-listen`).
pub fn metrics_router(state: AppState) -> Router {
    let app = Router::new().route("/metrics", get(metrics::metrics_open));
    guard::security_headers(app, state.cookie_secure).with_state(state)
}

/// Serves [`metrics_router`] until `shutdown` is cancelled.
pub async fn serve_metrics(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, metrics_router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Serves until `shutdown` is cancelled, then drains open requests; live event streams
/// end at once (their clients resume with `Last-Event-ID`).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    tokio::spawn(crate::auth::warm_up());
    let events = state.events.clone();
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.cancelled().await;
        events.close();
    })
    .await
}
