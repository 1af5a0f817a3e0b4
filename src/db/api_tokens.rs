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

/// The account a token acts for; also stamps `last_used_at`.
pub async fn use_token(
    pool: &SqlitePool,
    token_hash: &[u8],
    now: i64,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "UPDATE api_token SET last_used_at = ? WHERE token_hash = ? RETURNING account_id",
    )
    .bind(now)
    .bind(token_hash)
    .fetch_optional(pool)
    .await
}
