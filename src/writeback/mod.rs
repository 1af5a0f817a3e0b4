//! Password writeback and unlock, the console's side: the options of Password reset > On-premises
//! integration, the integration's state, and carrying a reset, change, unlock or password check to
//! an agent serving the user's domain — the healthiest first, the next one when an agent fails or
//! does not answer, all within 90 seconds. Every attempt's outcome is audited; no password is ever
//! stored, logged or written to an audit row.

pub mod cli;
pub mod metrics;

use crate::db::writeback::{self as store, WritebackSettings};
use crate::db::{self, audit, sync::ObjectRow};
use crate::directory::password::WritebackError;
use crate::fleet::health::{Health, Status};
use crate::fleet::{call::describe_error, Agent, AgentFilter, Fleet, StatusFilter};
use crate::protocol::writeback::{PasswordRequest, UnlockRequest, VerifyRequest, WritebackOutcome};
use serde::Serialize;
use sqlx::SqlitePool;
use std::time::Duration;
use tokio::time::Instant;

/// The admin center allows a writeback 90 seconds.
pub const DEADLINE: Duration = Duration::from_secs(90);
/// One agent's share: a hung agent must leave time for the next.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);

/// What to do for a synced user.
pub enum Operation<'a> {
    Reset { new: &'a str, must_change: bool },
    Change { old: &'a str, new: &'a str },
    Unlock,
    Verify { password: &'a str },
}

impl Operation<'_> {
    fn audit_action(&self) -> &'static str {
        match self {
            Operation::Reset { .. } => "user.password_reset",
            Operation::Change { .. } => "user.password_change",
            Operation::Unlock => "user.unlock",
            Operation::Verify { .. } => "user.password_check",
        }
    }
    /// The `operation` label of `/metrics`; none for a password check, which is no writeback.
    fn metric_label(&self) -> Option<&'static str> {
        match self {
            Operation::Reset { .. } => Some("reset"),
            Operation::Change { .. } => Some("change"),
            Operation::Unlock => Some("unlock"),
            Operation::Verify { .. } => None,
        }
    }
    fn path(&self) -> &'static str {
        match self {
            Operation::Reset { .. } | Operation::Change { .. } => "/writeback/password",
            Operation::Unlock => "/writeback/unlock",
            Operation::Verify { .. } => "/writeback/verify",
        }
    }
}

/// Done, by this agent.
#[derive(Debug, Clone, Serialize)]
pub struct Done {
    pub agent_id: String,
    pub agent: String,
    /// After an unlock or a check: whether the account is locked now.
    pub locked: Option<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("Password writeback is off: turn on \"Enable password write back for synced users\" and \"Write back passwords with cloud sync\" in Password reset > On-premises integration. Nothing was sent.")]
    Off,
    #[error("Users may not unlock their accounts without resetting their password: an administrator can allow it in Password reset > On-premises integration (\"Allow users to unlock accounts without resetting their password\").")]
    UnlockNotAllowed,
    #[error("{0}")]
    Directory(WritebackError),
    #[error("No agent serving {domain} is healthy ({detail}). Start or repair an agent of {domain}, then try again.")]
    NoHealthyAgent { domain: String, detail: String },
    #[error("No agent of {domain} finished within {seconds} s (tried {tried}). The password may or may not have been changed; check the agents and try again.")]
    Timeout {
        domain: String,
        seconds: u64,
        tried: String,
    },
    #[error("Every agent serving {domain} failed: {failures}")]
    AllFailed { domain: String, failures: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl Failure {
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Off => "writeback_off",
            Failure::UnlockNotAllowed => "unlock_not_allowed",
            Failure::Directory(e) => e.code(),
            Failure::NoHealthyAgent { .. } => "no_healthy_agent",
            Failure::Timeout { .. } => "agent_timeout",
            Failure::AllFailed { .. } => "agents_failed",
            Failure::Database(_) => "internal",
        }
    }
}

/// Writeback works when both options are on: this console writes back only through cloud sync agents.
pub fn active(s: &WritebackSettings) -> bool {
    s.enable_writeback && s.use_cloud_sync
}

/// Whether any provisioning agent is known: "Write back passwords with cloud sync" is offered only then.
pub fn agents_detected(fleet: &Fleet) -> bool {
    let filter = AgentFilter {
        status: Some(StatusFilter::All),
        ..Default::default()
    };
    fleet.list(&filter, 1, 0).1 > 0
}

/// One synced domain's writeback readiness.
#[derive(Debug, Clone, Serialize)]
pub struct DomainState {
    pub domain: String,
    pub healthy_agents: usize,
    /// When no agent is healthy: since when (the last agent's health change), RFC 3339.
    pub unhealthy_since: Option<i64>,
    pub last_heartbeat_at: Option<i64>,
}

