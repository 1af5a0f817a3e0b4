//! Sign-in, sign-out (of one or all sessions) and the one-time first-run setup page.
//!
//! Password sign-in is throttled per account and per client address; every sign-in starts a fresh
//! session (rotation: a session cookie the browser already had is ended, so a planted cookie never
//! becomes a signed-in session).

use super::agent_api::ClientIp;
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
    /// Offer "Sign in with your organization's account".
    oidc: bool,
    /// Show the username and password form.
    local: bool,
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
pub(super) fn pre_session(state: &AppState, headers: &HeaderMap) -> (String, Option<String>) {
    match cookie(headers, PRE_SESSION_COOKIE) {
        Some(v) if v.len() >= 32 => (v, None),
        _ => {
            let v = tokens::generate("");
            let set = set_cookie(
                PRE_SESSION_COOKIE,
                &v,
                86_400,
                state.identity.secure_cookies,
            );
            (v, Some(set))
        }
    }
}

pub(super) fn with_cookie(mut response: Response, set: Option<String>) -> Response {
    if let Some(set) = set.and_then(|s| s.parse().ok()) {
        response.headers_mut().append(header::SET_COOKIE, set);
    }
    response
}

/// Starts a session for `account_id` and answers with a redirect to `next` that sets its cookie.
/// A session the browser already had is ended first (rotation), and the pre-session cookie is
/// dropped, so nothing known before sign-in identifies the signed-in browser.
pub(super) async fn sign_in_response(
    state: &AppState,
    headers: &HeaderMap,
    account_id: i64,
    next: &str,
) -> AppResult<Response> {
    if let Some(old) = cookie(headers, SESSION_COOKIE) {
        db::sessions::delete(&state.db, &tokens::digest(&old)).await?;
    }
    let session =
        accounts::start_session(&state.db, account_id, state.settings.session_lifetime).await?;
    let lifetime = i64::try_from(state.settings.session_lifetime.as_secs()).unwrap_or(43_200);
    let secure = state.identity.secure_cookies;
    let response = with_cookie(
        Redirect::to(&safe_next(next)).into_response(),
        Some(set_cookie(SESSION_COOKIE, &session, lifetime, secure)),
    );
    Ok(with_cookie(
        response,
        Some(set_cookie(PRE_SESSION_COOKIE, "", 0, secure)),
    ))
}

/// Only local paths, so the `next` parameter cannot send anyone to another site.
pub(super) fn safe_next(next: &str) -> String {
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
    let (pre, set) = pre_session(&state, &headers);
    let page = LoginPage {
        csrf: state.key.csrf_token(&pre),
        next: safe_next(&q.next),
        username: String::new(),
        error: String::new(),
        no_accounts: db::accounts::count(&state.db).await? == 0,
        oidc: state.identity.oidc.is_some(),
        local: state.identity.local_sign_in,
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
    ClientIp(address): ClientIp,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> AppResult<Response> {
    if !state.identity.local_sign_in {
        return Err(AppError::forbidden(
            "Password sign-in is turned off on this console. Use \"Sign in with your organization's account\".",
        ));
    }
    let pre = cookie(&headers, PRE_SESSION_COOKIE).unwrap_or_default();
    if pre.is_empty() || !state.key.verify_csrf(&pre, &form.csrf) {
        return Err(AppError::csrf());
    }
    let username = form.username.trim().to_string();
    let again = |status: StatusCode, error: String| -> AppResult<Response> {
        let page = LoginPage {
            csrf: state.key.csrf_token(&pre),
            next: safe_next(&form.next),
            username: username.clone(),
            error,
            no_accounts: false,
            oidc: state.identity.oidc.is_some(),
            local: true,
        };
        Ok((status, render(&page)?).into_response())
    };
    // Checked before the password, so throttled guesses cost no argon2 work and learn nothing.
    if let Err(throttled) = state.identity.throttle.check(&username, &address) {
        tracing::warn!(username = %username, address = %address, "sign-in throttled");
        let retry = throttled.retry_after().as_secs().max(1).to_string();
        let mut response = again(StatusCode::TOO_MANY_REQUESTS, throttled.message())?;
        if let Ok(value) = retry.parse() {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return Ok(response);
    }
    let Some(account_id) = accounts::check_sign_in(&state.db, &username, &form.password).await?
    else {
        state.identity.throttle.record_failure(&username, &address);
        tracing::info!(username = %username, address = %address, "sign-in failed");
        return again(
            StatusCode::UNAUTHORIZED,
            "Wrong username or password.".into(),
        );
    };
    state.identity.throttle.record_success(&username);
    tracing::info!(username = %username, "signed in");
    sign_in_response(&state, &headers, account_id, &form.next).await
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
        Some(set_cookie(
            SESSION_COOKIE,
            "",
            0,
            state.identity.secure_cookies,
        )),
    ))
}

/// "Sign out of all sessions": ends every session of the signed-in account, on every browser.
pub async fn logout_all(
    State(state): State<AppState>,
    user: CurrentUser,
    Form(form): Form<CsrfOnly>,
) -> AppResult<Response> {
    user.check_csrf(&form.csrf, &state.key)?;
    let ended = db::sessions::delete_for_account(&state.db, user.principal.account_id).await?;
    tracing::info!(username = %user.principal.username, sessions = ended, "signed out of all sessions");
    let response = Redirect::to("/login").into_response();
    Ok(with_cookie(
        response,
        Some(set_cookie(
            SESSION_COOKIE,
            "",
            0,
            state.identity.secure_cookies,
        )),
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
    let (pre, set) = pre_session(&state, &headers);
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
    sign_in_response(&state, &headers, account_id, "/").await
}
