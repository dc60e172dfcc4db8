//! The workflow language: definitions as declared in `workflows/*.toml`, and the names
//! of the state machines their runs go through.
//!
//! A file is parsed into a raw, span-carrying mirror of the TOML ([`parse_workflow`]),
//! then validated into a [`Workflow`]: a DAG of [`Step`]s with their retry policies,
//! timeouts, conditions and templates already compiled once, so every mistake is
//! reported at load time with its file, line and column. Nothing here touches the
//! network or a database; the engine runs what this crate accepts, and `ctl` checks
//! files with it before they are deployed, which is why it is a crate of its own: the
//! operator CLI builds without the server's database, HTTP and queue stacks.
//!
//! A validated workflow serialises to JSON and is stored once per content hash: a run pins
//! the hash it started with, so editing a file never changes runs in flight.
//!
//! Features: `sqlx` maps the [`state`] enums to their text columns; `openapi` gives them
//! `utoipa` schemas. The server turns both on.

mod input;
mod parse;
pub mod schedule;
pub mod schema;
pub mod state;
pub mod template;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use input::{InputError, InputField, InputType};
pub use parse::{Diagnostic, parse_workflow};
pub use schedule::{CronSchedule, MisfirePolicy, OverlapPolicy, ScheduleSpec};

/// Errors from loading workflow files.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("{}", render_diagnostics(.0))]
    Invalid(Vec<Diagnostic>),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl WorkflowError {
    /// The diagnostics when the definitions were read but are wrong.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            WorkflowError::Invalid(d) => d,
            WorkflowError::Io { .. } => &[],
        }
    }
}

fn render_diagnostics(d: &[Diagnostic]) -> String {
    d.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A validated workflow definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workflow {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Declared input fields, in file order.
    pub input: Vec<InputField>,
    /// What the run's output is; by default the outputs of the steps nothing depends on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
    /// Steps in a topological order (every step after the steps it needs).
    pub steps: Vec<Step>,
    /// `[[schedules]]`: recurring runs of this workflow, which `cairn scheduler` syncs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<ScheduleSpec>,
    /// `retain = "forever"`: every run is pinned when it is queued, so retention never
    /// deletes it. Without it, runs go when the cluster's retention windows say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain: Option<Retain>,
    /// `[concurrency]`: at most `limit` runs with the same key at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// `[notify]`: where the alerts about this workflow's runs go (docs/OPERATIONS.md,
    /// "Alerts"); absent: the cluster's `CAIRN_NOTIFY_URL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    /// The workflow of an inline `map` step's items ([`MapStep::item_definition`]): its
    /// input is `{ item, index }`, which its templates read as `item` and `index`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub map_item: bool,
}

/// A workflow's own alert settings. The stored definition carries them, and the
/// database reads them when one of its runs dies (the `notifications` triggers), so a
/// run is told about as the definition it started with says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notify {
    /// Send to this URL instead of the cluster's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `false`: send nothing about this workflow's runs.
    pub enabled: bool,
}

/// A workflow's concurrency limit: at most `limit` of its runs with the same key hold a
/// slot at once (from their start until they finish); the others wait, queued, and
/// start in submit order as slots free up. The key is a template of the input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Concurrency {
    pub key: String,
    pub limit: i32,
}

impl Concurrency {
    /// The largest limit a workflow may set.
    pub const LIMIT_MAX: i64 = 10_000;
    /// The longest key a run may get, in bytes.
    pub const KEY_MAX_LEN: usize = 200;

    /// The key of a run with this (validated) input.
    pub fn key_for(&self, input: &serde_json::Value) -> Result<String, InputError> {
        let err = |message: String| InputError {
            field: String::new(),
            message,
        };
        let ctx = minijinja::Value::from(std::collections::BTreeMap::from([(
            "input",
            minijinja::Value::from(minijinja::value::Serde(input)),
        )]));
        let rendered = template::render_str(&self.key, &ctx)
            .map_err(|e| err(format!("the concurrency key cannot be rendered: {e}")))?;
        let key = match rendered {
            serde_json::Value::String(s) => s,
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        };
        if key.len() > Self::KEY_MAX_LEN {
            return Err(err(format!(
                "the concurrency key is {} bytes long; at most {} are allowed",
                key.len(),
                Self::KEY_MAX_LEN
            )));
        }
        Ok(key)
    }
}

/// How long a workflow's runs are kept, when the workflow decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Retain {
    /// Runs are pinned: never deleted until an operator unpins them.
    Forever,
}

/// One step of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub id: String,
    #[serde(flatten)]
    pub kind: StepKind,
    pub needs: Vec<String>,
    /// `if`: a template or expression; the step is skipped when it is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    pub timeout_ms: u64,
    pub retry: RetryPolicy,
    /// `rate_limit`: the calls of every step naming the same key, across all runs and
    /// workers, are spaced to at most `per_minute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// `concurrency`: at most `limit` attempts of the steps naming the same key (a
    /// template, rendered as the step's others are) run at once, across all runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
}

