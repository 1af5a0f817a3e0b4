//! The `api_token` table: bearer tokens for `/api/v1`, acting with their account's role.

use sqlx::{SqliteConnection, SqlitePool};

pub async fn insert(
    conn: &mut SqliteConnection,
    account_id: i64,
    name: &str,
    token_hash: &[u8],
    now: i64,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO api_token (account_id, name, token_hash, created_at) VALUES (?, ?, ?, ?) RETURNING api_token_id",
    )
    .bind(account_id)
    .bind(name)
    .bind(token_hash)
    .bind(now)
    .fetch_one(conn)
    .await
}

/// How stale `last_used_at` may be: stamping it on every request made every API call a write
/// transaction, queued behind the fleet's group commits.
const LAST_USED_RESOLUTION_MS: i64 = 60_000;

/// The account a token acts for; also stamps `last_used_at` (to the minute).
pub async fn use_token(
    pool: &SqlitePool,
    token_hash: &[u8],
    now: i64,
) -> sqlx::Result<Option<i64>> {
    let found: Option<(i64, Option<i64>)> =
        sqlx::query_as("SELECT account_id, last_used_at FROM api_token WHERE token_hash = ?")
            .bind(token_hash)
            .fetch_optional(pool)
            .await?;
    let Some((account_id, last_used_at)) = found else {
        return Ok(None);
    };
    if last_used_at.is_none_or(|t| now - t >= LAST_USED_RESOLUTION_MS) {
        sqlx::query("UPDATE api_token SET last_used_at = ? WHERE token_hash = ?")
            .bind(now)
            .bind(token_hash)
            .execute(pool)
            .await?;
    }
    Ok(Some(account_id))
}
