//! Who is calling: browser sessions (cookie + CSRF) for pages, bearer tokens for `/api/v1`.

use super::error::{ApiError, AppError};
use crate::auth::{tokens, Principal, Role};
use crate::db;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Redirect, Response};

pub const SESSION_COOKIE: &str = "hybridsync_session";
/// A random value set before sign-in so the sign-in and setup forms have a CSRF token too.
pub const PRE_SESSION_COOKIE: &str = "hybridsync_pre";

/// Reads one cookie's value from the request headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, whole site; `Secure` when the console is served
/// over HTTPS, so the browser never sends the cookie over plain HTTP.
pub fn set_cookie(name: &str, value: &str, max_age_seconds: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_seconds}{secure}")
}

/// A signed-in administrator on a page request.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub principal: Principal,
    session: String,
    /// The CSRF token every form of this session must carry.
    pub csrf: String,
}

impl CurrentUser {
    /// Verifies a submitted form's CSRF token.
    pub fn check_csrf(&self, presented: &str, key: &tokens::ConsoleKey) -> Result<(), AppError> {
        if key.verify_csrf(&self.session, presented) {
            Ok(())
        } else {
            Err(AppError::csrf())
        }
    }

    pub fn session_cookie(&self) -> &str {
        &self.session
    }

    pub fn can_manage(&self) -> bool {
        self.principal.role.can_manage_sync()
    }
}

async fn account_principal(
    state: &AppState,
    account_id: i64,
) -> Result<Option<Principal>, sqlx::Error> {
    Ok(db::accounts::get(&state.db, account_id)
        .await?
        .and_then(|row| {
            Some(Principal {
                account_id: row.account_id,
                username: row.username,
                role: row.role.parse::<Role>().ok()?,
            })
        }))
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let to_login = || {
            let path = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let next = if parts.method == axum::http::Method::GET {
                path
            } else {
                "/"
            };
            Redirect::to(&format!("/login?next={}", urlencode(next))).into_response()
        };
        let Some(session) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(to_login());
        };
        let now = db::now_ms();
        let account_id = db::sessions::get_account(&state.db, &tokens::digest(&session), now)
            .await
            .map_err(|e| AppError::from(e).into_response())?;
        let Some(account_id) = account_id else {
            return Err(to_login());
        };
        let principal = account_principal(state, account_id)
            .await
            .map_err(|e| AppError::from(e).into_response())?
            .ok_or_else(to_login)?;
        let csrf = state.key.csrf_token(&session);
        Ok(CurrentUser {
            principal,
            session,
            csrf,
        })
    }
}

/// The caller of `/api/v1`, authenticated by `Authorization: Bearer <API token>`.
#[derive(Debug, Clone)]
pub struct ApiUser(pub Principal);

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

impl FromRequestParts<AppState> for ApiUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers).ok_or_else(|| {
            AppError::unauthorized(
                "Send an API token as Authorization: Bearer <token>. Create one with `hybridsync admin create-api-token`.",
            )
        })?;
        let account_id = db::api_tokens::use_token(&state.db, &tokens::digest(token), db::now_ms())
            .await?
            .ok_or_else(|| AppError::unauthorized("The API token is not valid. Create a new one with `hybridsync admin create-api-token`."))?;
        let principal = account_principal(state, account_id)
            .await?
            .ok_or_else(|| AppError::unauthorized("The API token's account no longer exists."))?;
        Ok(ApiUser(principal))
    }
}

/// Percent-encodes a value for a query string.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_named_cookie_among_several() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; hybridsync_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn urlencode_keeps_paths_and_escapes_the_rest() {
        assert_eq!(
            urlencode("/agents?status=all&x=a b"),
            "/agents%3Fstatus%3Dall%26x%3Da%20b"
        );
    }
}
