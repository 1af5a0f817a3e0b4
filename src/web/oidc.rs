//! Administrator sign-in through the OpenID Connect provider: `/auth/oidc/start` sends the browser
//! to the provider, `/auth/oidc/callback` receives it back and starts a console session.

use super::auth_pages::{pre_session, safe_next, sign_in_response, with_cookie};
use super::error::{AppError, AppResult};
use super::session::{cookie, PRE_SESSION_COOKIE};
use crate::auth::oidc::OidcError;
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

fn not_configured() -> AppError {
    AppError::not_found("OpenID Connect sign-in is not configured on this console.")
}

#[derive(Deserialize, Default)]
pub struct StartQuery {
    #[serde(default)]
    next: String,
}

/// Redirects to the provider. The flow is bound to the browser's pre-session cookie (set here if
/// the browser has none), which the callback checks.
pub async fn start(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<StartQuery>,
) -> AppResult<Response> {
    let oidc = state.identity.oidc.as_ref().ok_or_else(not_configured)?;
    let (pre, set) = pre_session(&state, &headers);
    let url = oidc.start(&pre, &safe_next(&q.next));
    Ok(with_cookie(Redirect::to(&url).into_response(), set))
}

/// What the provider sends back: a code and the state, or an error.
#[derive(Deserialize, Default)]
pub struct CallbackQuery {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> AppResult<Response> {
    let oidc = state.identity.oidc.as_ref().ok_or_else(not_configured)?;
    if let Some(error) = q.error {
        // Anyone can craft this URL: only a well-formed OAuth error code is shown, never the
        // free-text description, so the page cannot be made to display an attacker's words.
        let code = if !error.is_empty()
            && error.len() <= 40
            && error.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            error
        } else {
            "invalid_error".to_string()
        };
        tracing::info!(error = %code, description = ?q.error_description, "the OpenID Connect provider refused a sign-in");
        return Err(AppError::new(
            StatusCode::UNAUTHORIZED,
            "oidc_refused",
            format!(
                "The identity provider did not sign you in ({code}). Start again from the sign-in page."
            ),
        ));
    }
    let (Some(code), Some(flow_state)) = (q.code, q.state) else {
        return Err(AppError::bad_request(
            "This address is where the identity provider returns after sign-in; it needs a code and a state. Start from the sign-in page.",
        ));
    };
    let browser = cookie(&headers, PRE_SESSION_COOKIE).unwrap_or_default();
    let signed_in = match oidc.finish(&browser, &flow_state, &code).await {
        Ok(s) => s,
        Err(e) => {
            let status = match e {
                OidcError::UnknownState | OidcError::OtherBrowser => StatusCode::BAD_REQUEST,
                OidcError::NoRole { .. } => StatusCode::FORBIDDEN,
                OidcError::Provider(_) | OidcError::Invalid(_) => StatusCode::UNAUTHORIZED,
            };
            tracing::info!(error = %e, "OpenID Connect sign-in refused");
            return Err(AppError::new(status, "oidc_sign_in_failed", e.to_string()));
        }
    };
    let account_id =
        crate::console::identity::account_for(&state.db, oidc.issuer(), &signed_in).await?;
    tracing::info!(username = %signed_in.username, role = signed_in.role.as_str(), "signed in through OpenID Connect");
    sign_in_response(&state, &headers, account_id, &signed_in.next).await
}
