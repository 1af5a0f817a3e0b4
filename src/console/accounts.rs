//! Console accounts, API tokens and sign-in sessions.

use crate::auth::{password, tokens, Role};
use crate::db::{self, audit::NewAuditEntry};
use serde_json::json;
use sqlx::SqlitePool;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    Invalid(String),
    #[error("The username {0:?} is taken. Pick another one.")]
    Taken(String),
    #[error("No account named {0:?}.")]
    NoSuchUser(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<sqlx::Error> for AccountError {
    fn from(e: sqlx::Error) -> Self {
        AccountError::Other(e.into())
    }
}

/// Checks a username: 1–64 characters, letters, digits, `.`, `-`, `_`, `@`.
pub fn validate_username(username: &str) -> Result<(), String> {
    let ok = !username.is_empty()
        && username.len() <= 64
        && username
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'));
    if ok {
        Ok(())
    } else {
        Err("The username must be 1 to 64 letters, digits, dots, dashes, underscores or @.".into())
    }
}

/// Creates an account with its audit entry, in one transaction.
pub async fn create(
    db: &SqlitePool,
    actor: &str,
    username: &str,
    plain_password: &str,
    role: Role,
) -> Result<i64, AccountError> {
    validate_username(username).map_err(AccountError::Invalid)?;
    password::validate_new(plain_password).map_err(AccountError::Invalid)?;
    let hash = password::hash(plain_password)?;
    let now = db::now_ms();
    let mut tx = db.begin().await?;
    let id = match db::accounts::insert(&mut tx, username, &hash, role.as_str(), now).await {
        Ok(id) => id,
        Err(e) if db::accounts::is_unique_violation(&e) => {
            return Err(AccountError::Taken(username.into()))
        }
        Err(e) => return Err(e.into()),
    };
    db::audit::insert(
        &mut tx,
        &NewAuditEntry {
            at: now,
            actor,
            action: "account.create",
            target_type: "account",
            target_id: username,
            before: None,
            after: Some(json!({ "username": username, "role": role.as_str() })),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Creates an API token for `username`; returns the token (shown once).
pub async fn create_api_token(
    db: &SqlitePool,
    actor: &str,
    username: &str,
    name: &str,
) -> Result<String, AccountError> {
    let account = db::accounts::get_by_username(db, username)
        .await?
        .ok_or_else(|| AccountError::NoSuchUser(username.into()))?;
    let token = tokens::generate(tokens::API_TOKEN_PREFIX);
    let now = db::now_ms();
    let mut tx = db.begin().await?;
    let id = db::api_tokens::insert(
        &mut tx,
        account.account_id,
        name,
        &tokens::digest(&token),
        now,
    )
    .await?;
    db::audit::insert(
        &mut tx,
        &NewAuditEntry {
            at: now,
            actor,
            action: "api_token.create",
            target_type: "api_token",
            target_id: &id.to_string(),
            before: None,
            after: Some(json!({ "username": account.username, "name": name })),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(token)
}

/// Checks a sign-in; `Some(account_id)` on success. Takes the same time whether or not the user exists.
pub async fn check_sign_in(
    db: &SqlitePool,
    username: &str,
    plain_password: &str,
) -> anyhow::Result<Option<i64>> {
    let account = db::accounts::get_by_username(db, username).await?;
    let stored = account.as_ref().map(|a| a.password_hash.clone());
    let candidate = plain_password.to_string();
    // argon2 is deliberately slow: keep it off the async workers.
    let ok = tokio::task::spawn_blocking(move || {
        password::verify(
            &candidate,
            stored.as_deref().unwrap_or_else(|| password::dummy_hash()),
        )
    })
    .await?;
    Ok(account.filter(|_| ok).map(|a| a.account_id))
}

/// Starts a session; returns the cookie value.
pub async fn start_session(
    db: &SqlitePool,
    account_id: i64,
    lifetime: Duration,
) -> anyhow::Result<String> {
    let token = tokens::generate(tokens::SESSION_PREFIX);
    let now = db::now_ms();
    let mut conn = db.acquire().await?;
    db::sessions::insert(
        &mut conn,
        &tokens::digest(&token),
        account_id,
        now,
        now + i64::try_from(lifetime.as_millis())?,
    )
    .await?;
    Ok(token)
}