/// The state the screen shows: green when writeback is on and every synced domain has a healthy agent.
#[derive(Debug, Clone, Serialize)]
pub struct IntegrationState {
    pub ok: bool,
    pub domains: Vec<DomainState>,
}

pub fn integration_state(
    fleet: &Fleet,
    settings: &WritebackSettings,
    domains: &[String],
) -> IntegrationState {
    let states: Vec<DomainState> = domains
        .iter()
        .map(|domain| {
            let serving = fleet.serving(domain, None);
            let healthy = serving.iter().filter(|a| usable(a)).count();
            DomainState {
                domain: domain.clone(),
                healthy_agents: healthy,
                unhealthy_since: (healthy == 0)
                    .then(|| {
                        serving
                            .iter()
                            .map(|a| a.health_since.max(a.status_since))
                            .max()
                    })
                    .flatten(),
                last_heartbeat_at: serving.iter().filter_map(|a| a.last_heartbeat_at).max(),
            }
        })
        .collect();
    IntegrationState {
        ok: active(settings) && states.iter().all(|d| d.healthy_agents > 0),
        domains: states,
    }
}

fn usable(a: &Agent) -> bool {
    a.status == Status::Active && a.health != Health::Unhealthy
}

/// Carries `op` for `user` to an agent of its domain. `actor` is who asked ("alice", or "self-service
/// ann@corp…"). Audited, whatever the result, and counted in `metrics`.
pub async fn perform(
    pool: &SqlitePool,
    fleet: &Fleet,
    metrics: &metrics::WritebackMetrics,
    actor: &str,
    user: &ObjectRow,
    op: Operation<'_>,
    self_service: bool,
) -> Result<Done, Failure> {
    let started = Instant::now();
    let count = |result: &Result<Done, Failure>| {
        if let Some(operation) = op.metric_label() {
            let code = result.as_ref().map_or_else(Failure::code, |_| "success");
            metrics.record(operation, code, started.elapsed());
        }
    };
    let settings = match store::get(pool).await {
        Ok(row) => row.settings(),
        Err(e) => {
            let result = Err(Failure::from(e));
            count(&result);
            return result;
        }
    };
    let result = if !active(&settings) && !matches!(op, Operation::Verify { .. }) {
        Err(Failure::Off)
    } else if self_service
        && matches!(op, Operation::Unlock)
        && !settings.allow_unlock_without_reset
    {
        Err(Failure::UnlockNotAllowed)
    } else {
        send(fleet, user, &op).await
    };
    // Counted before the audit row: the metric is the writeback's outcome, whatever the audit does.
    count(&result);
    let target = user
        .user_principal_name
        .clone()
        .unwrap_or_else(|| user.dn.clone());
    let after = match &result {
        Ok(done) => {
            serde_json::json!({"result": "success", "agent": done.agent, "agent_id": done.agent_id, "dn": user.dn})
        }
        Err(e) => {
            serde_json::json!({"result": "failure", "error_code": e.code(), "error": e.to_string(), "dn": user.dn})
        }
    };
    // A password check is not a change: only failures and self-service sign-ins are worth a row.
    let mut conn = pool.acquire().await?;
    audit::insert(
        &mut conn,
        &audit::NewAuditEntry {
            at: db::now_ms(),
            actor,
            action: op.audit_action(),
            target_type: "user",
            target_id: &target,
            before: None,
            after: Some(after),
        },
    )
    .await?;
    if let (Ok(done), Operation::Unlock) = (&result, &op) {
        if done.locked == Some(false) {
            crate::db::sync::clear_lock(&mut conn, &user.object_id).await?;
        }
    }
    // The synced hash is the old password's now: self-service sign-in must not accept it.
    if result.is_ok() && matches!(op, Operation::Reset { .. } | Operation::Change { .. }) {
        crate::db::self_service::forget_password_hash(&mut conn, &user.object_id).await?;
    }
    result
}

