//! `users`, `sessions` and `api_tokens`.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Result;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

pub async fn user_create(
    pool: &PgPool,
    email: &str,
    name: &str,
    password_hash: &str,
    role: &str,
) -> Result<UserRow> {
    Ok(sqlx::query_as!(
        UserRow,
        "insert into users (email, name, password_hash, role) values ($1, $2, $3, $4)
         returning id, email, name, password_hash, role, created_at, disabled_at",
        email,
        name,
        password_hash,
        role
    )
    .fetch_one(pool)
    .await?)
}

pub async fn user_by_email(pool: &PgPool, email: &str) -> Result<Option<UserRow>> {
    Ok(sqlx::query_as!(
        UserRow,
        "select id, email, name, password_hash, role, created_at, disabled_at
           from users where lower(email) = lower($1)",
        email
    )
    .fetch_optional(pool)
    .await?)
}

pub async fn user_get(pool: &PgPool, id: i64) -> Result<Option<UserRow>> {
    Ok(sqlx::query_as!(
        UserRow,
        "select id, email, name, password_hash, role, created_at, disabled_at
           from users where id = $1",
        id
    )
    .fetch_optional(pool)
    .await?)
}

pub async fn user_list(pool: &PgPool) -> Result<Vec<UserRow>> {
    Ok(sqlx::query_as!(
        UserRow,
        "select id, email, name, password_hash, role, created_at, disabled_at
           from users order by id"
    )
    .fetch_all(pool)
    .await?)
}

/// Changes what is given; returns the user after the change.
pub async fn user_update(
    pool: &PgPool,
    id: i64,
    name: Option<&str>,
    role: Option<&str>,
    password_hash: Option<&str>,
    disabled: Option<bool>,
) -> Result<Option<UserRow>> {
    Ok(sqlx::query_as!(
        UserRow,
        "update users set name = coalesce($2, name), role = coalesce($3, role),
                password_hash = coalesce($4, password_hash),
                disabled_at = case when $5::bool is null then disabled_at
                                   when $5 then coalesce(disabled_at, now()) else null end
          where id = $1 returning id, email, name, password_hash, role, created_at, disabled_at",
        id,
        name,
        role,
        password_hash,
        disabled
    )
    .fetch_optional(pool)
    .await?)
}

pub async fn user_delete(pool: &PgPool, id: i64) -> Result<bool> {
    Ok(sqlx::query!("delete from users where id = $1", id)
        .execute(pool)
        .await?
        .rows_affected()
        == 1)
}

