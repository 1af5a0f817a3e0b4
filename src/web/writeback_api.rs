//! Password writeback in the JSON API: `GET`/`PUT /api/v1/password-reset/on-premises-integration`,
//! `POST /api/v1/users/{id}/reset-password` and `POST /api/v1/users/{id}/unlock`. The shapes here
//! are what the screen and the CLI show too.

use super::api::{ApiJson, ApiPath};
use super::error::{ApiError, ApiResult, AppError};
use super::session::ApiUser;
use super::view::rfc3339;
use crate::db::{sync as objects, writeback as store};
use crate::state::AppState;
use crate::writeback::{self, Failure, Operation, SaveError};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

impl From<Failure> for AppError {
    fn from(e: Failure) -> Self {
        use crate::directory::password::WritebackError as W;
        let status = match &e {
            Failure::Database(_) => {
                return AppError::Internal(anyhow::anyhow!(e.to_string()));
            }
            Failure::Off => StatusCode::CONFLICT,
            Failure::UnlockNotAllowed => StatusCode::FORBIDDEN,
            Failure::Directory(W::PasswordPolicy(_) | W::WrongPassword) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Failure::Directory(W::UserNotFound(_)) => StatusCode::NOT_FOUND,
            Failure::Directory(_) | Failure::AllFailed { .. } => StatusCode::BAD_GATEWAY,
            Failure::NoHealthyAgent { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Failure::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        };
        AppError::new(status, e.code(), e.to_string())
    }
}

impl From<Failure> for ApiError {
    fn from(e: Failure) -> Self {
        AppError::from(e).into()
    }
}

#[derive(Serialize)]
pub struct DomainStateJson {
    pub domain: String,
    pub healthy_agents: usize,
    pub unhealthy_since: Option<String>,
    pub last_heartbeat_at: Option<String>,
}

#[derive(Serialize)]
pub struct IntegrationJson {
    pub enable_writeback: bool,
    pub use_cloud_sync: bool,
    pub allow_unlock_without_reset: bool,
    /// "Write back passwords with cloud sync" is offered only when an agent is installed.
    pub agents_detected: bool,
    /// Green: writeback on and every synced domain has a healthy agent.
    pub ok: bool,
    pub message: String,
    pub domains: Vec<DomainStateJson>,
    pub updated_at: Option<String>,
    pub updated_by: Option<String>,
}

pub async fn integration_json(state: &AppState) -> Result<IntegrationJson, sqlx::Error> {
    let row = store::get(&state.db).await?;
    let settings = row.settings();
    let domains: Vec<String> = objects::configurations(&state.db)
        .await?
        .into_iter()
        .map(|c| c.domain)
        .collect();
    let integration = writeback::integration_state(&state.fleet, &settings, &domains);
    let lacking: Vec<String> = integration
        .domains
        .iter()
        .filter(|d| d.healthy_agents == 0)
        .map(|d| match d.unhealthy_since {
            Some(t) => format!("{} has no healthy agent since {}", d.domain, rfc3339(t)),
            None => format!("{} has no agent", d.domain),
        })
        .collect();
    let message = if !writeback::active(&settings) {
        if settings.enable_writeback {
            "Writeback is enabled, but \"Write back passwords with cloud sync\" is off: no agent writes passwords back.".to_owned()
        } else {
            "Password writeback is off: resets of synced users are refused.".to_owned()
        }
    } else if domains.is_empty() {
        "Writeback is on; no domain is synced yet (Cloud sync > Configurations).".to_owned()
    } else if lacking.is_empty() {
        "Writeback is on and every synced domain has a healthy agent.".to_owned()
    } else {
        format!("Writeback is on, but {}.", lacking.join("; "))
    };
    Ok(IntegrationJson {
        enable_writeback: settings.enable_writeback,
        use_cloud_sync: settings.use_cloud_sync,
        allow_unlock_without_reset: settings.allow_unlock_without_reset,
        agents_detected: writeback::agents_detected(&state.fleet),
        ok: integration.ok,
        message,
        domains: integration
            .domains
            .into_iter()
            .map(|d| DomainStateJson {
                domain: d.domain,
                healthy_agents: d.healthy_agents,
                unhealthy_since: d.unhealthy_since.map(rfc3339),
                last_heartbeat_at: d.last_heartbeat_at.map(rfc3339),
            })
            .collect(),
        updated_at: row.updated_at.map(rfc3339),
        updated_by: row.updated_by,
    })
}

pub async fn get_integration(
    State(state): State<AppState>,
    _user: ApiUser,
) -> ApiResult<Json<IntegrationJson>> {
    Ok(Json(integration_json(&state).await?))
}

#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct IntegrationBody {
    pub enable_writeback: bool,
    pub use_cloud_sync: bool,
    pub allow_unlock_without_reset: bool,
}