async fn send(fleet: &Fleet, user: &ObjectRow, op: &Operation<'_>) -> Result<Done, Failure> {
    let domain = &user.domain;
    let mut serving = fleet.serving(domain, None);
    if serving.is_empty() {
        return Err(Failure::NoHealthyAgent {
            domain: domain.clone(),
            detail: "no agent has this directory connected".into(),
        });
    }
    let last_heartbeat = serving.iter().filter_map(|a| a.last_heartbeat_at).max();
    serving.retain(usable);
    if serving.is_empty() {
        return Err(Failure::NoHealthyAgent {
            domain: domain.clone(),
            detail: match last_heartbeat {
                Some(t) => format!("last heartbeat {}", rfc3339(t)),
                None => "no heartbeat yet".into(),
            },
        });
    }
    // Healthy before degraded.
    serving.sort_by_key(|a| a.health != Health::Healthy);
    let deadline = Instant::now() + DEADLINE;
    let mut failures = Vec::new();
    let mut tried = Vec::new();
    for agent in serving {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::Timeout {
                domain: domain.clone(),
                seconds: DEADLINE.as_secs(),
                tried: tried.join(", "),
            });
        }
        let timeout = left.min(ATTEMPT_TIMEOUT);
        tried.push(agent.machine_name.clone());
        let builder = match fleet.agent_request(&agent.id, reqwest::Method::POST, op.path()) {
            Ok(b) => b.timeout(timeout),
            Err(e) => {
                failures.push(format!("{}: {e}", agent.machine_name));
                continue;
            }
        };
        let builder = match op {
            Operation::Reset { new, must_change } => builder.json(&PasswordRequest {
                domain: domain.clone(),
                dn: user.dn.clone(),
                old_password: None,
                new_password: (*new).to_owned(),
                must_change_at_next_sign_in: *must_change,
            }),
            Operation::Change { old, new } => builder.json(&PasswordRequest {
                domain: domain.clone(),
                dn: user.dn.clone(),
                old_password: Some((*old).to_owned()),
                new_password: (*new).to_owned(),
                must_change_at_next_sign_in: false,
            }),
            Operation::Unlock => builder.json(&UnlockRequest {
                domain: domain.clone(),
                dn: user.dn.clone(),
            }),
            Operation::Verify { password } => builder.json(&VerifyRequest {
                domain: domain.clone(),
                dn: user.dn.clone(),
                password: (*password).to_owned(),
            }),
        };
        match builder.send().await {
            Ok(resp) if resp.status().is_success() => match resp.json::<WritebackOutcome>().await {
                Ok(outcome) if outcome.ok => {
                    return Ok(Done {
                        agent_id: agent.id.clone(),
                        agent: agent.machine_name.clone(),
                        locked: outcome.locked,
                    })
                }
                Ok(WritebackOutcome {
                    error: Some(e),
                    locked,
                    ..
                }) => {
                    // A wrong password on a locked account reads better as "locked".
                    if e == WritebackError::WrongPassword && locked == Some(true) {
                        return Err(Failure::Directory(WritebackError::Directory(
                            "the account is locked out on-premises".into(),
                        )));
                    }
                    return Err(Failure::Directory(e));
                }
                Ok(_) => failures.push(format!("{}: an empty answer", agent.machine_name)),
                Err(e) => failures.push(format!(
                    "{}: the answer was not understood ({e})",
                    agent.machine_name
                )),
            },
            Ok(resp) => {
                let status = resp.status();
                let body: serde_json::Value = resp.json().await.unwrap_or_default();
                failures.push(format!(
                    "{}: {}",
                    agent.machine_name,
                    body["error"]["message"]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| format!("HTTP {status}"))
                ));
            }
            Err(e) if e.is_timeout() && Instant::now() >= deadline => {
                return Err(Failure::Timeout {
                    domain: domain.clone(),
                    seconds: DEADLINE.as_secs(),
                    tried: tried.join(", "),
                })
            }
            Err(e) => failures.push(format!(
                "{}: {}",
                agent.machine_name,
                describe_error(&e, timeout)
            )),
        }
    }
    Err(Failure::AllFailed {
        domain: domain.clone(),
        failures: failures.join("; "),
    })
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Saves the options; `use_cloud_sync` needs an agent. Audited with before and after.
pub async fn save_settings(
    pool: &SqlitePool,
    fleet: &Fleet,
    actor: &str,
    new: WritebackSettings,
) -> Result<WritebackSettings, SaveError> {
    if new.use_cloud_sync && !agents_detected(fleet) {
        return Err(SaveError::NoAgent);
    }
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let before = sqlx::query_as::<_, WritebackSettings>(
        "SELECT enable_writeback, use_cloud_sync, allow_unlock_without_reset FROM writeback_settings WHERE settings_id = 1",
    )
    .fetch_one(&mut *tx)
    .await?;
    store::save(&mut tx, &new, db::now_ms(), actor).await?;
    audit::insert(
        &mut tx,
        &audit::NewAuditEntry {
            at: db::now_ms(),
            actor,
            action: "password_reset.on_premises_integration",
            target_type: "settings",
            target_id: "on-premises-integration",
            before: serde_json::to_value(before).ok(),
            after: serde_json::to_value(new).ok(),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(new)
}

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("\"Write back passwords with cloud sync\" needs a provisioning agent, and none is installed: install one (Cloud sync > Agents > Download on-premises agent), then turn it on.")]
    NoAgent,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}
