//! The JSON API under `/api/v1`, for scripts. Bearer API tokens; errors as `{"error":{"code","message"}}`;
//! lists as `{"items": […], "total": N}` paged with `limit` and `offset`.

use super::agents::ListQuery;
use super::error::{ApiError, ApiResult, AppError};
use super::session::ApiUser;
use super::view::rfc3339;
use crate::cli::parse_duration;
use crate::console::enrollment::{self, Revoked};
use crate::db;
use crate::fleet::{Agent, DeleteError};
use crate::protocol::HealthCheck;
use crate::state::AppState;
use axum::extract::{FromRequest, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

/// `axum::Json` whose rejections render as API errors.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    /// A body sent as plain `application/json` that parses is taken as is. `axum::Json` tracks the
    /// path of every field it parses, for the message of a body that does not parse; skipping that
    /// took 5.8 % off the instructions of a heartbeat, the busiest request (BENCHMARKS.md). So it
    /// is asked only for its verdict on the rest (a body that does not parse, another content
    /// type), and its rejections are the API's errors as before.
    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let plain_json = request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"application/json"));
        if !plain_json {
            let Json(value) = Json::<T>::from_request(request, state)
                .await
                .map_err(AppError::from)?;
            return Ok(ApiJson(value));
        }
        let body = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|e| AppError::from(axum::extract::rejection::JsonRejection::from(e)))?;
        if let Ok(value) = serde_json::from_slice(&body) {
            return Ok(ApiJson(value));
        }
        let Json(value) = Json::<T>::from_bytes(&body).map_err(AppError::from)?;
        Ok(ApiJson(value))
    }
}

/// `axum::extract::Query` whose rejections render as API errors (JSON, not axum's plain text).
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// `axum::extract::Path` whose rejections render as API errors.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

#[derive(Serialize)]
pub struct ListBody<T> {
    pub items: Vec<T>,
    pub total: usize,
}

/// Paging parameters; `limit` defaults to 50 and may not exceed 500.
#[derive(Deserialize, Default)]
pub struct Paging {
    pub limit: Option<usize>,
    #[serde(default)]
    pub offset: usize,
}

impl Paging {
    fn limit(&self) -> Result<usize, AppError> {
        match self.limit {
            None => Ok(50),
            Some(l @ 1..=500) => Ok(l),
            Some(l) => Err(AppError::bad_request(format!(
                "limit {l} is out of range: use 1 to 500."
            ))),
        }
    }
}

#[derive(Serialize)]
pub struct AgentJson {
    pub id: String,
    pub machine_name: String,
    pub external_ip: String,
    pub version: String,
    pub extension: &'static str,
    pub environment: &'static str,
    pub domains: Vec<String>,
    pub status: &'static str,
    pub status_since: String,
    pub health: &'static str,
    pub health_reason: String,
    pub health_since: String,
    pub registered_at: String,
    pub last_heartbeat_at: Option<String>,
    pub heartbeat_interval_seconds: i64,
    pub uptime_seconds: Option<i64>,
    pub api_url: Option<String>,
    pub last_poll_at: Option<String>,
    pub last_poll_error: Option<String>,
    pub checks: Vec<HealthCheck>,
}

impl From<&Agent> for AgentJson {
    fn from(a: &Agent) -> Self {
        AgentJson {
            id: a.id.clone(),
            machine_name: a.machine_name.clone(),
            external_ip: a.external_ip.clone(),
            version: a.version.clone(),
            extension: a.extension.as_str(),
            environment: a.environment.as_str(),
            domains: a.domains.clone(),
            status: a.status.as_str(),
            status_since: rfc3339(a.status_since),
            health: a.health.as_str(),
            health_reason: a.health_reason.to_string(),
            health_since: rfc3339(a.health_since),
            registered_at: rfc3339(a.registered_at),
            last_heartbeat_at: a.last_heartbeat_at.map(rfc3339),
            heartbeat_interval_seconds: a.heartbeat_interval_seconds,
            uptime_seconds: a.uptime_seconds,
            api_url: a.api_base_url(),
            last_poll_at: a.last_poll_at.map(rfc3339),
            last_poll_error: a.last_poll_error.clone(),
            checks: a.checks.to_vec(),
        }
    }
}

/// Filters of `GET /api/v1/agents` (no `serde(flatten)`: it cannot parse numbers from a query string).
#[derive(Deserialize, Default)]
pub struct AgentsQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    health: String,
    #[serde(default)]
    q: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    order: String,
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

