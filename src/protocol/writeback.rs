//! Wire types of password writeback and unlock, console → agent (`/v1/writeback/...`).
//!
//! Passwords travel only in these request bodies, over the TLS link to the certificate the console
//! pinned at enrollment; neither side stores or logs them. The request types are deliberately not
//! `Debug`, so they cannot be logged by accident.

use crate::directory::password::WritebackError;
use serde::{Deserialize, Serialize};

/// `POST /v1/writeback/password`.
#[derive(Serialize, Deserialize)]
pub struct PasswordRequest {
    pub domain: String,
    pub dn: String,
    /// Absent for an administrator's reset; the current password for a user's own change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_password: Option<String>,
    pub new_password: String,
    #[serde(default)]
    pub must_change_at_next_sign_in: bool,
}

/// `POST /v1/writeback/unlock`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnlockRequest {
    pub domain: String,
    pub dn: String,
}

/// `POST /v1/writeback/verify`: whether a user's password binds (self-service sign-in when no
/// hash was synced).
#[derive(Serialize, Deserialize)]
pub struct VerifyRequest {
    pub domain: String,
    pub dn: String,
    pub password: String,
}

/// The directory's answer. `error` set means the directory decided (policy, rights, not found);
/// trouble reaching it is an HTTP error instead, and the console tries another agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WritebackOutcome {
    pub ok: bool,
    pub error: Option<WritebackError>,
    /// After an unlock or a verify: whether the account is locked now.
    #[serde(default)]
    pub locked: Option<bool>,
}
