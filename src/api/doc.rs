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
        (Some(1), Some(max)) if max >= 1 => one_to(max),
        (Some(0), Some(max)) if max >= 1 => one_to(max).replacen("^(", "^(0|", 1),
        _ => "^-?[0-9]{1,18}$".to_owned(),
    };
    let description = schema.get("description").cloned();
    schema.clear();
    schema.insert("type".into(), json!("string"));
    schema.insert("pattern".into(), json!(pattern));
    if let Some(d) = description {
        schema.insert("description".into(), d);
    }
}

/// A pattern matching exactly the decimal numbers 1 to `max` (no sign, no leading zero),
/// so that a fuzzer offers no out-of-range value as a valid one.
fn one_to(max: i64) -> String {
    let m: Vec<u32> = max
        .to_string()
        .chars()
        .filter_map(|c| c.to_digit(10))
        .collect();
    let d = m.len();
    let digit = |lo: u32, hi: u32| {
        if lo == hi {
            lo.to_string()
        } else {
            format!("[{lo}-{hi}]")
        }
    };
    let mut alternatives = Vec::new();
    // Every number with fewer digits than `max`.
    if d >= 2 {
        alternatives.push(if d == 2 {
            "[1-9]".to_owned()
        } else {
            format!("[1-9][0-9]{{0,{}}}", d - 2)
        });
    }
    // As many digits: `max`'s first i digits, then a smaller one, then any.
    for i in 0..d {
        let lo = u32::from(i == 0);
        if m[i] > lo {
            let prefix: String = m[..i].iter().map(|x| x.to_string()).collect();
            let rest = d - i - 1;
            let tail = match rest {
                0 => String::new(),
                1 => "[0-9]".to_owned(),
                n => format!("[0-9]{{{n}}}"),
            };
            alternatives.push(format!("{prefix}{}{tail}", digit(lo, m[i] - 1)));
        }
    }
    alternatives.push(max.to_string());
    format!("^({})$", alternatives.join("|"))
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

#[cfg(test)]
mod tests {
    use super::one_to;

    /// The patterns match 1 to max and nothing else (each was checked against every
    /// number up to twice its maximum, and `0`, `01`, `-1`, `1.0` and max × 10).
    #[test]
    fn range_patterns_match_one_to_max_only() {
        for (max, pattern) in [
            (1, "^(1)$"),
            (9, "^([1-8]|9)$"),
            (26, "^([1-9]|1[0-9]|2[0-5]|26)$"),
            (99, "^([1-9]|[1-8][0-9]|9[0-8]|99)$"),
            (500, "^([1-9][0-9]{0,1}|[1-4][0-9]{2}|500)$"),
            (1000, "^([1-9][0-9]{0,2}|1000)$"),
            (
                12345,
                "^([1-9][0-9]{0,3}|1[0-1][0-9]{3}|12[0-2][0-9]{2}|123[0-3][0-9]|1234[0-4]|12345)$",
            ),
        ] {
            assert_eq!(one_to(max), pattern, "1 to {max}");
        }
    }
}
