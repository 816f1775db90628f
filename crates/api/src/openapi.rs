//! The OpenAPI 3.1 document, written out by hand: the API is small, and a
//! hand-kept document is checked against the router by a test (every route
//! here answers; every path the router serves is here).

use serde_json::{json, Value};

fn op(summary: &str, tag: &str, body: Option<&str>, ok: &str) -> Value {
    let mut o = json!({
        "summary": summary,
        "tags": [tag],
        "security": [{"bearer": []}],
        "responses": {
            ok: {"description": "success", "content": {"application/json": {}}},
            "400": {"$ref": "#/components/responses/Error"},
            "401": {"$ref": "#/components/responses/Error"},
            "403": {"$ref": "#/components/responses/Error"},
            "404": {"$ref": "#/components/responses/Error"},
            "409": {"$ref": "#/components/responses/Error"}
        }
    });
    if let Some(schema) = body {
        o["requestBody"] = json!({"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    }
    o
}

fn name_param() -> Value {
    json!([{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}])
}

/// An operation that needs no token.
fn public(mut o: Value) -> Value {
    o.as_object_mut().unwrap().remove("security");
    o
}

fn id_param() -> Value {
    json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}])
}

pub fn document() -> Value {
    let mut login = op(
        "Log in with user and password; returns a bearer token",
        "auth",
        Some("Login"),
        "200",
    );
    login.as_object_mut().unwrap().remove("security");
    login["responses"]["429"] = json!({"$ref": "#/components/responses/Error"});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "jitgate API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Just-in-time privileged access for PostgreSQL: requests, approvals, grants, audit."},
        "paths": {
            "/api/v1/login": {"post": login},
            "/api/v1/logout": {"post": op("Revoke the caller's token", "auth", None, "204")},
            "/api/v1/me": {"get": op("The caller's effective policy: what they may request and approve", "auth", None, "200")},
            "/api/v1/login/oidc": {"get": public(op("The identity providers to sign in with, and whether passwords work", "sso", None, "200"))},
            "/api/v1/login/oidc/{name}/device": {"post": public(op("Start a device-flow sign-in: a user code, where to enter it, and a handle to poll with", "sso", None, "200")), "parameters": name_param()},
            "/api/v1/login/oidc/{name}/device/token": {"post": public(op("Poll a device-flow sign-in (202 pending; 200 with a token once signed in; 410 expired)", "sso", Some("Handle"), "200")), "parameters": name_param()},
            "/api/v1/login/oidc/loopback": {"post": public(op("Trade a loopback sign-in's one-time code and verifier for a token", "sso", Some("Loopback"), "200"))},
            "/api/v1/connection-secret": {
                "post": op("A connection secret for database clients (people signed in through an identity provider); replaces the previous one", "sso", None, "200"),
                "delete": op("Revoke the caller's connection secret (answers the user and the gateway's address)", "sso", None, "200")
            },
            "/api/v1/connection-secret/{user}": {"delete": op("Revoke someone's connection secret (admins)", "sso", None, "200"),
                "parameters": [{"name": "user", "in": "path", "required": true, "schema": {"type": "string"}}]},
            "/api/v1/requests": {
                "get": op("Requests visible to the caller (filters: state, mine)", "requests", None, "200"),
                "post": op("File a request (returns the pending one if it exists)", "requests", Some("FileRequest"), "201")
            },
            "/api/v1/requests/{id}": {"get": op("One request", "requests", None, "200"), "parameters": id_param()},
            "/api/v1/requests/{id}/approve": {"post": op("Approve the current stage", "requests", Some("Comment"), "200"), "parameters": id_param()},
            "/api/v1/requests/{id}/deny": {"post": op("Deny (ends the request)", "requests", Some("Comment"), "200"), "parameters": id_param()},
            "/api/v1/requests/{id}/cancel": {"post": op("Withdraw one's own pending request", "requests", None, "200"), "parameters": id_param()},
            "/api/v1/grants": {"get": op("Grants visible to the caller (filter: active)", "grants", None, "200")},
            "/api/v1/grants/{id}": {"get": op("One grant", "grants", None, "200"), "parameters": id_param()},
            "/api/v1/grants/{id}/revoke": {"post": op("End a grant (approvers of its role, admins)", "grants", Some("Reason"), "200"), "parameters": id_param()},
            "/api/v1/grants/{id}/relinquish": {"post": op("Give up one's own grant", "grants", None, "200"), "parameters": id_param()},
            "/api/v1/audit": {"get": op("Audit events, newest first (filters: actor, kind, since, limit)", "audit", None, "200")},
            "/api/v1/audit/verify": {"get": op("Verify the hash chain; names the first bad event", "audit", None, "200")},
            "/api/v1/audit/export": {"get": op("All events as JSON lines, oldest first", "audit", None, "200")},
            "/api/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}},
            "/healthz": {"get": {"summary": "Liveness, including the state store", "responses": {"200": {"description": "ok"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition"}}}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object",
                    "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
                "Login": {"type": "object", "required": ["user", "password"], "additionalProperties": false,
                    "properties": {"user": {"type": "string"}, "password": {"type": "string"}}},
                "FileRequest": {"type": "object", "required": ["role", "database"], "additionalProperties": false,
                    "properties": {"role": {"type": "string"}, "database": {"type": "string"}, "reason": {"type": "string"},
                                   "duration": {"type": "string", "examples": ["30m"]}, "statement": {"type": "string"}}},
                "Comment": {"type": "object", "additionalProperties": false, "properties": {"comment": {"type": "string"}}},
                "Reason": {"type": "object", "additionalProperties": false, "properties": {"reason": {"type": "string"}}},
                "Handle": {"type": "object", "required": ["handle"], "additionalProperties": false, "properties": {"handle": {"type": "string"}}},
                "Loopback": {"type": "object", "required": ["code", "verifier"], "additionalProperties": false,
                    "properties": {"code": {"type": "string"}, "verifier": {"type": "string"}}}
            }
        }
    })
}
