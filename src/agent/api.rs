//! The agent's HTTP API, called by the console: `GET /v1/health`, authenticated with the
//! console token. `agent run` serves it over TLS only, with the self-signed certificate the console
//! pinned at enrollment (`tls.cert.pem`), so the token only ever goes to this agent.
//!
//! Every answer, errors included, is JSON in the protocol's shapes, so the console parses one
//! format.

use super::checks::SelfChecks;
use super::config::sha256_hex;
use crate::protocol::{AgentHealth, ErrorBody, ErrorDetail, AGENT_API, VERSION};
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;
use std::time::Instant;
use subtle::ConstantTimeEq;

pub(crate) struct ApiState {
    pub agent_id: String,
    /// From `credential.json`, already checked to be lowercase hex.
    pub console_token_sha256: String,
    pub started: Instant,
    pub checks: Arc<SelfChecks>,
    pub sync: Arc<super::sync::SyncShared>,
}

pub(crate) fn router(state: ApiState) -> Router {
    Router::new()
        .route(&format!("{AGENT_API}/health"), get(health))
        .route(&format!("{AGENT_API}/sync/read"), post(sync_read))
        .route(&format!("{AGENT_API}/sync/wake"), post(sync_wake))
        .route(
            &format!("{AGENT_API}/writeback/password"),
            post(writeback_password),
        )
        .route(
            &format!("{AGENT_API}/writeback/unlock"),
            post(writeback_unlock),
        )
        .route(
            &format!("{AGENT_API}/writeback/verify"),
            post(writeback_verify),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .with_state(Arc::new(state))
}

async fn health(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    if !bearer_matches(&headers, &state.console_token_sha256) {
        return unauthorized();
    }
    Json(AgentHealth {
        agent_id: state.agent_id.clone(),
        version: VERSION.to_owned(),
        uptime_seconds: state.started.elapsed().as_secs(),
        checks: state.checks.run().await,
    })
    .into_response()
}

async fn not_found(uri: Uri) -> (StatusCode, Json<ErrorBody>) {
    let message = format!("no route for {}", uri.path());
    (StatusCode::NOT_FOUND, error_body("not_found", &message))
}

/// Only the token's hash is stored, so the presented token is hashed and the digests compared, in
/// constant time so response timing says nothing about how close a guess was.
fn bearer_matches(headers: &HeaderMap, expected_sha256: &str) -> bool {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match token {
        Some(token) => sha256_hex(token)
            .as_bytes()
            .ct_eq(expected_sha256.as_bytes())
            .into(),
        None => false,
    }
}

fn error_body(code: &str, message: &str) -> Json<ErrorBody> {
    Json(ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: message.to_owned(),
        },
    })
}

fn unauthorized() -> Response {
    let body = error_body("unauthorized", "a valid console token is required");
    (
        StatusCode::UNAUTHORIZED,
        [(WWW_AUTHENTICATE, "Bearer")],
        body,
    )
        .into_response()
}

/// `POST /v1/sync/read`: reads one object now (Provision on demand, scoping DN checks).
async fn sync_read(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    use super::sync::ReadError;
    let request: crate::protocol::sync::ReadRequest =
        match console_request(&state, &headers, &body, "read request") {
            Ok(r) => r,
            Err(response) => return *response,
        };
    match super::sync::read_one(&state.sync, &request).await {
        Ok(answer) => Json(answer).into_response(),
        Err(e @ ReadError::NotServed(_)) => (
            StatusCode::NOT_FOUND,
            error_body("not_served", &e.to_string()),
        )
            .into_response(),
        Err(e @ ReadError::BadDn(_)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            error_body("invalid_dn", &e.to_string()),
        )
            .into_response(),
        Err(e @ ReadError::Directory(_)) => (
            StatusCode::BAD_GATEWAY,
            error_body("directory", &e.to_string()),
        )
            .into_response(),
    }
}

/// `POST /v1/sync/wake`: ask the console for the lease now (Sync now, Preview).
async fn sync_wake(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    if !bearer_matches(&headers, &state.console_token_sha256) {
        return unauthorized();
    }
    state.sync.wake.notify_one();
    StatusCode::NO_CONTENT.into_response()
}

/// Parses a JSON body without ever echoing it (it may hold a password): the error names where the
/// problem is, not the content.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| {
        format!(
            "the body is not a {what} (line {}, column {})",
            e.line(),
            e.column()
        )
    })
}

