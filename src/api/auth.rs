//! Authentication and roles for the API: role extractors every handler declares
//! ([`Viewer`], [`Operator`], [`Admin`]), dashboard sign-in with an HttpOnly session
//! cookie, the caller's own tokens and password, and the admin endpoints for users and
//! tokens.
//!
//! A credential is only as strong as its user is now: a token acts with the lower of
//! its own role and its owner's current role, expires, and stops with its owner;
//! sign-in is rate-limited per client address and per account and costs the same for
//! unknown and known emails.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::AppJson;
use super::{ApiError, AppState};
use crate::auth::{self, Principal, Role};
use crate::store::users::{self, TokenRow, UserRow};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "cairn_session";
const SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The session cookie's value, if the request carries one.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v)
}

/// How long a looked-up bearer token or session is trusted without asking the
/// database again. A token revoked (or a user disabled, or a session ended) through
/// another API process keeps working here for at most this long; through this process
/// it stops at once (see [`Principals::evict_token`] and friends).
pub const PRINCIPAL_TTL: Duration = Duration::from_secs(5);
/// Most secrets [`Principals`] remembers; past it, it forgets the expired ones, then
/// everything.
const PRINCIPALS_MAX: usize = 10_000;

/// Secrets being looked up at which [`Principals`] forgets those nobody waits for.
const LOOKUPS_PRUNE_AT: usize = 1_024;

/// Recently authenticated secrets (bearer tokens and session cookies, by their stored
/// hash) and who they belong to, so a busy client does not cost a database round trip
/// — and for tokens a `last_used_at` write — on every request. Only successful lookups
/// are remembered, each for [`PRINCIPAL_TTL`]; so a token's `last_used_at` is updated
/// at most once per TTL per API process. Handlers that revoke tokens, end sessions or
/// change users evict the affected entries.
/// Requests that find a secret not remembered look it up one at a time, and those that
/// waited use what the first remembered: when a secret's entry expires under load,
/// every request in flight misses at once, and for a token each lookup also writes its
/// `last_used_at` — on the same row, so they queued behind each other's row lock (64
/// requests at once, 25 ms each).
#[derive(Debug)]
pub struct Principals {
    entries: Mutex<HashMap<String, Remembered>>,
    /// Per secret (by hash), the turn to look it up; gone when no request holds it.
    lookups: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Bumped whenever a token, session or user is evicted: long-lived requests (event
    /// streams) subscribe and re-check their caller at once.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Default for Principals {
    fn default() -> Self {
        Principals {
            entries: Mutex::default(),
            lookups: Mutex::default(),
            changes: tokio::sync::watch::channel(0).0,
        }
    }
}

#[derive(Debug, Clone)]
struct Remembered {
    principal: Principal,
    /// The `api_tokens` row, for a token.
    token_id: Option<i64>,
    until: Instant,
}

impl Principals {
    fn get(&self, hash: &str) -> Option<Principal> {
        let entries = self.lock();
        let r = entries.get(hash)?;
        (r.until > Instant::now()).then(|| r.principal.clone())
    }

    fn put(&self, hash: String, principal: Principal, token_id: Option<i64>) {
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.len() >= PRINCIPALS_MAX {
            entries.retain(|_, r| r.until > now);
            if entries.len() >= PRINCIPALS_MAX {
                entries.clear();
            }
        }
        entries.insert(
            hash,
            Remembered {
                principal,
                token_id,
                until: now + PRINCIPAL_TTL,
            },
        );
    }

    /// Forgets a revoked token.
    pub fn evict_token(&self, token_id: i64) {
        self.lock().retain(|_, r| r.token_id != Some(token_id));
        self.changed();
    }

    /// Forgets a secret (an ended session) by its stored hash.
    pub fn evict_secret(&self, hash: &str) {
        self.lock().remove(hash);
        self.changed();
    }

    /// Forgets every session and token of a user (disabled, deleted, or given another
    /// role).
    pub fn evict_user(&self, user_id: i64) {
        self.lock()
            .retain(|_, r| r.principal.user_id != Some(user_id));
        self.changed();
    }

