//! Templates (`{{ … }}`) in step fields, rendered with minijinja in strict mode.
//!
//! A template sees `input`, `steps.<id>.output` (and `.status`), `run` (`id`, `workflow`,
//! `attempt`) and `env` (the allow-listed environment). A string that is exactly one
//! `{{ expression }}` evaluates to the expression's JSON value, so
//! `params = ["{{ input.project_id }}"]` binds an integer; any other string renders to a
//! string. Referencing anything undefined is an error, never an empty string.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

/// Errors from compiling or rendering a template.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template error: {0}")]
    Render(String),
    #[error("template result is not JSON: {0}")]
    Convert(String),
}

fn describe(e: &minijinja::Error) -> String {
    let mut msg = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line().filter(|l| *l > 1) {
        msg.push_str(&format!(" (template line {line})"));
    }
    msg
}

/// The one shared, strict environment.
pub fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env
    })
}

/// Whether a string contains template syntax at all.
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// If `s` is exactly one `{{ expression }}`, the expression.
pub fn whole_expression(s: &str) -> Option<&str> {
    let t = s.trim();
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(
        inner
            .trim()
            .trim_start_matches('-')
            .trim_end_matches('-')
            .trim(),
    )
}

/// Compiles `s` (a template string, or a bare expression when `expression` is set) and
/// returns the variables it reads, as dotted paths (`steps.load.output`).
pub fn check(s: &str, expression: bool) -> Result<BTreeSet<String>, String> {
    let env = environment();
    let vars = if expression {
        env.compile_expression(s)
            .map_err(|e| describe(&e))?
            .undeclared_variables(true)
    } else if let Some(expr) = whole_expression(s) {
        env.compile_expression(expr)
            .map_err(|e| describe(&e))?
            .undeclared_variables(true)
    } else {
        env.template_from_str(s)
            .map_err(|e| describe(&e))?
            .undeclared_variables(true)
    };
    // Functions such as `range` are globals of the environment, not variables to check.
    Ok(vars
        .into_iter()
        .filter(|v| {
            let root = v.split('.').next().unwrap_or_default();
            !env.globals().any(|(name, _)| name == root)
        })
        .collect())
}

/// Every template string inside a JSON value (object keys are not templates).
pub fn strings(v: &Value) -> Vec<&str> {
    let mut out = Vec::new();
    fn walk<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::String(s) if is_template(s) => out.push(s),
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(m) => m.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(v, &mut out);
    out
}

/// Renders a template string, keeping the JSON type of a whole expression.
pub fn render_str(s: &str, ctx: &minijinja::Value) -> Result<Value, TemplateError> {
    if !is_template(s) {
        return Ok(Value::String(s.to_owned()));
    }
    let env = environment();
    if let Some(expr) = whole_expression(s) {
        let value = env
            .compile_expression(expr)
            .and_then(|e| e.eval(ctx.clone()))
            .map_err(|e| TemplateError::Render(describe(&e)))?;
        if value.is_undefined() {
            return Err(TemplateError::Render(format!("`{expr}` is undefined")));
        }
        return serde_json::to_value(&value).map_err(|e| TemplateError::Convert(e.to_string()));
    }
    env.render_str(s, ctx.clone())
        .map(Value::String)
        .map_err(|e| TemplateError::Render(describe(&e)))
}

/// Renders every template string inside a JSON value.
pub fn render_value(v: &Value, ctx: &minijinja::Value) -> Result<Value, TemplateError> {
    Ok(match v {
        Value::String(s) => render_str(s, ctx)?,
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| render_value(x, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| Ok((k.clone(), render_value(x, ctx)?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
        other => other.clone(),
    })
}

/// Evaluates an `if` condition: a `{{ template }}` or a bare expression.
pub fn eval_condition(s: &str, ctx: &minijinja::Value) -> Result<bool, TemplateError> {
    let env = environment();
    let expr = if is_template(s) {
        match whole_expression(s) {
            Some(e) => e,
            None => {
                let rendered = env
                    .render_str(s, ctx.clone())
                    .map_err(|e| TemplateError::Render(describe(&e)))?;
                let t = rendered.trim();
                return Ok(!(t.is_empty() || t == "false" || t == "False" || t == "0"));
            }
        }
    } else {
        s
    };
    let value = env
        .compile_expression(expr)
        .and_then(|e| e.eval(ctx.clone()))
        .map_err(|e| TemplateError::Render(describe(&e)))?;
    Ok(value.is_true())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> minijinja::Value {
        minijinja::Value::from(minijinja::value::Serde(json!({
            "input": {"project_id": 7, "depth": "quick"},
            "steps": {"load": {"output": {"rows": [{"name": "Apollo"}]}, "status": "succeeded"}},
        })))
    }

    #[test]
    fn whole_expression_keeps_json_type() {
        assert_eq!(
            render_str("{{ input.project_id }}", &ctx()).unwrap(),
            json!(7)
        );
        assert_eq!(
            render_str("{{ steps.load.output.rows }}", &ctx()).unwrap(),
            json!([{"name": "Apollo"}])
        );
        assert_eq!(
            render_str("id={{ input.project_id }}", &ctx()).unwrap(),
            json!("id=7")
        );
    }

    #[test]
    fn undefined_is_an_error() {
        assert!(render_str("{{ input.nope }}", &ctx()).is_err());
        assert!(render_str("x {{ steps.other.output }}", &ctx()).is_err());
    }

    #[test]
    fn conditions() {
        assert!(!eval_condition("{{ input.depth != 'quick' }}", &ctx()).unwrap());
        assert!(eval_condition("input.project_id > 3", &ctx()).unwrap());
    }

    #[test]
    fn reports_variables() {
        let vars = check("{{ steps.load.output.rows[0].name }} {{ input.x }}", false).unwrap();
        assert!(vars.iter().any(|v| v.starts_with("steps.load")));
        assert!(vars.contains("input.x"));
        assert!(check("{{ unclosed", false).is_err());
    }

    /// `range` and the environment's other functions are no variables: a template may
    /// call them (a `map` step over `range(10)`), and they render.
    #[test]
    fn functions_are_not_reported_as_variables() {
        let vars = check("{{ range(input.n) | list }}", false).unwrap();
        assert_eq!(vars.into_iter().collect::<Vec<_>>(), ["input.n"]);
        assert_eq!(
            render_str("{{ range(3) | list }}", &ctx()).unwrap(),
            json!([0, 1, 2])
        );
    }
}
