//! Password writeback and account unlock in the on-premises directory, in each dialect:
//!
//! - Active Directory: `unicodePwd` (a quoted UTF-16LE value) replaced for a reset, deleted (old)
//!   and added (new) in one modify for a user's own change; `pwdLastSet=0` to require a change at
//!   next sign-in; `lockoutTime=0` to unlock. AD accepts `unicodePwd` only over an encrypted
//!   connection (LDAPS or StartTLS).
//! - OpenLDAP: the Password Modify extended operation (RFC 3062), with the old password for a
//!   user's own change; `pwdReset=TRUE` to require a change; removing `pwdAccountLockedTime` (ppolicy)
//!   to unlock.
//!
//! Failures become [`WritebackError`]s whose messages a helpdesk can act on. Passwords never appear
//! in them.

use super::conn::{text_of, Connection};
use super::error::rc;
use super::{Dialect, DirectoryError};
use ldap3::Mod;
use std::collections::HashSet;

/// What to do to a user's password.
pub enum Change<'a> {
    /// An administrator's reset.
    Reset { new: &'a str, must_change: bool },
    /// The user's own change: the directory checks the old password and its policy (minimum age,
    /// history) applies.
    Change { old: &'a str, new: &'a str },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "code", content = "detail", rename_all = "snake_case")]
pub enum WritebackError {
    #[error("The new password does not meet the on-premises password policy: {0}")]
    PasswordPolicy(String),
    #[error("The agent's service account lacks the Reset password permission on {0}.")]
    InsufficientAccess(String),
    #[error("The user {0} was not found in the on-premises directory (deleted or moved since the last sync).")]
    UserNotFound(String),
    #[error("The current password is wrong.")]
    WrongPassword,
    #[error("The on-premises directory refused the change: {0}")]
    Directory(String),
}

impl WritebackError {
    pub fn code(&self) -> &'static str {
        match self {
            WritebackError::PasswordPolicy(_) => "password_policy",
            WritebackError::InsufficientAccess(_) => "insufficient_access",
            WritebackError::UserNotFound(_) => "user_not_found",
            WritebackError::WrongPassword => "wrong_password",
            WritebackError::Directory(_) => "directory_error",
        }
    }

    /// A failure the next agent would meet too (the directory decided), as opposed to this agent's
    /// trouble reaching it.
    pub fn is_final(&self) -> bool {
        !matches!(self, WritebackError::Directory(_))
    }
}

/// The server's own words of a refusal, without our "cannot …: LDAP result N" wrapping.
fn server_words(e: &DirectoryError) -> String {
    let text = e.to_string();
    match text.split_once("the server says: ") {
        Some((_, words)) => words.trim_end_matches(')').to_owned(),
        None => text,
    }
}

fn map_error(e: DirectoryError, dn: &str) -> WritebackError {
    match e.rc() {
        Some(rc::INSUFFICIENT_ACCESS) => WritebackError::InsufficientAccess(dn.to_owned()),
        Some(rc::NO_SUCH_OBJECT) => WritebackError::UserNotFound(dn.to_owned()),
        Some(rc::INVALID_CREDENTIALS) => WritebackError::WrongPassword,
        // 19 constraintViolation: AD's check_password_restrictions, ppolicy's quality, length,
        // history and minimum age all answer with it; 53 for some ppolicy refusals.
        Some(19) | Some(rc::UNWILLING_TO_PERFORM) => {
            let words = server_words(&e);
            if words.to_ascii_lowercase().contains("password") || words.contains("0000052D") {
                WritebackError::PasswordPolicy(words)
            } else {
                WritebackError::Directory(words)
            }
        }
        _ => WritebackError::Directory(e.to_string()),
    }
}

