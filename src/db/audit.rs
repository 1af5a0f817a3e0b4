//! The `audit_log` table: every change an administrator (or an enrolling agent) makes.

use serde::Serialize;
use sqlx::{FromRow, SqliteConnection, SqlitePool};

/// One audit entry to write. `before`/`after` are JSON documents without secrets.
#[derive(Debug, Clone)]
pub struct NewAuditEntry<'a> {
    pub at: i64,
    pub actor: &'a str,
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: &'a str,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct AuditRow {
    pub audit_log_id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub before_json: Option<String>,
    pub after_json: Option<String>,
}

pub async fn insert(conn: &mut SqliteConnection, entry: &NewAuditEntry<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (at, actor, action, target_type, target_id, before_json, after_json) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(entry.at)
    .bind(entry.actor)
    .bind(entry.action)
    .bind(entry.target_type)
    .bind(entry.target_id)
    .bind(entry.before.as_ref().map(|v| v.to_string()))
    .bind(entry.after.as_ref().map(|v| v.to_string()))
    .execute(conn)
    .await?;
    Ok(())
}

/// Newest first.
pub async fn list(
    pool: &SqlitePool,
    limit: i64,
    offset: i64,
) -> sqlx::Result<(Vec<AuditRow>, i64)> {
    let rows = sqlx::query_as(
        "SELECT * FROM audit_log ORDER BY at DESC, audit_log_id DESC LIMIT ? OFFSET ?",
    )
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    let total = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
        .fetch_one(pool)
        .await?;
    Ok((rows, total))
}
