//! Who may do what: roles, password hashing (argon2), and the random secrets behind
//! sessions and API tokens. Only SHA-256 hashes of secrets are stored.

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

/// Creates a service token with `role`; returns the token (the only time it exists in
/// clear).
pub async fn create_token(
    pool: &sqlx::PgPool,
    name: &str,
    role: Role,
) -> Result<String, crate::store::StoreError> {
    let secret =
        new_secret("crn_").map_err(|e| crate::store::StoreError::Invalid(e.to_string()))?;
    crate::store::users::token_create(pool, name, &secret_hash(&secret), role.as_str(), None)
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
    let hash =
        hash_password(password).map_err(|e| crate::store::StoreError::Invalid(e.to_string()))?;
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
