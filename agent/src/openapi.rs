//! The agent API's OpenAPI 3.0 document, built from the wire types themselves: every
//! schema comes from `faultline_spec::wire` through `schemars`, so the document cannot
//! drift from what the agent decodes and answers. Served at `GET /v1/openapi.json` and
//! committed as `docs/agent-openapi.json` (a test keeps the two equal).

use std::sync::OnceLock;

use faultline_spec::wire::{
    ApiError, Capabilities, FaultList, FaultRequest, FaultState, RenewRequest,
};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Value, json};

/// The answer to `POST /v1/faults?dryRun=true`: the request would be applied by `backend`.
#[derive(Debug, serde::Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckAnswer<'a> {
    /// Always `true`.
    pub dry_run: bool,
    /// The fault id of the request.
    pub id: &'a str,
    /// The backend that would apply it.
    pub backend: &'a str,
}

/// The document as served: pretty JSON with a final newline, built once.
pub fn document_bytes() -> &'static [u8] {
    static DOC: OnceLock<Vec<u8>> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut bytes = serde_json::to_vec_pretty(&document()).expect("the document serializes");
        bytes.push(b'\n');
        bytes
    })
}

/// A JSON body of `schema`.
fn json_body(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

/// The documented answers of one operation: its successes plus an `ApiError` body for each
/// error status, with what that status means there.
fn responses(ok: &[(u16, Value)], errors: &[(u16, &str)], error: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for (status, body) in ok {
        out.insert(status.to_string(), body.clone());
    }
    for (status, why) in errors {
        out.insert(status.to_string(), json_body(why, error.clone()));
    }
    Value::Object(out)
}

/// A `$ref` to `T`'s schema, which `generator` keeps for `components.schemas`.
fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    serde_json::to_value(generator.subschema_for::<T>()).expect("schemas serialize")
}

