//! The console's endpoints for agents (`/agent-api/v1`): enroll, heartbeat, whoami.

use super::api::ApiJson;
use super::error::{ApiResult, AppError};
use super::session::bearer;
use crate::fleet::EnrollError;
use crate::protocol::{
    BatchEnrollRequest, BatchEnrollResponse, EnrollRequest, EnrollResponse, Heartbeat,
    HeartbeatResponse, WhoAmI,
};
use crate::state::AppState;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use std::net::SocketAddr;

/// The caller's IP as the console sees it (the agent's "external IP").
pub struct ClientIp(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_canonical().to_string())
            .unwrap_or_else(|| "unknown".into());
        Ok(ClientIp(ip))
    }
}

/// An agent authenticated by its credential.
pub struct AgentCaller(pub String);

impl FromRequestParts<AppState> for AgentCaller {
    type Rejection = super::error::ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let credential = bearer(&parts.headers).ok_or_else(|| {
            AppError::unauthorized(
                "Send the agent credential as Authorization: Bearer <credential>.",
            )
        })?;
        let id = state.fleet.authenticate(credential).ok_or_else(|| {
            AppError::unauthorized("The agent credential is not known to this console: the agent was deleted or re-installed elsewhere. Run `hybridsync agent install` again.")
        })?;
        Ok(AgentCaller(id))
    }
}

/// Maps a refused enrollment to its status; database failures are 500s.
fn enroll_error(e: EnrollError) -> super::error::ApiError {
    let status = match e {
        EnrollError::Database(e) => return e.into(),
        EnrollError::Invalid => StatusCode::UNAUTHORIZED,
        EnrollError::EnvironmentMismatch { .. } => StatusCode::CONFLICT,
        EnrollError::BadMachineName | EnrollError::BadBatch(_) | EnrollError::BadCertificatePin => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        _ => StatusCode::FORBIDDEN,
    };
    tracing::info!(code = e.code(), "enrollment refused");
    AppError::new(status, e.code(), e.to_string()).into()
}

pub async fn enroll_batch(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<BatchEnrollRequest>,
) -> ApiResult<(StatusCode, Json<BatchEnrollResponse>)> {
    let resp = state
        .fleet
        .enroll_batch(req, ip)
        .await
        .map_err(enroll_error)?;
    tracing::info!(agents = resp.agents.len(), "agents enrolled in a batch");
    Ok((StatusCode::CREATED, Json(resp)))
}

pub async fn enroll(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> ApiResult<(StatusCode, Json<EnrollResponse>)> {
    match state.fleet.enroll(req, ip).await {
        Ok(resp) => {
            tracing::info!(agent_id = %resp.agent_id, reinstalled = resp.reinstalled, "agent enrolled");
            Ok((
                if resp.reinstalled {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                },
                Json(resp),
            ))
        }
        Err(e) => Err(enroll_error(e)),
    }
}

pub async fn heartbeat(
    State(state): State<AppState>,
    AgentCaller(id): AgentCaller,
    ClientIp(ip): ClientIp,
    ApiJson(hb): ApiJson<Heartbeat>,
) -> ApiResult<Json<HeartbeatResponse>> {
    let resp = state.fleet.heartbeat(&id, hb, ip).ok_or_else(|| {
        AppError::unauthorized(
            "This agent was deleted from the console. Run `hybridsync agent install` again.",
        )
    })?;
    Ok(Json(resp))
}

pub async fn whoami(
    State(state): State<AppState>,
    AgentCaller(id): AgentCaller,
) -> ApiResult<Json<WhoAmI>> {
    let who = state
        .fleet
        .whoami(&id)
        .ok_or_else(|| AppError::unauthorized("This agent was deleted from the console."))?;
    Ok(Json(who))
}

/// `POST /agent-api/v1/domains`: the agent's full list of connected directories.
pub async fn domains(
    State(state): State<AppState>,
    AgentCaller(id): AgentCaller,
    ApiJson(report): ApiJson<crate::protocol::DomainsReport>,
) -> ApiResult<Json<crate::protocol::DomainsAccepted>> {
    let names = report.domains.into_iter().map(|d| d.domain).collect();
    let domains = state
        .fleet
        .set_domains(&id, names)
        .ok_or_else(|| AppError::unauthorized("This agent was deleted from the console."))?;
    tracing::info!(agent_id = %id, domains = ?domains, "agent reported its domains");
    Ok(Json(crate::protocol::DomainsAccepted {
        agent_id: id,
        domains,
    }))
}