/// A step's rate limit: its attempts start at most `per_minute` times a minute, evenly
/// spaced, counted with every other step (of any workflow) that names the same key.
/// The key is a template (rendered as the step's other templates are).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    pub key: String,
    pub per_minute: u32,
}

impl RateLimit {
    /// The highest rate a step may declare: 1,000 a second.
    pub const PER_MINUTE_MAX: i64 = 60_000;

    /// The spacing between two calls.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(60) / self.per_minute.max(1)
    }
}

impl Step {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// What a step does, with its kind-specific settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum StepKind {
    Http(HttpStep),
    Sql(SqlStep),
    Sleep(SleepStep),
    Llm(LlmStep),
    Wait(WaitStep),
    Workflow(ChildStep),
    Map(MapStep),
    Analyze(AnalyzeStep),
    Summarize(SummarizeStep),
    Pass(PassStep),
}

impl StepKind {
    pub const NAMES: &'static [&'static str] = &[
        "http",
        "sql",
        "sleep",
        "llm",
        "wait",
        "workflow",
        "map",
        "analyze",
        "summarize",
        "pass",
    ];

    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Http(_) => "http",
            StepKind::Sql(_) => "sql",
            StepKind::Sleep(_) => "sleep",
            StepKind::Llm(_) => "llm",
            StepKind::Wait(_) => "wait",
            StepKind::Workflow(_) => "workflow",
            StepKind::Map(_) => "map",
            StepKind::Analyze(_) => "analyze",
            StepKind::Summarize(_) => "summarize",
            StepKind::Pass(_) => "pass",
        }
    }

    /// The workflow whose runs this step starts (`workflow` and `map` steps).
    pub fn child_workflow(&self) -> Option<&str> {
        match self {
            StepKind::Workflow(c) => Some(&c.workflow),
            StepKind::Map(m) => m.workflow.as_deref(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpStep {
    pub method: String,
    /// A template.
    pub url: serde_json::Value,
    /// Header name → template.
    #[serde(default)]
    pub headers: BTreeMap<String, serde_json::Value>,
    /// A JSON body whose strings may be templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    /// When not empty, the only hosts this step may connect to, on every redirect hop
    /// too: names (lowercase), `*.suffix` patterns or IP addresses. It narrows the
    /// worker's egress policy and never widens it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    /// A lower limit than the worker's on the response body read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_response_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqlMode {
    Read,
    Write,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SqlStep {
    pub query: String,
    /// Bound parameters `$1, $2, …`; each may be a template.
    #[serde(default)]
    pub params: Vec<serde_json::Value>,
    pub mode: SqlMode,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SleepStep {
    pub duration_ms: u64,
}

/// A chat completion from an OpenAI-compatible server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LlmStep {
    /// The user message (a template).
    pub prompt: String,
    /// An optional system message (a template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Overrides the configured model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// When set, the answer must be JSON matching this schema (see [`schema`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<serde_json::Value>,
    /// A lower limit than the worker's on the model's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_response_bytes: Option<u64>,
}

/// Waits for an external callback (`POST /api/webhooks/agent-result`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitStep {}

/// Starts a child run and waits for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChildStep {
    pub workflow: String,
    /// The child's input; strings inside may be templates.
    pub input: serde_json::Value,
}

/// Runs a child run for each item of a list known only at run time — of `workflow`, or
/// of the one inline `step` — at most `max_parallel` at once; its output is the
/// children's outputs in item order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MapStep {
    /// A template that yields the list.
    pub items: String,
    /// The workflow each item runs; `None` with an inline `step`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// The step each item runs, as a one-step workflow of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<Box<Step>>,
    /// Each child's input; strings inside may be templates, which also see `item` and
    /// `index`. `None`: `{ "item": …, "index": … }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
    pub max_parallel: u32,
    pub on_failure: MapFailure,
}

impl MapStep {
    /// The most items a map step takes.
    pub const ITEMS_MAX: usize = 100_000;
    /// The highest `max_parallel`.
    pub const PARALLEL_MAX: i64 = 1_000;
    pub const PARALLEL_DEFAULT: u32 = 10;

    /// The one-step workflow an inline `step`'s items run as, named after the map step
    /// (`parent.step`, a name no file can take): its output is the step's output.
    pub fn item_definition(&self, parent: &Workflow, step_id: &str) -> Option<Definition> {
        let step = self.step.as_deref()?;
        let workflow = Workflow {
            name: format!("{}.{step_id}", parent.name),
            description: Some(format!(
                "Each item of step `{step_id}` of workflow `{}`.",
                parent.name
            )),
            input: Vec::new(),
            output: Some(serde_json::Value::String(format!(
                "{{{{ steps.{}.output }}}}",
                step.id
            ))),
            steps: vec![step.clone()],
            schedules: Vec::new(),
            retain: parent.retain,
            concurrency: None,
            notify: parent.notify.clone(),
            map_item: true,
        };
        let source = serde_json::to_string(&workflow).ok()?;
        Some(Definition {
            hash: content_hash(&source),
            source,
            workflow,
        })
    }
}

/// What a `map` step does when one of its items fails for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MapFailure {
    /// The step fails at once; the items still running are cancelled.
    FailFast,
    /// The failure takes the item's place in the output, and the other items go on.
    Collect,
}

/// Built-in: a project's facts from the database, with findings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalyzeStep {
    /// The project id (a template).
    pub project: serde_json::Value,
}

