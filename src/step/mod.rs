//! Executing one attempt of one step.
//!
//! A step attempt either returns its JSON output or a [`StepError`] that says whether
//! trying again can help ([`StepError::Retryable`], optionally with the delay the
//! other side asked for) or not ([`StepError::Fatal`]). The engine owns everything
//! around an attempt: leases, timeouts, checkpoints and the retry policy. `sleep` steps
//! are durable timers and live in the engine, not here.

mod builtin;
mod http;
pub mod llm;
mod sql;

pub use builtin::summarize_text;
pub(crate) use http::parse_retry_after;
pub use llm::LlmConfig;

use std::time::Duration;

use serde_json::Value;

use crate::workflow::template::{self, TemplateError};
use crate::workflow::{Step, StepKind};

/// Why an attempt failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StepError {
    /// Trying again may succeed (network trouble, 5xx, 408/429, timeouts, lock conflicts).
    #[error("{message}")]
    Retryable {
        message: String,
        /// What the other side asked for (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// Trying again cannot help (4xx, bad SQL, template errors, invalid configuration).
    #[error("{message}")]
    Fatal { message: String },
}

impl StepError {
    pub fn retryable(message: impl Into<String>) -> StepError {
        StepError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn fatal(message: impl Into<String>) -> StepError {
        StepError::Fatal {
            message: message.into(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, StepError::Retryable { .. })
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            StepError::Retryable { retry_after, .. } => *retry_after,
            StepError::Fatal { .. } => None,
        }
    }
}

impl From<TemplateError> for StepError {
    fn from(e: TemplateError) -> Self {
        StepError::fatal(e.to_string())
    }
}

/// What an attempt can use.
pub struct StepContext<'a> {
    pub run_id: &'a str,
    pub step_id: &'a str,
    pub attempt: u32,
    /// `input`, `steps`, `run` and `env`, for templates.
    pub vars: minijinja::Value,
    pub pool: &'a sqlx::PgPool,
    pub http: &'a reqwest::Client,
    /// The model `llm` steps call, when one is configured.
    pub llm: Option<&'a LlmConfig>,
}

impl StepContext<'_> {
    /// The stable idempotency key of this step in this run (the same on every attempt).
    pub fn idempotency_key(&self) -> String {
        format!("{}/{}", self.run_id, self.step_id)
    }

    pub fn render(&self, v: &Value) -> Result<Value, StepError> {
        Ok(template::render_value(v, &self.vars)?)
    }
}

/// Runs one attempt of a non-timer step. The caller applies the step's timeout.
pub async fn execute(step: &Step, cx: &StepContext<'_>) -> Result<Value, StepError> {
    match &step.kind {
        StepKind::Http(h) => http::execute(h, cx, step.timeout()).await,
        StepKind::Sql(s) => sql::execute(s, cx, step.timeout()).await,
        StepKind::Llm(l) => llm::execute(l, cx, step.timeout()).await,
        StepKind::Analyze(a) => builtin::analyze(a, cx).await,
        StepKind::Summarize(s) => builtin::summarize(s, cx).await,
        StepKind::Pass(p) => cx.render(&p.output),
        StepKind::Sleep(_) | StepKind::Wait(_) | StepKind::Workflow(_) => Err(StepError::fatal(
            "sleep, wait and workflow steps are handled by the engine",
        )),
    }
}