    /// Changes whenever a credential may have been revoked in this process.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Waits for the turn to look `hash` up; the turn passes on when the guard drops.
    async fn lookup_turn<'p>(&'p self, hash: &str) -> LookupTurn<'p> {
        let turn = {
            let mut lookups = self.lookups.lock().unwrap_or_else(|e| e.into_inner());
            // A request dropped while it waited leaves its secret's entry behind.
            if lookups.len() >= LOOKUPS_PRUNE_AT {
                lookups.retain(|_, turn| Arc::strong_count(turn) > 1);
            }
            lookups.entry(hash.to_owned()).or_default().clone()
        };
        LookupTurn {
            principals: self,
            hash: hash.to_owned(),
            guard: Some(turn.lock_owned().await),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Remembered>> {
        // Every change is a single map operation: a panic cannot leave one half done.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One request's turn to look a secret up ([`Principals::lookup_turn`]).
struct LookupTurn<'p> {
    principals: &'p Principals,
    hash: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for LookupTurn<'_> {
    fn drop(&mut self) {
        let mut lookups = self
            .principals
            .lookups
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.guard = None;
        // Taken under the map's lock, as every waiter's clone is: none but the map's
        // own means no request waits for this secret any more.
        if lookups
            .get(&self.hash)
            .is_some_and(|turn| Arc::strong_count(turn) == 1)
        {
            lookups.remove(&self.hash);
        }
    }
}

/// Sign-in budgets: so many attempts a minute from one client address, and as many for
/// one account, whichever runs out first. Each budget refills continuously (GCRA).
#[derive(Debug)]
pub struct LoginGuard {
    by_address: DefaultKeyedRateLimiter<IpAddr>,
    by_account: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    trust_forwarded_for: bool,
}

/// Past this many remembered addresses or accounts, budgets that are full again are
/// forgotten.
const LOGIN_KEYS_MAX: usize = 10_000;

impl LoginGuard {
    /// `per_minute` attempts per address and per account; with `trust_forwarded_for`, the
    /// address is the last `X-Forwarded-For` entry (what the proxy in front appended).
    pub fn new(per_minute: u32, trust_forwarded_for: bool) -> LoginGuard {
        let quota = Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN));
        LoginGuard {
            by_address: RateLimiter::keyed(quota),
            by_account: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            trust_forwarded_for,
        }
    }

    fn address(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Option<IpAddr> {
        if self.trust_forwarded_for
            && let Some(ip) = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .next_back()
                .and_then(|ip| ip.trim().parse().ok())
        {
            return Some(ip);
        }
        peer
    }

    /// Spends one attempt of the address' and the account's budgets, or says when to
    /// try again.
    fn attempt(&self, address: Option<IpAddr>, account: &str) -> Result<(), ApiError> {
        let wait = |until: governor::NotUntil<_>, whose: &str| {
            let secs = until.wait_time_from(self.clock.now()).as_secs_f64().ceil() as u64;
            ApiError::TooManyRequests {
                message: format!("too many sign-in attempts {whose}; try again in {secs} s"),
                retry_after: secs.max(1),
            }
        };
        if let Some(ip) = address {
            self.by_address
                .check_key(&ip)
                .map_err(|u| wait(u, "from this address"))?;
        }
        self.by_account
            .check_key(&account.trim().to_lowercase())
            .map_err(|u| wait(u, "for this account"))?;
        if self.by_address.len().max(self.by_account.len()) > LOGIN_KEYS_MAX {
            self.by_address.retain_recent();
            self.by_account.retain_recent();
        }
        Ok(())
    }
}

impl Default for LoginGuard {
    fn default() -> Self {
        LoginGuard::new(10, false)
    }
}

/// The peer's address, when the server was started with connection info.
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(a)| a.ip()),
        ))
    }
}