pub async fn list_agents(
    State(state): State<AppState>,
    _user: ApiUser,
    ApiQuery(q): ApiQuery<AgentsQuery>,
) -> ApiResult<Json<ListBody<AgentJson>>> {
    let limit = Paging {
        limit: q.limit,
        offset: q.offset,
    }
    .limit()?;
    let list = ListQuery {
        status: q.status,
        health: q.health,
        q: q.q,
        sort: q.sort,
        order: q.order,
        ..Default::default()
    };
    let filter = list.filter()?;
    let (agents, total) = state.fleet.list(&filter, limit, q.offset);
    Ok(Json(ListBody {
        items: agents.iter().map(AgentJson::from).collect(),
        total,
    }))
}

fn unknown_agent(id: &str) -> AppError {
    AppError::not_found(format!("No agent with id {id}."))
}

pub async fn get_agent(
    State(state): State<AppState>,
    _user: ApiUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<AgentJson>> {
    let agent = state.fleet.get(&id).ok_or_else(|| unknown_agent(&id))?;
    Ok(Json(AgentJson::from(&agent)))
}

#[derive(Serialize)]
pub struct CheckResult {
    ok: bool,
    message: String,
    agent: AgentJson,
}

/// Check now: polls the agent's health endpoint and answers with the result. Reading, not changing,
/// so every role may do it.
pub async fn check_agent(
    State(state): State<AppState>,
    _user: ApiUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<CheckResult>> {
    let outcome = state
        .fleet
        .poll_one(&id)
        .await
        .ok_or_else(|| unknown_agent(&id))?;
    let agent = state.fleet.get(&id).ok_or_else(|| unknown_agent(&id))?;
    Ok(Json(CheckResult {
        ok: outcome.ok,
        message: outcome.message,
        agent: AgentJson::from(&agent),
    }))
}

#[derive(Deserialize, Default)]
pub struct DeleteQuery {
    #[serde(default)]
    force: bool,
}

pub async fn delete_agent(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> ApiResult<StatusCode> {
    user.require_manage("deleting an agent")?;
    match state.fleet.delete(&id, &user.username, q.force).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(DeleteError::NotFound(_)) => Err(unknown_agent(&id).into()),
        Err(e @ DeleteError::Active(..)) => {
            Err(AppError::new(StatusCode::CONFLICT, "agent_active", e.to_string()).into())
        }
        Err(DeleteError::Database(e)) => Err(e.into()),
    }
}

#[derive(Serialize)]
pub struct EnrollmentTokenJson {
    id: i64,
    created_by: String,
    created_at: String,
    expires_at: String,
    max_uses: i64,
    uses: i64,
    uses_left: i64,
    state: &'static str,
    revoked_at: Option<String>,
    revoked_by: Option<String>,
}

impl EnrollmentTokenJson {
    fn new(r: &db::enrollment_tokens::EnrollmentTokenRow, now: i64) -> Self {
        EnrollmentTokenJson {
            id: r.enrollment_token_id,
            created_by: r.created_by.clone(),
            created_at: rfc3339(r.created_at),
            expires_at: rfc3339(r.expires_at),
            max_uses: r.max_uses,
            uses: r.uses,
            uses_left: r.uses_left(),
            state: r.state(now),
            revoked_at: r.revoked_at.map(rfc3339),
            revoked_by: r.revoked_by.clone(),
        }
    }
}

pub async fn list_enrollment_tokens(
    State(state): State<AppState>,
    _user: ApiUser,
    ApiQuery(p): ApiQuery<Paging>,
) -> ApiResult<Json<ListBody<EnrollmentTokenJson>>> {
    let limit = p.limit()?;
    let (rows, total) =
        db::enrollment_tokens::list(&state.db, limit as i64, p.offset as i64).await?;
    let now = db::now_ms();
    Ok(Json(ListBody {
        items: rows
            .iter()
            .map(|r| EnrollmentTokenJson::new(r, now))
            .collect(),
        total: usize::try_from(total).unwrap_or(0),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEnrollmentToken {
    /// e.g. "24h", "7d"; default 24h.
    expires_in: Option<String>,
    /// default 1.
    max_uses: Option<u32>,
}

#[derive(Serialize)]
pub struct CreatedEnrollmentToken {
    #[serde(flatten)]
    info: EnrollmentTokenJson,
    token: String,
    install_command: String,
}

pub async fn create_enrollment_token(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    ApiJson(body): ApiJson<NewEnrollmentToken>,
) -> ApiResult<Response> {
    user.require_manage("creating an enrollment token")?;
    let lifetime = parse_duration(body.expires_in.as_deref().unwrap_or("24h"))
        .map_err(AppError::unprocessable)?;
    let max_uses = body.max_uses.unwrap_or(1);
    enrollment::validate(lifetime, max_uses).map_err(AppError::unprocessable)?;
    let created = enrollment::create(&state.db, &user.username, lifetime, max_uses).await?;
    let body = CreatedEnrollmentToken {
        info: EnrollmentTokenJson::new(&created.row, db::now_ms()),
        install_command: enrollment::install_command(&state.settings.public_url, &created.token),
        token: created.token,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn revoke_enrollment_token(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<EnrollmentTokenJson>> {
    user.require_manage("revoking an enrollment token")?;
    match enrollment::revoke(&state.db, &user.username, id).await? {
        Revoked::Done(row) => Ok(Json(EnrollmentTokenJson::new(&row, db::now_ms()))),
        Revoked::AlreadyRevoked => Err(AppError::new(
            StatusCode::CONFLICT,
            "already_revoked",
            format!("Enrollment token #{id} is already revoked."),
        )
        .into()),
        Revoked::NotFound => Err(AppError::not_found(format!("No enrollment token #{id}.")).into()),
    }
}

#[derive(Serialize)]
pub struct AuditJson {
    id: i64,
    at: String,
    actor: String,
    action: String,
    target_type: String,
    target_id: String,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
}

pub async fn audit_log(
    State(state): State<AppState>,
    _user: ApiUser,
    ApiQuery(p): ApiQuery<Paging>,
) -> ApiResult<Json<ListBody<AuditJson>>> {
    let limit = p.limit()?;
    let (rows, total) = db::audit::list(&state.db, limit as i64, p.offset as i64).await?;
    let parse = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
    Ok(Json(ListBody {
        items: rows
            .into_iter()
            .map(|r| AuditJson {
                id: r.audit_log_id,
                at: rfc3339(r.at),
                actor: r.actor,
                action: r.action,
                target_type: r.target_type,
                target_id: r.target_id,
                before: parse(r.before_json),
                after: parse(r.after_json),
            })
            .collect(),
        total: usize::try_from(total).unwrap_or(0),
    }))
}

/// Unknown `/api/v1` routes answer JSON, not the HTML 404 page.
pub async fn not_found() -> ApiError {
    AppError::not_found("No such API endpoint. See the README for the routes of /api/v1.").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug, PartialEq)]
    struct Probe {
        name: String,
        checks: Vec<Check>,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct Check {
        ok: bool,
    }

    /// What `ApiJson<Probe>` makes of a body: the value, or the status, code and message.
    async fn extract(
        content_type: Option<&str>,
        body: &'static str,
    ) -> Result<Probe, (StatusCode, String, String)> {
        let mut request = axum::http::Request::builder().method("POST").uri("/");
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let request = request.body(axum::body::Body::from(body)).unwrap();
        match ApiJson::<Probe>::from_request(request, &()).await {
            Ok(ApiJson(probe)) => Ok(probe),
            Err(ApiError(error)) => {
                let (status, code, message) = error.parts();
                Err((status, code.to_string(), message))
            }
        }
    }

    #[tokio::test]
    async fn json_bodies_parse_and_bad_ones_are_refused_with_where_they_went_wrong() {
        let good = r#"{"name":"a","checks":[{"ok":true}]}"#;
        let expected = Probe {
            name: "a".into(),
            checks: vec![Check { ok: true }],
        };
        assert_eq!(extract(Some("application/json"), good).await, Ok(expected));
        // Other spellings of JSON go through axum's own extractor, and are taken as before.
        for content_type in ["Application/JSON", "application/json; charset=utf-8"] {
            assert!(
                extract(Some(content_type), good).await.is_ok(),
                "{content_type}"
            );
        }

        // A body that does not parse names the field, on either path.
        let wrong_type = r#"{"name":"a","checks":[{"ok":"yes"}]}"#;
        for content_type in ["application/json", "application/json; charset=utf-8"] {
            let (status, code, message) =
                extract(Some(content_type), wrong_type).await.unwrap_err();
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input")
            );
            assert!(
                message.contains("checks[0].ok") && message.contains("API description"),
                "{content_type}: {message}"
            );
        }
        let (status, code, message) = extract(Some("application/json"), r#"{"name":"a","#)
            .await
            .unwrap_err();
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_REQUEST, "malformed_json"),
            "{message}"
        );
        let (status, code, message) =
            extract(Some("application/json"), r#"{"name":"a","checks":[]} x"#)
                .await
                .unwrap_err();
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_REQUEST, "malformed_json"),
            "trailing characters are refused: {message}"
        );

        // Not sent as JSON.
        for content_type in [None, Some("text/plain")] {
            let (status, code, message) = extract(content_type, good).await.unwrap_err();
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            );
            assert!(
                message.contains("Content-Type: application/json"),
                "{message}"
            );
        }
    }
}
