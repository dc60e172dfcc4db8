//! The JSON Schema subset `llm` steps can require of their answers: `type` (one name or
//! a list), `properties`, `required`, `additionalProperties: false`, `items`, `enum`,
//! `minItems`/`maxItems`, `minimum`/`maximum`, `minLength`/`maxLength`. Checked at load
//! time ([`check_schema`]) and applied to answers ([`validate`]).

use serde_json::Value;

const TYPES: &[&str] = &[
    "object", "array", "string", "number", "integer", "boolean", "null",
];
const KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "description",
    "title",
];

/// Whether `schema` uses only the supported subset, correctly.
pub fn check_schema(schema: &Value) -> Result<(), String> {
    let Some(map) = schema.as_object() else {
        return Err("a schema must be a table".into());
    };
    for (k, v) in map {
        if !KEYWORDS.contains(&k.as_str()) {
            return Err(format!(
                "unsupported keyword `{k}` (supported: {})",
                KEYWORDS.join(", ")
            ));
        }
        match k.as_str() {
            "type" => {
                let names: Vec<&Value> = match v {
                    Value::Array(a) => a.iter().collect(),
                    other => vec![other],
                };
                for n in names {
                    if !n.as_str().is_some_and(|n| TYPES.contains(&n)) {
                        return Err(format!(
                            "unknown type {n}; expected one of: {}",
                            TYPES.join(", ")
                        ));
                    }
                }
            }
            "properties" => {
                let props = v.as_object().ok_or("`properties` must be a table")?;
                for p in props.values() {
                    check_schema(p)?;
                }
            }
            "items" => check_schema(v)?,
            "required" | "enum" if !v.is_array() => return Err(format!("`{k}` must be a list")),
            "additionalProperties" if !v.is_boolean() => {
                return Err("`additionalProperties` must be true or false".into());
            }
            _ => {}
        }
    }
    Ok(())
}

fn type_matches(name: &str, v: &Value) -> bool {
    match name {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => false,
    }
}

/// Every way `v` fails `schema`, as `path: problem`.
pub fn validate(schema: &Value, v: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    walk(schema, v, "$", &mut errors);
    errors
}

fn walk(schema: &Value, v: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(s) = schema.as_object() else { return };
    if let Some(t) = s.get("type") {
        let names: Vec<&str> = match t {
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            other => other.as_str().into_iter().collect(),
        };
        if !names.iter().any(|n| type_matches(n, v)) {
            errors.push(format!("{path}: expected {}", names.join(" or ")));
            return;
        }
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        errors.push(format!("{path}: {v} is not one of the allowed values"));
    }
    let num = |k: &str| s.get(k).and_then(Value::as_f64);
    if let Some(x) = v.as_f64()
        && (num("minimum").is_some_and(|m| x < m) || num("maximum").is_some_and(|m| x > m))
    {
        errors.push(format!("{path}: {x} is out of range"));
    }
    if let Some(n) = v.as_str().map(|t| t.chars().count() as f64)
        && (num("minLength").is_some_and(|m| n < m) || num("maxLength").is_some_and(|m| n > m))
    {
        errors.push(format!("{path}: length {n} is out of range"));
    }
    if let Some(items) = v.as_array() {
        let n = items.len() as f64;
        if num("minItems").is_some_and(|m| n < m) || num("maxItems").is_some_and(|m| n > m) {
            errors.push(format!("{path}: {n} items is out of range"));
        }
        if let Some(item_schema) = s.get("items") {
            for (i, item) in items.iter().enumerate() {
                walk(item_schema, item, &format!("{path}[{i}]"), errors);
            }
        }
    }
    if let Some(obj) = v.as_object() {
        let props = s.get("properties").and_then(Value::as_object);
        for req in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(name) = req.as_str()
                && !obj.contains_key(name)
            {
                errors.push(format!("{path}: `{name}` is required"));
            }
        }
        for (k, val) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(ps) => walk(ps, val, &format!("{path}.{k}"), errors),
                None if s.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    errors.push(format!("{path}: unexpected field `{k}`"));
                }
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validates_the_subset() {
        let schema = json!({
            "type": "object", "required": ["summary", "score"], "additionalProperties": false,
            "properties": {
                "summary": { "type": "string", "minLength": 1 },
                "score": { "type": "integer", "minimum": 0, "maximum": 10 },
                "tags": { "type": "array", "items": { "type": "string" } }
            }
        });
        assert!(check_schema(&schema).is_ok());
        assert!(
            validate(
                &schema,
                &json!({"summary": "ok", "score": 3, "tags": ["a"]})
            )
            .is_empty()
        );
        let errs = validate(&schema, &json!({"score": 11, "tags": [1], "x": true}));
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(check_schema(&json!({"type": "object", "oneOf": []})).is_err());
        assert!(check_schema(&json!({"type": "thing"})).is_err());
    }
}
