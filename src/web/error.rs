//! The web boundary's error type and its two renderings: an HTML error page for pages, and
//! `{"error":{"code","message"}}` for the JSON APIs.
//!
//! 4xx errors carry a message written for the person who made the request. 5xx errors show a
//! generic message; their detail is logged once, here, and never sent to the client.

use crate::protocol::{ErrorBody, ErrorDetail};
use askama::Template;
use axum::extract::rejection::{FormRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;

#[derive(Debug)]
pub enum AppError {
    /// 400, 401, 403, 404, 409, 413, 415, 422…: shown to the user as is.
    Client {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    /// 500: logged, never shown.
    Internal(anyhow::Error),
}

pub type AppResult<T, E = AppError> = Result<T, E>;

impl AppError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AppError::Client {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", message)
    }
    pub fn csrf() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "csrf_token_invalid",
            "The form's security token is missing or out of date. Reload the page and submit the form again.",
        )
    }

    pub(super) fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            AppError::Client {
                status,
                code,
                message,
            } => (*status, code, message.clone()),
            AppError::Internal(e) => {
                // The single place a 5xx detail is logged.
                tracing::error!(error = ?e, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Something went wrong on the console. The details are in the console's log."
                        .into(),
                )
            }
        }
    }
}

/// Errors that are the console's fault become a 500; the same conversions exist for [`ApiError`].
macro_rules! internal_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for AppError {
            fn from(e: $t) -> Self {
                AppError::Internal(e.into())
            }
        }
        impl From<$t> for ApiError {
            fn from(e: $t) -> Self {
                ApiError(AppError::Internal(e.into()))
            }
        }
    )*};
}
internal_errors!(sqlx::Error, anyhow::Error, askama::Error, std::io::Error);

impl From<crate::auth::Denied> for AppError {
    fn from(d: crate::auth::Denied) -> Self {
        AppError::forbidden(d.0)
    }
}

impl From<crate::auth::Denied> for ApiError {
    fn from(d: crate::auth::Denied) -> Self {
        ApiError(AppError::forbidden(d.0))
    }
}

/// The one error page.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    title: String,
    message: String,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, _, message) = self.parts();
        let page = ErrorPage {
            status: status.as_u16(),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            message,
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!(error = %e, "cannot render the error page");
                (status, "error").into_response()
            }
        }
    }
}

/// The same error rendered as JSON, for `/api/v1` and `/agent-api/v1`.
#[derive(Debug)]
pub struct ApiError(pub AppError);

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.0.parts();
        (
            status,
            Json(ErrorBody {
                error: ErrorDetail {
                    code: code.into(),
                    message,
                },
            }),
        )
            .into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl From<JsonRejection> for AppError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::UNPROCESSABLE_ENTITY => "invalid_input",
            _ => "malformed_json",
        };
        let message = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "The request body is too large.".to_string(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                "Send the body as JSON with Content-Type: application/json.".into()
            }
            _ => format!(
                "{}. Check the request body against the API description.",
                r.body_text()
            ),
        };
        AppError::new(status, code, message)
    }
}

impl From<FormRejection> for AppError {
    fn from(r: FormRejection) -> Self {
        AppError::new(
            r.status(),
            "invalid_form",
            format!("The form could not be read: {}", r.body_text()),
        )
    }
}

impl From<QueryRejection> for AppError {
    fn from(r: QueryRejection) -> Self {
        AppError::bad_request(format!("Invalid query parameters: {}", r.body_text()))
    }
}

impl From<PathRejection> for AppError {
    fn from(r: PathRejection) -> Self {
        AppError::bad_request(format!("Invalid path: {}", r.body_text()))
    }
}

/// Rejections render as JSON on the APIs.
macro_rules! api_rejections {
    ($($t:ty),*) => {$(
        impl From<$t> for ApiError {
            fn from(r: $t) -> Self {
                ApiError(r.into())
            }
        }
    )*};
}
api_rejections!(JsonRejection, QueryRejection, PathRejection);
