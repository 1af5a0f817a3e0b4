//! Enrollment tokens: creation and revocation, each written with its audit entry in one transaction.

use crate::auth::tokens;
use crate::db::{self, audit::NewAuditEntry, enrollment_tokens::EnrollmentTokenRow};
use serde_json::json;
use sqlx::SqlitePool;
use std::time::Duration;

/// Longest lifetime an enrollment token may have.
pub const MAX_LIFETIME: Duration = Duration::from_secs(365 * 86_400);
/// Most agents one token may enroll.
pub const MAX_USES: u32 = 100_000;

/// A token just created: the only time its plain value exists.
pub struct CreatedToken {
    pub row: EnrollmentTokenRow,
    pub token: String,
}

/// Checks the requested lifetime and uses; the error says the allowed range.
pub fn validate(lifetime: Duration, max_uses: u32) -> Result<(), String> {
    if lifetime < Duration::from_secs(60) || lifetime > MAX_LIFETIME {
        return Err(
            "The token's lifetime must be between 1 minute and 365 days (for example 24h or 7d)."
                .into(),
        );
    }
    if max_uses == 0 || max_uses > MAX_USES {
        return Err(format!(
            "The number of uses must be between 1 and {MAX_USES}."
        ));
    }
    Ok(())
}

pub async fn create(
    db: &SqlitePool,
    actor: &str,
    lifetime: Duration,
    max_uses: u32,
) -> anyhow::Result<CreatedToken> {
    let now = db::now_ms();
    let token = tokens::generate(tokens::ENROLLMENT_PREFIX);
    let expires_at = now + i64::try_from(lifetime.as_millis())?;
    let mut tx = db.begin().await?;
    let row = db::enrollment_tokens::insert(
        &mut tx,
        &tokens::digest(&token),
        actor,
        now,
        expires_at,
        i64::from(max_uses),
    )
    .await?;
    db::audit::insert(
        &mut tx,
        &NewAuditEntry {
            at: now,
            actor,
            action: "enrollment_token.create",
            target_type: "enrollment_token",
            target_id: &row.enrollment_token_id.to_string(),
            before: None,
            after: Some(json!({ "expires_at": expires_at, "max_uses": max_uses })),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(CreatedToken { row, token })
}

/// Outcome of a revocation request.
pub enum Revoked {
    Done(EnrollmentTokenRow),
    NotFound,
    AlreadyRevoked,
}

pub async fn revoke(db: &SqlitePool, actor: &str, id: i64) -> anyhow::Result<Revoked> {
    let now = db::now_ms();
    let mut tx = db.begin().await?;
    let Some(before) = db::enrollment_tokens::get(&mut tx, id).await? else {
        return Ok(Revoked::NotFound);
    };
    if before.revoked_at.is_some() {
        return Ok(Revoked::AlreadyRevoked);
    }
    db::enrollment_tokens::revoke(&mut tx, id, actor, now).await?;
    db::audit::insert(
        &mut tx,
        &NewAuditEntry {
            at: now,
            actor,
            action: "enrollment_token.revoke",
            target_type: "enrollment_token",
            target_id: &id.to_string(),
            before: Some(json!({ "state": before.state(now), "uses": before.uses, "max_uses": before.max_uses })),
            after: Some(json!({ "state": "revoked" })),
        },
    )
    .await?;
    let after = db::enrollment_tokens::get(&mut tx, id)
        .await?
        .unwrap_or(before);
    tx.commit().await?;
    Ok(Revoked::Done(after))
}

/// The commands an administrator runs on the agent's server.
pub fn install_command(console_url: &str, token: &str) -> String {
    format!(
        "hybridsync agent install --console {console_url} --enrollment-token {token} --data-dir /var/lib/hybridsync-agent"
    )
}
