//! Agent sign-in by device code (RFC 8628), the HTTP side: the device authorization and token
//! endpoints the agent calls (`/agent-api/v1/device/{authorize,token}`, form-encoded, OAuth error
//! JSON), and the `/device` page where a Global or Hybrid Identity Administrator enters the code,
//! sees which machine asks, and approves or denies.

use super::agent_api::ClientIp;
use super::error::{AppError, AppResult};
use super::session::CurrentUser;
use super::view::{render, timestamp, Layout};
use crate::auth::device::{Lookup, Poll};
use crate::console::enrollment;
use crate::db::{self, audit::NewAuditEntry};
use crate::state::AppState;
use askama::Template;
use axum::extract::rejection::FormRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

/// The grant type of RFC 8628 §3.4.
pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// Lifetime of the enrollment token an approval creates: the agent uses it seconds later.
const APPROVED_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// An OAuth error answer (RFC 6749 §5.2), which the oauth2 crate on the agent understands.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct AuthorizeForm {
    #[serde(default)]
    machine_name: String,
}

/// `POST /agent-api/v1/device/authorize`: opens a request and returns the codes.
pub async fn authorize(
    State(state): State<AppState>,
    ClientIp(address): ClientIp,
    form: Result<Form<AuthorizeForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Send the request as application/x-www-form-urlencoded.",
        );
    };
    let machine_name = form.machine_name.trim();
    if machine_name.is_empty()
        || machine_name.len() > 253
        || machine_name.chars().any(char::is_control)
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "machine_name must be 1 to 253 printable characters.",
        );
    }
    let Some(started) = state
        .identity
        .device
        .start(machine_name, &address, db::now_ms())
    else {
        return oauth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "slow_down",
            "Too many agents are waiting for approval. Try again later.",
        );
    };
    tracing::info!(machine_name = %machine_name, address = %address, "agent asked for approval by device code");
    let verification_uri = format!("{}/device", state.settings.public_url);
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "device_code": started.device_code,
            "user_code": started.user_code,
            "verification_uri": verification_uri,
            "verification_uri_complete": format!("{verification_uri}?user_code={}", started.user_code),
            "expires_in": started.expires_in.as_secs(),
            "interval": started.interval.as_secs(),
        })),
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    grant_type: String,
    #[serde(default)]
    device_code: String,
}

/// `POST /agent-api/v1/device/token`: the agent's poll.
pub async fn token(
    State(state): State<AppState>,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Send the request as application/x-www-form-urlencoded.",
        );
    };
    if form.grant_type != DEVICE_GRANT {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "This endpoint only serves the device code grant.",
        );
    }
    let bad =
        |error: &str, description: &str| oauth_error(StatusCode::BAD_REQUEST, error, description);
    match state.identity.device.poll(&form.device_code) {
        Poll::Approved(token) => (
            [(header::CACHE_CONTROL, "no-store")],
            Json(json!({
                "access_token": token,
                "token_type": "bearer",
                "expires_in": APPROVED_TOKEN_LIFETIME.as_secs(),
            })),
        )
            .into_response(),
        Poll::Pending => bad(
            "authorization_pending",
            "Waiting for an administrator to approve this agent in the console.",
        ),
        Poll::SlowDown => bad("slow_down", "Polling too fast: wait longer between polls."),
        Poll::Denied => bad(
            "access_denied",
            "An administrator denied this agent in the console.",
        ),
        Poll::Expired => bad(
            "expired_token",
            "The code expired before an administrator approved it.",
        ),
        Poll::Invalid => bad("invalid_grant", "Unknown or already used device code."),
    }
}

#[derive(Template)]
#[template(path = "device/enter.html")]
struct EnterPage {
    layout: Layout,
    user_code: String,
    error: String,
}

#[derive(Template)]
#[template(path = "device/confirm.html")]
struct ConfirmPage {
    layout: Layout,
    user_code: String,
    machine_name: String,
    address: String,
    requested_at: String,
}

#[derive(Template)]
#[template(path = "device/done.html")]
struct DonePage {
    layout: Layout,
    approved: bool,
    machine_name: String,
}

#[derive(Deserialize, Default)]
pub struct DeviceQuery {
    #[serde(default)]
    user_code: String,
}

/// `GET /device[?user_code=…]`: the code entry form, or the machine asking for that code.
pub async fn show(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(q): Query<DeviceQuery>,
) -> AppResult<Response> {
    user.principal.require_manage("approving an agent")?;
    let layout = Layout::new(&user, "agents");
    if q.user_code.trim().is_empty() {
        return render(&EnterPage {
            layout,
            user_code: String::new(),
            error: String::new(),
        });
    }
    let error = match state.identity.device.find(&q.user_code) {
        (Lookup::Found, Some(request)) => {
            return render(&ConfirmPage {
                layout,
                user_code: request.user_code,
                machine_name: request.machine_name,
                address: request.address,
                requested_at: timestamp(request.requested_at_ms),
            })
        }
        (Lookup::AlreadyDecided, _) => "This code was already approved or denied.",
        _ => "No agent is waiting with this code: check it, or it expired (run the install again).",
    };
    let page = render(&EnterPage {
        layout,
        user_code: q.user_code,
        error: error.into(),
    })?;
    Ok((StatusCode::NOT_FOUND, page).into_response())
}

#[derive(Deserialize)]
pub struct DecisionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user_code: String,
    #[serde(default)]
    decision: String,
}

/// `POST /device`: approve (creates a one-use enrollment token for the agent) or deny.
pub async fn decide(
    State(state): State<AppState>,
    user: CurrentUser,
    Form(form): Form<DecisionForm>,
) -> AppResult<Response> {
    user.check_csrf(&form.csrf, &state.key)?;
    user.principal.require_manage("approving an agent")?;
    let approve = match form.decision.as_str() {
        "approve" => true,
        "deny" => false,
        _ => return Err(AppError::bad_request("Choose Approve or Deny.")),
    };
    let device = &state.identity.device;
    let (Lookup::Found, Some(request)) = device.find(&form.user_code) else {
        return Err(AppError::not_found(
            "No agent is waiting with this code: it expired or was already approved or denied.",
        ));
    };
    let actor = user.principal.username.as_str();
    let decided = if approve {
        let created = enrollment::create(&state.db, actor, APPROVED_TOKEN_LIFETIME, 1).await?;
        let done = device.decide(&form.user_code, Some(created.token));
        if !done {
            // Expired between the lookup and now: the token must not outlive the request.
            enrollment::revoke(&state.db, actor, created.row.enrollment_token_id).await?;
        }
        done
    } else {
        device.decide(&form.user_code, None)
    };
    if !decided {
        return Err(AppError::conflict(
            "This code expired or was decided by someone else meanwhile.",
        ));
    }
    let mut conn = state.db.acquire().await?;
    db::audit::insert(
        &mut conn,
        &NewAuditEntry {
            at: db::now_ms(),
            actor,
            action: if approve {
                "device_code.approve"
            } else {
                "device_code.deny"
            },
            target_type: "machine",
            target_id: &request.machine_name,
            before: None,
            after: Some(
                json!({ "machine_name": request.machine_name, "address": request.address }),
            ),
        },
    )
    .await?;
    tracing::info!(machine_name = %request.machine_name, by = %actor, approved = approve, "device code decided");
    render(&DonePage {
        layout: Layout::new(&user, "agents"),
        approved: approve,
        machine_name: request.machine_name,
    })
}
