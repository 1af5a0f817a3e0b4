//! What a security review tries: the authorization matrix (every route × every principal), sign-in
//! throttling, session rotation, expiry and "sign out of all sessions", security headers, Secure
//! cookies, body limits, the OpenAPI description, and property tests of the JSON inputs.

use crate::support::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::Method;
use std::collections::BTreeSet;

/// Who makes a request in the matrix.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Anonymous,
    Reader,
    Hia,
    Admin,
    /// An agent's credential as a bearer token.
    Agent,
}

const EVERYONE: [Who; 5] = [
    Who::Anonymous,
    Who::Reader,
    Who::Hia,
    Who::Admin,
    Who::Agent,
];

/// One row: a route as the router spells it, the request sent, and the status per principal in
/// the order of [`EVERYONE`].
struct Row {
    method: Method,
    route: &'static str,
    path: String,
    body: Body,
    expect: [u16; 5],
}

#[derive(Clone)]
enum Body {
    None,
    /// A form; the signed-in principal's CSRF token is added.
    Form(Vec<(&'static str, String)>),
    Json(serde_json::Value),
}

/// A signed-in administrator: session cookie and its CSRF token, and an API token.
struct Creds {
    cookie: String,
    csrf: String,
    api_token: String,
}

async fn sign_in_raw(console: &Console, username: &str) -> Creds {
    let browser = Browser::new(console);
    let (_, html) = browser.get("/login").await;
    let csrf = csrf_of(&html);
    let r = browser
        .http
        .post(format!("{}/login", console.url))
        .form(&[
            ("username", username),
            ("password", PASSWORD),
            ("csrf", &csrf),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "sign-in of {username}");
    let cookie = session_cookie_of(&r).expect("a session cookie");
    let page = reqwest::Client::new()
        .get(format!("{}/agents", console.url))
        .header("cookie", format!("hybridsync_session={cookie}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    Creds {
        cookie,
        csrf: csrf_of(&page),
        api_token: console.api_token(username),
    }
}

fn session_cookie_of(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("hybridsync_session="))
        .map(|c| c.split(';').next().unwrap().to_string())
        .filter(|c| !c.is_empty())
}

async fn send(
    console: &Console,
    row: &Row,
    who: Who,
    creds: Option<&Creds>,
    agent_credential: &str,
) -> u16 {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut req = http.request(row.method.clone(), format!("{}{}", console.url, row.path));
    // Pages take the session cookie; the APIs and the Prometheus endpoint take a bearer token.
    let is_page = !row.path.starts_with("/api/")
        && !row.path.starts_with("/agent-api/")
        && row.path != "/metrics";
    match (who, creds) {
        (Who::Agent, _) => req = req.bearer_auth(agent_credential),
        (_, Some(c)) if is_page => {
            req = req.header("cookie", format!("hybridsync_session={}", c.cookie));
        }
        (_, Some(c)) => req = req.bearer_auth(&c.api_token),
        _ => {}
    }
    req = match &row.body {
        Body::None => req,
        Body::Form(fields) => {
            let mut fields = fields.clone();
            fields.push(("csrf", creds.map(|c| c.csrf.clone()).unwrap_or_default()));
            req.form(&fields)
        }
        Body::Json(v) => req.json(v),
    };
    req.send().await.unwrap().status().as_u16()
}

/// Every `(METHOD, path)` the router in src/web/mod.rs declares, with nests resolved, read from
/// the source so that a new route without a matrix row fails this test.
fn routes_in_router() -> BTreeSet<(String, String)> {
    let source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/web/mod.rs")).unwrap();
    let mut prefixes = std::collections::HashMap::new();
    for line in source.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix(".nest(") {
            let mut parts = rest.split(',');
            let prefix = parts.next().unwrap().trim();
            let var = parts.next().unwrap().trim().trim_end_matches(')');
            let prefix = match prefix {
                "crate::protocol::CONSOLE_AGENT_API" => "/agent-api/v1".to_string(),
                p => p.trim_matches('"').to_string(),
            };
            prefixes.insert(var.to_string(), prefix);
        }
    }
    let method_re = ["get(", "post(", "delete(", "put(", "patch("];
    let mut routes = BTreeSet::new();
    let mut prefix = String::new();
    for block in source.split(".route(").enumerate() {
        let (i, text) = block;
        if i > 0 {
            let path = text.trim_start().split('"').nth(1).unwrap().to_string();
            // The route's handlers: up to the next route, or the end of the statement.
            let end = text.find(";\n").unwrap_or(text.len());
            let handlers = &text[..end];
            for m in method_re {
                let found = handlers.match_indices(m).any(|(at, _)| {
                    at == 0
                        || !handlers.as_bytes()[at - 1].is_ascii_alphanumeric()
                            && handlers.as_bytes()[at - 1] != b'_'
                });
                if found {
                    routes.insert((
                        m.trim_end_matches('(').to_uppercase(),
                        format!("{prefix}{path}"),
                    ));
                }
            }
        }
        // A `let NAME = Router::new()` later in this chunk starts a router nested elsewhere.
        if let Some(at) = text.rfind("let ") {
            let name = text[at + 4..].split_whitespace().next().unwrap_or("");
            if text[at..].contains("Router::new()") {
                prefix = prefixes.get(name).cloned().unwrap_or_default();
            }
        }
        if text.contains("Router::new()\n        .merge(") {
            prefix = String::new();
        }
    }
    routes
}

#[tokio::test]
async fn authorization_matrix_covers_every_route_and_principal() {
    let console = Console::start(&[]);
    let agent = Agent::install(&console, &console.enrollment_token(1), "matrix-dc");
    let id = agent.agent_id();
    let credential: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(agent.dir.path().join("credential.json")).unwrap(),
    )
    .unwrap();
    let agent_credential = credential["agent_credential"].as_str().unwrap().to_string();

    use Method as M;
    let p = |s: &str| s.to_string();
    let heartbeat = serde_json::json!({
        "version": "1.0.0", "machine_name": "matrix-dc", "uptime_seconds": 1,
        "heartbeat_interval_seconds": 30
    });
    // [anonymous, reader, hybrid identity admin, global admin, agent credential]
    let rows = vec![
        Row {
            method: M::GET,
            route: "/",
            path: p("/"),
            body: Body::None,
            expect: [303, 200, 200, 200, 303],
        },
        Row {
            method: M::GET,
            route: "/login",
            path: p("/login"),
            body: Body::None,
            expect: [200; 5],
        },
        // Without the pre-session cookie's CSRF token, every sign-in attempt is refused.
        Row {
            method: M::POST,
            route: "/login",
            path: p("/login"),
            body: Body::Form(vec![("username", p(ADMIN)), ("password", p(PASSWORD))]),
            expect: [403; 5],
        },
        Row {
            method: M::GET,
            route: "/setup",
            path: p("/setup?token=x"),
            body: Body::None,
            expect: [410; 5],
        },
        Row {
            method: M::POST,
            route: "/setup",
            path: p("/setup"),
            body: Body::Form(vec![]),
            expect: [403; 5],
        },
        Row {
            method: M::GET,
            route: "/agents",
            path: p("/agents"),
            body: Body::None,
            expect: [303, 200, 200, 200, 303],
        },
        Row {
            method: M::GET,
            route: "/agents/table",
            path: p("/agents/table"),
            body: Body::None,
            expect: [303, 200, 200, 200, 303],
        },
        Row {
            method: M::GET,
            route: "/agents/download",
            path: p("/agents/download"),
            body: Body::None,
            expect: [303, 200, 200, 200, 303],
        },
        Row {
            method: M::POST,
            route: "/agents/download/tokens",
            path: p("/agents/download/tokens"),
            body: Body::Form(vec![("expires", p("1h")), ("max_uses", p("1"))]),
            expect: [303, 403, 200, 200, 303],
        },
        Row {
            method: M::POST,
            route: "/agents/download/tokens/{id}/revoke",
            path: p("/agents/download/tokens/999999/revoke"),
            body: Body::Form(vec![]),
            expect: [303, 403, 404, 404, 303],
        },
        Row {
            method: M::GET,
            route: "/agents/{id}",
            path: format!("/agents/{id}"),
            body: Body::None,
            expect: [303, 200, 200, 200, 303],
        },
        Row {
            method: M::POST,
            route: "/agents/{id}/check",
            path: format!("/agents/{id}/check"),
            body: Body::Form(vec![]),
            expect: [303, 303, 303, 303, 303],
        },
        Row {
            method: M::GET,
            route: "/agents/{id}/delete",
            path: format!("/agents/{id}/delete"),
            body: Body::None,
            expect: [303, 403, 200, 200, 303],
        },
        // The agent is active: a manager must confirm with force; the role check comes first.
        Row {
            method: M::POST,
            route: "/agents/{id}/delete",
            path: format!("/agents/{id}/delete"),
            body: Body::Form(vec![]),
            expect: [303, 403, 409, 409, 303],
        },
        Row {
            method: M::GET,
            route: "/configurations",
            path: p("/configurations"),
            body: Body::None,
            expect: [303, 200, 200, 200, 303],
        },
        Row {
            method: M::GET,
            route: "/provisioning-logs",
            path: p("/provisioning-logs"),
            body: Body::None,
            expect: [303, 200, 200, 200, 303],
        },
        // Synchronization pages: a configuration that does not exist; managers get as far as
        // looking it up (404), readers are refused changes first (403).
        Row {
            method: M::POST,
            route: "/configurations",
            path: p("/configurations"),
            body: Body::Form(vec![("domain", p("nope.example.test"))]),
            expect: [303, 403, 422, 422, 303],
        },
        Row {
            method: M::GET,
            route: "/configurations/{id}",
            path: p("/configurations/no-such-id"),
            body: Body::None,
            expect: [303, 404, 404, 404, 303],
        },
        Row {
            method: M::GET,
            route: "/configurations/{id}/delete",
            path: p("/configurations/no-such-id/delete"),
            body: Body::None,
            expect: [303, 403, 404, 404, 303],
        },
        Row {
            method: M::POST,
            route: "/configurations/{id}/delete",
            path: p("/configurations/no-such-id/delete"),
            body: Body::Form(vec![]),
            expect: [303, 403, 404, 404, 303],
        },
        Row {
            method: M::GET,
            route: "/configurations/{id}/scoping",
            path: p("/configurations/no-such-id/scoping"),
            body: Body::None,
            expect: [303, 404, 404, 404, 303],
        },
        Row {
            method: M::POST,
            route: "/configurations/{id}/scoping",
            path: p("/configurations/no-such-id/scoping"),
            body: Body::Form(vec![("mode", p("all_users"))]),
            expect: [303, 403, 404, 404, 303],
        },
        Row {
            method: M::GET,
            route: "/configurations/{id}/mappings",
            path: p("/configurations/no-such-id/mappings"),
            body: Body::None,
            expect: [303, 404, 404, 404, 303],
        },
        // Test expression (action=test) is open to readers, so the lookup comes first here.
        Row {
            method: M::POST,
            route: "/configurations/{id}/mappings",
            path: p("/configurations/no-such-id/mappings"),
            body: Body::Form(vec![("action", p("save")), ("kind", p("user"))]),
            expect: [303, 404, 404, 404, 303],
        },
        Row {
            method: M::GET,
            route: "/configurations/{id}/properties",
            path: p("/configurations/no-such-id/properties"),
            body: Body::None,
            expect: [303, 404, 404, 404, 303],
        },
        Row {
            method: M::POST,
            route: "/configurations/{id}/properties",
            path: p("/configurations/no-such-id/properties"),
            body: Body::Form(vec![("delete_threshold", p("10"))]),
            expect: [303, 403, 404, 404, 303],
        },
        Row {
            method: M::GET,
            route: "/configurations/{id}/provision-on-demand",
            path: p("/configurations/no-such-id/provision-on-demand"),
            body: Body::None,
            expect: [303, 404, 404, 404, 303],
        },
        Row {
            method: M::POST,
            route: "/configurations/{id}/provision-on-demand",
            path: p("/configurations/no-such-id/provision-on-demand"),
            body: Body::Form(vec![("dn", p("cn=x,dc=example,dc=test"))]),
            expect: [303, 403, 404, 404, 303],
        },
        Row {
            method: M::POST,
            route: "/configurations/{id}/{operation}",
            path: p("/configurations/no-such-id/enable"),
            body: Body::Form(vec![]),
            expect: [303, 403, 404, 404, 303],
        },
        Row {
            method: M::GET,
            route: "/provisioning-logs/{id}",
            path: p("/provisioning-logs/999999"),
            body: Body::None,
            expect: [303, 404, 404, 404, 303],
        },
        Row {
            method: M::GET,
            route: "/users/{id}",
            path: p("/users/no-such-id"),
            body: Body::None,
            expect: [303, 404, 404, 404, 303],
        },
        Row {
            method: M::GET,
            route: "/groups",
            path: p("/groups"),
            body: Body::None,
            expect: [303, 200, 200, 200, 303],
        },
        Row {
            method: M::GET,
            route: "/groups/{id}",
            path: p("/groups/no-such-id"),
            body: Body::None,
            expect: [303, 404, 404, 404, 303],
        },
        Row {
            method: M::GET,
            route: "/password-reset/on-premises-integration",
            path: p("/password-reset/on-premises-integration"),
            body: Body::None,
            expect: [303, 200, 200, 200, 303],
        },
        // Saving the options: managers are sent back to the page (an agent exists here).
        Row {
            method: M::POST,
            route: "/password-reset/on-premises-integration",
            path: p("/password-reset/on-premises-integration"),
            body: Body::Form(vec![("enable_writeback", p("1"))]),
            expect: [303, 403, 303, 303, 303],
        },
        Row {
            method: M::POST,
            route: "/users/{id}/reset-password",
            path: p("/users/no-such-id/reset-password"),
            body: Body::Form(vec![
                ("new_password", p("Matrix-Passw0rd")),
                ("confirm_password", p("Matrix-Passw0rd")),
            ]),
            expect: [303, 403, 404, 404, 303],
        },
        Row {
            method: M::POST,
            route: "/users/{id}/unlock",
            path: p("/users/no-such-id/unlock"),
            body: Body::Form(vec![]),
            expect: [303, 403, 404, 404, 303],
        },
        // The self-service portal answers anyone; a console session is no self-service session,
        // so its pages send everyone to the portal's sign-in, and its sign-in form needs the
        // pre-session cookie's CSRF token.
        Row {
            method: M::GET,
            route: "/my",
            path: p("/my"),
            body: Body::None,
            expect: [200; 5],
        },
        Row {
            method: M::POST,
            route: "/my",
            path: p("/my"),
            body: Body::Form(vec![("upn", p("alice@example.test")), ("password", p("x"))]),
            expect: [403; 5],
        },
        Row {
            method: M::GET,
            route: "/my/account",
            path: p("/my/account"),
            body: Body::None,
            expect: [303; 5],
        },
        Row {
            method: M::POST,
            route: "/my/account/password",
            path: p("/my/account/password"),
            body: Body::Form(vec![
                ("current_password", p("x")),
                ("new_password", p("y")),
                ("confirm_password", p("y")),
            ]),
            expect: [303; 5],
        },
        Row {
            method: M::POST,
            route: "/my/account/unlock",
            path: p("/my/account/unlock"),
            body: Body::Form(vec![]),
            expect: [303; 5],
        },
        Row {
            method: M::POST,
            route: "/my/logout",
            path: p("/my/logout"),
            body: Body::Form(vec![]),
            expect: [303; 5],
        },
        Row {
            method: M::GET,
            route: "/users",
            path: p("/users"),
            body: Body::None,
            expect: [303, 200, 200, 200, 303],
        },
        Row {
            method: M::GET,
            route: "/audit-logs",
            path: p("/audit-logs"),
            body: Body::None,
            expect: [303, 200, 200, 200, 303],
        },
        Row {
            method: M::GET,
            route: "/static/{file}",
            path: p("/static/app.css"),
            body: Body::None,
            expect: [200; 5],
        },
        // This console has no OpenID Connect provider configured.
        Row {
            method: M::GET,
            route: "/auth/oidc/start",
            path: p("/auth/oidc/start"),
            body: Body::None,
            expect: [404; 5],
        },
        Row {
            method: M::GET,
            route: "/auth/oidc/callback",
            path: p("/auth/oidc/callback?code=a&state=b"),
            body: Body::None,
            expect: [404; 5],
        },
        // Approving agents by device code: managers only.
        Row {
            method: M::GET,
            route: "/device",
            path: p("/device"),
            body: Body::None,
            expect: [303, 403, 200, 200, 303],
        },
        Row {
            method: M::POST,
            route: "/device",
            path: p("/device"),
            body: Body::Form(vec![("user_code", p("BCDF-GHJK"))]),
            expect: [303, 403, 400, 400, 303],
        },
        Row {
            method: M::GET,
            route: "/healthz",
            path: p("/healthz"),
            body: Body::None,
            expect: [200; 5],
        },
        // Prometheus scrapes with an API token; an agent credential is not one.
        Row {
            method: M::GET,
            route: "/metrics",
            path: p("/metrics"),
            body: Body::None,
            expect: [401, 200, 200, 200, 401],
        },
        Row {
            method: M::GET,
            route: "/api/v1/agents",
            path: p("/api/v1/agents"),
            body: Body::None,
            expect: [401, 200, 200, 200, 401],
        },
        Row {
            method: M::GET,
            route: "/api/v1/agents/{id}",
            path: format!("/api/v1/agents/{id}"),
            body: Body::None,
            expect: [401, 200, 200, 200, 401],
        },
        Row {
            method: M::DELETE,
            route: "/api/v1/agents/{id}",
            path: format!("/api/v1/agents/{id}"),
            body: Body::None,
            expect: [401, 403, 409, 409, 401],
        },
        Row {
            method: M::POST,
            route: "/api/v1/agents/{id}/check",
            path: format!("/api/v1/agents/{id}/check"),
            body: Body::None,
            expect: [401, 200, 200, 200, 401],
        },
        Row {
            method: M::GET,
            route: "/api/v1/enrollment-tokens",
            path: p("/api/v1/enrollment-tokens"),
            body: Body::None,
            expect: [401, 200, 200, 200, 401],
        },
        Row {
            method: M::POST,
            route: "/api/v1/enrollment-tokens",
            path: p("/api/v1/enrollment-tokens"),
            body: Body::Json(serde_json::json!({})),
            expect: [401, 403, 201, 201, 401],
        },
        Row {
            method: M::DELETE,
            route: "/api/v1/enrollment-tokens/{id}",
            path: p("/api/v1/enrollment-tokens/999999"),
            body: Body::None,
            expect: [401, 403, 404, 404, 401],
        },
        Row {
            method: M::GET,
            route: "/api/v1/audit-log",
            path: p("/api/v1/audit-log"),
            body: Body::None,
            expect: [401, 200, 200, 200, 401],
        },
        Row {
            method: M::GET,
            route: "/api/v1/configurations",
            path: p("/api/v1/configurations"),
            body: Body::None,
            expect: [401, 200, 200, 200, 401],
        },
        // No agent reported the domain: a manager's request is well-formed but refused (422).
        Row {
            method: M::POST,
            route: "/api/v1/configurations",
            path: p("/api/v1/configurations"),
            body: Body::Json(serde_json::json!({"domain": "nope.example.test"})),
            expect: [401, 403, 422, 422, 401],
        },
        Row {
            method: M::GET,
            route: "/api/v1/configurations/{id}",
            path: p("/api/v1/configurations/no-such-id"),
            body: Body::None,
            expect: [401, 404, 404, 404, 401],
        },
        Row {
            method: M::PATCH,
            route: "/api/v1/configurations/{id}",
            path: p("/api/v1/configurations/no-such-id"),
            body: Body::Json(serde_json::json!({"delete_threshold": 10})),
            expect: [401, 403, 404, 404, 401],
        },
        Row {
            method: M::DELETE,
            route: "/api/v1/configurations/{id}",
            path: p("/api/v1/configurations/no-such-id"),
            body: Body::None,
            expect: [401, 403, 404, 404, 401],
        },
        Row {
            method: M::POST,
            route: "/api/v1/configurations/{id}/{operation}",
            path: p("/api/v1/configurations/no-such-id/enable"),
            body: Body::None,
            expect: [401, 403, 404, 404, 401],
        },
        Row {
            method: M::POST,
            route: "/api/v1/configurations/{id}/provision-on-demand",
            path: p("/api/v1/configurations/no-such-id/provision-on-demand"),
            body: Body::Json(serde_json::json!({"dn": "cn=x,dc=example,dc=test"})),
            expect: [401, 403, 404, 404, 401],
        },
        Row {
            method: M::GET,
            route: "/api/v1/users",
            path: p("/api/v1/users"),
            body: Body::None,
            expect: [401, 200, 200, 200, 401],
        },
        Row {
            method: M::GET,
            route: "/api/v1/users/{id}",
            path: p("/api/v1/users/no-such-id"),
            body: Body::None,
            expect: [401, 404, 404, 404, 401],
        },
        Row {
            method: M::GET,
            route: "/api/v1/password-reset/on-premises-integration",
            path: p("/api/v1/password-reset/on-premises-integration"),
            body: Body::None,
            expect: [401, 200, 200, 200, 401],
        },
        Row {
            method: M::PUT,
            route: "/api/v1/password-reset/on-premises-integration",
            path: p("/api/v1/password-reset/on-premises-integration"),
            body: Body::Json(
                serde_json::json!({"enable_writeback": false, "use_cloud_sync": false, "allow_unlock_without_reset": false}),
            ),
            expect: [401, 403, 200, 200, 401],
        },
        Row {
            method: M::POST,
            route: "/api/v1/users/{id}/reset-password",
            path: p("/api/v1/users/no-such-id/reset-password"),
            body: Body::Json(serde_json::json!({"new_password": "Matrix-Passw0rd-1"})),
            expect: [401, 403, 404, 404, 401],
        },
        Row {
            method: M::POST,
            route: "/api/v1/users/{id}/unlock",
            path: p("/api/v1/users/no-such-id/unlock"),
            body: Body::None,
            expect: [401, 403, 404, 404, 401],
        },
        Row {
            method: M::GET,
            route: "/api/v1/groups",
            path: p("/api/v1/groups"),
            body: Body::None,
            expect: [401, 200, 200, 200, 401],
        },
        Row {
            method: M::GET,
            route: "/api/v1/groups/{id}",
            path: p("/api/v1/groups/no-such-id"),
            body: Body::None,
            expect: [401, 404, 404, 404, 401],
        },
        Row {
            method: M::GET,
            route: "/api/v1/provisioning-logs",
            path: p("/api/v1/provisioning-logs"),
            body: Body::None,
            expect: [401, 200, 200, 200, 401],
        },
        Row {
            method: M::GET,
            route: "/api/v1/provisioning-logs/{id}",
            path: p("/api/v1/provisioning-logs/999999"),
            body: Body::None,
            expect: [401, 404, 404, 404, 401],
        },
        // Testing an expression changes nothing: every signed-in role may.
        Row {
            method: M::POST,
            route: "/api/v1/expressions/test",
            path: p("/api/v1/expressions/test"),
            body: Body::Json(serde_json::json!({"expression": "\"x\""})),
            expect: [401, 200, 200, 200, 401],
        },
        Row {
            method: M::GET,
            route: "/api/v1/openapi.json",
            path: p("/api/v1/openapi.json"),
            body: Body::None,
            expect: [200; 5],
        },
        // Enrollment is authorized by the enrollment token in the body, whoever calls.
        Row {
            method: M::POST,
            route: "/agent-api/v1/enroll",
            path: p("/agent-api/v1/enroll"),
            body: Body::Json(
                serde_json::json!({"enrollment_token": "hset_wrong", "machine_name": "x", "version": "1"}),
            ),
            expect: [401; 5],
        },
        Row {
            method: M::POST,
            route: "/agent-api/v1/enroll-batch",
            path: p("/agent-api/v1/enroll-batch"),
            body: Body::Json(serde_json::json!({})),
            expect: [422; 5],
        },
        // Only an agent credential passes; an administrator's API token is not one.
        // The device endpoints take forms (RFC 8628); a JSON body is an invalid_request for anyone.
        Row {
            method: M::POST,
            route: "/agent-api/v1/device/authorize",
            path: p("/agent-api/v1/device/authorize"),
            body: Body::Json(serde_json::json!({})),
            expect: [400; 5],
        },
        Row {
            method: M::POST,
            route: "/agent-api/v1/device/token",
            path: p("/agent-api/v1/device/token"),
            body: Body::Json(serde_json::json!({})),
            expect: [400; 5],
        },
        Row {
            method: M::POST,
            route: "/agent-api/v1/heartbeat",
            path: p("/agent-api/v1/heartbeat"),
            body: Body::Json(heartbeat),
            expect: [401, 401, 401, 401, 200],
        },
        Row {
            method: M::POST,
            route: "/agent-api/v1/domains",
            path: p("/agent-api/v1/domains"),
            body: Body::Json(serde_json::json!({"domains": []})),
            expect: [401, 401, 401, 401, 200],
        },
        Row {
            method: M::GET,
            route: "/agent-api/v1/whoami",
            path: p("/agent-api/v1/whoami"),
            body: Body::None,
            expect: [401, 401, 401, 401, 200],
        },
        // The agents' sync protocol: an agent credential only. The cycle does not exist (404).
        Row {
            method: M::POST,
            route: "/agent-api/v1/sync/lease",
            path: p("/agent-api/v1/sync/lease"),
            body: Body::Json(serde_json::json!({"domains": [], "poll_interval_ms": 1000})),
            expect: [401, 401, 401, 401, 200],
        },
        Row {
            method: M::POST,
            route: "/agent-api/v1/sync/cycles/{id}/batch",
            path: p("/agent-api/v1/sync/cycles/no-such-cycle/batch"),
            body: Body::Json(serde_json::json!({"objects": [], "poll_interval_ms": 1000})),
            expect: [401, 401, 401, 401, 404],
        },
        Row {
            method: M::POST,
            route: "/agent-api/v1/sync/cycles/{id}/finish",
            path: p("/agent-api/v1/sync/cycles/no-such-cycle/finish"),
            body: Body::Json(
                serde_json::json!({"complete": false, "watermark": null, "error": null}),
            ),
            expect: [401, 401, 401, 401, 404],
        },
        // Last: these end the session they are sent with (each principal signs in afresh).
        Row {
            method: M::POST,
            route: "/logout",
            path: p("/logout"),
            body: Body::Form(vec![]),
            expect: [303; 5],
        },
        Row {
            method: M::POST,
            route: "/logout/all",
            path: p("/logout/all"),
            body: Body::Form(vec![]),
            expect: [303; 5],
        },
    ];

    // Completeness: every route of the router has a row, and every row is a route.
    let declared = routes_in_router();
    let covered: BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| (r.method.to_string(), r.route.to_string()))
        .collect();
    let missing: Vec<_> = declared.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "routes without a matrix row: {missing:?}"
    );
    let stale: Vec<_> = covered.difference(&declared).collect();
    assert!(
        stale.is_empty(),
        "matrix rows for routes that do not exist: {stale:?}"
    );

    let mut creds = Vec::new();
    for who in EVERYONE {
        creds.push(match who {
            Who::Reader => Some(sign_in_raw(&console, READER).await),
            Who::Hia => Some(sign_in_raw(&console, HIA).await),
            Who::Admin => Some(sign_in_raw(&console, ADMIN).await),
            Who::Anonymous | Who::Agent => None,
        });
    }
    let mut wrong = Vec::new();
    for row in &rows {
        for (i, who) in EVERYONE.iter().enumerate() {
            let status = send(&console, row, *who, creds[i].as_ref(), &agent_credential).await;
            if status != row.expect[i] {
                wrong.push(format!(
                    "{} {} as {who:?}: expected {}, got {status}",
                    row.method, row.path, row.expect[i]
                ));
            }
        }
        if row.route.starts_with("/logout") {
            // The session just ended; the next row needs fresh ones.
            for (i, who) in EVERYONE.iter().enumerate() {
                let name = match who {
                    Who::Reader => READER,
                    Who::Hia => HIA,
                    Who::Admin => ADMIN,
                    _ => continue,
                };
                creds[i] = Some(sign_in_raw(&console, name).await);
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "authorization matrix:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn security_headers_and_pages_without_inline_script() {
    let console = Console::start(&[]);
    let browser = Browser::new(&console);
    assert_eq!(browser.sign_in(ADMIN, PASSWORD).await, 303);
    for path in [
        "/login",
        "/agents",
        "/agents/download",
        "/api/v1/agents",
        "/nope",
    ] {
        let r = browser
            .http
            .get(format!("{}{path}", console.url))
            .send()
            .await
            .unwrap();
        let h = r.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{path}: {csp}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert!(h.contains_key("referrer-policy"), "{path}");
        let html = r.text().await.unwrap();
        if !path.starts_with("/api/") {
            // The CSP forbids inline script and style: the pages must not need them.
            let doc = scraper::Html::parse_document(&html);
            let scripts = scraper::Selector::parse("script").unwrap();
            for s in doc.select(&scripts) {
                assert!(s.value().attr("src").is_some(), "{path}: inline <script>");
            }
            let all = scraper::Selector::parse("*").unwrap();
            for e in doc.select(&all) {
                for (name, _) in e.value().attrs() {
                    assert!(
                        !name.starts_with("on") && name != "style",
                        "{path}: inline {name}= on <{}>",
                        e.value().name()
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn cookies_are_secure_when_the_console_is_reached_over_https() {
    let plain = Console::start(&[]);
    let secure = Console::start(&["--public-url", "https://console.example.test"]);
    for (console, want_secure) in [(&plain, false), (&secure, true)] {
        let r = reqwest::get(format!("{}/login", console.url))
            .await
            .unwrap();
        let cookies: Vec<String> = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert!(!cookies.is_empty());
        for c in &cookies {
            assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax"), "{c}");
            assert_eq!(c.contains("; Secure"), want_secure, "{c}");
        }
    }
}

#[tokio::test]
async fn failed_sign_ins_are_throttled_per_account_and_per_address() {
    let console = Console::start(&[]);
    let browser = Browser::new(&console);
    for _ in 0..5 {
        assert_eq!(browser.sign_in(ADMIN, "wrong password!!").await, 401);
    }
    // The sixth attempt is refused before the password is checked, even the right one.
    let (_, html) = browser.get("/login").await;
    let csrf = csrf_of(&html);
    let r = browser
        .http
        .post(format!("{}/login", console.url))
        .form(&[
            ("username", "ALICE"),
            ("password", PASSWORD),
            ("csrf", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0 && retry <= 900, "{retry}");
    let body = r.text().await.unwrap();
    assert!(
        body.contains("Too many failed sign-ins for this username"),
        "{body}"
    );
    // Another account from the same address is not locked out by alice's failures.
    assert_eq!(Browser::new(&console).sign_in(HIA, PASSWORD).await, 303);

    // 15 more failures from this address (20 in all), spread over usernames that do not exist.
    for i in 0..15 {
        assert_eq!(
            browser
                .sign_in(&format!("nobody{i}"), "wrong password!!")
                .await,
            401
        );
    }
    let fresh = Browser::new(&console);
    let (_, html) = fresh.get("/login").await;
    let csrf = csrf_of(&html);
    let (status, _, body) = fresh
        .post(
            "/login",
            &[
                ("username", READER),
                ("password", PASSWORD),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(status, 429);
    assert!(body.contains("from your address"), "{body}");
}

#[tokio::test]
async fn sessions_rotate_at_sign_in_and_all_can_be_ended_at_once() {
    let console = Console::start(&[]);
    let valid = |cookie: String| {
        let url = format!("{}/agents", console.url);
        async move {
            let r = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap()
                .get(url)
                .header("cookie", format!("hybridsync_session={cookie}"))
                .send()
                .await
                .unwrap();
            r.status() == 200
        }
    };
    let first = sign_in_raw(&console, ADMIN).await;
    assert!(valid(first.cookie.clone()).await);

    // Signing in again from a browser that holds a session replaces it: the old cookie is dead.
    let login = reqwest::get(format!("{}/login", console.url))
        .await
        .unwrap();
    let pre = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("hybridsync_pre="))
        .map(|c| c.split(';').next().unwrap().to_string())
        .expect("a pre-session cookie");
    let csrf = csrf_of(&login.text().await.unwrap());
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/login", console.url))
        .header(
            "cookie",
            format!("hybridsync_session={}; hybridsync_pre={pre}", first.cookie),
        )
        .form(&[("username", ADMIN), ("password", PASSWORD), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("hybridsync_pre=; ")),
        "the pre-session cookie is dropped at sign-in"
    );
    let second = session_cookie_of(&r).unwrap();
    assert_ne!(second, first.cookie);
    assert!(
        !valid(first.cookie.clone()).await,
        "the pre-sign-in session was ended"
    );
    assert!(valid(second.clone()).await);

    // Two more sessions of alice and one of hank; "sign out of all sessions" ends alice's only.
    let third = sign_in_raw(&console, ADMIN).await;
    let hank = sign_in_raw(&console, HIA).await;
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/logout/all", console.url))
        .header("cookie", format!("hybridsync_session={}", third.cookie))
        .form(&[("csrf", third.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login");
    assert!(!valid(second).await);
    assert!(!valid(third.cookie).await);
    assert!(
        valid(hank.cookie).await,
        "other accounts keep their sessions"
    );
}

#[tokio::test]
async fn sessions_expire() {
    let console = Console::start(&["--session-lifetime", "2s"]);
    let creds = sign_in_raw(&console, ADMIN).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = format!("{}/agents", console.url);
    wait_for(
        "the session to expire",
        std::time::Duration::from_secs(30),
        || {
            let req = http
                .get(&url)
                .header("cookie", format!("hybridsync_session={}", creds.cookie));
            async move {
                let r = req.send().await.unwrap();
                (r.status() == 303).then(|| r.headers()["location"].to_str().unwrap().to_string())
            }
        },
    )
    .await
    .starts_with("/login");
}

#[tokio::test]
async fn oversized_and_malformed_bodies_get_json_errors() {
    let console = Console::start(&[]);
    let api = Api::new(&console, ADMIN);
    let big = "x".repeat(100 * 1024);
    let r = api
        .http
        .post(format!("{}/enrollment-tokens", api.base))
        .bearer_auth(&api.token)
        .header("content-type", "application/json")
        .body(format!("{{\"expires_in\":\"{big}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");

    let r = api
        .http
        .post(format!("{}/enrollment-tokens", api.base))
        .bearer_auth(&api.token)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);

    // A page form over the limit is refused too (pages render the HTML error page).
    let browser = Browser::new(&console);
    let r = browser
        .http
        .post(format!("{}/login", console.url))
        .form(&[("username", big.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn the_openapi_description_lists_every_api_route() {
    let console = Console::start(&[]);
    let r = reqwest::get(format!("{}/api/v1/openapi.json", console.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc: serde_json::Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (method, route) in routes_in_router() {
        let Some(rel) = route.strip_prefix("/api/v1") else {
            continue;
        };
        let op = &paths
            .get(rel)
            .unwrap_or_else(|| panic!("{rel} is not in the OpenAPI document"))
            [method.to_lowercase()];
        assert!(op.is_object(), "{method} {rel} is not described");
        assert!(
            op["responses"].is_object(),
            "{method} {rel} has no responses"
        );
    }
    // And nothing described that the router does not serve.
    let served: BTreeSet<String> = routes_in_router()
        .into_iter()
        .filter_map(|(_, r)| r.strip_prefix("/api/v1").map(str::to_string))
        .collect();
    for path in paths.keys() {
        assert!(served.contains(path), "{path} is described but not served");
    }
    // Every $ref resolves.
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = r.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling $ref {name}"
        );
    }
}

/// Arbitrary JSON documents, shaped loosely like what the endpoints expect so that deep fields are
/// reached too.
fn any_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("24h"),
            Just("0s"),
            Just("-1h"),
            Just("99999999d"),
            Just("hset_x")
        ]
        .prop_map(serde_json::Value::from),
    ];
    let keys = prop_oneof![
        Just("expires_in".to_string()),
        Just("max_uses".to_string()),
        Just("enrollment_token".to_string()),
        Just("machine_name".to_string()),
        Just("version".to_string()),
        Just("existing".to_string()),
        Just("agent_id".to_string()),
        Just("uptime_seconds".to_string()),
        Just("heartbeat_interval_seconds".to_string()),
        Just("listen_addr".to_string()),
        Just("checks".to_string()),
        Just("status".to_string()),
        "[a-z_]{1,12}",
    ];
    leaf.prop_recursive(3, 32, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bytes that are mostly not JSON.
fn any_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any_json().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..200),
        "[{}\\[\\]\":,0-9a-z ]{0,80}".prop_map(String::into_bytes),
    ]
}

/// No body the agent-facing or API endpoints receive may crash the console or make it answer
/// 5xx, and every refusal is the JSON error shape.
#[test]
fn arbitrary_json_bodies_never_cause_a_server_error() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let console = Console::start(&[]);
    let token = console.api_token(ADMIN);
    let agent = Agent::install(&console, &console.enrollment_token(1), "prop-dc");
    let credential: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(agent.dir.path().join("credential.json")).unwrap(),
    )
    .unwrap();
    let credential = credential["agent_credential"].as_str().unwrap().to_string();
    let http = reqwest::Client::new();
    let targets = [
        ("/api/v1/enrollment-tokens", token.clone()),
        ("/agent-api/v1/enroll", String::new()),
        ("/agent-api/v1/heartbeat", credential),
    ];
    let mut runner = TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&(0..targets.len(), any_body()), |(target, body)| {
            let (path, bearer) = &targets[target];
            let (status, text) = rt.block_on(async {
                let mut req = http
                    .post(format!("{}{path}", console.url))
                    .header("content-type", "application/json")
                    .body(body.clone());
                if !bearer.is_empty() {
                    req = req.bearer_auth(bearer);
                }
                let r = req.send().await.expect("the console answers");
                (r.status().as_u16(), r.text().await.unwrap_or_default())
            });
            prop_assert!(
                status < 500,
                "{path} answered {status} to {:?}: {text}",
                String::from_utf8_lossy(&body)
            );
            if status >= 400 {
                let parsed: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                    TestCaseError::fail(format!("{path}: non-JSON error {e}: {text}"))
                })?;
                prop_assert!(parsed["error"]["code"].is_string(), "{text}");
                prop_assert!(parsed["error"]["message"].is_string(), "{text}");
            }
            Ok(())
        })
        .unwrap();
    // The device code endpoints take forms and answer OAuth errors ({"error": "…"}).
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let form_field = prop_oneof![
        Just("grant_type".to_string()),
        Just("device_code".to_string()),
        Just("machine_name".to_string()),
        Just("client_id".to_string()),
        "[a-z_]{1,10}",
    ];
    let form = prop::collection::vec((form_field, ".{0,300}"), 0..5);
    runner
        .run(&(any::<bool>(), form), |(token_endpoint, fields)| {
            let path = if token_endpoint { "token" } else { "authorize" };
            let (status, text) = rt.block_on(async {
                let r = http
                    .post(format!("{}/agent-api/v1/device/{path}", console.url))
                    .form(&fields)
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.text().await.unwrap_or_default())
            });
            prop_assert!(
                status < 500,
                "{path} answered {status} to {fields:?}: {text}"
            );
            let parsed: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| TestCaseError::fail(format!("{path}: non-JSON answer {e}: {text}")))?;
            if status >= 400 {
                prop_assert!(parsed["error"].is_string(), "{text}");
            }
            Ok(())
        })
        .unwrap();
    // Path parameters: any text where an agent id or a token number goes.
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&(0..4usize, ".{1,40}"), |(route, id)| {
            let id: String = id.bytes().map(|b| format!("%{b:02X}")).collect();
            let (method, path) = match route {
                0 => (reqwest::Method::GET, format!("/api/v1/agents/{id}")),
                1 => (
                    reqwest::Method::DELETE,
                    format!("/api/v1/agents/{id}?force=maybe"),
                ),
                2 => (reqwest::Method::POST, format!("/api/v1/agents/{id}/check")),
                _ => (
                    reqwest::Method::DELETE,
                    format!("/api/v1/enrollment-tokens/{id}"),
                ),
            };
            let (status, text) = rt.block_on(async {
                let r = http
                    .request(method.clone(), format!("{}{path}", console.url))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.text().await.unwrap_or_default())
            });
            prop_assert!(
                (400..500).contains(&status),
                "{method} {path} gave {status}: {text}"
            );
            let parsed: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| TestCaseError::fail(format!("{path}: non-JSON error {e}: {text}")))?;
            prop_assert!(parsed["error"]["code"].is_string(), "{text}");
            Ok(())
        })
        .unwrap();
    // Query strings of the list endpoint, too.
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(
                prop_oneof![
                    Just("status".to_string()),
                    Just("health".to_string()),
                    Just("sort".to_string()),
                    Just("order".to_string()),
                    Just("limit".to_string()),
                    Just("offset".to_string()),
                    Just("q".to_string()),
                    "[a-z_]{1,8}",
                ],
                ".{0,20}",
            ),
            |(key, value)| {
                let (status, text) = rt.block_on(async {
                    let r = http
                        .get(format!("{}/api/v1/agents", console.url))
                        .query(&[(key.as_str(), value.as_str())])
                        .bearer_auth(&token)
                        .send()
                        .await
                        .unwrap();
                    (r.status().as_u16(), r.text().await.unwrap_or_default())
                });
                prop_assert!(
                    status == 200 || status == 400,
                    "?{key}={value:?} gave {status}: {text}"
                );
                let parsed: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                    TestCaseError::fail(format!("?{key}={value:?}: non-JSON answer {e}: {text}"))
                })?;
                if status == 400 {
                    prop_assert!(parsed["error"]["code"].is_string(), "{text}");
                }
                Ok(())
            },
        )
        .unwrap();
    let (status, _) = rt.block_on(async {
        let r = http
            .get(format!("{}/healthz", console.url))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), ())
    });
    assert_eq!(status, 200, "the console is still up");
}

