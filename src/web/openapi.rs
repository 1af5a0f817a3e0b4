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
    let mut doc = base_document();
    if let (Some(paths), Value::Object(more)) = (doc["paths"].as_object_mut(), sync_paths()) {
        paths.extend(more);
    }
    if let (Some(schemas), Value::Object(more)) =
        (doc["components"]["schemas"].as_object_mut(), sync_schemas())
    {
        schemas.extend(more);
    }
    doc
}

fn base_document() -> Value {
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
            "description": "Scripts' access to the console: agents, enrollment tokens, audit log, cloud sync configurations, the synced users and groups, provisioning logs. Authenticate with `Authorization: Bearer hsapi_…` (`hybridsync admin create-api-token`). Global Reader tokens read; Global Administrator and Hybrid Identity Administrator tokens also change."
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

/// Cloud sync: configurations, their operations, users, groups, provisioning logs.
fn sync_paths() -> Value {
    let unauthorized = error_response("No or an invalid API token.");
    let forbidden = error_response("The token's role may read but not change (Global Reader).");
    let not_found = error_response("No such object.");
    let unprocessable = error_response("Invalid values; the message says which and why.");
    let conflict = error_response("Not possible in the configuration's current state.");
    let id_param =
        json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}});
    let paging = [
        json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}}),
        json!({"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}}),
    ];
    let search = json!({"name": "q", "in": "query", "description": "Text in the display name, UPN or DN, or an exact source anchor.", "schema": {"type": "string"}});
    let object_list = json!([search, paging[0], paging[1]]);
    let configuration = json!({"$ref": "#/components/schemas/Configuration"});
    let changes = json!({
        "type": "object", "additionalProperties": false,
        "properties": {
            "password_hash_sync": {"type": "boolean"},
            "scope": {"$ref": "#/components/schemas/Scope"},
            "mappings": {"type": "object", "description": "{\"users\": [Mapping], \"groups\": [Mapping]}"},
            "notification_email": {"type": "string"},
            "prevent_accidental_deletes": {"type": "boolean"},
            "delete_threshold": {"type": "integer", "minimum": 1, "maximum": 150000},
            "interval_seconds": {"type": "integer", "minimum": 1, "maximum": 86400}
        }
    });
    let log_params = json!([
        {"name": "since", "in": "query", "description": "Date (YYYY-MM-DD) or RFC 3339 time.", "schema": {"type": "string"}},
        {"name": "until", "in": "query", "description": "Date (inclusive) or RFC 3339 time (exclusive).", "schema": {"type": "string"}},
        {"name": "status", "in": "query", "schema": {"type": "string", "enum": ["success", "warning", "failure", "skipped"]}},
        {"name": "action", "in": "query", "schema": {"type": "string", "enum": ["create", "update", "delete", "stagedDelete", "skip"]}},
        {"name": "configuration", "in": "query", "schema": {"type": "string"}},
        {"name": "cycle", "in": "query", "schema": {"type": "string"}},
        {"name": "q", "in": "query", "description": "Source anchor, or text in the DN or target name.", "schema": {"type": "string"}},
        paging[0], paging[1]
    ]);
    json!({
        "/configurations": {
            "get": {
                "operationId": "listConfigurations", "summary": "Cloud sync configurations, one per domain",
                "responses": {"200": ok_json("Every configuration.", list_of("Configuration")), "401": unauthorized}
            },
            "post": {
                "operationId": "createConfiguration", "summary": "New configuration for a domain an agent reported (created disabled)",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "type": "object", "additionalProperties": false, "required": ["domain"],
                    "properties": {"domain": {"type": "string"}, "password_hash_sync": {"type": "boolean", "default": false}}
                }}}},
                "responses": {"201": ok_json("The configuration.", configuration.clone()), "401": unauthorized, "403": forbidden, "409": conflict, "422": unprocessable}
            }
        },
        "/configurations/{id}": {
            "get": {
                "operationId": "getConfiguration", "summary": "A configuration with its cycle history, staged deletions and latest preview",
                "parameters": [id_param],
                "responses": {"200": ok_json("The configuration.", configuration.clone()), "401": unauthorized, "404": not_found}
            },
            "patch": {
                "operationId": "updateConfiguration", "summary": "Change scoping filters (DNs checked through an agent), mappings, properties",
                "parameters": [id_param],
                "requestBody": {"required": true, "content": {"application/json": {"schema": changes}}},
                "responses": {"200": ok_json("The configuration.", configuration.clone()), "401": unauthorized, "403": forbidden, "404": not_found, "422": unprocessable}
            },
            "delete": {
                "operationId": "deleteConfiguration", "summary": "Delete the configuration; synced users and groups stay",
                "parameters": [id_param],
                "responses": {"200": ok_json("What went and what stays.", json!({"type": "object", "properties": {"deleted": {"type": "string"}, "domain": {"type": "string"}, "message": {"type": "string"}}})), "401": unauthorized, "403": forbidden, "404": not_found}
            }
        },
        "/configurations/{id}/{operation}": {"post": {
            "operationId": "operateConfiguration", "summary": "enable, disable, sync-now, restart, allow-deletes, clear-quarantine, or preview (waits up to 25 s for the dry run; 202 if it is still running)",
            "parameters": [id_param, {"name": "operation", "in": "path", "required": true, "schema": {"type": "string", "enum": ["enable", "disable", "sync-now", "restart", "allow-deletes", "clear-quarantine", "preview"]}}],
            "responses": {"200": ok_json("The configuration after the operation, or the preview.", json!({"type": "object"})), "202": ok_json("The preview is still running.", json!({"type": "object"})), "401": unauthorized, "403": forbidden, "404": not_found, "409": conflict, "502": error_response("The agent's dry run failed.")}
        }},
        "/configurations/{id}/provision-on-demand": {"post": {
            "operationId": "provisionOnDemand", "summary": "Read one object through the domain's agent now and sync it: Import, Determine if in scope, Match, Perform action",
            "parameters": [id_param],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["dn"], "additionalProperties": false, "properties": {"dn": {"type": "string"}}}}}},
            "responses": {"200": ok_json("The steps and the action.", json!({"type": "object", "properties": {"agent": {"type": "string"}, "outcome": {"type": "object"}}})), "401": unauthorized, "403": forbidden, "404": not_found, "422": unprocessable}
        }},
        "/users": {"get": {
            "operationId": "listUsers", "summary": "Synced users", "parameters": object_list,
            "responses": {"200": ok_json("A page of users.", list_of("DirectoryObject")), "400": error_response("Invalid paging."), "401": unauthorized}
        }},
        "/users/{id}": {"get": {
            "operationId": "getUser", "summary": "A synced user with its groups (related)", "parameters": [id_param],
            "responses": {"200": ok_json("The user.", json!({"$ref": "#/components/schemas/DirectoryObject"})), "401": unauthorized, "404": not_found}
        }},
        "/groups": {"get": {
            "operationId": "listGroups", "summary": "Synced groups", "parameters": object_list,
            "responses": {"200": ok_json("A page of groups.", list_of("DirectoryObject")), "400": error_response("Invalid paging."), "401": unauthorized}
        }},
        "/groups/{id}": {"get": {
            "operationId": "getGroup", "summary": "A synced group with its members (related)", "parameters": [id_param],
            "responses": {"200": ok_json("The group.", json!({"$ref": "#/components/schemas/DirectoryObject"})), "401": unauthorized, "404": not_found}
        }},
        "/provisioning-logs": {"get": {
            "operationId": "listProvisioningLogs", "summary": "A row per object action, newest first", "parameters": log_params,
            "responses": {"200": ok_json("A page of entries.", list_of("ProvisioningLog")), "400": error_response("An invalid filter; the message says which."), "401": unauthorized}
        }},
        "/provisioning-logs/{id}": {"get": {
            "operationId": "getProvisioningLog", "summary": "One entry with its steps and modified properties",
            "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}],
            "responses": {"200": ok_json("The entry.", json!({"$ref": "#/components/schemas/ProvisioningLog"})), "400": error_response("The id is not a number."), "401": unauthorized, "404": not_found}
        }},
        "/password-reset/on-premises-integration": {
            "get": {
                "operationId": "getOnPremisesIntegration", "summary": "Password reset > On-premises integration: the three options and the integration's state",
                "responses": {"200": ok_json("The options and state.", json!({"$ref": "#/components/schemas/OnPremisesIntegration"})), "401": unauthorized}
            },
            "put": {
                "operationId": "putOnPremisesIntegration", "summary": "Save the three options (Global Administrator, Hybrid Identity Administrator); audited",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "type": "object", "additionalProperties": false,
                    "required": ["enable_writeback", "use_cloud_sync", "allow_unlock_without_reset"],
                    "properties": {"enable_writeback": {"type": "boolean"}, "use_cloud_sync": {"type": "boolean"}, "allow_unlock_without_reset": {"type": "boolean"}}
                }}}},
                "responses": {"200": ok_json("The options and state.", json!({"$ref": "#/components/schemas/OnPremisesIntegration"})), "401": unauthorized, "403": forbidden, "422": error_response("Write back passwords with cloud sync needs an installed agent.")}
            }
        },
        "/users/{id}/reset-password": {"post": {
            "operationId": "resetPassword", "summary": "Reset a synced user's on-premises password through an agent (answers once the directory confirmed)",
            "parameters": [id_param],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["new_password"], "additionalProperties": false, "properties": {
                "new_password": {"type": "string", "maxLength": 256}, "must_change_at_next_sign_in": {"type": "boolean", "default": false}
            }}}}},
            "responses": {"200": ok_json("Done, and by which agent.", json!({"$ref": "#/components/schemas/WritebackDone"})), "401": unauthorized, "403": forbidden, "404": not_found, "409": error_response("Writeback is off."), "422": error_response("The on-premises password policy refused the password."), "502": error_response("The agents failed (the message says how)."), "503": error_response("No healthy agent serves the user's domain."), "504": error_response("No agent finished within 90 s.")}
        }},
        "/users/{id}/unlock": {"post": {
            "operationId": "unlockUser", "summary": "Unlock a synced user's on-premises account through an agent",
            "parameters": [id_param],
            "responses": {"200": ok_json("Done, and by which agent.", json!({"$ref": "#/components/schemas/WritebackDone"})), "401": unauthorized, "403": forbidden, "404": not_found, "409": error_response("Writeback is off."), "502": error_response("The agents failed."), "503": error_response("No healthy agent serves the user's domain."), "504": error_response("No agent finished within 90 s.")}
        }},
        "/expressions/test": {"post": {
            "operationId": "testExpression", "summary": "Evaluate a mapping expression on sample values (the expression builder's Test expression)",
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["expression"], "additionalProperties": false, "properties": {
                "expression": {"type": "string"}, "sample": {"type": "object", "additionalProperties": {}}
            }}}}},
            "responses": {"200": ok_json("The output (null for no value) and the attributes it reads.", json!({"type": "object", "properties": {"output": {"type": ["string", "null"]}, "attributes": {"type": "array", "items": {"type": "string"}}}})), "401": unauthorized, "422": unprocessable}
        }}
    })
}