/// Who is calling: a bearer token, else a session cookie. `None` when the request
/// carries neither; an error when it carries a credential that is not (or no longer)
/// valid.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Principal>, ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::Unauthorized("Authorization must be `Bearer <token>`".into())
            })?;
        let hash = auth::secret_hash(token);
        if let Some(p) = state.principals.get(&hash) {
            return Ok(Some(p));
        }
        let _turn = state.principals.lookup_turn(&hash).await;
        if let Some(p) = state.principals.get(&hash) {
            return Ok(Some(p));
        }
        let Some(row) = users::token_use(&state.pool, &hash).await? else {
            return Err(ApiError::Unauthorized("unknown or revoked token".into()));
        };
        let role = row.role.parse().map_err(ApiError::internal)?;
        let p = Principal {
            user_id: row.user_id,
            name: row.name,
            role,
            token_id: Some(row.id),
        };
        state.principals.put(hash, p.clone(), Some(row.id));
        return Ok(Some(p));
    }
    if let Some(session) = session_cookie(headers) {
        let hash = auth::secret_hash(session);
        if let Some(p) = state.principals.get(&hash) {
            return Ok(Some(p));
        }
        let _turn = state.principals.lookup_turn(&hash).await;
        if let Some(p) = state.principals.get(&hash) {
            return Ok(Some(p));
        }
        if let Some(user) = users::session_user(&state.pool, &hash).await? {
            let role = user.role.parse().map_err(ApiError::internal)?;
            let p = Principal {
                user_id: Some(user.id),
                name: user.email,
                role,
                token_id: None,
            };
            state.principals.put(hash, p.clone(), None);
            return Ok(Some(p));
        }
    }
    Ok(None)
}

async fn require(parts: &Parts, state: &AppState, role: Role) -> Result<Principal, ApiError> {
    let p = authenticate(state, &parts.headers)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("sign in or send a bearer token".into()))?;
    if p.role < role {
        return Err(ApiError::Forbidden(format!(
            "this needs the {role} role; you are {}",
            p.role
        )));
    }
    Ok(p)
}

macro_rules! role_extractor {
    ($name:ident, $role:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone)]
        pub struct $name(pub Principal);

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &AppState,
            ) -> Result<Self, Self::Rejection> {
                require(parts, state, $role).await.map($name)
            }
        }
    };
}

role_extractor!(
    Viewer,
    Role::Viewer,
    "A caller with at least the viewer role."
);
role_extractor!(
    Operator,
    Role::Operator,
    "A caller with at least the operator role."
);
role_extractor!(Admin, Role::Admin, "A caller with the admin role.");

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(personal_token))
        .routes(routes!(own_tokens))
        .routes(routes!(revoke_own_token))
        .routes(routes!(change_password))
        .routes(routes!(list_users, create_user))
        .routes(routes!(update_user, delete_user))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    id: i64,
    email: String,
    name: String,
    role: Role,
    created_at: DateTime<Utc>,
    disabled: bool,
}

impl TryFrom<UserRow> for UserView {
    type Error = ApiError;