/// The OpenAPI 3.0.3 document of the agent API v1.
pub fn document() -> Value {
    let mut generator: SchemaGenerator = SchemaSettings::openapi3().into_generator();
    let fault_request = schema_of::<FaultRequest>(&mut generator);
    let renew = schema_of::<RenewRequest>(&mut generator);
    let state = schema_of::<FaultState>(&mut generator);
    let list = schema_of::<FaultList>(&mut generator);
    let caps = schema_of::<Capabilities>(&mut generator);
    let check = schema_of::<CheckAnswer<'_>>(&mut generator);
    let error = schema_of::<ApiError>(&mut generator);
    let schemas = generator.take_definitions(true);

    const UNAUTHORIZED: (u16, &str) = (401, "`unauthorized`: no valid bearer token");
    let id = json!([{"name": "id", "in": "path", "required": true,
        "description": "The fault id chosen by the controller.", "schema": {"type": "string"}}]);
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Faultline agent API",
            "version": "v1",
            "description": "The node agent's API (docs/agent.md). Every /v1 call needs `Authorization: Bearer <token>`; /healthz and /metrics are open. Every error is an ApiError JSON body."
        },
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": {
                "operationId": "health",
                "summary": "Liveness: `ok`.",
                "security": [],
                "responses": {"200": {"description": "the agent serves",
                    "content": {"text/plain": {"schema": {"type": "string"}}}}}
            }},
            "/metrics": {"get": {
                "operationId": "metrics",
                "summary": "OpenMetrics counters per fault kind; never targets or ids.",
                "security": [],
                "responses": {"200": {"description": "OpenMetrics text",
                    "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}}}
            }},
            "/v1/openapi.json": {"get": {
                "operationId": "openapi",
                "summary": "This document.",
                "responses": responses(&[(200, json_body("the OpenAPI document", json!({"type": "object"})))], &[UNAUTHORIZED], &error)
            }},
            "/v1/faults": {
                "post": {
                    "operationId": "applyFault",
                    "summary": "Apply a fault under a lease; idempotent on `id`. With `dryRun=true`, only check that it would be applied.",
                    "parameters": [{"name": "dryRun", "in": "query", "required": false,
                        "description": "Check the request as the apply would, change nothing.",
                        "schema": {"type": "boolean"}}],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": fault_request}}},
                    "responses": responses(
                        &[(201, json_body("applied (or the replayed state of an earlier apply of this id)", state.clone())),
                          (200, json_body("dry run: it would be applied by `backend`", check))],
                        &[(400, "`malformed`: not JSON, not the request's shape, or an unknown query"),
                          UNAUTHORIZED,
                          (403, "`protected`: the target is one the agent never touches"),
                          (409, "`conflict`: the id is taken by a different request"),
                          (422, "`invalid`, `unknown_fault_kind`, `unsupported` or `target_not_found`"),
                          (500, "`apply_failed` or `journal`: the host refused the change; nothing is left applied")],
                        &error)
                },
                "get": {
                    "operationId": "listFaults",
                    "summary": "Active faults, their leases and effects so far.",
                    "responses": responses(&[(200, json_body("the active faults", list))], &[UNAUTHORIZED], &error)
                }
            },
            "/v1/faults/{id}": {
                "parameters": id,
                "get": {
                    "operationId": "getFault",
                    "summary": "One fault, active or finished.",
                    "responses": responses(&[(200, json_body("the fault", state.clone()))],
                        &[UNAUTHORIZED, (404, "`not_found`: no fault with this id")], &error)
                },
                "delete": {
                    "operationId": "revertFault",
                    "summary": "Revert a fault; idempotent.",
                    "responses": responses(
                        &[(200, json_body("reverted: the final state and effect", state.clone())),
                          (204, json!({"description": "no fault with this id is known"}))],
                        &[UNAUTHORIZED, (500, "`apply_failed`: the host refused the revert")], &error)
                }
            },
            "/v1/faults/{id}/renew": {
                "parameters": id,
                "post": {
                    "operationId": "renewFault",
                    "summary": "Extend a fault's lease to `ttl` from now.",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": renew}}},
                    "responses": responses(&[(200, json_body("renewed", state))],
                        &[(400, "`malformed`: not the renew body's shape"), UNAUTHORIZED,
                          (404, "`not_found`: no fault with this id"),
                          (409, "`not_active`: reverted or expired"),
                          (422, "`invalid`: a zero ttl"),
                          (500, "`apply_failed` or `renew_failed`: a kernel-enforced lease could not be extended")],
                        &error)
                }
            },
            "/v1/capabilities": {"get": {
                "operationId": "capabilities",
                "summary": "What this host can do: the controller's preflight.",
                "responses": responses(&[(200, json_body("the capabilities", caps))], &[UNAUTHORIZED], &error)
            }}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed_path() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/agent-openapi.json")
    }

    /// The committed document is the one the code builds; `UPDATE_EXPECTED=1` rewrites it.
    #[test]
    fn the_committed_document_is_the_served_one() {
        let built = std::str::from_utf8(document_bytes()).unwrap();
        if std::env::var_os("UPDATE_EXPECTED").is_some() {
            std::fs::write(committed_path(), built).unwrap();
        }
        let committed = std::fs::read_to_string(committed_path()).unwrap();
        assert!(
            committed == built,
            "docs/agent-openapi.json differs from the code's document: run `UPDATE_EXPECTED=1 cargo test -p faultline-agent --lib openapi`"
        );
    }

    /// Every `$ref` resolves, and every route the agent serves is documented with the
    /// method it takes.
    #[test]
    fn every_reference_resolves_and_every_route_is_documented() {
        let doc = document();
        let text = doc.to_string();
        for piece in text.split("\"$ref\":\"").skip(1) {
            let target = &piece[..piece.find('"').unwrap()];
            let name = target.strip_prefix("#/components/schemas/").unwrap();
            assert!(doc["components"]["schemas"].get(name).is_some(), "{target}");
        }
        for (method, path) in [
            ("get", "/healthz"),
            ("get", "/metrics"),
            ("get", "/v1/openapi.json"),
            ("post", "/v1/faults"),
            ("get", "/v1/faults"),
            ("get", "/v1/faults/{id}"),
            ("delete", "/v1/faults/{id}"),
            ("post", "/v1/faults/{id}/renew"),
            ("get", "/v1/capabilities"),
        ] {
            let op = &doc["paths"][path][method];
            assert!(op.is_object(), "{method} {path}");
            let concrete = path.replace("{id}", "f-1");
            assert!(
                faultline_spec::wire::Route::of(&method.to_uppercase(), &concrete).is_ok(),
                "{method} {path} is documented but not routed"
            );
        }
    }
}