fn bad_body(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, error_body("bad_request", message)).into_response()
}

/// The console token checked, then the JSON body parsed: the start of every POST handler.
fn console_request<T: serde::de::DeserializeOwned>(
    state: &ApiState,
    headers: &HeaderMap,
    body: &[u8],
    what: &str,
) -> Result<T, Box<Response>> {
    if !bearer_matches(headers, &state.console_token_sha256) {
        return Err(Box::new(unauthorized()));
    }
    parse_body(body, what).map_err(|message| Box::new(bad_body(&message)))
}

fn writeback_answer(
    result: Result<crate::protocol::writeback::WritebackOutcome, super::writeback::AgentTrouble>,
) -> Response {
    use super::writeback::AgentTrouble;
    match result {
        Ok(outcome) => Json(outcome).into_response(),
        Err(e @ AgentTrouble::NotServed(_)) => (
            StatusCode::NOT_FOUND,
            error_body("not_served", &e.to_string()),
        )
            .into_response(),
        Err(e @ AgentTrouble::Directory(_)) => (
            StatusCode::BAD_GATEWAY,
            error_body("directory", &e.to_string()),
        )
            .into_response(),
    }
}

/// `POST /v1/writeback/password`: reset or change a user's password.
async fn writeback_password(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let request = match console_request(&state, &headers, &body, "password request") {
        Ok(r) => r,
        Err(response) => return *response,
    };
    writeback_answer(super::writeback::set_password(&state.sync.data_dir, &request).await)
}

/// `POST /v1/writeback/unlock`.
async fn writeback_unlock(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let request = match console_request(&state, &headers, &body, "unlock request") {
        Ok(r) => r,
        Err(response) => return *response,
    };
    writeback_answer(super::writeback::unlock(&state.sync.data_dir, &request).await)
}

/// `POST /v1/writeback/verify`: does the user's password bind?
async fn writeback_verify(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let request = match console_request(&state, &headers, &body, "verify request") {
        Ok(r) => r,
        Err(response) => return *response,
    };
    writeback_answer(super::writeback::verify(&state.sync.data_dir, &request).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{HeaderValue, Request};
    use tower::ServiceExt;

    const TOKEN: &str = "console-token-123";

    fn accepts(authorization: Option<&str>) -> bool {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(AUTHORIZATION, HeaderValue::from_str(value).expect("header"));
        }
        bearer_matches(&headers, &sha256_hex(TOKEN))
    }

    #[test]
    fn right_token_is_accepted() {
        assert!(accepts(Some(&format!("Bearer {TOKEN}"))));
        assert!(accepts(Some(&format!("bearer {TOKEN}"))));
    }

    #[test]
    fn wrong_or_missing_token_is_refused() {
        assert!(!accepts(None));
        assert!(!accepts(Some("Bearer wrong")));
        assert!(!accepts(Some("Bearer ")));
        assert!(!accepts(Some(TOKEN)));
        assert!(!accepts(Some(&format!("Basic {TOKEN}"))));
        // The stored hash is not a token.
        assert!(!accepts(Some(&format!("Bearer {}", sha256_hex(TOKEN)))));
    }

    async fn call(
        dir: &std::path::Path,
        uri: &str,
        token: Option<&str>,
    ) -> (StatusCode, serde_json::Value) {
        let state = ApiState {
            agent_id: "agent-1".into(),
            console_token_sha256: sha256_hex(TOKEN),
            started: Instant::now(),
            checks: Arc::new(SelfChecks::new(
                dir.to_path_buf(),
                "127.0.0.1:4000".parse().expect("addr"),
            )),
            sync: Arc::new(crate::agent::sync::SyncShared::new(
                dir.to_path_buf(),
                false,
            )),
        };
        let mut request = Request::builder().uri(uri);
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = router(state)
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, serde_json::from_slice(&body).expect("JSON body"))
    }

    #[tokio::test]
    async fn health_requires_the_console_token() {
        let dir = tempfile::tempdir().expect("tempdir");

        let (status, body) = call(dir.path(), "/v1/health", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["agent_id"], "agent-1");
        assert_eq!(body["version"], VERSION);
        assert!(body["checks"].as_array().is_some_and(|c| c.len() == 3));

        for token in [None, Some("wrong")] {
            let (status, body) = call(dir.path(), "/v1/health", token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert_eq!(body["error"]["code"], "unauthorized");
        }

        let (status, body) = call(dir.path(), "/v1/nothing", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "not_found");
    }
}
