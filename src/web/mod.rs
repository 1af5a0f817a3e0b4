//! The web layer: pages, the JSON API, the agent endpoints, static assets. The only module that knows axum.

pub mod agent_api;
pub mod agents;
pub mod api;
pub mod auth_pages;
pub mod configurations;
pub mod device;
pub mod directory_pages;
pub mod enrollment;
pub mod error;
pub mod metrics;
pub mod oidc;
pub mod openapi;
pub mod sections;
pub mod self_service;
pub mod server;
pub mod session;
pub mod sync_api;
pub mod view;
pub mod writeback_api;
pub mod writeback_pages;

use crate::state::AppState;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use std::time::Duration;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// Largest request body any route accepts (forms and JSON are small).
pub const BODY_LIMIT: usize = 64 * 1024;

/// The console's whole HTTP surface. Tests call this with a state they built.
pub fn router(state: AppState) -> Router {
    let pages = Router::new()
        .route("/", get(agents::home))
        .route(
            "/login",
            get(auth_pages::show_login).post(auth_pages::submit_login),
        )
        .route("/logout", post(auth_pages::logout))
        .route("/logout/all", post(auth_pages::logout_all))
        .route("/auth/oidc/start", get(oidc::start))
        .route("/auth/oidc/callback", get(oidc::callback))
        .route("/device", get(device::show).post(device::decide))
        .route(
            "/setup",
            get(auth_pages::show_setup).post(auth_pages::submit_setup),
        )
        .route("/agents", get(agents::list_agents))
        .route("/agents/table", get(agents::agents_table_partial))
        .route("/agents/download", get(enrollment::show_download))
        .route("/agents/download/tokens", post(enrollment::create_token))
        .route(
            "/agents/download/tokens/{id}/revoke",
            post(enrollment::revoke_token),
        )
        .route("/agents/{id}", get(agents::show_agent))
        .route("/agents/{id}/check", post(agents::check_agent))
        .route(
            "/agents/{id}/delete",
            get(agents::confirm_delete).post(agents::delete_agent),
        )
        .route(
            "/configurations",
            get(configurations::list_configurations).post(configurations::create_configuration),
        )
        .route(
            "/configurations/{id}",
            get(configurations::show_configuration),
        )
        .route(
            "/configurations/{id}/delete",
            get(configurations::confirm_delete).post(configurations::delete_configuration),
        )
        .route(
            "/configurations/{id}/scoping",
            get(configurations::show_scoping).post(configurations::save_scoping),
        )
        .route(
            "/configurations/{id}/mappings",
            get(configurations::show_mappings).post(configurations::post_mappings),
        )
        .route(
            "/configurations/{id}/properties",
            get(configurations::show_properties).post(configurations::save_properties),
        )
        .route(
            "/configurations/{id}/provision-on-demand",
            get(configurations::show_on_demand).post(configurations::provision_on_demand),
        )
        .route(
            "/configurations/{id}/{operation}",
            post(configurations::operate_configuration),
        )
        .route("/provisioning-logs", get(directory_pages::list_logs))
        .route("/provisioning-logs/{id}", get(directory_pages::show_log))
        .route(
            "/password-reset/on-premises-integration",
            get(writeback_pages::show_integration).post(writeback_pages::save_integration),
        )
        .route("/users", get(directory_pages::list_users))
        .route("/users/{id}", get(directory_pages::show_user))
        .route(
            "/users/{id}/reset-password",
            post(writeback_pages::reset_password),
        )
        .route("/users/{id}/unlock", post(writeback_pages::unlock))
        // The self-service portal of synced users (its own session cookie).
        .route(
            "/my",
            get(self_service::show_sign_in).post(self_service::submit_sign_in),
        )
        .route("/my/account", get(self_service::show_account))
        .route("/my/account/password", post(self_service::change_password))
        .route("/my/account/unlock", post(self_service::unlock))
        .route("/my/logout", post(self_service::logout))
        .route("/groups", get(directory_pages::list_groups))
        .route("/groups/{id}", get(directory_pages::show_group))
        .route("/audit-logs", get(sections::audit_logs))
        .route("/static/{file}", get(static_file))
        .fallback(page_not_found);

    let api = Router::new()
        .route("/agents", get(api::list_agents))
        .route(
            "/agents/{id}",
            get(api::get_agent).delete(api::delete_agent),
        )
        .route("/agents/{id}/check", post(api::check_agent))
        .route(
            "/enrollment-tokens",
            get(api::list_enrollment_tokens).post(api::create_enrollment_token),
        )
        .route(
            "/enrollment-tokens/{id}",
            axum::routing::delete(api::revoke_enrollment_token),
        )
        .route("/audit-log", get(api::audit_log))
        .route(
            "/configurations",
            get(sync_api::list_configurations).post(sync_api::create_configuration),
        )
        .route(
            "/configurations/{id}",
            get(sync_api::get_configuration)
                .patch(sync_api::patch_configuration)
                .delete(sync_api::delete_configuration),
        )
        .route(
            "/configurations/{id}/provision-on-demand",
            post(sync_api::provision_on_demand),
        )
        .route(
            "/configurations/{id}/{operation}",
            post(sync_api::operate_configuration),
        )
        .route("/users", get(sync_api::list_users))
        .route("/users/{id}", get(sync_api::get_user))
        .route("/groups", get(sync_api::list_groups))
        .route("/groups/{id}", get(sync_api::get_group))
        .route("/provisioning-logs", get(sync_api::list_logs))
        .route("/provisioning-logs/{id}", get(sync_api::get_log))
        .route("/expressions/test", post(sync_api::expression_test))
        .route(
            "/password-reset/on-premises-integration",
            get(writeback_api::get_integration).put(writeback_api::put_integration),
        )
        .route(
            "/users/{id}/reset-password",
            post(writeback_api::reset_password),
        )
        .route("/users/{id}/unlock", post(writeback_api::unlock))
        .route("/openapi.json", get(openapi::openapi_json))
        .fallback(api::not_found);

    let agent_api = Router::new()
        .route("/enroll", post(agent_api::enroll))
        // A batch of 10,000 machine names does not fit the default limit.
        .route(
            "/enroll-batch",
            post(agent_api::enroll_batch).layer(DefaultBodyLimit::max(4 * 1024 * 1024)),
        )
        .route("/heartbeat", post(agent_api::heartbeat))
        .route("/device/authorize", post(device::authorize))
        .route("/device/token", post(device::token))
        .route("/whoami", get(agent_api::whoami))
        .route("/domains", post(agent_api::domains))
        .route("/sync/lease", post(sync_api::lease))
        .route(
            "/sync/cycles/{id}/batch",
            post(sync_api::batch).layer(DefaultBodyLimit::max(sync_api::BATCH_BODY_LIMIT)),
        )
        .route("/sync/cycles/{id}/finish", post(sync_api::finish))
        .fallback(api::not_found);

    Router::new()
        .merge(pages)
        .nest("/api/v1", api)
        .nest(crate::protocol::CONSOLE_AGENT_API, agent_api)
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::metrics))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
            ),
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Holds the console's router once the state is loaded; until then only `/healthz` answers.
#[derive(Clone, Default)]
pub struct StartupGate(std::sync::Arc<std::sync::OnceLock<Router>>);

