//! The `session` table: server-side browser sessions, keyed by the SHA-256 of the cookie value.

use sqlx::{SqliteConnection, SqlitePool};

pub async fn insert(
    conn: &mut SqliteConnection,
    token_hash: &[u8],
    account_id: i64,
    now: i64,
    expires_at: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO session (token_hash, account_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
    )
    .bind(token_hash)
    .bind(account_id)
    .bind(now)
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// The account id of a live session.
pub async fn get_account(
    pool: &SqlitePool,
    token_hash: &[u8],
    now: i64,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT account_id FROM session WHERE token_hash = ? AND expires_at > ?")
        .bind(token_hash)
        .bind(now)
        .fetch_optional(pool)
        .await
}

pub async fn delete(pool: &SqlitePool, token_hash: &[u8]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM session WHERE token_hash = ?")
        .bind(token_hash)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn delete_expired(pool: &SqlitePool, now: i64) -> sqlx::Result<u64> {
    let done = sqlx::query("DELETE FROM session WHERE expires_at <= ?")
        .bind(now)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// Ends every session of an account ("sign out of all sessions"); returns how many ended.
pub async fn delete_for_account(pool: &SqlitePool, account_id: i64) -> sqlx::Result<u64> {
    let done = sqlx::query("DELETE FROM session WHERE account_id = ?")
        .bind(account_id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}
