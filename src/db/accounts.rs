//! The `account` table: local console administrators.

use sqlx::{FromRow, SqliteConnection, SqlitePool};

#[derive(Debug, Clone, FromRow)]
pub struct AccountRow {
    pub account_id: i64,
    pub username: String,
    pub password_hash: String,
    pub role: String,
    pub created_at: i64,
}

pub async fn count(pool: &SqlitePool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM account")
        .fetch_one(pool)
        .await
}

pub async fn get_by_username(
    pool: &SqlitePool,
    username: &str,
) -> sqlx::Result<Option<AccountRow>> {
    sqlx::query_as("SELECT * FROM account WHERE username = ?")
        .bind(username)
        .fetch_optional(pool)
        .await
}

pub async fn get(pool: &SqlitePool, account_id: i64) -> sqlx::Result<Option<AccountRow>> {
    sqlx::query_as("SELECT * FROM account WHERE account_id = ?")
        .bind(account_id)
        .fetch_optional(pool)
        .await
}

pub async fn list(pool: &SqlitePool) -> sqlx::Result<Vec<AccountRow>> {
    sqlx::query_as("SELECT * FROM account ORDER BY username")
        .fetch_all(pool)
        .await
}

/// Inserts an account; a taken username surfaces as a unique-constraint error the caller maps.
pub async fn insert(
    conn: &mut SqliteConnection,
    username: &str,
    password_hash: &str,
    role: &str,
    now: i64,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO account (username, password_hash, role, created_at) VALUES (?, ?, ?, ?) RETURNING account_id",
    )
    .bind(username)
    .bind(password_hash)
    .bind(role)
    .bind(now)
    .fetch_one(conn)
    .await
}

/// True when the error is a violation of a UNIQUE constraint.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}
