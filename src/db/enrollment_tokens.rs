//! The `enrollment_token` table: tokens that let a new agent register, stored as SHA-256 digests.

use serde::Serialize;
use sqlx::{FromRow, SqliteConnection, SqlitePool};

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct EnrollmentTokenRow {
    pub enrollment_token_id: i64,
    #[serde(skip)]
    pub token_hash: Vec<u8>,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub max_uses: i64,
    pub uses: i64,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
}

impl EnrollmentTokenRow {
    pub fn uses_left(&self) -> i64 {
        (self.max_uses - self.uses).max(0)
    }
    /// Who the audit log names for what an enrollment with this token did: its creator answers for it.
    pub fn actor(&self) -> String {
        format!(
            "enrollment token #{} (created by {})",
            self.enrollment_token_id, self.created_by
        )
    }

    pub fn state(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at <= now {
            "expired"
        } else if self.uses >= self.max_uses {
            "used up"
        } else {
            "valid"
        }
    }
}

pub async fn insert(
    conn: &mut SqliteConnection,
    token_hash: &[u8],
    created_by: &str,
    now: i64,
    expires_at: i64,
    max_uses: i64,
) -> sqlx::Result<EnrollmentTokenRow> {
    sqlx::query_as(
        "INSERT INTO enrollment_token (token_hash, created_by, created_at, expires_at, max_uses) \
         VALUES (?, ?, ?, ?, ?) RETURNING *",
    )
    .bind(token_hash)
    .bind(created_by)
    .bind(now)
    .bind(expires_at)
    .bind(max_uses)
    .fetch_one(conn)
    .await
}

pub async fn get_by_hash(
    conn: &mut SqliteConnection,
    token_hash: &[u8],
) -> sqlx::Result<Option<EnrollmentTokenRow>> {
    sqlx::query_as("SELECT * FROM enrollment_token WHERE token_hash = ?")
        .bind(token_hash)
        .fetch_optional(conn)
        .await
}

pub async fn get(conn: &mut SqliteConnection, id: i64) -> sqlx::Result<Option<EnrollmentTokenRow>> {
    sqlx::query_as("SELECT * FROM enrollment_token WHERE enrollment_token_id = ?")
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Counts `n` uses, only if the token still has them; false when other enrollments took them.
pub async fn consume(conn: &mut SqliteConnection, id: i64, n: i64, now: i64) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE enrollment_token SET uses = uses + ? \
         WHERE enrollment_token_id = ? AND uses + ? <= max_uses AND revoked_at IS NULL AND expires_at > ?",
    )
    .bind(n)
    .bind(id)
    .bind(n)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn revoke(conn: &mut SqliteConnection, id: i64, by: &str, now: i64) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE enrollment_token SET revoked_at = ?, revoked_by = ? WHERE enrollment_token_id = ?",
    )
    .bind(now)
    .bind(by)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Newest first.
pub async fn list(
    pool: &SqlitePool,
    limit: i64,
    offset: i64,
) -> sqlx::Result<(Vec<EnrollmentTokenRow>, i64)> {
    let rows = sqlx::query_as("SELECT * FROM enrollment_token ORDER BY created_at DESC, enrollment_token_id DESC LIMIT ? OFFSET ?")
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await?;
    let total = sqlx::query_scalar("SELECT COUNT(*) FROM enrollment_token")
        .fetch_one(pool)
        .await?;
    Ok((rows, total))
}