fn sync_schemas() -> Value {
    json!({
        "Scope": {"type": "object", "required": ["mode"], "properties": {
            "mode": {"type": "string", "enum": ["all_users", "groups", "ous"]},
            "entries": {"type": "array", "maxItems": 50, "items": {"type": "object", "required": ["dn"], "properties": {"dn": {"type": "string"}, "anchor": {"type": "string"}}}}
        }},
        "Configuration": {"type": "object", "required": ["id", "domain", "status", "enabled"], "properties": {
            "id": {"type": "string"}, "domain": {"type": "string"}, "dialect": {"type": "string", "enum": ["active-directory", "openldap"]},
            "status": {"type": "object", "properties": {"code": {"type": "string", "enum": ["NotRun", "Active", "Paused", "Quarantine"]}, "text": {"type": "string"}}},
            "enabled": {"type": "boolean"}, "password_hash_sync": {"type": "boolean"},
            "password_hash_sync_note": {"type": ["string", "null"]},
            "scope": {"$ref": "#/components/schemas/Scope"}, "mappings": {"type": "object"},
            "notification_email": {"type": ["string", "null"]}, "prevent_accidental_deletes": {"type": "boolean"},
            "delete_threshold": {"type": "integer"}, "interval_seconds": {"type": "integer"},
            "leader": {"type": ["object", "null"]}, "last_cycle": {"type": ["object", "null"]},
            "quarantine": {"type": ["object", "null"]}, "staged_deletes": {"type": "integer"},
            "users": {"type": "integer"}, "groups": {"type": "integer"}
        }},
        "DirectoryObject": {"type": "object", "required": ["id", "kind", "anchor", "dn"], "properties": {
            "id": {"type": "string"}, "kind": {"type": "string", "enum": ["user", "group"]}, "domain": {"type": "string"},
            "anchor": {"type": "string"}, "dn": {"type": "string"}, "display_name": {"type": ["string", "null"]},
            "user_principal_name": {"type": ["string", "null"]}, "account_enabled": {"type": ["boolean", "null"]},
            "password_hash_synced": {"type": "boolean"}, "attributes": {"type": "object"},
            "related": {"type": "array", "items": {"type": "object"}}
        }},
        "OnPremisesIntegration": {"type": "object", "required": ["enable_writeback", "use_cloud_sync", "allow_unlock_without_reset", "ok"], "properties": {
            "enable_writeback": {"type": "boolean"}, "use_cloud_sync": {"type": "boolean"}, "allow_unlock_without_reset": {"type": "boolean"},
            "agents_detected": {"type": "boolean"}, "ok": {"type": "boolean"}, "message": {"type": "string"},
            "domains": {"type": "array", "items": {"type": "object"}},
            "updated_at": {"type": ["string", "null"], "format": "date-time"}, "updated_by": {"type": ["string", "null"]}
        }},
        "WritebackDone": {"type": "object", "required": ["ok", "agent", "message"], "properties": {
            "ok": {"type": "boolean"}, "agent": {"type": "string"}, "locked": {"type": ["boolean", "null"]}, "message": {"type": "string"}
        }},
        "ProvisioningLog": {"type": "object", "required": ["id", "at", "action", "status"], "properties": {
            "id": {"type": "integer"}, "at": {"type": "string", "format": "date-time"}, "cycle_id": {"type": ["string", "null"]},
            "configuration_id": {"type": ["string", "null"]}, "domain": {"type": "string"}, "object_kind": {"type": "string"},
            "source": {"type": "object"}, "target": {"type": "object"},
            "action": {"type": "string", "enum": ["create", "update", "delete", "stagedDelete", "skip"]},
            "status": {"type": "string", "enum": ["success", "warning", "failure", "skipped"]},
            "modified_properties": {"type": "array"}, "steps": {"type": "array"},
            "error": {"type": ["string", "null"]}, "recommendation": {"type": ["string", "null"]}, "duration_ms": {"type": "integer"}
        }}
    })
}
