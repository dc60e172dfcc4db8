//! The typed `[input]` schema of a workflow and the check of a submitted input against it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    String,
    Integer,
    Number,
    Boolean,
    Object,
    Array,
}

impl InputType {
    pub const NAMES: &'static [&'static str] =
        &["string", "integer", "number", "boolean", "object", "array"];

    pub fn parse(s: &str) -> Option<InputType> {
        Some(match s {
            "string" => InputType::String,
            "integer" => InputType::Integer,
            "number" => InputType::Number,
            "boolean" => InputType::Boolean,
            "object" => InputType::Object,
            "array" => InputType::Array,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Integer => "integer",
            InputType::Number => "number",
            InputType::Boolean => "boolean",
            InputType::Object => "object",
            InputType::Array => "array",
        }
    }

    pub fn matches(self, v: &Value) -> bool {
        match self {
            InputType::String => v.is_string(),
            InputType::Integer => v.is_i64() || v.is_u64(),
            InputType::Number => v.is_number(),
            InputType::Boolean => v.is_boolean(),
            InputType::Object => v.is_object(),
            InputType::Array => v.is_array(),
        }
    }
}

/// One declared input field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputField {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: InputType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<Value>>,
    /// Required unless it has a default or says `required = false`.
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// What is wrong with one field of a submitted input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Most unknown fields named in an answer; the rest are counted.
pub const ERRORS_MAX: usize = 50;

/// A field name as quoted in an error: at most 100 characters.
fn shorten(key: &str) -> String {
    if key.chars().count() <= 100 {
        key.to_owned()
    } else {
        let mut s: String = key.chars().take(100).collect();
        s.push('…');
        s
    }
}

pub(crate) fn validate(fields: &[InputField], input: &Value) -> Result<Value, Vec<InputError>> {
    let empty = Map::new();
    let given = match input {
        Value::Object(m) => m,
        Value::Null => &empty,
        other => {
            return Err(vec![InputError {
                field: String::new(),
                message: format!("input must be a JSON object, not {}", type_of(other)),
            }]);
        }
    };
    let mut errors = Vec::new();
    let mut out = Map::new();
    let unknown = given
        .keys()
        .filter(|key| !fields.iter().any(|f| &f.name == *key));
    let mut unlisted = 0usize;
    for key in unknown {
        // However many unknown keys an input has, the answer names a bounded few.
        if errors.len() >= ERRORS_MAX {
            unlisted += 1;
            continue;
        }
        let known: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        errors.push(InputError {
            field: shorten(key),
            message: if known.is_empty() {
                "unknown field; this workflow takes no input".into()
            } else {
                format!("unknown field; expected one of: {}", known.join(", "))
            },
        });
    }
    if unlisted > 0 {
        errors.push(InputError {
            field: String::new(),
            message: format!("and {unlisted} more unknown fields"),
        });
    }
    for field in fields {
        match given.get(&field.name).filter(|v| !v.is_null()) {
            Some(v) => {
                if !field.ty.matches(v) {
                    errors.push(InputError {
                        field: field.name.clone(),
                        message: format!("expected {}, got {}", field.ty.name(), type_of(v)),
                    });
                } else if let Some(allowed) = field.allowed.as_ref().filter(|a| !a.contains(v)) {
                    let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
                    errors.push(InputError {
                        field: field.name.clone(),
                        message: format!("{v} is not one of: {}", list.join(", ")),
                    });
                } else {
                    out.insert(field.name.clone(), v.clone());
                }
            }
            None => {
                if let Some(d) = &field.default {
                    out.insert(field.name.clone(), d.clone());
                } else if field.required {
                    errors.push(InputError {
                        field: field.name.clone(),
                        message: format!("required {} is missing", field.ty.name()),
                    });
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(Value::Object(out))
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields() -> Vec<InputField> {
        vec![
            InputField {
                name: "project_id".into(),
                ty: InputType::Integer,
                default: None,
                allowed: None,
                required: true,
                description: None,
            },
            InputField {
                name: "depth".into(),
                ty: InputType::String,
                default: Some(json!("standard")),
                allowed: Some(vec![json!("quick"), json!("standard")]),
                required: false,
                description: None,
            },
        ]
    }

    #[test]
    fn fills_defaults() {
        let v = validate(&fields(), &json!({"project_id": 3})).unwrap();
        assert_eq!(v, json!({"project_id": 3, "depth": "standard"}));
    }

    #[test]
    fn reports_every_problem() {
        let errs = validate(&fields(), &json!({"depth": "deep", "x": 1})).unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(text.iter().any(|t| t.starts_with("x: unknown field")));
        assert!(text.iter().any(|t| t.contains("\"deep\" is not one of")));
        assert!(
            text.iter()
                .any(|t| t == "project_id: required integer is missing")
        );
    }

    #[test]
    fn rejects_wrong_types_and_non_objects() {
        let errs = validate(&fields(), &json!({"project_id": "3"})).unwrap_err();
        assert_eq!(errs[0].message, "expected integer, got string");
        let errs = validate(&fields(), &json!([1])).unwrap_err();
        assert_eq!(errs[0].message, "input must be a JSON object, not array");
    }
}
