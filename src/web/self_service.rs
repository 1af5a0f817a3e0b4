//! The self-service portal for synced users (not console accounts), at `/my`: sign in with the
//! user principal name and the on-premises password, then change the password or, when Password
//! reset › On-premises integration allows it, unlock the account without resetting it.
//!
//! Sign-in checks the password against the synced hash when password hash sync brought one (a
//! locked-out user can still sign in this way, to unlock), and otherwise through an agent, which
//! binds as the user. Failed attempts are throttled per user and per address. A session is a
//! separate, short-lived cookie (`hs_my`, HttpOnly, SameSite=Strict, path /my) whose SHA-256 alone
//! the database keeps; every form carries a CSRF token derived from it.

use super::agent_api::ClientIp;
use super::auth_pages::{pre_session, with_cookie};
use super::error::{AppError, AppResult};
use super::session::{cookie, PRE_SESSION_COOKIE};
use super::sync_api;
use super::view::render;
use super::writeback_api::check_password;
use crate::auth::ldap_hash::{self, Verdict};
use crate::auth::tokens;
use crate::db::{self, audit, self_service as sessions, sync as objects, writeback as settings};
use crate::directory::password::WritebackError;
use crate::state::AppState;
use crate::writeback::{self, Failure, Operation};
use askama::Template;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

/// The portal's session cookie.
pub const MY_COOKIE: &str = "hs_my";
/// A self-service session lasts 15 minutes.
pub const MY_SESSION_SECONDS: i64 = 15 * 60;

fn my_cookie(value: &str, max_age: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{MY_COOKIE}={value}; Path=/my; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

fn actor(upn: &str) -> String {
    format!("self-service {upn}")
}

/// A signed-in synced user.
struct MyUser {
    token: String,
    user: objects::ObjectRow,
}

impl MyUser {
    fn upn(&self) -> &str {
        self.user
            .user_principal_name
            .as_deref()
            .unwrap_or(&self.user.dn)
    }
}

/// The live self-service session of the request, if any (and its user still synced).
async fn current(state: &AppState, headers: &HeaderMap) -> AppResult<Option<MyUser>> {
    let Some(token) = cookie(headers, MY_COOKIE).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let Some(object_id) = sessions::get(&state.db, &tokens::digest(&token), db::now_ms()).await?
    else {
        return Ok(None);
    };
    let mut conn = state.db.acquire().await?;
    let user = objects::object(&mut conn, &object_id)
        .await?
        .filter(|o| o.kind == "user" && o.provisioned && !o.gone);
    Ok(user.map(|user| MyUser { token, user }))
}

fn to_sign_in() -> Response {
    Redirect::to("/my").into_response()
}

// ---------------------------------------------------------------------------------------------
// Sign-in

#[derive(Template)]
#[template(path = "my/sign_in.html")]
struct SignInPage {
    csrf: String,
    upn: String,
    error: String,
    signed_out: bool,
}

#[derive(Deserialize, Default)]
pub struct SignInQuery {
    #[serde(default)]
    signed_out: Option<String>,
}

pub async fn show_sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<SignInQuery>,
) -> AppResult<Response> {
    if current(&state, &headers).await?.is_some() {
        return Ok(Redirect::to("/my/account").into_response());
    }
    let (pre, set) = pre_session(&state, &headers);
    let page = SignInPage {
        csrf: state.key.csrf_token(&pre),
        upn: String::new(),
        error: String::new(),
        signed_out: q.signed_out.is_some(),
    };
    Ok(with_cookie(render(&page)?, set))
}

/// Deliberately not `Debug`: it holds a password.
#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    upn: String,
    #[serde(default)]
    password: String,
}

const WRONG: &str = "Wrong user principal name or password.";

