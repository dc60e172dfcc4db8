//! `llm` steps: one chat completion from an OpenAI-compatible server (OpenAI, vLLM,
//! Ollama, llama.cpp's server). Token usage is recorded for every answered call, billed
//! or not; 408, 429 and 5xx are retried honouring `Retry-After`; with an
//! `output_schema`, an answer that is not matching JSON is retried too.
//!
//! The model server is the operator's configuration (`CAIRN_LLM_BASE_URL`), not a
//! workflow's, so these calls are not subject to the egress policy of `http` steps;
//! their answers are size-limited all the same.

use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use serde_json::{Value, json};

use super::http::{read_body, redact, reqwest_error};
use super::{StepContext, StepError, parse_retry_after};
use crate::workflow::template;
use crate::workflow::{LlmStep, schema};

/// Where the model is. Without it, `llm` steps fail (examples gate them with
/// `if = "llm.configured"`).
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// e.g. `https://api.openai.com/v1` or `http://127.0.0.1:11434/v1`.
    pub base_url: String,
    pub api_key: Option<String>,
    pub model: String,
}

/// The model's answer as JSON, tolerating a Markdown code fence around it.
fn answer_json(text: &str) -> Option<Value> {
    let t = text.trim();
    let t = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .map(|r| r.trim_end().trim_end_matches("```"))
        .unwrap_or(t);
    serde_json::from_str(t.trim()).ok()
}

pub(super) async fn execute(
    step: &LlmStep,
    cx: &StepContext<'_>,
    timeout: Duration,
) -> Result<Value, StepError> {
    let Some(config) = cx.llm else {
        return Err(StepError::fatal(
            "no model is configured: set CAIRN_LLM_BASE_URL (and CAIRN_LLM_MODEL, CAIRN_LLM_API_KEY) for the worker",
        ));
    };
    let render = |s: &str| -> Result<String, StepError> {
        Ok(match template::render_str(s, &cx.vars)? {
            Value::String(s) => s,
            other => other.to_string(),
        })
    };
    let mut messages = Vec::new();
    if let Some(system) = &step.system {
        messages.push(json!({ "role": "system", "content": render(system)? }));
    }
    let mut prompt = render(&step.prompt)?;
    if let Some(schema) = &step.output_schema {
        prompt.push_str(&format!(
            "\n\nAnswer with JSON only, matching this JSON Schema:\n{schema}"
        ));
    }
    messages.push(json!({ "role": "user", "content": prompt }));
    let model = step.model.clone().unwrap_or_else(|| config.model.clone());
    let mut body = json!({ "model": model, "messages": messages });
    if let Some(t) = step.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(m) = step.max_tokens {
        body["max_tokens"] = json!(m);
    }
    if step.output_schema.is_some() {
        body["response_format"] = json!({ "type": "json_object" });
    }
    let url = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));
    let mut request = cx
        .http
        .post(&url)
        .json(&body)
        .timeout(timeout)
        .header("idempotency-key", cx.idempotency_key())
        .header("traceparent", cx.traceparent);
    if let Some(key) = &config.api_key {
        request = request.bearer_auth(key);
    }
    let shown =
        reqwest::Url::parse(&url).map_or_else(|_| "the configured URL".to_owned(), |u| redact(&u));
    let response = request.send().await.map_err(|e| {
        StepError::retryable(format!(
            "calling the model at {shown}: {}",
            reqwest_error(e)
        ))
    })?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let limit = step
        .max_response_bytes
        .map_or(cx.limits.max_response_bytes, |m| {
            m.min(cx.limits.max_response_bytes)
        });
    let bytes = read_body(response, limit, &format!("the model at {shown}")).await?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    drop(bytes);
    if !status.is_success() {
        let message = format!(
            "the model answered {status}: {}",
            text.chars().take(300).collect::<String>()
        );
        let code = status.as_u16();
        return if status.is_server_error() || code == 408 || code == 429 {
            Err(StepError::Retryable {
                message,
                retry_after,
            })
        } else {
            Err(StepError::fatal(message))
        };
    }
    let answer: Value = serde_json::from_str(&text)
        .map_err(|e| StepError::retryable(format!("the model's answer is not JSON: {e}")))?;
    let prompt_tokens = answer["usage"]["prompt_tokens"].as_i64().unwrap_or(0);
    let completion_tokens = answer["usage"]["completion_tokens"].as_i64().unwrap_or(0);
    let used_model = answer["model"].as_str().unwrap_or(&model).to_owned();
    crate::store::usage::llm_usage_insert(
        cx.pool,
        cx.run_id,
        cx.step_id,
        cx.attempt as i32,
        &used_model,
        prompt_tokens,
        completion_tokens,
    )
    .await
    .map_err(|e| StepError::retryable(format!("recording token usage: {e}")))?;
    let content = answer["choices"][0]["message"]["content"]
        .as_str()
        .ok_or_else(|| StepError::retryable("the model's answer has no message content"))?
        .to_owned();
    let mut output = json!({
        "text": content,
        "model": used_model,
        "usage": { "promptTokens": prompt_tokens, "completionTokens": completion_tokens },
    });
    if let Some(schema) = &step.output_schema {
        let Some(parsed) = answer_json(&content) else {
            return Err(StepError::retryable(
                "the answer is not JSON, as the output_schema requires",
            ));
        };
        let problems = schema::validate(schema, &parsed);
        if !problems.is_empty() {
            return Err(StepError::retryable(format!(
                "the answer does not match the output_schema: {}",
                problems.join("; ")
            )));
        }
        output["json"] = parsed;
    }
    Ok(output)
}