/// AD's `unicodePwd` value: the password in double quotes, UTF-16LE.
fn unicode_pwd(password: &str) -> Vec<u8> {
    format!("\"{password}\"")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// Applies a reset or change to `dn`; Ok only once the directory confirmed it.
pub async fn apply(
    conn: &mut Connection,
    dialect: Dialect,
    dn: &str,
    change: Change<'_>,
) -> Result<(), WritebackError> {
    match dialect {
        Dialect::ActiveDirectory => {
            let mods: Vec<Mod<Vec<u8>>> = match &change {
                Change::Reset { new, must_change } => vec![
                    Mod::Replace(b"unicodePwd".to_vec(), HashSet::from([unicode_pwd(new)])),
                    Mod::Replace(
                        b"pwdLastSet".to_vec(),
                        HashSet::from([if *must_change {
                            b"0".to_vec()
                        } else {
                            b"-1".to_vec()
                        }]),
                    ),
                ],
                Change::Change { old, new } => vec![
                    Mod::Delete(b"unicodePwd".to_vec(), HashSet::from([unicode_pwd(old)])),
                    Mod::Add(b"unicodePwd".to_vec(), HashSet::from([unicode_pwd(new)])),
                ],
            };
            conn.modify(dn, mods, Vec::new(), &[], "set the password")
                .await
                .map(|_| ())
                .map_err(|e| match (&change, e.rc()) {
                    // A wrong old password in a change is a constraint violation in AD, with
                    // the extended error 00000056 (ERROR_INVALID_PASSWORD).
                    (Change::Change { .. }, Some(19)) if server_words(&e).contains("00000056") => {
                        WritebackError::WrongPassword
                    }
                    _ => map_error(e, dn),
                })
        }
        Dialect::OpenLdap => {
            let (old, new, must_change) = match &change {
                Change::Reset { new, must_change } => (None, *new, *must_change),
                Change::Change { old, new } => (Some(*old), *new, false),
            };
            conn.password_modify(dn, old, new, "set the password")
                .await
                .map_err(|e| map_error(e, dn))?;
            // An administrator's reset decides whether the user must change it; a user's own
            // change is final (the server clears pwdReset itself).
            if old.is_none() {
                let (mods, what) = if must_change {
                    (
                        vec![Mod::Replace("pwdReset", HashSet::from(["TRUE"]))],
                        "require a password change at next sign-in",
                    )
                } else {
                    (
                        vec![Mod::Delete("pwdReset", HashSet::new())],
                        "clear a pending password change",
                    )
                };
                // 16 noSuchAttribute: no change was pending.
                conn.modify(dn, mods, Vec::new(), &[16], what)
                    .await
                    .map_err(|e| map_error(e, dn))?;
            }
            Ok(())
        }
    }
}

/// Unlocks `dn` without touching its password.
pub async fn unlock(
    conn: &mut Connection,
    dialect: Dialect,
    dn: &str,
) -> Result<(), WritebackError> {
    let result = match dialect {
        Dialect::ActiveDirectory => {
            conn.modify(
                dn,
                vec![Mod::Replace("lockoutTime", HashSet::from(["0"]))],
                Vec::new(),
                &[],
                "unlock the account",
            )
            .await
        }
        // Absent already (not locked) is fine: 16 noSuchAttribute.
        Dialect::OpenLdap => {
            conn.modify(
                dn,
                vec![Mod::Delete("pwdAccountLockedTime", HashSet::new())],
                Vec::new(),
                &[16],
                "unlock the account",
            )
            .await
        }
    };
    result.map(|_| ()).map_err(|e| map_error(e, dn))
}

/// Whether `dn` is locked out now.
pub async fn is_locked(
    conn: &mut Connection,
    dialect: Dialect,
    dn: &str,
) -> Result<bool, WritebackError> {
    let attr = match dialect {
        Dialect::ActiveDirectory => "lockoutTime",
        Dialect::OpenLdap => "pwdAccountLockedTime",
    };
    let entry = conn
        .read(dn, &[attr], "read the lock state")
        .await
        .map_err(|e| map_error(e, dn))?
        .ok_or_else(|| WritebackError::UserNotFound(dn.to_owned()))?;
    Ok(match text_of(&entry, attr) {
        None => false,
        Some(v) => match dialect {
            Dialect::ActiveDirectory => v.trim() != "0",
            Dialect::OpenLdap => true,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unicode_pwd_is_quoted_utf16le() {
        assert_eq!(unicode_pwd("ab"), vec![b'"', 0, b'a', 0, b'b', 0, b'"', 0]);
        // Non-ASCII characters take their UTF-16 code units.
        assert_eq!(unicode_pwd("é")[2..4], [0xe9, 0x00]);
    }

    #[test]
    fn refusals_map_to_helpdesk_messages() {
        let ldap = |rc: u32, detail: &str| DirectoryError::Ldap {
            what: "set the password".into(),
            rc,
            detail: format!("; the server says: {detail}"),
        };
        let e = map_error(ldap(19, "Password fails quality checking policy"), "uid=a");
        assert_eq!(e.code(), "password_policy");
        assert!(e.to_string().starts_with("The new password does not meet the on-premises password policy: Password fails quality"), "{e}");
        let e = map_error(
            DirectoryError::InsufficientAccess {
                who: "svc".into(),
                what: "x".into(),
                detail: String::new(),
            },
            "uid=a,dc=x",
        );
        assert_eq!(
            e.to_string(),
            "The agent's service account lacks the Reset password permission on uid=a,dc=x."
        );
        let e = map_error(
            DirectoryError::NoSuchObject {
                what: "x".into(),
                dn: "uid=a".into(),
                who: "svc".into(),
            },
            "uid=a",
        );
        assert_eq!(e.code(), "user_not_found");
        assert!(!map_error(ldap(80, "other"), "uid=a").is_final());
    }
}