/// Built-in: a deterministic extractive summary of a text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SummarizeStep {
    /// The text (a template).
    pub text: serde_json::Value,
    pub sentences: u32,
}

/// Its output is `output` with its templates rendered: reshapes data for the steps
/// after it, or joins branches. No I/O.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassStep {
    /// The output (templates inside strings are rendered); `{}` when not given.
    pub output: serde_json::Value,
}

/// How a step's failed attempts are retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 means never retry.
    pub max_attempts: u32,
    pub initial_delay_ms: u64,
    pub max_delay_ms: u64,
    pub multiplier: f64,
    /// Fraction of the delay added or removed at random (0.2 → ±20%).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_delay_ms: 1_000,
            max_delay_ms: 300_000,
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

/// A host name as the `url` crate spells it (lowercase, punycode, no trailing dot), or
/// `None` when `s` is not one.
pub fn normalize_host(s: &str) -> Option<String> {
    let s = s.trim().trim_end_matches('.');
    if s.is_empty() || s.contains(['/', '@', '?', '#', ':', '*']) {
        return None;
    }
    let url = url::Url::parse(&format!("http://{s}/")).ok()?;
    match url.host()? {
        url::Host::Domain(d) => Some(d.to_owned()),
        // An address spelled oddly (`2130706433`): keep the canonical spelling.
        url::Host::Ipv4(ip) => Some(ip.to_string()),
        url::Host::Ipv6(ip) => Some(ip.to_string()),
    }
}

/// A byte size: a number of bytes, or a number with `KiB`, `MiB`, `GiB` (or `KB`, `MB`,
/// `GB`, powers of 1000), e.g. `4MiB`, `512 KiB`, `1048576`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 4MiB, 512KiB, 1048576)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(format!("`{s}` is not a size (e.g. 4MiB, 512KiB, 1048576)")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// The default step timeout when neither the step nor `[defaults]` sets one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a `wait` step waits for its callback unless it says.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long a `workflow` step waits for its child, and a `map` step for all its items,
/// unless it says.
pub const DEFAULT_CHILD_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

impl Workflow {
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// Steps that no other step needs: their outputs form the default run output.
    pub fn leaves(&self) -> Vec<&Step> {
        let needed: BTreeSet<&str> = self
            .steps
            .iter()
            .flat_map(|s| s.needs.iter().map(String::as_str))
            .collect();
        self.steps
            .iter()
            .filter(|s| !needed.contains(s.id.as_str()))
            .collect()
    }

    /// The concurrency key and limit of a run with this (validated) input, when the
    /// workflow has a `[concurrency]` limit.
    pub fn concurrency_for(
        &self,
        input: &serde_json::Value,
    ) -> Result<Option<(String, i32)>, InputError> {
        self.concurrency
            .as_ref()
            .map(|c| c.key_for(input).map(|key| (key, c.limit)))
            .transpose()
    }

    /// Whether runs of this workflow are pinned when they are queued.
    pub fn pins_runs(&self) -> bool {
        self.retain == Some(Retain::Forever)
    }

    /// Checks a submitted input against the schema and fills in defaults.
    pub fn validate_input(
        &self,
        input: &serde_json::Value,
    ) -> Result<serde_json::Value, Vec<InputError>> {
        // An inline map step's items: the engine makes their input, `{ item, index }`,
        // and an item may be any value.
        if self.map_item {
            return Ok(input.clone());
        }
        input::validate(&self.input, input)
    }
}

/// A workflow together with the source it was read from and its content hash.
#[derive(Debug, Clone)]
pub struct Definition {
    pub workflow: Workflow,
    pub source: String,
    /// Hex SHA-256 of the source text.
    pub hash: String,
}