/// Saves the three options (pages and API).
pub async fn save(state: &AppState, actor: &str, body: IntegrationBody) -> Result<(), ApiError> {
    let settings = store::WritebackSettings {
        enable_writeback: body.enable_writeback,
        use_cloud_sync: body.use_cloud_sync,
        allow_unlock_without_reset: body.allow_unlock_without_reset,
    };
    match writeback::save_settings(&state.db, &state.fleet, actor, settings).await {
        Ok(_) => Ok(()),
        Err(e @ SaveError::NoAgent) => Err(AppError::unprocessable(e.to_string()).into()),
        Err(SaveError::Database(e)) => Err(e.into()),
    }
}

pub async fn put_integration(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    ApiJson(body): ApiJson<IntegrationBody>,
) -> ApiResult<Json<IntegrationJson>> {
    user.require_manage("changing the on-premises integration")?;
    save(&state, &user.username, body).await?;
    Ok(Json(integration_json(&state).await?))
}

/// Longest password accepted (AD's limit is 256 characters).
pub const MAX_PASSWORD: usize = 256;

/// Deliberately not `Debug`: it holds a password.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetBody {
    pub new_password: String,
    #[serde(default)]
    pub must_change_at_next_sign_in: bool,
}

#[derive(Serialize)]
pub struct WritebackDone {
    pub ok: bool,
    pub agent: String,
    pub locked: Option<bool>,
    pub message: String,
}

pub fn check_password(p: &str) -> Result<(), AppError> {
    if p.is_empty() {
        return Err(AppError::unprocessable("The new password is empty."));
    }
    if p.chars().count() > MAX_PASSWORD {
        return Err(AppError::unprocessable(format!(
            "The new password is longer than {MAX_PASSWORD} characters."
        )));
    }
    if p.chars().any(char::is_control) {
        return Err(AppError::unprocessable(
            "The new password contains control characters (such as a line break).",
        ));
    }
    Ok(())
}

pub async fn synced_user(state: &AppState, id: &str) -> Result<objects::ObjectRow, ApiError> {
    let mut conn = state.db.acquire().await?;
    objects::object(&mut conn, id)
        .await?
        .filter(|o| o.kind == "user" && o.provisioned)
        .ok_or_else(|| AppError::not_found(format!("No synced user with id {id}.")).into())
}

pub async fn reset_password(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ResetBody>,
) -> ApiResult<Json<WritebackDone>> {
    user.require_manage("resetting a user's password")?;
    check_password(&body.new_password)?;
    let target = synced_user(&state, &id).await?;
    let done = writeback::perform(
        &state.db,
        &state.fleet,
        &state.writeback_metrics,
        &user.username,
        &target,
        Operation::Reset {
            new: &body.new_password,
            must_change: body.must_change_at_next_sign_in,
        },
        false,
    )
    .await?;
    Ok(Json(WritebackDone {
        ok: true,
        message: format!(
            "The password of {} was reset on-premises by agent {}.",
            target.user_principal_name.as_deref().unwrap_or(&target.dn),
            done.agent
        ),
        agent: done.agent,
        locked: done.locked,
    }))
}

pub async fn unlock(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<WritebackDone>> {
    user.require_manage("unlocking a user's account")?;
    let target = synced_user(&state, &id).await?;
    let done = writeback::perform(
        &state.db,
        &state.fleet,
        &state.writeback_metrics,
        &user.username,
        &target,
        Operation::Unlock,
        false,
    )
    .await?;
    Ok(Json(WritebackDone {
        ok: true,
        message: format!(
            "{} was unlocked on-premises by agent {}.",
            target.user_principal_name.as_deref().unwrap_or(&target.dn),
            done.agent
        ),
        agent: done.agent,
        locked: done.locked,
    }))
}
