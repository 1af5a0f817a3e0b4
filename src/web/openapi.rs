//! The OpenAPI 3.1 description of `/api/v1`, served at `/api/v1/openapi.json` without sign-in (it
//! describes the API, it exposes no data). Written by hand next to the handlers in `api.rs`; an
//! integration test checks it lists every `/api/v1` route of the router.

use axum::Json;
use serde_json::{json, Value};

/// `GET /api/v1/openapi.json`.
pub async fn openapi_json() -> Json<Value> {
    Json(document())
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn list_of(item: &str) -> Value {
    json!({
        "type": "object",
        "required": ["items", "total"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{item}")}},
            "total": {"type": "integer", "minimum": 0}
        }
    })
}

fn ok_json(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

/// The document itself.
pub fn document() -> Value {
    let unauthorized = error_response("No or an invalid API token.");
    let forbidden = error_response("The token's role may read but not change (Global Reader).");
    let not_found = error_response("No such object.");
    let bad_request = error_response("Invalid query or path parameters.");
    let paging = json!([
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}},
        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}}
    ]);
    let id_param =
        json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}});
    let token_id_param =
        json!({"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}});
    let mut agents_params = vec![
        json!({"name": "status", "in": "query", "schema": {"type": "string", "enum": ["active", "inactive", "all"]}}),
        json!({"name": "health", "in": "query", "schema": {"type": "string", "enum": ["healthy", "degraded", "unhealthy"]}}),
        json!({"name": "q", "in": "query", "description": "Text in the machine name, IP or id.", "schema": {"type": "string"}}),
        json!({"name": "sort", "in": "query", "schema": {"type": "string", "enum": ["machine_name", "last_heartbeat", "health", "status", "version"]}}),
        json!({"name": "order", "in": "query", "schema": {"type": "string", "enum": ["asc", "desc"]}}),
    ];
    agents_params.extend(paging.as_array().cloned().unwrap_or_default());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "hybridsync console API",
            "version": crate::protocol::VERSION,
            "description": "Scripts' access to the console: agents, enrollment tokens, audit log. Authenticate with `Authorization: Bearer hsapi_…` (`hybridsync admin create-api-token`). Global Reader tokens read; Global Administrator and Hybrid Identity Administrator tokens also change."
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": {
            "/agents": {"get": {
                "operationId": "listAgents", "summary": "List agents",
                "parameters": agents_params,
                "responses": {"200": ok_json("A page of agents.", list_of("Agent")), "400": bad_request, "401": unauthorized}
            }},
            "/agents/{id}": {
                "get": {
                    "operationId": "getAgent", "summary": "One agent", "parameters": [id_param],
                    "responses": {"200": ok_json("The agent.", json!({"$ref": "#/components/schemas/Agent"})), "401": unauthorized, "404": not_found}
                },
                "delete": {
                    "operationId": "deleteAgent", "summary": "Delete an inactive agent (any agent with force=true)",
                    "parameters": [id_param, {"name": "force", "in": "query", "schema": {"type": "boolean", "default": false}}],
                    "responses": {"204": {"description": "Deleted."}, "401": unauthorized, "403": forbidden, "404": not_found, "409": error_response("The agent is active; use force=true.")}
                }
            },
            "/agents/{id}/check": {"post": {
                "operationId": "checkAgent", "summary": "Poll the agent's health endpoint now", "parameters": [id_param],
                "responses": {"200": ok_json("The poll's outcome and the agent after it.", json!({
                    "type": "object", "required": ["ok", "message", "agent"],
                    "properties": {"ok": {"type": "boolean"}, "message": {"type": "string"}, "agent": {"$ref": "#/components/schemas/Agent"}}
                })), "401": unauthorized, "404": not_found}
            }},
            "/enrollment-tokens": {
                "get": {
                    "operationId": "listEnrollmentTokens", "summary": "List enrollment tokens (never their values)", "parameters": paging,
                    "responses": {"200": ok_json("A page of tokens.", list_of("EnrollmentToken")), "400": bad_request, "401": unauthorized}
                },
                "post": {
                    "operationId": "createEnrollmentToken", "summary": "Create an enrollment token (its value is returned once)",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {
                        "type": "object", "additionalProperties": false,
                        "properties": {
                            "expires_in": {"type": "string", "description": "A duration such as 24h or 7d.", "default": "24h"},
                            "max_uses": {"type": "integer", "minimum": 1, "default": 1}
                        }
                    }}}},
                    "responses": {
                        "201": ok_json("The new token.", json!({"allOf": [
                            {"$ref": "#/components/schemas/EnrollmentToken"},
                            {"type": "object", "required": ["token", "install_command"], "properties": {"token": {"type": "string"}, "install_command": {"type": "string"}}}
                        ]})),
                        "400": error_response("Malformed JSON."), "401": unauthorized, "403": forbidden,
                        "413": error_response("The body is larger than 64 KiB."),
                        "415": error_response("The body is not application/json."),
                        "422": error_response("Invalid values.")
                    }
                }
            },
            "/enrollment-tokens/{id}": {"delete": {
                "operationId": "revokeEnrollmentToken", "summary": "Revoke an enrollment token", "parameters": [token_id_param],
                "responses": {"200": ok_json("The revoked token.", json!({"$ref": "#/components/schemas/EnrollmentToken"})), "400": bad_request, "401": unauthorized, "403": forbidden, "404": not_found, "409": error_response("Already revoked.")}
            }},
            "/audit-log": {"get": {
                "operationId": "listAuditLog", "summary": "Every change: who, what, when, target, before and after", "parameters": paging,
                "responses": {"200": ok_json("A page of entries, newest first.", list_of("AuditEntry")), "400": bad_request, "401": unauthorized}
            }},
            "/openapi.json": {"get": {
                "operationId": "openapi", "summary": "This document", "security": [],
                "responses": {"200": {"description": "The OpenAPI description.", "content": {"application/json": {}}}}
            }}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "An API token, hsapi_…"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}
                }}},
                "HealthCheck": {"type": "object", "required": ["name", "status", "message"], "properties": {
                    "name": {"type": "string"}, "status": {"type": "string", "enum": ["pass", "warn", "fail"]}, "message": {"type": "string"}
                }},
                "Agent": {"type": "object", "required": ["id", "machine_name", "status", "health"], "properties": {
                    "id": {"type": "string"}, "machine_name": {"type": "string"}, "external_ip": {"type": "string"},
                    "version": {"type": "string"}, "extension": {"type": "string"}, "environment": {"type": "string"},
                    "domains": {"type": "array", "items": {"type": "string"}},
                    "status": {"type": "string", "enum": ["active", "inactive"]}, "status_since": {"type": "string", "format": "date-time"},
                    "health": {"type": "string", "enum": ["healthy", "degraded", "unhealthy"]}, "health_reason": {"type": "string"},
                    "health_since": {"type": "string", "format": "date-time"}, "registered_at": {"type": "string", "format": "date-time"},
                    "last_heartbeat_at": {"type": ["string", "null"], "format": "date-time"},
                    "heartbeat_interval_seconds": {"type": "integer"}, "uptime_seconds": {"type": ["integer", "null"]},
                    "api_url": {"type": ["string", "null"]}, "last_poll_at": {"type": ["string", "null"], "format": "date-time"},
                    "last_poll_error": {"type": ["string", "null"]},
                    "checks": {"type": "array", "items": {"$ref": "#/components/schemas/HealthCheck"}}
                }},
                "EnrollmentToken": {"type": "object", "required": ["id", "state"], "properties": {
                    "id": {"type": "integer"}, "created_by": {"type": "string"},
                    "created_at": {"type": "string", "format": "date-time"}, "expires_at": {"type": "string", "format": "date-time"},
                    "max_uses": {"type": "integer"}, "uses": {"type": "integer"}, "uses_left": {"type": "integer"},
                    "state": {"type": "string"}, "revoked_at": {"type": ["string", "null"], "format": "date-time"},
                    "revoked_by": {"type": ["string", "null"]}
                }},
                "AuditEntry": {"type": "object", "required": ["id", "at", "actor", "action"], "properties": {
                    "id": {"type": "integer"}, "at": {"type": "string", "format": "date-time"}, "actor": {"type": "string"},
                    "action": {"type": "string"}, "target_type": {"type": "string"}, "target_id": {"type": "string"},
                    "before": {}, "after": {}
                }}
            }
        }
    })
}