    fn try_from(u: UserRow) -> Result<Self, ApiError> {
        Ok(UserView {
            id: u.id,
            role: u.role.parse().map_err(ApiError::internal)?,
            email: u.email,
            name: u.name,
            created_at: u.created_at,
            disabled: u.disabled_at.is_some(),
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserEnvelope {
    user: UserView,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    email: String,
    password: String,
}

/// Signs in and sets the session cookie.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginRequest,
    security(()),
    responses((status = 200, body = UserEnvelope), (status = 401, description = "wrong email or password"),
              (status = 429, description = "too many attempts from this address or for this account", body = super::error::ErrorBody)))]
async fn login(
    State(state): State<AppState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    AppJson(req): AppJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let wrong = || ApiError::Unauthorized("wrong email or password".into());
    state
        .login
        .attempt(state.login.address(&headers, peer), &req.email)?;
    let user = users::user_by_email(&state.pool, &req.email)
        .await?
        .filter(|u| u.disabled_at.is_none());
    // An unknown or disabled account is checked against a decoy hash: the answer takes
    // as long as for a known one.
    let ok = auth::verify_password_async(
        &req.password,
        user.as_ref().map(|u| u.password_hash.as_str()),
    )
    .await
    .map_err(ApiError::internal)?;
    let user = match user {
        Some(user) if ok => user,
        _ => return Err(wrong()),
    };
    let secret = auth::new_secret("").map_err(ApiError::internal)?;
    users::session_create(
        &state.pool,
        &auth::secret_hash(&secret),
        user.id,
        SESSION_TTL,
    )
    .await?;
    let mut cookie = format!(
        "{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    if state.cookie_secure {
        cookie.push_str("; Secure");
    }
    let mut response = Json(UserEnvelope {
        user: user.try_into()?,
    })
    .into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(ApiError::internal)?,
    );
    Ok(response)
}

/// Ends the session.
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth", security(()), responses((status = 204)))]
async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(session) = session_cookie(&headers) {
        let hash = auth::secret_hash(session);
        users::session_delete(&state.pool, &hash).await?;
        state.principals.evict_secret(&hash);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("cairn_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    Ok(response)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeView {
    user: MeUser,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeUser {
    id: Option<i64>,
    name: String,
    email: Option<String>,
    role: Role,
}

/// The signed-in user (or token) and its role.
#[utoipa::path(get, path = "/api/auth/me", tag = "auth", responses((status = 200, body = MeView)))]
async fn me(State(state): State<AppState>, Viewer(p): Viewer) -> Result<Json<MeView>, ApiError> {
    let user = match p.user_id {
        Some(id) => users::user_get(&state.pool, id).await?,
        None => None,
    };
    Ok(Json(MeView {
        user: MeUser {
            id: p.user_id,
            name: user.as_ref().map_or(p.name.clone(), |u| u.name.clone()),
            email: user.map(|u| u.email),
            role: p.role,
        },
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PersonalTokenRequest {
    name: String,
    /// Days until the token stops working (1–365); the server's `--token-ttl` when absent.
    #[schema(minimum = 1, maximum = 365)]
    expires_in_days: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewToken {
    id: i64,
    /// Shown once; only its hash is stored.
    token: String,
    role: Role,
    /// When the token stops working (null: never).
    expires_at: Option<DateTime<Utc>>,
}

/// The lifetime a request asks for, or the server's default.
fn token_ttl(state: &AppState, days: Option<u32>) -> Result<Option<Duration>, ApiError> {
    match days {
        None => Ok(state.token_ttl),
        Some(d @ 1..=365) => Ok(Some(Duration::from_secs(u64::from(d) * 24 * 3600))),
        Some(_) => Err(ApiError::Unprocessable {
            message: "expiresInDays must be from 1 to 365".into(),
            details: None,
        }),
    }
}

/// Creates a token for the caller, with the caller's role (what `ctl login` stores). It
/// never acts with more than its user's role at the time it is used.
#[utoipa::path(post, path = "/api/auth/token", tag = "auth", request_body = PersonalTokenRequest,
    responses((status = 201, body = NewToken)))]
async fn personal_token(
    State(state): State<AppState>,
    Viewer(p): Viewer,
    AppJson(req): AppJson<PersonalTokenRequest>,
) -> Result<(StatusCode, Json<NewToken>), ApiError> {
    let ttl = token_ttl(&state, req.expires_in_days)?;
    let secret = auth::new_secret("crn_").map_err(ApiError::internal)?;
    let row = users::token_create(
        &state.pool,
        &req.name,
        &auth::secret_hash(&secret),
        p.role.as_str(),
        p.user_id,
        ttl,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(NewToken {
            id: row.id,
            token: secret,
            role: p.role,
            expires_at: row.expires_at,
        }),
    ))
}

/// Whose tokens are the caller's own: a user's, or for a service token (which has no
/// user) itself.
fn owner(p: &Principal) -> users::TokenOwner {
    match (p.user_id, p.token_id) {
        (Some(user), _) => users::TokenOwner::User(user),
        (None, Some(token)) => users::TokenOwner::Token(token),
        (None, None) => users::TokenOwner::Nobody,
    }
}

/// The caller's own tokens (never their secrets): a user's tokens, or a service token
/// itself.
#[utoipa::path(get, path = "/api/auth/tokens", tag = "auth", responses((status = 200, body = TokenList)))]
async fn own_tokens(
    State(state): State<AppState>,
    Viewer(p): Viewer,
) -> Result<Json<TokenList>, ApiError> {
    let items = users::token_list_own(&state.pool, owner(&p))
        .await?
        .into_iter()
        .map(TokenView::from)
        .collect();
    Ok(Json(TokenList { items }))
}

/// Revokes one of the caller's own tokens.
#[utoipa::path(delete, path = "/api/auth/tokens/{id}", tag = "auth", params(("id" = i64, Path)),
    responses((status = 204), (status = 404)))]
async fn revoke_own_token(
    State(state): State<AppState>,
    Viewer(p): Viewer,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    if users::token_revoke_own(&state.pool, id, owner(&p)).await? {
        state.principals.evict_token(id);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("you have no token {id}")))
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PasswordChange {
    current_password: String,
    /// At least 8 characters.
    new_password: String,
}

/// Changes the caller's password and ends their other sessions.
#[utoipa::path(post, path = "/api/auth/password", tag = "auth", request_body = PasswordChange,
    responses((status = 204), (status = 401, description = "the current password is wrong"),
              (status = 409, description = "the caller is a service token, which has no password"),
              (status = 422, description = "the new password is too short"),
              (status = 429, description = "too many attempts", body = super::error::ErrorBody)))]
async fn change_password(
    State(state): State<AppState>,
    Viewer(p): Viewer,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    AppJson(req): AppJson<PasswordChange>,
) -> Result<StatusCode, ApiError> {
    let id = p.user_id.ok_or_else(|| ApiError::Conflict {
        message: "a service token has no password; sign in as a user".into(),
        details: None,
    })?;
    check_password(&req.new_password)?;
    let user = users::user_get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("your user no longer exists".into()))?;
    state
        .login
        .attempt(state.login.address(&headers, peer), &user.email)?;
    if !auth::verify_password_async(&req.current_password, Some(&user.password_hash))
        .await
        .map_err(ApiError::internal)?
    {
        return Err(ApiError::Unauthorized(
            "the current password is wrong".into(),
        ));
    }
    let hash = auth::hash_password_async(&req.new_password)
        .await
        .map_err(ApiError::internal)?;
    users::user_update(&state.pool, id, None, None, Some(&hash), None).await?;
    let keep = session_cookie(&headers).map(auth::secret_hash);
    users::sessions_end(&state.pool, id, keep.as_deref()).await?;
    state.principals.evict_user(id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    items: Vec<UserView>,
}

/// Users.
#[utoipa::path(get, path = "/api/users", tag = "users", responses((status = 200, body = UserList)))]
async fn list_users(State(state): State<AppState>, _: Admin) -> Result<Json<UserList>, ApiError> {
    let items = users::user_list(&state.pool)
        .await?
        .into_iter()
        .map(UserView::try_from)
        .collect::<Result<_, _>>()?;
    Ok(Json(UserList { items }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    email: String,
    #[serde(default)]
    name: String,
    password: String,
    role: Role,
}

fn check_password(p: &str) -> Result<(), ApiError> {
    if p.chars().count() < 8 {
        return Err(ApiError::Unprocessable {
            message: "password must be at least 8 characters".into(),
            details: None,
        });
    }
    Ok(())
}

/// Creates a user.
#[utoipa::path(post, path = "/api/users", tag = "users", request_body = CreateUser,
    responses((status = 201, body = UserView), (status = 409, description = "email taken")))]
async fn create_user(
    State(state): State<AppState>,
    _: Admin,
    AppJson(req): AppJson<CreateUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    if !req.email.contains('@') {
        return Err(ApiError::Unprocessable {
            message: "email must be an email address".into(),
            details: None,
        });
    }
    check_password(&req.password)?;
    let hash = auth::hash_password_async(&req.password)
        .await
        .map_err(ApiError::internal)?;
    let user = users::user_create(
        &state.pool,
        req.email.trim(),
        &req.name,
        &hash,
        req.role.as_str(),
    )
    .await
    .map_err(|e| match e.constraint() {
        Some("users_email") => ApiError::Conflict {
            message: "a user with this email exists".into(),
            details: None,
        },
        _ => e.into(),
    })?;
    Ok((StatusCode::CREATED, Json(user.try_into()?)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    name: Option<String>,
    role: Option<Role>,
    password: Option<String>,
    disabled: Option<bool>,
}

/// Changes a user's name, role, password or disabled flag.
#[utoipa::path(patch, path = "/api/users/{id}", tag = "users", request_body = UpdateUser,
    params(("id" = i64, Path)), responses((status = 200, body = UserView), (status = 404)))]
async fn update_user(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<i64>,
    AppJson(req): AppJson<UpdateUser>,
) -> Result<Json<UserView>, ApiError> {
    let hash = match &req.password {
        Some(p) => {
            check_password(p)?;
            Some(
                auth::hash_password_async(p)
                    .await
                    .map_err(ApiError::internal)?,
            )
        }
        None => None,
    };
    let user = users::user_update(
        &state.pool,
        id,
        req.name.as_deref(),
        req.role.map(Role::as_str),
        hash.as_deref(),
        req.disabled,
    )
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no user {id}")))?;
    // A new password, or a disabled account, ends every session.
    if hash.is_some() || req.disabled == Some(true) {
        users::sessions_end(&state.pool, id, None).await?;
    }
    state.principals.evict_user(id);
    Ok(Json(user.try_into()?))
}

/// Deletes a user, their sessions and tokens.
#[utoipa::path(delete, path = "/api/users/{id}", tag = "users", params(("id" = i64, Path)),
    responses((status = 204), (status = 404)))]
