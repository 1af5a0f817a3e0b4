//! Cloud sync > Agents > Download on-premises agent: install instructions, enrollment tokens.

use super::auth_pages::CsrfOnly;
use super::error::{AppError, AppResult};
use super::session::CurrentUser;
use super::view::{render, timestamp, Layout};
use crate::cli::parse_duration;
use crate::console::enrollment::{self, Revoked};
use crate::db;
use crate::state::AppState;
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

pub struct TokenView {
    pub id: i64,
    pub created_by: String,
    pub created_at: String,
    pub expires_at: String,
    pub uses: String,
    pub uses_left: i64,
    pub state: &'static str,
}

#[derive(Template)]
#[template(path = "agents/download.html")]
struct DownloadPage {
    layout: Layout,
    console_url: String,
    environment: &'static str,
    tokens: Vec<TokenView>,
    new_token: String,
    new_command: String,
    error: String,
}

async fn page(
    state: &AppState,
    user: &CurrentUser,
    new_token: String,
    error: String,
) -> AppResult<DownloadPage> {
    let now = db::now_ms();
    let (rows, _) = db::enrollment_tokens::list(&state.db, 100, 0).await?;
    let tokens = rows
        .iter()
        .map(|r| TokenView {
            id: r.enrollment_token_id,
            created_by: r.created_by.clone(),
            created_at: timestamp(r.created_at),
            expires_at: timestamp(r.expires_at),
            uses: format!("{} of {}", r.uses, r.max_uses),
            uses_left: r.uses_left(),
            state: r.state(now),
        })
        .collect();
    let new_command = if new_token.is_empty() {
        String::new()
    } else {
        enrollment::install_command(&state.settings.public_url, &new_token)
    };
    Ok(DownloadPage {
        layout: Layout::new(user, "agents"),
        console_url: state.settings.public_url.clone(),
        environment: state.fleet.config().environment.as_str(),
        tokens,
        new_token,
        new_command,
        error,
    })
}

pub async fn show_download(
    State(state): State<AppState>,
    user: CurrentUser,
) -> AppResult<Response> {
    render(&page(&state, &user, String::new(), String::new()).await?)
}

#[derive(Deserialize)]
pub struct CreateTokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    expires: String,
    #[serde(default)]
    max_uses: String,
}

pub async fn create_token(
    State(state): State<AppState>,
    user: CurrentUser,
    Form(form): Form<CreateTokenForm>,
) -> AppResult<Response> {
    user.check_csrf(&form.csrf, &state.key)?;
    user.principal
        .require_manage("creating an enrollment token")?;
    let lifetime = parse_duration(if form.expires.is_empty() {
        "24h"
    } else {
        form.expires.trim()
    });
    let max_uses = if form.max_uses.trim().is_empty() {
        Ok(1)
    } else {
        form.max_uses.trim().parse::<u32>()
    };
    let checked = match (lifetime, max_uses) {
        (Err(e), _) => Err(format!("Expires: {e}")),
        (_, Err(_)) => Err("Uses must be a whole number, such as 1 or 10.".to_string()),
        (Ok(l), Ok(m)) => enrollment::validate(l, m).map(|_| (l, m)),
    };
    let (lifetime, max_uses) = match checked {
        Ok(v) => v,
        Err(message) => {
            let body = render(&page(&state, &user, String::new(), message).await?)?;
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, body).into_response());
        }
    };
    let created =
        enrollment::create(&state.db, &user.principal.username, lifetime, max_uses).await?;
    // Rendered, not redirected: the token exists in plain form only in this response.
    let mut response = render(&page(&state, &user, created.token, String::new()).await?)?;
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

pub async fn revoke_token(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<i64>,
    Form(form): Form<CsrfOnly>,
) -> AppResult<Redirect> {
    user.check_csrf(&form.csrf, &state.key)?;
    user.principal
        .require_manage("revoking an enrollment token")?;
    match enrollment::revoke(&state.db, &user.principal.username, id).await? {
        Revoked::Done(_) | Revoked::AlreadyRevoked => Ok(Redirect::to("/agents/download")),
        Revoked::NotFound => Err(AppError::not_found(format!("No enrollment token #{id}."))),
    }
}
