//! Accounts of administrators who sign in through OpenID Connect, keyed by (issuer, subject).

use sqlx::SqliteConnection;

/// The account id and current role of a provider user, if they signed in before.
pub async fn get(
    conn: &mut SqliteConnection,
    issuer: &str,
    subject: &str,
) -> sqlx::Result<Option<(i64, String)>> {
    sqlx::query_as(
        "SELECT account_id, role FROM account WHERE oidc_issuer = ? AND oidc_subject = ?",
    )
    .bind(issuer)
    .bind(subject)
    .fetch_optional(conn)
    .await
}

/// Inserts a provider user's account; its password hash `!` never verifies.
pub async fn insert(
    conn: &mut SqliteConnection,
    username: &str,
    role: &str,
    issuer: &str,
    subject: &str,
    now: i64,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO account (username, password_hash, role, created_at, oidc_issuer, oidc_subject) \
         VALUES (?, '!', ?, ?, ?, ?) RETURNING account_id",
    )
    .bind(username)
    .bind(role)
    .bind(now)
    .bind(issuer)
    .bind(subject)
    .fetch_one(conn)
    .await
}

/// The provider decides the role at every sign-in.
pub async fn set_role(
    conn: &mut SqliteConnection,
    account_id: i64,
    role: &str,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE account SET role = ? WHERE account_id = ?")
        .bind(role)
        .bind(account_id)
        .execute(conn)
        .await?;
    Ok(())
}
