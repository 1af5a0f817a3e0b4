//! Sign-in, sign-out and the one-time first-run setup page.

use super::error::{AppError, AppResult};
use super::session::{cookie, set_cookie, CurrentUser, PRE_SESSION_COOKIE, SESSION_COOKIE};
use super::view::render;
use crate::auth::{tokens, Role};
use crate::console::accounts::{self, AccountError};
use crate::db;
use crate::state::AppState;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

#[derive(Template)]
#[template(path = "auth/login.html")]
struct LoginPage {
    csrf: String,
    next: String,
    username: String,
    error: String,
    no_accounts: bool,
}

#[derive(Template)]
#[template(path = "auth/setup.html")]
struct SetupPage {
    csrf: String,
    token: String,
    username: String,
    error: String,
}

/// The pre-session cookie value, and a `Set-Cookie` for it when the browser has none yet.
fn pre_session(headers: &HeaderMap) -> (String, Option<String>) {
    match cookie(headers, PRE_SESSION_COOKIE) {
        Some(v) if v.len() >= 32 => (v, None),
        _ => {
            let v = tokens::generate("");
            let set = set_cookie(PRE_SESSION_COOKIE, &v, 86_400);
            (v, Some(set))
        }
    }
}

fn with_cookie(mut response: Response, set: Option<String>) -> Response {
    if let Some(set) = set.and_then(|s| s.parse().ok()) {
        response.headers_mut().append(header::SET_COOKIE, set);
    }
    response
}

/// Only local paths, so the `next` parameter cannot send anyone to another site.
fn safe_next(next: &str) -> String {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next.to_string()
    } else {
        "/".to_string()
    }
}

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    #[serde(default)]
    next: String,
}

pub async fn show_login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> AppResult<Response> {
    let (pre, set) = pre_session(&headers);
    let page = LoginPage {
        csrf: state.key.csrf_token(&pre),
        next: safe_next(&q.next),
        username: String::new(),
        error: String::new(),
        no_accounts: db::accounts::count(&state.db).await? == 0,
    };
    Ok(with_cookie(render(&page)?, set))
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: String,
}

pub async fn submit_login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> AppResult<Response> {
    let pre = cookie(&headers, PRE_SESSION_COOKIE).unwrap_or_default();
    if pre.is_empty() || !state.key.verify_csrf(&pre, &form.csrf) {
        return Err(AppError::csrf());
    }
    let username = form.username.trim().to_string();
    let Some(account_id) = accounts::check_sign_in(&state.db, &username, &form.password).await?
    else {
        tracing::info!(username = %username, "sign-in failed");
        let page = LoginPage {
            csrf: state.key.csrf_token(&pre),
            next: safe_next(&form.next),
            username,
            error: "Wrong username or password.".into(),
            no_accounts: false,
        };
        return Ok((StatusCode::UNAUTHORIZED, render(&page)?).into_response());
    };
    let session =
        accounts::start_session(&state.db, account_id, state.settings.session_lifetime).await?;
    tracing::info!(username = %username, "signed in");
    let lifetime = i64::try_from(state.settings.session_lifetime.as_secs()).unwrap_or(43_200);
    let response = Redirect::to(&safe_next(&form.next)).into_response();
    Ok(with_cookie(
        response,
        Some(set_cookie(SESSION_COOKIE, &session, lifetime)),
    ))
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    pub csrf: String,
}

pub async fn logout(
    State(state): State<AppState>,
    user: CurrentUser,
    Form(form): Form<CsrfOnly>,
) -> AppResult<Response> {
    user.check_csrf(&form.csrf, &state.key)?;
    db::sessions::delete(&state.db, &tokens::digest(user.session_cookie())).await?;
    let response = Redirect::to("/login").into_response();
    Ok(with_cookie(
        response,
        Some(set_cookie(SESSION_COOKIE, "", 0)),
    ))
}

#[derive(Deserialize)]
pub struct SetupQuery {
    #[serde(default)]
    token: String,
}

fn check_setup_token(state: &AppState, presented: &str) -> AppResult<()> {
    let guard = state.setup_token.lock().unwrap_or_else(|p| p.into_inner());
    match guard.as_deref() {
        None => Err(AppError::new(
            StatusCode::GONE,
            "setup_done",
            "Setup is complete: an administrator exists. Sign in instead.",
        )),
        Some(expected) if tokens::equal(expected.as_bytes(), presented.as_bytes()) => Ok(()),
        Some(_) => Err(AppError::forbidden(
            "This setup link is not valid. Use the link `hybridsync serve` printed at start.",
        )),
    }
}

pub async fn show_setup(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<SetupQuery>,
) -> AppResult<Response> {
    check_setup_token(&state, &q.token)?;
    let (pre, set) = pre_session(&headers);
    let page = SetupPage {
        csrf: state.key.csrf_token(&pre),
        token: q.token,
        username: String::new(),
        error: String::new(),
    };
    Ok(with_cookie(render(&page)?, set))
}

#[derive(Deserialize)]
pub struct SetupForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_confirm: String,
    #[serde(default)]
    csrf: String,
}

pub async fn submit_setup(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SetupForm>,
) -> AppResult<Response> {
    let pre = cookie(&headers, PRE_SESSION_COOKIE).unwrap_or_default();
    if pre.is_empty() || !state.key.verify_csrf(&pre, &form.csrf) {
        return Err(AppError::csrf());
    }
    check_setup_token(&state, &form.token)?;
    let username = form.username.trim().to_string();
    let again = |error: String| -> AppResult<Response> {
        let page = SetupPage {
            csrf: state.key.csrf_token(&pre),
            token: form.token.clone(),
            username: username.clone(),
            error,
        };
        Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)?).into_response())
    };
    if form.password != form.password_confirm {
        return again("The two passwords differ. Type the same password twice.".into());
    }
    let account_id = match accounts::create(
        &state.db,
        "setup",
        &username,
        &form.password,
        Role::GlobalAdministrator,
    )
    .await
    {
        Ok(id) => id,
        Err(AccountError::Invalid(msg)) => return again(msg),
        Err(AccountError::Taken(_)) => return again("That username is taken.".into()),
        Err(e) => return Err(anyhow::Error::from(e).into()),
    };
    // The link is one-time: it dies with the first administrator.
    *state.setup_token.lock().unwrap_or_else(|p| p.into_inner()) = None;
    tracing::info!(username = %username, "first Global Administrator created through the setup link");
    let session =
        accounts::start_session(&state.db, account_id, state.settings.session_lifetime).await?;
    let lifetime = i64::try_from(state.settings.session_lifetime.as_secs()).unwrap_or(43_200);
    Ok(with_cookie(
        Redirect::to("/").into_response(),
        Some(set_cookie(SESSION_COOKIE, &session, lifetime)),
    ))
}