/// A client that sends headers and then stalls its body (slowloris) is cut off with 408 by the
/// request timeout, instead of holding a connection and a handler forever.
#[tokio::test]
async fn a_request_whose_body_never_arrives_times_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let console = Console::start(&[]);
    let address = console.url.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    stream
        .write_all(
            b"POST /agent-api/v1/enroll HTTP/1.1\r\nHost: console\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"enroll",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    // The bound only keeps a broken console from hanging the suite; the console's limit is 30 s.
    tokio::time::timeout(std::time::Duration::from_secs(120), async {
        while !answer.windows(2).any(|w| w == b"\r\n") {
            let n = stream.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("the console never answered the stalled request");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

/// A client that holds a connection without a request, or stops halfway through its request head,
/// is closed after `--idle-timeout`, so idle clients cannot use up the console's connections; the
/// counts are at `/metrics`, and the flags refuse values that would break the console.
#[tokio::test]
async fn idle_and_half_sent_connections_are_closed_after_the_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let console = Console::start(&["--idle-timeout", "1s", "--max-connections", "50"]);
    let address = console.url.trim_start_matches("http://").to_string();
    let mut kept = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut answer = [0u8; 1024];
    for _ in 0..2 {
        kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: console\r\n\r\n")
            .await
            .unwrap();
        let n = kept.read(&mut answer).await.unwrap();
        let text = String::from_utf8_lossy(&answer[..n]);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    }
    let mut half = tokio::net::TcpStream::connect(&address).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .await
        .unwrap();
    for stream in [&mut kept, &mut half] {
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(30), stream.read(&mut answer))
                .await
                .expect("the console kept an idle connection open");
        assert!(matches!(read, Ok(0)), "expected the close, got {read:?}");
    }

    let api = Api::new(&console, ADMIN);
    let text = scrape(&console, &api).await;
    assert_eq!(
        value(&text, "hybridsync_http_connections_limit"),
        Some(50.0)
    );
    assert!(
        value(&text, "hybridsync_http_connections_closed_idle_total") >= Some(2.0),
        "{text}"
    );
    assert!(value(&text, "hybridsync_http_connections_accepted_total") >= Some(3.0));
    // The scrape's own connection at least.
    assert!(value(&text, "hybridsync_http_connections") >= Some(1.0));

    let data_dir = console.data_dir_str();
    for (flag, value, message) in [
        (
            "--idle-timeout",
            "500ms",
            "\"500ms\" is too short: give idle connections at least 1s (the default is 5s)",
        ),
        (
            "--max-connections",
            "0",
            "0 would refuse every client: give at least 1",
        ),
        (
            "--max-connections",
            "many",
            "\"many\" is not a number of connections",
        ),
    ] {
        let out = run(
            &[
                "serve",
                "--data-dir",
                &data_dir,
                "--listen",
                "127.0.0.1:0",
                flag,
                value,
            ],
            None,
        );
        assert!(!out.status.success());
        assert!(stderr(&out).contains(message), "{}", stderr(&out));
    }
}
