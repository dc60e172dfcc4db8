//! The OpenAPI document: generated from the handlers' annotations, then completed here
//! with what every operation shares, so that no handler has to repeat it and none can
//! forget it — the error answers each kind of operation can give, a description for every
//! answer, and operation ids that are unique across the API. A test validates the
//! result as OpenAPI 3.1, and CI fuzzes the server against it.

use serde_json::{Map, Value, json};

/// Why each error status can be answered, by what makes an operation able to answer it.
const ALWAYS: &[(&str, &str)] = &[
    (
        "400",
        "The request is malformed: a path, query or header value that cannot be parsed, or a NUL character anywhere.",
    ),
    (
        "503",
        "The database is unavailable, or the request took longer than the server's request timeout; try again after `Retry-After` seconds.",
    ),
];
const AUTHENTICATED: &[(&str, &str)] = &[
    (
        "401",
        "No credentials, or a token or session that is unknown, revoked, expired or whose user is disabled.",
    ),
    (
        "403",
        "The caller's role is too low for this operation, or a cookie-authenticated change came from another origin.",
    ),
];
const WITH_PATH: &[(&str, &str)] = &[("404", "Nothing exists at this path.")];
const WITH_BODY: &[(&str, &str)] = &[
    ("413", "The body is larger than the server accepts."),
    ("415", "The body is not `application/json`."),
    (
        "422",
        "The body is well-formed but not acceptable: it is not a JSON object, does not match its schema, or breaks a rule the schema cannot state.",
    ),
];

const WITH_QUERY: &[(&str, &str)] = &[(
    "422",
    "A query value is well-formed but not acceptable, such as a cursor the server did not issue.",
)];

fn has_query(op: &Map<String, Value>) -> bool {
    op.get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"))
}

/// Completes `doc` (see the module docs).
pub fn complete(doc: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(doc).unwrap_or(Value::Null);
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return doc;
    };
    let mut ids: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for item in paths.values() {
        for op in operations(item) {
            if let Some(id) = op.get("operationId").and_then(Value::as_str) {
                *ids.entry(id.to_owned()).or_default() += 1;
            }
        }
    }
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            if !is_method(method) {
                continue;
            }
            let Some(op) = op.as_object_mut() else {
                continue;
            };
            // `list` and `show` are each a handler's name in five modules: the tag makes
            // them unique.
            let id = op
                .get("operationId")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if let Some(id) = id.filter(|id| ids.get(id).is_some_and(|n| *n > 1)) {
                let tag = op["tags"][0].as_str().unwrap_or(method).replace('-', "_");
                op.insert("operationId".into(), json!(format!("{tag}_{id}")));
            }
            if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
                params.iter_mut().for_each(digits_only);
            }
            let public = op
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|s| s.iter().all(|r| r.as_object().is_some_and(Map::is_empty)));
            let mut errors: Vec<(&str, &str)> = ALWAYS.to_vec();
            if !public {
                errors.extend_from_slice(AUTHENTICATED);
            }
            if path.contains('{') {
                errors.extend_from_slice(WITH_PATH);
            }
            if op.contains_key("requestBody") {
                errors.extend_from_slice(WITH_BODY);
            } else if has_query(op) {
                errors.extend_from_slice(WITH_QUERY);
            }
            let responses = op
                .entry("responses")
                .or_insert_with(|| json!({}))
                .as_object_mut();
            let Some(responses) = responses else {
                continue;
            };
            for (status, why) in errors {
                responses
                    .entry(status)
                    .or_insert_with(|| error_response(why));
            }
            for (status, response) in responses.iter_mut() {
                if let Some(r) = response.as_object_mut() {
                    if !r.contains_key("description") {
                        r.insert("description".into(), json!(reason(status)));
                    }
                    // Every error answer has the one error shape, whether its handler
                    // named the body or not.
                    if (status.starts_with('4') || status.starts_with('5'))
                        && !r.contains_key("content")
                    {
                        r.insert("content".into(), error_content());
                    }
                    if matches!(status.as_str(), "429" | "503") {
                        r.entry("headers").or_insert_with(retry_after);
                    }
                }
            }
        }
    }
    doc
}

/// An integer in a path or query is text: documented as the digits the server parses,
/// so that `4.0` — an integer to JSON Schema, not to the server — is not offered as one.
fn digits_only(param: &mut Value) {
    let Some(schema) = param.get_mut("schema").and_then(Value::as_object_mut) else {
        return;
    };
    let integer = match schema.get("type") {
        Some(Value::String(t)) => t == "integer",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "integer"),
        _ => false,
    };
    if !integer {
        return;
    }
    let range = (
        schema.get("minimum").and_then(Value::as_i64),
        schema.get("maximum").and_then(Value::as_i64),
    );
    let pattern = match range {
        (Some(1), Some(500)) => "^([1-9]|[1-9][0-9]|[1-4][0-9]{2}|500)$",
        _ => "^-?[0-9]{1,18}$",
    };
    let description = schema.get("description").cloned();
    schema.clear();
    schema.insert("type".into(), json!("string"));
    schema.insert("pattern".into(), json!(pattern));
    if let Some(d) = description {
        schema.insert("description".into(), d);
    }
}

fn is_method(m: &str) -> bool {
    matches!(
        m,
        "get" | "put" | "post" | "delete" | "options" | "head" | "patch" | "trace"
    )
}

fn operations(item: &Value) -> impl Iterator<Item = &Map<String, Value>> {
    item.as_object()
        .into_iter()
        .flatten()
        .filter(|(m, _)| is_method(m))
        .filter_map(|(_, op)| op.as_object())
}

fn error_response(why: &str) -> Value {
    json!({ "description": why, "content": error_content() })
}

/// The one error shape, as an answer's content.
fn error_content() -> Value {
    json!({ "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } })
}

fn retry_after() -> Value {
    json!({
        "Retry-After": {
            "description": "Seconds to wait before trying again.",
            "schema": { "type": "integer", "minimum": 1 },
        }
    })
}

fn reason(status: &str) -> String {
    status
        .parse::<u16>()
        .ok()
        .and_then(|s| axum::http::StatusCode::from_u16(s).ok())
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Answer")
        .to_owned()
}