impl Definition {
    /// Parses and validates one workflow named `name` from `source`; `file` is used in
    /// diagnostics.
    pub fn parse(name: &str, file: &str, source: &str) -> Result<Definition, WorkflowError> {
        let workflow = parse_workflow(name, file, source).map_err(WorkflowError::Invalid)?;
        Ok(Definition {
            workflow,
            source: source.to_owned(),
            hash: content_hash(source),
        })
    }
}

pub fn content_hash(source: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(source.as_bytes()))
}

/// All workflows of a directory, by name.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    definitions: BTreeMap<String, Definition>,
}

impl Registry {
    /// Loads every `*.toml` in `dir`; all files' diagnostics are reported together.
    pub fn load_dir(dir: &Path) -> Result<Registry, WorkflowError> {
        let files = toml_files(dir)?;
        Registry::load_files(&files)
    }

    /// Loads the given files (each file's stem is its workflow's name).
    pub fn load_files(files: &[PathBuf]) -> Result<Registry, WorkflowError> {
        let mut definitions = BTreeMap::new();
        let mut diagnostics = Vec::new();
        for path in files {
            let source = std::fs::read_to_string(path).map_err(|source| WorkflowError::Io {
                path: path.clone(),
                source,
            })?;
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            let file = path.display().to_string();
            if !parse::is_identifier(&name) {
                diagnostics.push(Diagnostic::at_start(
                    &file,
                    format!("workflow name `{name}` (the file stem) must be letters, digits and underscores, not starting with a digit"),
                ));
                continue;
            }
            match Definition::parse(&name, &file, &source) {
                Ok(def) => {
                    definitions.insert(name, def);
                }
                Err(WorkflowError::Invalid(d)) => diagnostics.extend(d),
                Err(e) => return Err(e),
            }
        }
        // `workflow` steps must name a workflow loaded beside them.
        for def in definitions.values() {
            for step in &def.workflow.steps {
                if let Some(child) = step.kind.child_workflow()
                    && !definitions.contains_key(child)
                {
                    let file = files
                        .iter()
                        .find(|f| {
                            f.file_stem().and_then(|s| s.to_str())
                                == Some(def.workflow.name.as_str())
                        })
                        .map(|f| f.display().to_string())
                        .unwrap_or_default();
                    diagnostics.push(Diagnostic::at_start(
                        &file,
                        format!(
                            "step `{}` starts workflow `{}`, which is not among the loaded workflows",
                            step.id, child
                        ),
                    ));
                }
            }
        }
        if diagnostics.is_empty() {
            Ok(Registry { definitions })
        } else {
            Err(WorkflowError::Invalid(diagnostics))
        }
    }

    pub fn from_definitions(defs: impl IntoIterator<Item = Definition>) -> Registry {
        Registry {
            definitions: defs
                .into_iter()
                .map(|d| (d.workflow.name.clone(), d))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Definition> {
        self.definitions.get(name)
    }

    /// `name` and every workflow its `workflow` steps start, transitively.
    pub fn with_children<'a>(&'a self, name: &str) -> Vec<&'a Definition> {
        let mut out: Vec<&Definition> = Vec::new();
        let mut todo = vec![name.to_owned()];
        while let Some(n) = todo.pop() {
            let Some(def) = self.definitions.get(&n) else {
                continue;
            };
            if out.iter().any(|d| d.workflow.name == n) {
                continue;
            }
            for step in &def.workflow.steps {
                if let Some(child) = step.kind.child_workflow() {
                    todo.push(child.to_owned());
                }
            }
            out.push(def);
        }
        out
    }

    pub fn iter(&self) -> impl Iterator<Item = &Definition> {
        self.definitions.values()
    }

    pub fn names(&self) -> Vec<&str> {
        self.definitions.keys().map(String::as_str).collect()
    }
}

/// The `*.toml` files of a directory, sorted.
pub fn toml_files(dir: &Path) -> Result<Vec<PathBuf>, WorkflowError> {
    let io = |source| WorkflowError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

impl Workflow {
    /// The DAG as a Mermaid flowchart.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart TD\n");
        for s in &self.steps {
            out.push_str(&format!("    {}[\"{} ({})\"]\n", s.id, s.id, s.kind.name()));
        }
        for s in &self.steps {
            for n in &s.needs {
                out.push_str(&format!("    {n} --> {}\n", s.id));
            }
        }
        out
    }

    /// The DAG in Graphviz DOT.
    pub fn to_dot(&self) -> String {
        let mut out = format!("digraph \"{}\" {{\n    rankdir=TB;\n", self.name);
        for s in &self.steps {
            out.push_str(&format!(
                "    \"{}\" [label=\"{} ({})\"];\n",
                s.id,
                s.id,
                s.kind.name()
            ));
        }
        for s in &self.steps {
            for n in &s.needs {
                out.push_str(&format!("    \"{n}\" -> \"{}\";\n", s.id));
            }
        }
        out.push_str("}\n");
        out
    }
}