impl StartupGate {
    pub fn open(&self, app: Router) {
        let _ = self.0.set(app);
    }
}

/// What the listener serves from the first moment: `/healthz` while the console starts, then every
/// request through the gate to the console's router.
///
/// A service of its own rather than a router in front of the router: every request passes here,
/// and a second routing pass cost each one a boxed handler, a cloned route and a re-boxed body.
#[derive(Clone)]
pub struct GatedApp(StartupGate);

pub fn gated_app(gate: StartupGate) -> GatedApp {
    GatedApp(gate)
}

impl<B> tower::Service<axum::http::Request<B>> for GatedApp
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::Either<
        axum::routing::future::RouteFuture<std::convert::Infallible>,
        std::future::Ready<Result<Self::Response, Self::Error>>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        use futures::future::Either;
        if let Some(app) = (self.0).0.get() {
            // The router has its own `/healthz`.
            return Either::Left(tower::Service::call(&mut app.clone(), request));
        }
        let liveness = request.uri().path() == "/healthz"
            && matches!(
                *request.method(),
                axum::http::Method::GET | axum::http::Method::HEAD
            );
        let starting = if liveness {
            "ok".into_response()
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                "The console is starting; try again in a moment.",
            )
                .into_response()
        };
        Either::Right(std::future::ready(Ok(starting)))
    }
}

/// Liveness: answers as soon as the listener is up, whatever the fleet size.
async fn healthz() -> &'static str {
    "ok"
}

async fn page_not_found() -> error::AppError {
    error::AppError::not_found("There is no page at this address.")
}

/// Assets compiled into the binary, so the console runs from any directory.
async fn static_file(
    axum::extract::Path(file): axum::extract::Path<String>,
) -> axum::response::Response {
    let (body, content_type): (&'static [u8], &str) = match file.as_str() {
        "app.css" => (
            include_bytes!("../../static/app.css"),
            "text/css; charset=utf-8",
        ),
        "app.js" => (
            include_bytes!("../../static/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "htmx-2.0.4.min.js" => (
            include_bytes!("../../static/htmx-2.0.4.min.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return page_not_found().await.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Method, Request};
    use tower::ServiceExt;

    async fn send(app: &GatedApp, method: Method, path: &str) -> (StatusCode, String, bool) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let retry = response.headers().contains_key(header::RETRY_AFTER);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap(), retry)
    }

    #[tokio::test]
    async fn the_gate_answers_liveness_while_starting_and_then_hands_every_request_to_the_router() {
        let gate = StartupGate::default();
        let app = gated_app(gate.clone());

        assert_eq!(
            send(&app, Method::GET, "/healthz").await,
            (StatusCode::OK, "ok".into(), false)
        );
        let (status, body, retry) = send(&app, Method::GET, "/agents").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("starting"), "{body}");
        assert!(retry, "a client is told when to try again");
        let (status, _, _) = send(&app, Method::POST, "/healthz").await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "only GET and HEAD are liveness"
        );

        gate.open(
            Router::new()
                .route("/healthz", get(|| async { "router's" }))
                .route("/agents", get(|| async { "agents" })),
        );
        assert_eq!(
            send(&app, Method::GET, "/agents").await,
            (StatusCode::OK, "agents".into(), false)
        );
        assert_eq!(
            send(&app, Method::GET, "/healthz").await,
            (StatusCode::OK, "router's".into(), false)
        );
        let (status, _, _) = send(&app, Method::POST, "/healthz").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }
}