pub async fn submit_sign_in(
    State(state): State<AppState>,
    ClientIp(address): ClientIp,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> AppResult<Response> {
    let pre = cookie(&headers, PRE_SESSION_COOKIE).unwrap_or_default();
    if pre.is_empty() || !state.key.verify_csrf(&pre, &form.csrf) {
        return Err(AppError::csrf());
    }
    let upn = form.upn.trim().to_owned();
    let again = |status: StatusCode, error: String| -> AppResult<Response> {
        let page = SignInPage {
            csrf: state.key.csrf_token(&pre),
            upn: upn.clone(),
            error,
            signed_out: false,
        };
        Ok((status, render(&page)?).into_response())
    };
    let throttle = &state.identity.self_service_throttle;
    if let Err(throttled) = throttle.check(&upn, &address) {
        tracing::warn!(upn = %upn, address = %address, "self-service sign-in throttled");
        let mut response = again(
            StatusCode::TOO_MANY_REQUESTS,
            throttled
                .message()
                .replace("this username", "this user principal name"),
        )?;
        if let Ok(value) = throttled.retry_after().as_secs().max(1).to_string().parse() {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return Ok(response);
    }
    let user = if upn.is_empty() || form.password.is_empty() {
        None
    } else {
        objects::user_by_upn(&state.db, &upn)
            .await?
            .filter(|u| !u.gone)
    };
    let Some(user) = user else {
        throttle.record_failure(&upn, &address);
        return again(StatusCode::UNAUTHORIZED, WRONG.into());
    };
    let who = actor(&upn);
    let verdict = match user.password_hash.as_deref() {
        Some(hash) => ldap_hash::verify(hash, &form.password),
        None => Verdict::Unsupported,
    };
    let checked_by = match verdict {
        Verdict::Match => "synced password hash",
        Verdict::Mismatch => {
            throttle.record_failure(&upn, &address);
            audit_sign_in(&state, &who, &user, Err("wrong_password")).await?;
            return again(StatusCode::UNAUTHORIZED, WRONG.into());
        }
        // No usable hash: the agent binds as the user (and audits the check).
        Verdict::Unsupported => {
            match writeback::perform(
                &state.db,
                &state.fleet,
                &state.writeback_metrics,
                &who,
                &user,
                Operation::Verify {
                    password: &form.password,
                },
                true,
            )
            .await
            {
                Ok(_) => "on-premises directory",
                Err(Failure::Directory(WritebackError::WrongPassword)) => {
                    throttle.record_failure(&upn, &address);
                    return again(StatusCode::UNAUTHORIZED, WRONG.into());
                }
                // A locked account does not bind, whatever the password: say so, without telling
                // whether the password was right.
                Err(Failure::Directory(WritebackError::Directory(detail)))
                    if detail.contains("locked") =>
                {
                    throttle.record_failure(&upn, &address);
                    return again(
                        StatusCode::UNAUTHORIZED,
                        "The password is wrong, or your account is locked out on-premises and your password cannot be checked: wait for the lockout to end, or ask your helpdesk to unlock it.".into(),
                    );
                }
                Err(Failure::Database(e)) => return Err(e.into()),
                Err(e) => {
                    // Details (agents, domains) are for the helpdesk, in the audit log and here.
                    tracing::warn!(upn = %upn, error = %e, "self-service sign-in: password not checked");
                    return again(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Your password cannot be checked right now: no on-premises agent could do it. Try again later, or contact your helpdesk.".into(),
                    );
                }
            }
        }
    };
    throttle.record_success(&upn);
    audit_sign_in(&state, &who, &user, Ok(checked_by)).await?;
    if let Some(old) = cookie(&headers, MY_COOKIE) {
        sessions::delete(&state.db, &tokens::digest(&old)).await?;
    }
    let token = tokens::generate("hsmy_");
    let now = db::now_ms();
    sessions::insert(
        &state.db,
        &tokens::digest(&token),
        &user.object_id,
        now,
        now + MY_SESSION_SECONDS * 1000,
    )
    .await?;
    tracing::info!(upn = %upn, "self-service sign-in");
    Ok(with_cookie(
        Redirect::to("/my/account").into_response(),
        Some(my_cookie(
            &token,
            MY_SESSION_SECONDS,
            state.identity.secure_cookies,
        )),
    ))
}

async fn audit_sign_in(
    state: &AppState,
    who: &str,
    user: &objects::ObjectRow,
    result: Result<&str, &str>,
) -> AppResult<()> {
    let after = match result {
        Ok(by) => serde_json::json!({"result": "success", "checked_by": by, "dn": user.dn}),
        Err(code) => serde_json::json!({"result": "failure", "error_code": code, "dn": user.dn}),
    };
    let mut conn = state.db.acquire().await?;
    audit::insert(
        &mut conn,
        &audit::NewAuditEntry {
            at: db::now_ms(),
            actor: who,
            action: "user.self_service_sign_in",
            target_type: "user",
            target_id: user.user_principal_name.as_deref().unwrap_or(&user.dn),
            before: None,
            after: Some(after),
        },
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The account page

#[derive(Template)]
#[template(path = "my/account.html")]
struct AccountPage {
    csrf: String,
    name: String,
    upn: String,
    locked: bool,
    /// "Allow users to unlock accounts without resetting their password".
    unlock_allowed: bool,
    flash: Option<(bool, String)>,
}

async fn account_page(
    state: &AppState,
    me: &MyUser,
    status: StatusCode,
    flash: Option<(bool, String)>,
) -> AppResult<Response> {
    let s = settings::get(&state.db).await?.settings();
    let page = AccountPage {
        csrf: state.key.csrf_token(&me.token),
        name: me
            .user
            .display_name
            .clone()
            .unwrap_or_else(|| me.upn().to_owned()),
        upn: me.upn().to_owned(),
        locked: sync_api::locked(&me.user),
        unlock_allowed: s.allow_unlock_without_reset,
        flash,
    };
    Ok((status, render(&page)?).into_response())
}

pub async fn show_account(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> AppResult<Response> {
    let Some(me) = current(&state, &headers).await? else {
        return Ok(to_sign_in());
    };
    account_page(&state, &me, StatusCode::OK, None).await
}

/// Deliberately not `Debug`: it holds passwords.
#[derive(Deserialize)]
pub struct ChangeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirm_password: String,
}

/// The page after an action: a notice when done, the error's status and message otherwise.
async fn outcome_page(
    state: &AppState,
    me: &MyUser,
    outcome: Result<String, AppError>,
) -> AppResult<Response> {
    match outcome {
        Ok(message) => account_page(state, me, StatusCode::OK, Some((true, message))).await,
        Err(AppError::Client {
            status, message, ..
        }) => account_page(state, me, status, Some((false, message))).await,
        Err(e) => Err(e),
    }
}

pub async fn change_password(
    State(state): State<AppState>,
    ClientIp(address): ClientIp,
    headers: HeaderMap,
    Form(form): Form<ChangeForm>,
) -> AppResult<Response> {
    let Some(me) = current(&state, &headers).await? else {
        return Ok(to_sign_in());
    };
    if !state.key.verify_csrf(&me.token, &form.csrf) {
        return Err(AppError::csrf());
    }
    let upn = me.upn().to_owned();
    let throttle = &state.identity.self_service_throttle;
    let outcome = if let Err(throttled) = throttle.check(&upn, &address) {
        Err(AppError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "throttled",
            throttled
                .message()
                .replace("sign-ins for this username", "attempts for this account"),
        ))
    } else if form.new_password != form.confirm_password {
        Err(AppError::unprocessable(
            "The two new passwords differ. Type the same password in both fields.",
        ))
    } else if let Err(e) = check_password(&form.new_password) {
        Err(e)
    } else {
        let result = own_change(&state, &me, &form.current_password, &form.new_password).await;
        if matches!(
            result,
            Err(Failure::Directory(WritebackError::WrongPassword))
        ) {
            throttle.record_failure(&upn, &address);
        }
        result
            .map(|_| "Your password was changed. Use the new password from now on.".to_owned())
            .map_err(AppError::from)
    };
    outcome_page(&state, &me, outcome).await
}

/// The user's own change: `Operation::Change`. OpenLDAP verifies an old password only for a
/// connection bound as that user, which the agents' writeback (src/directory/password.rs) does not
/// do yet; on that refusal the change is done in two audited steps instead: the agent binds as the
/// user with the current password (`Verify`), then sets the new one (`Reset`, without "must change").
/// The directory's quality, length and history checks still apply; `pwdMinAge` does not.
async fn own_change(
    state: &AppState,
    me: &MyUser,
    old: &str,
    new: &str,
) -> Result<writeback::Done, Failure> {
    writeback::perform(
        &state.db,
        &state.fleet,
        &state.writeback_metrics,
        &actor(me.upn()),
        &me.user,
        Operation::Change { old, new },
        true,
    )
    .await
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn unlock(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> AppResult<Response> {
    let Some(me) = current(&state, &headers).await? else {
        return Ok(to_sign_in());
    };
    if !state.key.verify_csrf(&me.token, &form.csrf) {
        return Err(AppError::csrf());
    }
    let result = writeback::perform(
        &state.db,
        &state.fleet,
        &state.writeback_metrics,
        &actor(me.upn()),
        &me.user,
        Operation::Unlock,
        true,
    )
    .await;
    // The lock state shown comes from the row, which an unlock just cleared.
    let me = match current(&state, &headers).await? {
        Some(fresh) => fresh,
        None => me,
    };
    let outcome = result
        .map(|_| "Your account is unlocked. Sign in with your current password.".to_owned())
        .map_err(AppError::from);
    outcome_page(&state, &me, outcome).await
}

pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> AppResult<Response> {
    if let Some(me) = current(&state, &headers).await? {
        if !state.key.verify_csrf(&me.token, &form.csrf) {
            return Err(AppError::csrf());
        }
        sessions::delete(&state.db, &tokens::digest(&me.token)).await?;
    }
    Ok(with_cookie(
        Redirect::to("/my?signed_out=1").into_response(),
        Some(my_cookie("", 0, state.identity.secure_cookies)),
    ))
}