pub async fn session_create(
    pool: &PgPool,
    token_hash: &str,
    user_id: i64,
    ttl: std::time::Duration,
) -> Result<()> {
    sqlx::query!(
        "insert into sessions (token_hash, user_id, expires_at)
         values ($1, $2, now() + make_interval(secs => $3))",
        token_hash,
        user_id,
        ttl.as_secs_f64()
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The enabled user a live session belongs to.
pub async fn session_user(pool: &PgPool, token_hash: &str) -> Result<Option<UserRow>> {
    Ok(sqlx::query_as!(
        UserRow,
        "select u.id, u.email, u.name, u.password_hash, u.role, u.created_at, u.disabled_at
           from sessions s join users u on u.id = s.user_id
          where s.token_hash = $1 and s.expires_at > now() and u.disabled_at is null",
        token_hash
    )
    .fetch_optional(pool)
    .await?)
}

pub async fn session_delete(pool: &PgPool, token_hash: &str) -> Result<()> {
    sqlx::query!("delete from sessions where token_hash = $1", token_hash)
        .execute(pool)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub user_id: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A new token; `ttl` `None` never expires.
pub async fn token_create(
    pool: &PgPool,
    name: &str,
    token_hash: &str,
    role: &str,
    user_id: Option<i64>,
    ttl: Option<std::time::Duration>,
) -> Result<TokenRow> {
    Ok(sqlx::query_as!(
        TokenRow,
        "insert into api_tokens (name, token_hash, role, user_id, expires_at)
         values ($1, $2, $3, $4, now() + make_interval(secs => $5))
         returning id, name, role, user_id, created_at, last_used_at, revoked_at, expires_at",
        name,
        token_hash,
        role,
        user_id,
        ttl.map(|t| t.as_secs_f64())
    )
    .fetch_one(pool)
    .await?)
}

/// The live, unexpired token with this hash, and the role it acts with: the lower of
/// its own and its owner's current one (an owner must exist and be enabled). Records
/// its use.
pub async fn token_use(pool: &PgPool, token_hash: &str) -> Result<Option<TokenRow>> {
    Ok(sqlx::query_as!(
        TokenRow,
        r#"with t as (
           select t.id,
                  case when u.id is null then t.role
                       when array_position(array['viewer', 'operator', 'admin'], u.role)
                          < array_position(array['viewer', 'operator', 'admin'], t.role)
                       then u.role else t.role end as role
             from api_tokens t left join users u on u.id = t.user_id
            where t.token_hash = $1 and t.revoked_at is null
              and (t.expires_at is null or t.expires_at > now())
              and (t.user_id is null or (u.id is not null and u.disabled_at is null)))
         update api_tokens a set last_used_at = now() from t where a.id = t.id
         returning a.id, a.name, t.role as "role!", a.user_id, a.created_at, a.last_used_at,
                   a.revoked_at, a.expires_at"#,
        token_hash
    )
    .fetch_optional(pool)
    .await?)
}

/// Whose tokens a caller may see and revoke as their own.
#[derive(Debug, Clone, Copy)]
pub enum TokenOwner {
    /// A user's tokens.
    User(i64),
    /// A service token (no user): itself.
    Token(i64),
    Nobody,
}

impl TokenOwner {
    fn keys(self) -> (Option<i64>, Option<i64>) {
        match self {
            TokenOwner::User(u) => (Some(u), None),
            TokenOwner::Token(t) => (None, Some(t)),
            TokenOwner::Nobody => (None, None),
        }
    }
}

/// Every token.
pub async fn token_list(pool: &PgPool) -> Result<Vec<TokenRow>> {
    Ok(sqlx::query_as!(
        TokenRow,
        "select id, name, role, user_id, created_at, last_used_at, revoked_at, expires_at
           from api_tokens order by id"
    )
    .fetch_all(pool)
    .await?)
}

/// `owner`'s tokens.
pub async fn token_list_own(pool: &PgPool, owner: TokenOwner) -> Result<Vec<TokenRow>> {
    let (user, token) = owner.keys();
    Ok(sqlx::query_as!(
        TokenRow,
        "select id, name, role, user_id, created_at, last_used_at, revoked_at, expires_at
           from api_tokens
          where user_id = $1 or (user_id is null and id = $2) order by id",
        user,
        token
    )
    .fetch_all(pool)
    .await?)
}

/// Revokes any token; false when there is no such token.
pub async fn token_revoke(pool: &PgPool, id: i64) -> Result<bool> {
    Ok(sqlx::query!(
        "update api_tokens set revoked_at = coalesce(revoked_at, now()) where id = $1",
        id
    )
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

/// Revokes one of `owner`'s tokens; false when it has no such token.
pub async fn token_revoke_own(pool: &PgPool, id: i64, owner: TokenOwner) -> Result<bool> {
    let (user, token) = owner.keys();
    Ok(sqlx::query!(
        "update api_tokens set revoked_at = coalesce(revoked_at, now())
          where id = $1 and (user_id = $2 or (user_id is null and id = $3))",
        id,
        user,
        token
    )
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

/// Ends a user's sessions, but `keep` (the caller's own, after changing their password).
pub async fn sessions_end(pool: &PgPool, user_id: i64, keep: Option<&str>) -> Result<u64> {
    Ok(sqlx::query!(
        "delete from sessions where user_id = $1 and ($2::text is null or token_hash <> $2)",
        user_id,
        keep
    )
    .execute(pool)
    .await?
    .rows_affected())
}
