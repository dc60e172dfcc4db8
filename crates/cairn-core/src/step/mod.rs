//! Executing one attempt of one step.
//!
//! A step attempt either returns its JSON output or a [`StepError`] that says whether
//! trying again can help ([`StepError::Retryable`], optionally with the delay the
//! other side asked for) or not ([`StepError::Fatal`]). The engine owns everything
//! around an attempt: leases, timeouts, checkpoints and the retry policy. `sleep` steps
//! are durable timers and live in the engine, not here.

mod builtin;
pub mod egress;
mod http;
pub mod llm;
mod sql;

pub use builtin::summarize_text;
pub use egress::{AllowEntry, EgressAllow, EgressError, StepHttp};
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

/// The default of both [`Limits`]: 4 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// Size limits on what a step brings into the worker and stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest response body an `http` or `llm` step reads (a step may set less).
    pub max_response_bytes: u64,
    /// Largest step output stored, measured as serialised JSON; also bounds what a
    /// `sql` step's query may return.
    pub max_output_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_response_bytes: DEFAULT_MAX_BYTES,
            max_output_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// What an attempt can use.
pub struct StepContext<'a> {
    pub run_id: &'a str,
    pub step_id: &'a str,
    pub attempt: u32,
    /// `input`, `steps`, `run` and `env`, for templates.
    pub vars: minijinja::Value,
    /// Cairn's own database (token usage of `llm` steps, the built-in steps).
    pub pool: &'a sqlx::PgPool,
    /// Where `sql` steps run: a pool of their own when one is configured
    /// (`CAIRN_STEP_DATABASE_URL`), otherwise the same as `pool`.
    pub sql_pool: &'a sqlx::PgPool,
    /// The client for the operator's own endpoints (the model server).
    pub http: &'a reqwest::Client,
    /// The clients of `http` steps, under the egress policy.
    pub egress: &'a StepHttp,
    pub limits: Limits,
    /// The model `llm` steps call, when one is configured.
    pub llm: Option<&'a LlmConfig>,
    /// The attempt's W3C `traceparent`, which `http` and `llm` steps send so that the
    /// services they call join the run's trace (see `telemetry::traces`).
    pub traceparent: &'a str,
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

/// Runs one attempt of a non-timer step. The caller applies the step's timeout. An
/// output larger than [`Limits::max_output_bytes`] fails the step for good.
pub async fn execute(step: &Step, cx: &StepContext<'_>) -> Result<Value, StepError> {
    let output = execute_kind(step, cx).await?;
    check_output_size(&output, cx.limits.max_output_bytes)?;
    Ok(output)
}

/// Fails when `output` serialises to more than `limit` bytes of JSON, counting
/// without building the text.
pub fn check_output_size(output: &Value, limit: u64) -> Result<(), StepError> {
    struct Counter {
        bytes: u64,
        limit: u64,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.bytes += buf.len() as u64;
            if self.bytes > self.limit {
                return Err(std::io::Error::other("over the limit"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter { bytes: 0, limit };
    match serde_json::to_writer(&mut counter, output) {
        Ok(()) => Ok(()),
        Err(_) => Err(StepError::fatal(format!(
            "the step's output is larger than the {} limit on stored outputs \
             (CAIRN_MAX_OUTPUT_BYTES, --max-output-bytes); return less",
            http::format_bytes(limit)
        ))),
    }
}

async fn execute_kind(step: &Step, cx: &StepContext<'_>) -> Result<Value, StepError> {
    match &step.kind {
        StepKind::Http(h) => http::execute(h, cx, step.timeout()).await,
        StepKind::Sql(s) => sql::execute(s, cx, step.timeout()).await,
        StepKind::Llm(l) => llm::execute(l, cx, step.timeout()).await,
        StepKind::Analyze(a) => builtin::analyze(a, cx).await,
        StepKind::Summarize(s) => builtin::summarize(s, cx).await,
        StepKind::Pass(p) => cx.render(&p.output),
        StepKind::Sleep(_) | StepKind::Wait(_) | StepKind::Workflow(_) | StepKind::Map(_) => Err(
            StepError::fatal("sleep, wait, workflow and map steps are handled by the engine"),
        ),
    }
}