async fn delete_user(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    if users::user_delete(&state.pool, id).await? {
        state.principals.evict_user(id);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no user {id}")))
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    id: i64,
    name: String,
    role: String,
    user_id: Option<i64>,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    /// When it stops working (null: never).
    expires_at: Option<DateTime<Utc>>,
    revoked: bool,
}

impl From<TokenRow> for TokenView {
    fn from(t: TokenRow) -> Self {
        TokenView {
            id: t.id,
            name: t.name,
            role: t.role,
            user_id: t.user_id,
            created_at: t.created_at,
            last_used_at: t.last_used_at,
            expires_at: t.expires_at,
            revoked: t.revoked_at.is_some(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    items: Vec<TokenView>,
}

/// API tokens (never their secrets).
#[utoipa::path(get, path = "/api/tokens", tag = "tokens", responses((status = 200, body = TokenList)))]
async fn list_tokens(State(state): State<AppState>, _: Admin) -> Result<Json<TokenList>, ApiError> {
    let items = users::token_list(&state.pool)
        .await?
        .into_iter()
        .map(TokenView::from)
        .collect();
    Ok(Json(TokenList { items }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateToken {
    name: String,
    role: Role,
    /// Days until the token stops working (1–365); the server's `--token-ttl` when absent.
    #[schema(minimum = 1, maximum = 365)]
    expires_in_days: Option<u32>,
}

/// Creates a service token; the answer is the only time the token is shown.
#[utoipa::path(post, path = "/api/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, body = NewToken)))]
async fn create_token(
    State(state): State<AppState>,
    _: Admin,
    AppJson(req): AppJson<CreateToken>,
) -> Result<(StatusCode, Json<NewToken>), ApiError> {
    let ttl = token_ttl(&state, req.expires_in_days)?;
    let secret = auth::new_secret("crn_").map_err(ApiError::internal)?;
    let row = users::token_create(
        &state.pool,
        &req.name,
        &auth::secret_hash(&secret),
        req.role.as_str(),
        None,
        ttl,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(NewToken {
            id: row.id,
            token: secret,
            role: req.role,
            expires_at: row.expires_at,
        }),
    ))
}

/// Revokes a token.
#[utoipa::path(delete, path = "/api/tokens/{id}", tag = "tokens", params(("id" = i64, Path)),
    responses((status = 204), (status = 404)))]
async fn revoke_token(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    if users::token_revoke(&state.pool, id).await? {
        state.principals.evict_token(id);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no token {id}")))
    }
}
