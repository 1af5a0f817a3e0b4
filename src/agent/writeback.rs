//! The agent's side of password writeback and unlock: binds as the domain's service account and
//! applies the change (see `directory::password`), answering only once the directory confirmed.
//! Passwords are used for the one operation and dropped; nothing here logs a request body.

use super::directory::{load_all, DirectoryConfig};
use crate::directory::conn::Connection;
use crate::directory::password::{self, Change, WritebackError};
use crate::directory::Dialect;
use crate::protocol::writeback::{PasswordRequest, UnlockRequest, VerifyRequest, WritebackOutcome};
use std::path::Path;

/// Why this agent could not act (the console tries another one).
#[derive(Debug, thiserror::Error)]
pub(crate) enum AgentTrouble {
    #[error("this agent does not serve {0}")]
    NotServed(String),
    #[error("{0}")]
    Directory(String),
}

fn directory(data_dir: &Path, domain: &str) -> Result<DirectoryConfig, AgentTrouble> {
    load_all(data_dir)
        .into_iter()
        .filter_map(Result::ok)
        .find(|d| d.domain.eq_ignore_ascii_case(domain))
        .ok_or_else(|| AgentTrouble::NotServed(domain.to_owned()))
}

async fn service_connection(
    data_dir: &Path,
    dir: &DirectoryConfig,
) -> Result<Connection, AgentTrouble> {
    let target = dir
        .target(data_dir)
        .map_err(|e| AgentTrouble::Directory(format!("{e:#}")))?;
    let password = dir
        .password(data_dir)
        .map_err(|e| AgentTrouble::Directory(format!("{e:#}")))?;
    Connection::bind_new(&target, &dir.service_account.bind_dn, &password)
        .await
        .map_err(|e| AgentTrouble::Directory(e.to_string()))
}

fn outcome(
    result: Result<(), WritebackError>,
    locked: Option<bool>,
) -> Result<WritebackOutcome, AgentTrouble> {
    match result {
        Ok(()) => Ok(WritebackOutcome {
            ok: true,
            error: None,
            locked,
        }),
        // This agent's own trouble with the directory: another agent may do better.
        Err(WritebackError::Directory(e)) => Err(AgentTrouble::Directory(e)),
        Err(e) => Ok(WritebackOutcome {
            ok: false,
            error: Some(e),
            locked: None,
        }),
    }
}

pub(crate) async fn set_password(
    data_dir: &Path,
    req: &PasswordRequest,
) -> Result<WritebackOutcome, AgentTrouble> {
    let dir = directory(data_dir, &req.domain)?;
    let (mut conn, change) = match &req.old_password {
        // OpenLDAP checks the old password of a Password Modify only for the user's own
        // connection (and applies pwdMinAge then): bind as the user.
        Some(old) if dir.dialect == Dialect::OpenLdap => {
            let target = dir
                .target(data_dir)
                .map_err(|e| AgentTrouble::Directory(format!("{e:#}")))?;
            let conn = match Connection::bind_new(&target, &req.dn, old).await {
                Ok(conn) => conn,
                Err(e) if e.rc() == Some(49) => {
                    return outcome(Err(WritebackError::WrongPassword), None)
                }
                Err(e) => return Err(AgentTrouble::Directory(e.to_string())),
            };
            let change = Change::Change {
                old,
                new: &req.new_password,
            };
            (conn, change)
        }
        Some(old) => (
            service_connection(data_dir, &dir).await?,
            Change::Change {
                old,
                new: &req.new_password,
            },
        ),
        None => (
            service_connection(data_dir, &dir).await?,
            Change::Reset {
                new: &req.new_password,
                must_change: req.must_change_at_next_sign_in,
            },
        ),
    };
    let result = password::apply(&mut conn, dir.dialect, &req.dn, change).await;
    conn.close().await;
    outcome(result, None)
}

pub(crate) async fn unlock(
    data_dir: &Path,
    req: &UnlockRequest,
) -> Result<WritebackOutcome, AgentTrouble> {
    let dir = directory(data_dir, &req.domain)?;
    let mut conn = service_connection(data_dir, &dir).await?;
    let result = password::unlock(&mut conn, dir.dialect, &req.dn).await;
    let locked = match &result {
        Ok(()) => password::is_locked(&mut conn, dir.dialect, &req.dn)
            .await
            .ok(),
        Err(_) => None,
    };
    conn.close().await;
    outcome(result, locked)
}

/// Binds as the user: true when the password is right. A locked account does not bind either;
/// `locked` tells the two apart.
pub(crate) async fn verify(
    data_dir: &Path,
    req: &VerifyRequest,
) -> Result<WritebackOutcome, AgentTrouble> {
    let dir = directory(data_dir, &req.domain)?;
    let target = dir
        .target(data_dir)
        .map_err(|e| AgentTrouble::Directory(format!("{e:#}")))?;
    let bound = match Connection::bind_new(&target, &req.dn, &req.password).await {
        Ok(conn) => {
            conn.close().await;
            Ok(())
        }
        Err(e) if e.rc() == Some(49) => Err(WritebackError::WrongPassword),
        Err(e) => return Err(AgentTrouble::Directory(e.to_string())),
    };
    let mut conn = service_connection(data_dir, &dir).await?;
    let locked = password::is_locked(&mut conn, dir.dialect, &req.dn)
        .await
        .ok();
    conn.close().await;
    outcome(bound, locked)
}
