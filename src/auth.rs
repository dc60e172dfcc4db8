//! Who may do what: roles, password hashing (argon2), and the random secrets behind
//! sessions and API tokens. Only SHA-256 hashes of secrets are stored.
//!
//! argon2 is deliberately slow (tens of milliseconds of CPU): the async forms here run
//! it on the blocking pool, a few at a time, so a flood of sign-ins queues behind them
//! instead of stalling every other request on the runtime's threads.

use std::sync::OnceLock;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("no randomness available: {0}")]
    Random(String),
    #[error("unknown role `{0}`; expected viewer, operator or admin")]
    UnknownRole(String),
    #[error("password hashing was interrupted: {0}")]
    Interrupted(String),
}

/// Roles, each allowed everything the ones before it may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Submits, retries, replays, cancels, redrives, purges, manages schedules.
    Operator,
    /// Manages users and tokens.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Role, AuthError> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(AuthError::UnknownRole(other.to_owned())),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The caller of a request.
#[derive(Debug, Clone, Serialize)]
pub struct Principal {
    pub user_id: Option<i64>,
    /// An email for users, a token's name for tokens.
    pub name: String,
    pub role: Role,
    /// The token the request carried (`None` for a session).
    pub token_id: Option<i64>,
}

pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| AuthError::Random(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// At most this many hashes are computed at once in a process: half the cores (at least
/// one), so other work always has a core.
fn hashing() -> &'static tokio::sync::Semaphore {
    static PERMITS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        tokio::sync::Semaphore::new((cores / 2).max(1))
    })
}

async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AuthError> {
    let _permit = hashing()
        .acquire()
        .await
        .map_err(|e| AuthError::Interrupted(e.to_string()))?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| AuthError::Interrupted(e.to_string()))
}

/// [`hash_password`] off the async runtime.
pub async fn hash_password_async(password: &str) -> Result<String, AuthError> {
    let password = password.to_owned();
    off_runtime(move || hash_password(&password)).await?
}

/// Checks `password` against `hash`, or — when there is no user to check it against —
/// against a hash of nothing anybody knows, so that an unknown email costs the same
/// work (and time) as a known one. Off the async runtime.
pub async fn verify_password_async(password: &str, hash: Option<&str>) -> Result<bool, AuthError> {
    let password = password.to_owned();
    let hash = hash.map(str::to_owned);
    off_runtime(move || match hash {
        Some(hash) => verify_password(&password, &hash),
        None => {
            let _ = verify_password(&password, decoy_hash());
            false
        }
    })
    .await
}

/// A hash made with the same parameters as users' hashes, of a random password.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        new_secret("")
            .and_then(|s| hash_password(&s))
            .unwrap_or_default()
    })
}

/// Computes the decoy hash now (on the blocking pool), so that the first sign-in with an
/// unknown email does not pay for it.
pub async fn warm_up() {
    let _ = off_runtime(|| decoy_hash().len()).await;
}

/// A new random secret: `prefix` and 32 random bytes in hex.
pub fn new_secret(prefix: &str) -> Result<String, AuthError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(format!("{prefix}{}", hex::encode(bytes)))
}

/// What is stored for a secret.
pub fn secret_hash(secret: &str) -> String {
    crate::workflow::content_hash(secret)
}

/// How long a token lives unless its maker says otherwise.
pub const TOKEN_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

/// Creates a service token with `role` that expires after `ttl` (`None`: never);
/// returns the token (the only time it exists in clear).
pub async fn create_token(
    pool: &sqlx::PgPool,
    name: &str,
    role: Role,
    ttl: Option<Duration>,
) -> Result<String, crate::store::StoreError> {
    let secret =
        new_secret("crn_").map_err(|e| crate::store::StoreError::Invalid(e.to_string()))?;
    crate::store::users::token_create(pool, name, &secret_hash(&secret), role.as_str(), None, ttl)
        .await?;
    Ok(secret)
}

/// Creates a user who can sign in to the dashboard.
pub async fn create_user(
    pool: &sqlx::PgPool,
    email: &str,
    name: &str,
    password: &str,
    role: Role,
) -> Result<crate::store::users::UserRow, crate::store::StoreError> {
    let hash = hash_password_async(password)
        .await
        .map_err(|e| crate::store::StoreError::Invalid(e.to_string()))?;
    crate::store::users::user_create(pool, email, name, &hash, role.as_str()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_themselves() {
        let h = hash_password("correct horse").unwrap();
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
        assert_eq!("operator".parse::<Role>().unwrap(), Role::Operator);
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn secrets_are_random_and_hashed() {
        let a = new_secret("crn_").unwrap();
        assert!(a.starts_with("crn_") && a.len() == 68);
        assert_ne!(a, new_secret("crn_").unwrap());
        assert_eq!(secret_hash(&a).len(), 64);
    }
}
