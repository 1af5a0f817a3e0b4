//! Password reset › On-premises integration (the three options and the integration's state), and
//! the Reset password and Unlock actions of a synced user's page. The state and the saving are the
//! JSON API's (`writeback_api`), so the screen, the API and the CLI always agree.

use super::directory_pages::{user_page_with, Flash};
use super::error::{AppError, AppResult};
use super::session::CurrentUser;
use super::view::{render, Layout};
use super::writeback_api::{self, check_password, IntegrationBody, IntegrationJson};
use crate::state::AppState;
use crate::writeback::{self, Operation};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

const PATH: &str = "/password-reset/on-premises-integration";

#[derive(Template)]
#[template(path = "password_reset/on_premises_integration.html")]
struct IntegrationPage {
    layout: Layout,
    s: IntegrationJson,
    /// The options as shown: saved ones, or the ones just submitted when saving failed.
    enable_writeback: bool,
    use_cloud_sync: bool,
    allow_unlock_without_reset: bool,
    saved: bool,
    error: String,
}

#[derive(Deserialize, Default)]
pub struct SavedQuery {
    #[serde(default)]
    saved: Option<String>,
}

pub async fn show_integration(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(q): Query<SavedQuery>,
) -> AppResult<Response> {
    let s = writeback_api::integration_json(&state).await?;
    render(&IntegrationPage {
        layout: Layout::new(&user, "on-premises-integration"),
        enable_writeback: s.enable_writeback,
        use_cloud_sync: s.use_cloud_sync,
        allow_unlock_without_reset: s.allow_unlock_without_reset,
        s,
        saved: q.saved.is_some(),
        error: String::new(),
    })
}

/// Checkboxes: present when ticked.
#[derive(Deserialize)]
pub struct IntegrationForm {
    #[serde(default)]
    csrf: String,
    enable_writeback: Option<String>,
    use_cloud_sync: Option<String>,
    allow_unlock_without_reset: Option<String>,
}

pub async fn save_integration(
    State(state): State<AppState>,
    user: CurrentUser,
    Form(form): Form<IntegrationForm>,
) -> AppResult<Response> {
    user.check_csrf(&form.csrf, &state.key)?;
    user.principal
        .require_manage("changing the on-premises integration")?;
    let body = IntegrationBody {
        enable_writeback: form.enable_writeback.is_some(),
        use_cloud_sync: form.use_cloud_sync.is_some(),
        allow_unlock_without_reset: form.allow_unlock_without_reset.is_some(),
    };
    match writeback_api::save(&state, &user.principal.username, body).await {
        Ok(()) => Ok(Redirect::to(&format!("{PATH}?saved=1")).into_response()),
        Err(e) => {
            let AppError::Client {
                status, message, ..
            } = e.0
            else {
                return Err(e.0);
            };
            let s = writeback_api::integration_json(&state).await?;
            let page = render(&IntegrationPage {
                layout: Layout::new(&user, "on-premises-integration"),
                s,
                enable_writeback: body.enable_writeback,
                use_cloud_sync: body.use_cloud_sync,
                allow_unlock_without_reset: body.allow_unlock_without_reset,
                saved: false,
                error: message,
            })?;
            Ok((status, page).into_response())
        }
    }
}

/// Deliberately not `Debug`: it holds passwords.
#[derive(Deserialize)]
pub struct ResetForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirm_password: String,
    must_change: Option<String>,
}

/// The user's page with the outcome: 200 and a notice when done, the error's status and its
/// message otherwise. A 500 stays a 500 page (its detail is logged, never shown).
async fn outcome_page(
    state: &AppState,
    user: &CurrentUser,
    id: &str,
    outcome: Result<String, AppError>,
) -> AppResult<Response> {
    match outcome {
        Ok(message) => user_page_with(state, user, id, Flash { ok: true, message }).await,
        Err(AppError::Client {
            status, message, ..
        }) => {
            let page = user_page_with(state, user, id, Flash { ok: false, message }).await?;
            Ok((status, page).into_response())
        }
        Err(e) => Err(e),
    }
}

pub async fn reset_password(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Form(form): Form<ResetForm>,
) -> AppResult<Response> {
    user.check_csrf(&form.csrf, &state.key)?;
    user.principal
        .require_manage("resetting a user's password")?;
    let target = writeback_api::synced_user(&state, &id)
        .await
        .map_err(|e| e.0)?;
    let outcome = if form.new_password != form.confirm_password {
        Err(AppError::unprocessable(
            "The two new passwords differ. Type the same password in both fields.",
        ))
    } else if let Err(e) = check_password(&form.new_password) {
        Err(e)
    } else {
        writeback::perform(
            &state.db,
            &state.fleet,
            &state.writeback_metrics,
            &user.principal.username,
            &target,
            Operation::Reset {
                new: &form.new_password,
                must_change: form.must_change.is_some(),
            },
            false,
        )
        .await
        .map(|done| {
            format!(
                "The password of {} was reset on-premises by agent {}.{}",
                target.user_principal_name.as_deref().unwrap_or(&target.dn),
                done.agent,
                if form.must_change.is_some() {
                    " The user must change it at next sign-in."
                } else {
                    ""
                }
            )
        })
        .map_err(AppError::from)
    };
    outcome_page(&state, &user, &id, outcome).await
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn unlock(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> AppResult<Response> {
    user.check_csrf(&form.csrf, &state.key)?;
    user.principal
        .require_manage("unlocking a user's account")?;
    let target = writeback_api::synced_user(&state, &id)
        .await
        .map_err(|e| e.0)?;
    let outcome = writeback::perform(
        &state.db,
        &state.fleet,
        &state.writeback_metrics,
        &user.principal.username,
        &target,
        Operation::Unlock,
        false,
    )
    .await
    .map(|done| {
        format!(
            "{} was unlocked on-premises by agent {}.",
            target.user_principal_name.as_deref().unwrap_or(&target.dn),
            done.agent
        )
    })
    .map_err(AppError::from);
    outcome_page(&state, &user, &id, outcome).await
}
