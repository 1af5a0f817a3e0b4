//! `self_service_session`: sessions of the self-service portal (`/my`), keyed by the SHA-256 of
//! the cookie value; and forgetting a synced hash once a writeback made it stale.

use sqlx::{SqliteConnection, SqlitePool};

/// Starts a session for the synced user `object_id`; expired sessions are swept at the same time.
pub async fn insert(
    pool: &SqlitePool,
    token_hash: &[u8],
    object_id: &str,
    now: i64,
    expires_at: i64,
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM self_service_session WHERE expires_at <= ?")
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO self_service_session (token_hash, object_id, created_at, expires_at) \
         VALUES (?, ?, ?, ?)",
    )
    .bind(token_hash)
    .bind(object_id)
    .bind(now)
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// The synced user's object id of a live session.
pub async fn get(pool: &SqlitePool, token_hash: &[u8], now: i64) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT object_id FROM self_service_session WHERE token_hash = ? AND expires_at > ?",
    )
    .bind(token_hash)
    .bind(now)
    .fetch_optional(pool)
    .await
}

pub async fn delete(pool: &SqlitePool, token_hash: &[u8]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM self_service_session WHERE token_hash = ?")
        .bind(token_hash)
        .execute(pool)
        .await?;
    Ok(())
}

/// After a reset or change written back on-premises, the synced hash is the old password's: it is
/// dropped (self-service sign-in then checks through an agent), and the next cycle re-reads the
/// object (empty `source_hash`) and brings the new one.
pub async fn forget_password_hash(
    conn: &mut SqliteConnection,
    object_id: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE directory_objects SET password_hash = NULL, password_synced_at = NULL, \
         source_hash = '' WHERE object_id = ?",
    )
    .bind(object_id)
    .execute(conn)
    .await?;
    Ok(())
}
