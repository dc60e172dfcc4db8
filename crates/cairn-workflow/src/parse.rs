//! From TOML text to a validated [`Workflow`], with every problem located.
//!
//! The raw structs mirror the file one to one (`deny_unknown_fields`) and keep the byte
//! span of each value, so validation errors point at the line and column of the value
//! that is wrong. All problems of a file are collected, not just the first.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

use super::input::{InputField, InputType};
use super::schedule::{self, CronSchedule, ScheduleSpec};
use super::template;
use super::{
    AnalyzeStep, ChildStep, DEFAULT_TIMEOUT, HttpStep, LlmStep, MapFailure, MapStep, PassStep,
    RetryPolicy, SleepStep, SqlMode, SqlStep, Step, StepKind, SummarizeStep, WaitStep, Workflow,
};

/// One located problem in a workflow file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Diagnostic {
    pub fn at_start(file: &str, message: String) -> Diagnostic {
        Diagnostic {
            file: file.to_owned(),
            line: 1,
            column: 1,
            message,
        }
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkflow {
    description: Option<String>,
    retain: Option<Spanned<String>>,
    #[serde(default)]
    input: BTreeMap<Spanned<String>, Spanned<RawInputField>>,
    defaults: Option<Spanned<RawDefaults>>,
    output: Option<Spanned<toml::Value>>,
    #[serde(default)]
    steps: Vec<Spanned<RawStep>>,
    #[serde(default)]
    schedules: Vec<Spanned<RawSchedule>>,
    concurrency: Option<Spanned<RawConcurrency>>,
    notify: Option<Spanned<RawNotify>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    url: Option<Spanned<String>>,
    enabled: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConcurrency {
    key: Spanned<String>,
    limit: Spanned<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    name: Option<Spanned<String>>,
    cron: Spanned<String>,
    timezone: Option<Spanned<String>>,
    input: Option<Spanned<toml::Value>>,
    enabled: Option<bool>,
    misfire_policy: Option<Spanned<String>>,
    max_lateness: Option<Spanned<String>>,
    overlap_policy: Option<Spanned<String>>,
    priority: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInputField {
    #[serde(rename = "type")]
    ty: Spanned<String>,
    default: Option<Spanned<toml::Value>>,
    #[serde(rename = "enum")]
    allowed: Option<Spanned<Vec<toml::Value>>>,
    required: Option<bool>,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    timeout: Option<Spanned<String>>,
    retry: Option<Spanned<RawRetry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    max_attempts: Option<Spanned<i64>>,
    initial_delay: Option<Spanned<String>>,
    max_delay: Option<Spanned<String>>,
    multiplier: Option<Spanned<toml::Value>>,
    jitter: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    key: Spanned<String>,
    per_minute: Spanned<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    id: Spanned<String>,
    kind: Spanned<String>,
    #[serde(default)]
    needs: Vec<Spanned<String>>,
    #[serde(rename = "if")]
    condition: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    retry: Option<Spanned<RawRetry>>,
    rate_limit: Option<Spanned<RawRateLimit>>,
    concurrency: Option<Spanned<RawConcurrency>>,
    // http
    method: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    headers: Option<Spanned<BTreeMap<String, String>>>,
    body: Option<Spanned<toml::Value>>,
    allowed_hosts: Option<Spanned<Vec<Spanned<String>>>>,
    // http and llm
    max_response_bytes: Option<Spanned<toml::Value>>,
    // sql
    query: Option<Spanned<String>>,
    params: Option<Spanned<Vec<toml::Value>>>,
    mode: Option<Spanned<String>>,
    // sleep
    duration: Option<Spanned<String>>,
    // llm
    prompt: Option<Spanned<String>>,
    system: Option<Spanned<String>>,
    model: Option<Spanned<String>>,
    temperature: Option<Spanned<toml::Value>>,
    max_tokens: Option<Spanned<i64>>,
    output_schema: Option<Spanned<toml::Value>>,
    // workflow
    workflow: Option<Spanned<String>>,
    input: Option<Spanned<toml::Value>>,
    // map (with workflow and input)
    items: Option<Spanned<String>>,
    step: Option<Spanned<toml::Table>>,
    max_parallel: Option<Spanned<i64>>,
    on_failure: Option<Spanned<String>>,
    // analyze
    project: Option<Spanned<String>>,
    // summarize
    text: Option<Spanned<String>>,
    sentences: Option<Spanned<i64>>,
    // pass
    output: Option<Spanned<toml::Value>>,
}

const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

/// Whether `s` can name a workflow, a step or an input field (usable in templates).
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

struct Ctx<'a> {
    file: &'a str,
    source: &'a str,
    diagnostics: Vec<Diagnostic>,
    /// Ids of the `wait` steps: the only ones `run.deliveries.<id>` has a key for.
    wait_steps: BTreeSet<String>,
    /// Checking a `map` step's child input, whose templates see `item` and `index`.
    in_map_input: bool,
}

impl Ctx<'_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = line_col(self.source, span.start);
        self.diagnostics.push(Diagnostic {
            file: self.file.to_owned(),
            line,
            column,
            message: message.into(),
        });
    }

    fn duration(&mut self, s: &Spanned<String>, what: &str) -> Option<Duration> {
        match humantime::parse_duration(s.get_ref().trim()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(
                    s.span(),
                    format!(
                        "bad duration `{}` for `{what}`: {e} (write e.g. \"500ms\", \"30s\", \"5m\")",
                        s.get_ref()
                    ),
                );
                None
            }
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = source
        .get(line_start..offset)
        .map_or(1, |s| s.chars().count() + 1);
    (line, column)
}

fn to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        toml::Value::Table(t) => {
            Value::Object(t.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
    }
}

fn number(v: &toml::Value) -> Option<f64> {
    match v {
        toml::Value::Integer(i) => Some(*i as f64),
        toml::Value::Float(f) => Some(*f),
        _ => None,
    }
}

/// Parses and validates a workflow file. `name` is the file stem.
pub fn parse_workflow(name: &str, file: &str, source: &str) -> Result<Workflow, Vec<Diagnostic>> {
    let mut cx = Ctx {
        file,
        source,
        diagnostics: Vec::new(),
        wait_steps: BTreeSet::new(),
        in_map_input: false,
    };
    let raw: RawWorkflow = match toml::from_str(source) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            cx.error(span, e.message().trim().to_owned());
            return Err(cx.diagnostics);
        }
    };

    let input = parse_input(&mut cx, &raw.input);

    let mut default_timeout = DEFAULT_TIMEOUT;
    let mut default_retry = RetryPolicy::default();
    if let Some(defaults) = &raw.defaults {
        let d = defaults.get_ref();
        if let Some(t) = &d.timeout
            && let Some(t) = timeout(&mut cx, t)
        {
            default_timeout = t;
        }
        if let Some(r) = &d.retry {
            default_retry = retry(&mut cx, r, &default_retry);
        }
    }

    if raw.steps.is_empty() {
        cx.error(0..0, "a workflow needs at least one [[steps]] entry");
    }

    // Ids first: references are checked against all of them.
    let mut ids: HashMap<String, Range<usize>> = HashMap::new();
    for s in &raw.steps {
        let id = &s.get_ref().id;
        if !is_identifier(id.get_ref()) {
            cx.error(
                id.span(),
                format!(
                    "step id `{}` must be letters, digits and underscores, not starting with a digit",
                    id.get_ref()
                ),
            );
        } else if ids.contains_key(id.get_ref()) {
            cx.error(id.span(), format!("duplicate step id `{}`", id.get_ref()));
        } else {
            ids.insert(id.get_ref().clone(), id.span());
        }
    }

    for s in &raw.steps {
        for need in &s.get_ref().needs {
            if !ids.contains_key(need.get_ref()) {
                cx.error(
                    need.span(),
                    format!(
                        "step `{}` needs unknown step `{}`",
                        s.get_ref().id.get_ref(),
                        need.get_ref()
                    ),
                );
            } else if need.get_ref() == s.get_ref().id.get_ref() {
                cx.error(
                    need.span(),
                    format!("step `{}` needs itself", need.get_ref()),
                );
            }
        }
    }

    cx.wait_steps = raw
        .steps
        .iter()
        .map(Spanned::get_ref)
        .filter(|s| s.kind.get_ref() == "wait")
        .map(|s| s.id.get_ref().clone())
        .collect();

    let order = match topo_order(&raw.steps) {
        Ok(order) => order,
        Err((at, cycle)) => {
            let span = raw.steps[at].get_ref().id.span();
            cx.error(span, format!("steps form a cycle: {}", cycle.join(" -> ")));
            (0..raw.steps.len()).collect()
        }
    };

    // Transitive upstream sets, for template references.
    let mut upstream: HashMap<&str, BTreeSet<String>> = HashMap::new();
    for &i in &order {
        let s = raw.steps[i].get_ref();
        let mut set = BTreeSet::new();
        for need in &s.needs {
            set.insert(need.get_ref().clone());
            if let Some(up) = upstream.get(need.get_ref().as_str()) {
                set.extend(up.iter().cloned());
            }
        }
        upstream.insert(s.id.get_ref(), set);
    }

    let mut steps = Vec::new();
    for &i in &order {
        let raw_step = &raw.steps[i];
        let up = upstream
            .get(raw_step.get_ref().id.get_ref().as_str())
            .cloned()
            .unwrap_or_default();
        if let Some(step) = parse_step(
            &mut cx,
            raw_step,
            &input,
            &up,
            default_timeout,
            &default_retry,
        ) {
            steps.push(step);
        }
    }

    let output = raw.output.as_ref().map(|o| {
        let all: BTreeSet<String> = ids.keys().cloned().collect();
        let value = to_json(o.get_ref());
        check_templates(&mut cx, o.span(), &value, &input, &all, "output");
        value
    });

    let schedules = parse_schedules(&mut cx, name, &raw.schedules, &input);

    let retain = match &raw.retain {
        None => None,
        Some(r) if r.get_ref() == "forever" => Some(super::Retain::Forever),
        Some(r) => {
            cx.error(
                r.span(),
                format!(
                    "`retain` is \"forever\" or absent, not `{}`: without it, runs are deleted after the \
                     cluster's retention windows (--retain-succeeded, --retain-cancelled, --retain-dead)",
                    r.get_ref()
                ),
            );
            None
        }
    };

    let concurrency = raw
        .concurrency
        .as_ref()
        .and_then(|c| parse_concurrency(&mut cx, c.get_ref(), &input));

    let notify = raw
        .notify
        .as_ref()
        .map(|n| parse_notify(&mut cx, n.get_ref()));

    if cx.diagnostics.is_empty() {
        Ok(Workflow {
            name: name.to_owned(),
            description: raw.description,
            input,
            output,
            steps,
            schedules,
            retain,
            concurrency,
            notify,
            map_item: false,
        })
    } else {
        cx.diagnostics.sort_by_key(|d| (d.line, d.column));
        Err(cx.diagnostics)
    }
}

fn parse_input(
    cx: &mut Ctx<'_>,
    table: &BTreeMap<Spanned<String>, Spanned<RawInputField>>,
) -> Vec<InputField> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    let mut fields = Vec::new();
    for (key, raw) in entries {
        let name = key.get_ref();
        let span = key.span();
        let raw = raw.get_ref();
        if !is_identifier(name) {
            cx.error(
                span.clone(),
                format!("input field `{name}` must be letters, digits and underscores"),
            );
        }
        let Some(ty) = InputType::parse(raw.ty.get_ref()) else {
            cx.error(
                raw.ty.span(),
                format!(
                    "input field `{name}` has unknown type `{}`; expected one of: {}",
                    raw.ty.get_ref(),
                    InputType::NAMES.join(", ")
                ),
            );
            continue;
        };
        let default = raw.default.as_ref().map(|d| to_json(d.get_ref()));
        if let (Some(d), Some(at)) = (&default, &raw.default)
            && !ty.matches(d)
        {
            cx.error(
                at.span(),
                format!("input field `{name}`: default {d} is not a {}", ty.name()),
            );
        }
        let allowed = raw
            .allowed
            .as_ref()
            .map(|a| a.get_ref().iter().map(to_json).collect::<Vec<_>>());
        if let (Some(allowed), Some(at)) = (&allowed, &raw.allowed) {
            if let Some(bad) = allowed.iter().find(|v| !ty.matches(v)) {
                cx.error(
                    at.span(),
                    format!(
                        "input field `{name}`: enum value {bad} is not a {}",
                        ty.name()
                    ),
                );
            }
            if let Some(d) = default.as_ref().filter(|d| !allowed.contains(d)) {
                cx.error(
                    at.span(),
                    format!("input field `{name}`: default {d} is not in its enum"),
                );
            }
        }
        fields.push(InputField {
            name: name.clone(),
            ty,
            required: raw.required.unwrap_or(default.is_none()),
            default,
            allowed,
            description: raw.description.clone(),
        });
    }
    fields
}

fn timeout(cx: &mut Ctx<'_>, t: &Spanned<String>) -> Option<Duration> {
    let d = cx.duration(t, "timeout")?;
    if d.is_zero() {
        cx.error(t.span(), "timeout must be greater than zero");
        return None;
    }
    Some(d)
}

fn retry(cx: &mut Ctx<'_>, r: &Spanned<RawRetry>, base: &RetryPolicy) -> RetryPolicy {
    let raw = r.get_ref();
    let mut p = base.clone();
    if let Some(m) = &raw.max_attempts {
        if *m.get_ref() < 1 || *m.get_ref() > 1000 {
            cx.error(m.span(), "max_attempts must be between 1 and 1000");
        } else {
            p.max_attempts = *m.get_ref() as u32;
        }
    }
    if let Some(d) = &raw.initial_delay
        && let Some(d) = cx.duration(d, "initial_delay")
    {
        p.initial_delay_ms = d.as_millis() as u64;
    }
    if let Some(d) = &raw.max_delay
        && let Some(d) = cx.duration(d, "max_delay")
    {
        p.max_delay_ms = d.as_millis() as u64;
    }
    if let Some(m) = &raw.multiplier {
        match number(m.get_ref()) {
            Some(x) if (1.0..=100.0).contains(&x) => p.multiplier = x,
            _ => cx.error(m.span(), "multiplier must be a number from 1 to 100"),
        }
    }
    if let Some(j) = &raw.jitter {
        match number(j.get_ref()) {
            Some(x) if (0.0..=1.0).contains(&x) => p.jitter = x,
            _ => cx.error(j.span(), "jitter must be a number from 0 to 1"),
        }
    }
    if p.max_delay_ms < p.initial_delay_ms {
        cx.error(r.span(), "max_delay must not be shorter than initial_delay");
    }
    p
}

/// Indices of `steps` in dependency order, or the index and path of a cycle.
fn topo_order(steps: &[Spanned<RawStep>]) -> Result<Vec<usize>, (usize, Vec<String>)> {
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.get_ref().id.get_ref().as_str(), i))
        .collect();
    // 0 = unvisited, 1 = on the stack, 2 = done
    let mut state = vec![0u8; steps.len()];
    let mut order = Vec::with_capacity(steps.len());
    fn visit(
        i: usize,
        steps: &[Spanned<RawStep>],
        index: &HashMap<&str, usize>,
        state: &mut [u8],
        stack: &mut Vec<usize>,
        order: &mut Vec<usize>,
    ) -> Result<(), (usize, Vec<String>)> {
        match state[i] {
            2 => return Ok(()),
            1 => {
                let from = stack.iter().position(|&s| s == i).unwrap_or(0);
                let mut path: Vec<String> = stack[from..]
                    .iter()
                    .map(|&s| steps[s].get_ref().id.get_ref().clone())
                    .collect();
                path.push(steps[i].get_ref().id.get_ref().clone());
                return Err((i, path));
            }
            _ => {}
        }
        state[i] = 1;
        stack.push(i);
        for need in &steps[i].get_ref().needs {
            if let Some(&j) = index.get(need.get_ref().as_str())
                && j != i
            {
                visit(j, steps, index, state, stack, order)?;
            }
        }
        stack.pop();
        state[i] = 2;
        order.push(i);
        Ok(())
    }
    for i in 0..steps.len() {
        let mut stack = Vec::new();
        visit(i, steps, &index, &mut state, &mut stack, &mut order)?;
    }
    Ok(order)
}

/// Checks every template in `value`: it compiles, and reads only declared inputs and
/// steps upstream of the one it belongs to.
fn check_templates(
    cx: &mut Ctx<'_>,
    span: Range<usize>,
    value: &Value,
    input: &[InputField],
    upstream: &BTreeSet<String>,
    owner: &str,
) {
    for s in template::strings(value) {
        check_template(cx, span.clone(), s, false, input, upstream, owner);
    }
}

fn check_template(
    cx: &mut Ctx<'_>,
    span: Range<usize>,
    s: &str,
    expression: bool,
    input: &[InputField],
    upstream: &BTreeSet<String>,
    owner: &str,
) {
    let vars = match template::check(s, expression) {
        Ok(v) => v,
        Err(e) => {
            cx.error(span, format!("{owner}: bad template: {e}"));
            return;
        }
    };
    for var in vars {
        let mut parts = var.split('.');
        let root = parts.next().unwrap_or_default();
        let second = parts.next();
        match root {
            "input" => {
                if let Some(field) = second
                    && !input.iter().any(|f| f.name == field)
                {
                    cx.error(
                        span.clone(),
                        format!("{owner}: template reads `input.{field}`, which [input] does not declare"),
                    );
                }
            }
            "steps" => {
                if let Some(step) = second
                    && !upstream.contains(step)
                {
                    cx.error(
                        span.clone(),
                        format!(
                            "{owner}: template reads `steps.{step}`, which is not upstream of it (add it to `needs`, directly or through another step)"
                        ),
                    );
                }
            }
            "run" => {
                if second == Some("deliveries")
                    && let Some(step) = parts.next()
                    && !cx.wait_steps.contains(step)
                {
                    cx.error(
                        span.clone(),
                        format!(
                            "{owner}: template reads `run.deliveries.{step}`, but only `wait` steps have delivery keys"
                        ),
                    );
                }
            }
            "env" | "llm" => {}
            "item" | "index" if cx.in_map_input => {}
            other => cx.error(
                span.clone(),
                format!(
                    "{owner}: template reads unknown variable `{other}` (available: input, steps, run, env, llm)"
                ),
            ),
        }
    }
}

/// An `allowed_hosts` entry as matched against URLs: a lowercase name, `*.` and a
/// name, or an IP address.
fn allowed_host(s: &str) -> Option<String> {
    let s = s.trim();
    let unbracketed = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    if let Ok(ip) = unbracketed.parse::<std::net::IpAddr>() {
        return Some(ip.to_string());
    }
    let (wild, name) = match s.strip_prefix("*.") {
        Some(rest) => ("*.", rest),
        None => ("", s),
    };
    let name = super::normalize_host(name)?;
    // A wildcard over an address means nothing.
    if !wild.is_empty() && name.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    Some(format!("{wild}{name}"))
}

/// `max_response_bytes`: a positive number of bytes or a size such as `"1MiB"`.
fn max_response_bytes(cx: &mut Ctx<'_>, s: &RawStep, owner: &str) -> Option<u64> {
    let m = s.max_response_bytes.as_ref()?;
    let parsed = match m.get_ref() {
        toml::Value::Integer(n) if *n > 0 => Ok(*n as u64),
        toml::Value::String(text) => super::parse_size(text).and_then(|n| {
            if n > 0 {
                Ok(n)
            } else {
                Err("it must be more than 0".into())
            }
        }),
        _ => Err("give a positive number of bytes or a size such as \"1MiB\"".into()),
    };
    match parsed {
        Ok(n) => Some(n),
        Err(e) => {
            cx.error(m.span(), format!("{owner}: max_response_bytes: {e}"));
            None
        }
    }
}

fn parse_step(
    cx: &mut Ctx<'_>,
    raw: &Spanned<RawStep>,
    input: &[InputField],
    upstream: &BTreeSet<String>,
    default_timeout: Duration,
    default_retry: &RetryPolicy,
) -> Option<Step> {
    let s = raw.get_ref();
    let id = s.id.get_ref().clone();
    let owner = format!("step `{id}`");
    let kind_name = s.kind.get_ref().as_str();

    // Fields that belong to another kind.
    let present: [(&str, Option<Range<usize>>); 26] = [
        ("allowed_hosts", s.allowed_hosts.as_ref().map(Spanned::span)),
        (
            "max_response_bytes",
            s.max_response_bytes.as_ref().map(Spanned::span),
        ),
        ("method", s.method.as_ref().map(Spanned::span)),
        ("url", s.url.as_ref().map(Spanned::span)),
        ("headers", s.headers.as_ref().map(Spanned::span)),
        ("body", s.body.as_ref().map(Spanned::span)),
        ("query", s.query.as_ref().map(Spanned::span)),
        ("params", s.params.as_ref().map(Spanned::span)),
        ("mode", s.mode.as_ref().map(Spanned::span)),
        ("duration", s.duration.as_ref().map(Spanned::span)),
        ("prompt", s.prompt.as_ref().map(Spanned::span)),
        ("system", s.system.as_ref().map(Spanned::span)),
        ("model", s.model.as_ref().map(Spanned::span)),
        ("temperature", s.temperature.as_ref().map(Spanned::span)),
        ("max_tokens", s.max_tokens.as_ref().map(Spanned::span)),
        ("output_schema", s.output_schema.as_ref().map(Spanned::span)),
        ("workflow", s.workflow.as_ref().map(Spanned::span)),
        ("input", s.input.as_ref().map(Spanned::span)),
        ("items", s.items.as_ref().map(Spanned::span)),
        ("step", s.step.as_ref().map(Spanned::span)),
        ("max_parallel", s.max_parallel.as_ref().map(Spanned::span)),
        ("on_failure", s.on_failure.as_ref().map(Spanned::span)),
        ("project", s.project.as_ref().map(Spanned::span)),
        ("text", s.text.as_ref().map(Spanned::span)),
        ("sentences", s.sentences.as_ref().map(Spanned::span)),
        ("output", s.output.as_ref().map(Spanned::span)),
    ];
    let allowed: &[&str] = match kind_name {
        "http" => &[
            "method",
            "url",
            "headers",
            "body",
            "allowed_hosts",
            "max_response_bytes",
        ],
        "sql" => &["query", "params", "mode"],
        "sleep" => &["duration"],
        "llm" => &[
            "prompt",
            "system",
            "model",
            "temperature",
            "max_tokens",
            "output_schema",
            "max_response_bytes",
        ],
        "wait" => &[],
        "workflow" => &["workflow", "input"],
        "map" => &[
            "items",
            "workflow",
            "step",
            "input",
            "max_parallel",
            "on_failure",
        ],
        "analyze" => &["project"],
        "summarize" => &["text", "sentences"],
        "pass" => &["output"],
        other => {
            cx.error(
                s.kind.span(),
                format!(
                    "{owner}: unknown kind `{other}`; expected one of: {}",
                    super::StepKind::NAMES.join(", ")
                ),
            );
            return None;
        }
    };
    for (field, span) in &present {
        if let Some(span) = span
            && !allowed.contains(field)
        {
            cx.error(
                span.clone(),
                format!(
                    "{owner}: field `{field}` does not apply to kind `{kind_name}` (it takes: {})",
                    allowed.join(", ")
                ),
            );
        }
    }

    let missing = |cx: &mut Ctx<'_>, field: &str| {
        cx.error(
            raw.span().start..raw.span().start,
            format!("{owner}: kind `{kind_name}` needs `{field}`"),
        );
    };

    let kind = match kind_name {
        "http" => {
            let method = match &s.method {
                Some(m) => {
                    let up = m.get_ref().to_ascii_uppercase();
                    if !HTTP_METHODS.contains(&up.as_str()) {
                        cx.error(
                            m.span(),
                            format!(
                                "{owner}: unknown HTTP method `{}`; expected one of: {}",
                                m.get_ref(),
                                HTTP_METHODS.join(", ")
                            ),
                        );
                    }
                    up
                }
                None => "GET".to_owned(),
            };
            let url = match &s.url {
                Some(u) => {
                    check_template(cx, u.span(), u.get_ref(), false, input, upstream, &owner);
                    if !template::is_template(u.get_ref()) && url::Url::parse(u.get_ref()).is_err()
                    {
                        cx.error(u.span(), format!("{owner}: `{}` is not a URL", u.get_ref()));
                    }
                    Value::String(u.get_ref().clone())
                }
                None => {
                    missing(cx, "url");
                    Value::Null
                }
            };
            let mut headers = BTreeMap::new();
            if let Some(h) = &s.headers {
                for (k, v) in h.get_ref() {
                    if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                        cx.error(
                            h.span(),
                            format!("{owner}: `{k}` is not a valid header name"),
                        );
                    }
                    check_template(cx, h.span(), v, false, input, upstream, &owner);
                    headers.insert(k.clone(), Value::String(v.clone()));
                }
            }
            let body = s.body.as_ref().map(|b| {
                let v = to_json(b.get_ref());
                check_templates(cx, b.span(), &v, input, upstream, &owner);
                v
            });
            let mut allowed_hosts = Vec::new();
            if let Some(list) = &s.allowed_hosts {
                if list.get_ref().is_empty() {
                    cx.error(
                        list.span(),
                        format!("{owner}: allowed_hosts is empty; leave it out to allow any host the worker allows"),
                    );
                }
                for h in list.get_ref() {
                    match allowed_host(h.get_ref()) {
                        Some(p) => allowed_hosts.push(p),
                        None => cx.error(
                            h.span(),
                            format!(
                                "{owner}: `{}` in allowed_hosts is not a host name, `*.domain` or an IP address (no scheme, port or path)",
                                h.get_ref()
                            ),
                        ),
                    }
                }
            }
            StepKind::Http(HttpStep {
                method,
                url,
                headers,
                body,
                allowed_hosts,
                max_response_bytes: max_response_bytes(cx, s, &owner),
            })
        }
        "sql" => {
            let query = match &s.query {
                Some(q) if q.get_ref().trim().is_empty() => {
                    cx.error(q.span(), format!("{owner}: query is empty"));
                    String::new()
                }
                Some(q) => {
                    if template::is_template(q.get_ref()) {
                        cx.error(
                            q.span(),
                            format!("{owner}: a query cannot contain templates; pass values through `params` ($1, $2, …)"),
                        );
                    }
                    q.get_ref().clone()
                }
                None => {
                    missing(cx, "query");
                    String::new()
                }
            };
            let params: Vec<Value> = s
                .params
                .as_ref()
                .map(|p| p.get_ref().iter().map(to_json).collect())
                .unwrap_or_default();
            if let Some(p) = &s.params {
                for v in &params {
                    check_templates(cx, p.span(), v, input, upstream, &owner);
                }
            }
            let mode = match s.mode.as_ref().map(|m| (m, m.get_ref().as_str())) {
                None | Some((_, "read")) => SqlMode::Read,
                Some((_, "write")) => SqlMode::Write,
                Some((m, other)) => {
                    cx.error(
                        m.span(),
                        format!("{owner}: mode `{other}` must be \"read\" or \"write\""),
                    );
                    SqlMode::Read
                }
            };
            StepKind::Sql(SqlStep {
                query,
                params,
                mode,
            })
        }
        "llm" => {
            let prompt = match &s.prompt {
                Some(p) => {
                    check_template(cx, p.span(), p.get_ref(), false, input, upstream, &owner);
                    p.get_ref().clone()
                }
                None => {
                    missing(cx, "prompt");
                    String::new()
                }
            };
            if let Some(sys) = &s.system {
                check_template(
                    cx,
                    sys.span(),
                    sys.get_ref(),
                    false,
                    input,
                    upstream,
                    &owner,
                );
            }
            let temperature = match &s.temperature {
                None => None,
                Some(t) => match number(t.get_ref()) {
                    Some(x) if (0.0..=2.0).contains(&x) => Some(x),
                    _ => {
                        cx.error(
                            t.span(),
                            format!("{owner}: temperature must be a number from 0 to 2"),
                        );
                        None
                    }
                },
            };
            let max_tokens = match &s.max_tokens {
                None => None,
                Some(m) if *m.get_ref() >= 1 && *m.get_ref() <= 1_000_000 => {
                    Some(*m.get_ref() as u32)
                }
                Some(m) => {
                    cx.error(
                        m.span(),
                        format!("{owner}: max_tokens must be between 1 and 1000000"),
                    );
                    None
                }
            };
            let output_schema = s.output_schema.as_ref().map(|o| {
                let v = to_json(o.get_ref());
                if let Err(e) = super::schema::check_schema(&v) {
                    cx.error(o.span(), format!("{owner}: output_schema: {e}"));
                }
                v
            });
            StepKind::Llm(LlmStep {
                prompt,
                system: s.system.as_ref().map(|x| x.get_ref().clone()),
                model: s.model.as_ref().map(|x| x.get_ref().clone()),
                temperature,
                max_tokens,
                output_schema,
                max_response_bytes: max_response_bytes(cx, s, &owner),
            })
        }
        "wait" => StepKind::Wait(WaitStep {}),
        "workflow" => {
            let workflow = child_workflow(cx, s, &owner, &missing);
            let child_input = s.input.as_ref().map(|i| {
                let v = to_json(i.get_ref());
                check_templates(cx, i.span(), &v, input, upstream, &owner);
                v
            });
            StepKind::Workflow(ChildStep {
                workflow,
                input: child_input.unwrap_or_else(|| Value::Object(Default::default())),
            })
        }
        "map" => {
            let inline = s.step.as_ref().and_then(|t| {
                parse_inline_step(cx, t, &id, &owner, default_timeout, default_retry)
            });
            parse_map(cx, s, input, upstream, &owner, &missing, inline)
        }
        "analyze" => {
            let project = match &s.project {
                Some(p) => {
                    check_template(cx, p.span(), p.get_ref(), false, input, upstream, &owner);
                    Value::String(p.get_ref().clone())
                }
                None => {
                    missing(cx, "project");
                    Value::Null
                }
            };
            StepKind::Analyze(AnalyzeStep { project })
        }
        "summarize" => {
            let text = match &s.text {
                Some(t) => {
                    check_template(cx, t.span(), t.get_ref(), false, input, upstream, &owner);
                    Value::String(t.get_ref().clone())
                }
                None => {
                    missing(cx, "text");
                    Value::Null
                }
            };
            let sentences = match &s.sentences {
                None => 3,
                Some(n) if (1..=50).contains(n.get_ref()) => *n.get_ref() as u32,
                Some(n) => {
                    cx.error(
                        n.span(),
                        format!("{owner}: sentences must be between 1 and 50"),
                    );
                    3
                }
            };
            StepKind::Summarize(SummarizeStep { text, sentences })
        }
        "pass" => {
            let output = s.output.as_ref().map(|o| {
                let v = to_json(o.get_ref());
                check_templates(cx, o.span(), &v, input, upstream, &owner);
                v
            });
            StepKind::Pass(PassStep {
                output: output.unwrap_or_else(|| Value::Object(Default::default())),
            })
        }
        _ => {
            let duration_ms = match &s.duration {
                Some(d) => cx
                    .duration(d, "duration")
                    .map_or(0, |d| d.as_millis() as u64),
                None => {
                    missing(cx, "duration");
                    0
                }
            };
            StepKind::Sleep(SleepStep { duration_ms })
        }
    };

    if let Some(c) = &s.condition {
        let expression = !template::is_template(c.get_ref());
        check_template(
            cx,
            c.span(),
            c.get_ref(),
            expression,
            input,
            upstream,
            &owner,
        );
    }
    // A `wait` or `workflow` step's timeout is how long it waits, not how long a call
    // may take: [defaults].timeout does not apply to them.
    let fallback = match &kind {
        StepKind::Wait(_) => super::DEFAULT_WAIT_TIMEOUT,
        StepKind::Workflow(_) | StepKind::Map(_) => super::DEFAULT_CHILD_TIMEOUT,
        _ => default_timeout,
    };
    let timeout = s
        .timeout
        .as_ref()
        .and_then(|t| timeout(cx, t))
        .unwrap_or(fallback);
    let retry = s
        .retry
        .as_ref()
        .map_or_else(|| default_retry.clone(), |r| retry(cx, r, default_retry));
    let rate_limit = s.rate_limit.as_ref().and_then(|r| {
        let raw = r.get_ref();
        let before = cx.diagnostics.len();
        check_limit_key(
            cx,
            &raw.key,
            "rate_limit",
            "openai",
            input,
            upstream,
            &owner,
        );
        let per_minute = *raw.per_minute.get_ref();
        if !(1..=super::RateLimit::PER_MINUTE_MAX).contains(&per_minute) {
            cx.error(
                raw.per_minute.span(),
                format!(
                    "{owner}: rate_limit.per_minute is 1 to {}, not {per_minute}",
                    super::RateLimit::PER_MINUTE_MAX
                ),
            );
        }
        (cx.diagnostics.len() == before).then(|| super::RateLimit {
            key: raw.key.get_ref().clone(),
            per_minute: per_minute as u32,
        })
    });
    let concurrency = s.concurrency.as_ref().and_then(|c| {
        let raw = c.get_ref();
        let before = cx.diagnostics.len();
        check_limit_key(cx, &raw.key, "concurrency", "crawler", input, upstream, &owner);
        let limit = *raw.limit.get_ref();
        if !(1..=super::Concurrency::LIMIT_MAX).contains(&limit) {
            cx.error(
                raw.limit.span(),
                format!(
                    "{owner}: concurrency.limit is how many attempts of the key may run at once: 1 to {}, not {limit}",
                    super::Concurrency::LIMIT_MAX
                ),
            );
        }
        (cx.diagnostics.len() == before).then(|| super::Concurrency {
            key: raw.key.get_ref().clone(),
            limit: limit as i32,
        })
    });
    // Limits on calls apply to the steps that make them.
    let calls = !matches!(
        kind,
        StepKind::Sleep(_) | StepKind::Wait(_) | StepKind::Workflow(_) | StepKind::Map(_)
    );
    for (field, span, more) in [
        (
            "concurrency",
            s.concurrency
                .as_ref()
                .filter(|_| concurrency.is_some())
                .map(Spanned::span),
            "; a workflow's [concurrency] limits its runs",
        ),
        (
            "rate_limit",
            s.rate_limit
                .as_ref()
                .filter(|_| rate_limit.is_some())
                .map(Spanned::span),
            "",
        ),
    ] {
        if let Some(span) = span.filter(|_| !calls) {
            cx.error(
                span,
                format!("{owner}: {field} applies to steps that call something (http, llm, sql, analyze, summarize, pass), not to `{}` steps{more}", kind.name()),
            );
        }
    }

    Some(Step {
        id,
        kind,
        needs: s.needs.iter().map(|n| n.get_ref().clone()).collect(),
        condition: s.condition.as_ref().map(|c| c.get_ref().clone()),
        timeout_ms: timeout.as_millis() as u64,
        retry,
        rate_limit,
        concurrency,
    })
}

/// A `map` step's inline `step`: a step table without `id`, `needs` or `if`, whose
/// templates read `item`, `index`, `run`, `env` and `llm`. It is parsed as a step of its
/// own (from the table written out again), so its mistakes are found as any step's are;
/// they are reported at the table.
fn parse_inline_step(
    cx: &mut Ctx<'_>,
    table: &Spanned<toml::Table>,
    map_id: &str,
    owner: &str,
    default_timeout: Duration,
    default_retry: &RetryPolicy,
) -> Option<Box<Step>> {
    let span = table.span();
    let mut fields = table.get_ref().clone();
    for key in ["id", "needs", "if"] {
        if fields.contains_key(key) {
            cx.error(
                span.clone(),
                format!("{owner}: the inline step takes no `{key}`: the map step's applies"),
            );
        }
    }
    if let Some(toml::Value::String(kind)) = fields.get("kind")
        && matches!(kind.as_str(), "map" | "workflow" | "wait" | "sleep")
    {
        cx.error(
            span.clone(),
            format!("{owner}: an inline step calls something (http, llm, sql, analyze, summarize, pass), not `{kind}`; to map a workflow, give `workflow`"),
        );
        return None;
    }
    fields.insert("id".into(), toml::Value::String(map_id.to_owned()));
    let text = match toml::to_string(&fields) {
        Ok(text) => text,
        Err(e) => {
            cx.error(span, format!("{owner}: step: {e}"));
            return None;
        }
    };
    let raw: RawStep = match toml::from_str(&text) {
        Ok(raw) => raw,
        Err(e) => {
            cx.error(span, format!("{owner}: step: {}", e.message().trim()));
            return None;
        }
    };
    let mut inner = Ctx {
        file: cx.file,
        source: &text,
        diagnostics: Vec::new(),
        wait_steps: BTreeSet::new(),
        in_map_input: true,
    };
    let step = parse_step(
        &mut inner,
        &Spanned::new(0..text.len(), raw),
        &[],
        &BTreeSet::new(),
        default_timeout,
        default_retry,
    );
    let (line, column) = line_col(cx.source, span.start);
    let found = !inner.diagnostics.is_empty();
    for d in inner.diagnostics {
        cx.diagnostics.push(Diagnostic {
            file: d.file,
            line,
            column,
            message: d
                .message
                .replacen(owner, &format!("{owner}, its inline step",), 1),
        });
    }
    if found { None } else { step.map(Box::new) }
}

/// The `workflow` a `workflow` or `map` step starts runs of: a workflow name.
fn child_workflow(
    cx: &mut Ctx<'_>,
    s: &RawStep,
    owner: &str,
    missing: &dyn Fn(&mut Ctx<'_>, &str),
) -> String {
    match &s.workflow {
        Some(w) if is_identifier(w.get_ref()) => w.get_ref().clone(),
        Some(w) => {
            cx.error(
                w.span(),
                format!("{owner}: `{}` is not a workflow name", w.get_ref()),
            );
            String::new()
        }
        None => {
            missing(cx, "workflow");
            String::new()
        }
    }
}

/// A `map` step's fields: `items` a template of the run (a list when rendered),
/// `workflow` the child's, `input` the child's input whose templates also see `item` and
/// `index`, `max_parallel` and `on_failure` (`fail_fast` or `collect`).
fn parse_map(
    cx: &mut Ctx<'_>,
    s: &RawStep,
    input: &[InputField],
    upstream: &BTreeSet<String>,
    owner: &str,
    missing: &dyn Fn(&mut Ctx<'_>, &str),
    inline: Option<Box<Step>>,
) -> StepKind {
    let items = match &s.items {
        Some(i) if template::is_template(i.get_ref()) => {
            check_template(cx, i.span(), i.get_ref(), false, input, upstream, owner);
            i.get_ref().clone()
        }
        Some(i) => {
            cx.error(
                i.span(),
                format!("{owner}: items must be a template that yields a list, such as \"{{{{ steps.list.output.rows }}}}\""),
            );
            String::new()
        }
        None => {
            missing(cx, "items");
            String::new()
        }
    };
    let workflow = match (&s.workflow, &s.step) {
        (Some(w), Some(_)) => {
            cx.error(
                w.span(),
                format!("{owner}: give either `workflow` (each item runs it) or `step` (each item runs that one step), not both"),
            );
            None
        }
        (None, Some(_)) => None,
        (_, None) => Some(child_workflow(cx, s, owner, missing)),
    };
    if let (Some(i), Some(_)) = (&s.input, &s.step) {
        cx.error(
            i.span(),
            format!("{owner}: `input` is for a mapped workflow; an inline `step` reads `item` and `index` itself"),
        );
    }
    let child_input = s.input.as_ref().map(|i| {
        let v = to_json(i.get_ref());
        cx.in_map_input = true;
        check_templates(cx, i.span(), &v, input, upstream, owner);
        cx.in_map_input = false;
        v
    });
    let max_parallel = match &s.max_parallel {
        None => MapStep::PARALLEL_DEFAULT,
        Some(n) if (1..=MapStep::PARALLEL_MAX).contains(n.get_ref()) => *n.get_ref() as u32,
        Some(n) => {
            cx.error(
                n.span(),
                format!(
                    "{owner}: max_parallel is 1 to {}, not {}",
                    MapStep::PARALLEL_MAX,
                    n.get_ref()
                ),
            );
            MapStep::PARALLEL_DEFAULT
        }
    };
    let on_failure = match s.on_failure.as_ref().map(|f| (f, f.get_ref().as_str())) {
        None | Some((_, "fail_fast")) => MapFailure::FailFast,
        Some((_, "collect")) => MapFailure::Collect,
        Some((f, other)) => {
            cx.error(
                f.span(),
                format!("{owner}: on_failure is `fail_fast` or `collect`, not `{other}`"),
            );
            MapFailure::FailFast
        }
    };
    StepKind::Map(MapStep {
        items,
        workflow,
        step: inline,
        input: child_input,
        max_parallel,
        on_failure,
    })
}

/// The `key` of a step's `rate_limit` or `concurrency` (`field`): a name, or a template
/// read as the step's others are.
fn check_limit_key(
    cx: &mut Ctx<'_>,
    key: &Spanned<String>,
    field: &str,
    example: &str,
    input: &[InputField],
    upstream: &BTreeSet<String>,
    owner: &str,
) {
    if key.get_ref().trim().is_empty() {
        cx.error(
            key.span(),
            format!(
                "{owner}: {field}.key is empty; name the limit (\"{example}\"), or give a template"
            ),
        );
    } else if template::is_template(key.get_ref()) {
        check_template(cx, key.span(), key.get_ref(), false, input, upstream, owner);
    }
}

/// `[concurrency]`: the key is a template of the input alone (it is rendered when the run
/// is submitted, before any step has run), the limit a positive count.
/// `[notify]`: `url` (an absolute http(s) URL, no template) and `enabled`.
fn parse_notify(cx: &mut Ctx<'_>, raw: &RawNotify) -> super::Notify {
    let enabled = raw.enabled.as_ref().is_none_or(|e| *e.get_ref());
    let url = raw.url.as_ref().and_then(|u| {
        let text = u.get_ref().trim();
        let ok = url::Url::parse(text)
            .ok()
            .filter(|p| matches!(p.scheme(), "http" | "https") && p.host().is_some());
        if ok.is_none() {
            cx.error(
                u.span(),
                format!("[notify] url `{text}` is not an absolute http:// or https:// URL"),
            );
        } else if !enabled && let Some(e) = &raw.enabled {
            cx.error(
                e.span(),
                "[notify] sets a url and `enabled = false`: nothing would be sent there; drop one",
            );
        }
        ok.map(|_| text.to_owned())
    });
    super::Notify { url, enabled }
}

fn parse_concurrency(
    cx: &mut Ctx<'_>,
    raw: &RawConcurrency,
    input: &[InputField],
) -> Option<super::Concurrency> {
    let before = cx.diagnostics.len();
    let key = raw.key.get_ref();
    if key.trim().is_empty() {
        cx.error(raw.key.span(), "[concurrency] key: give a template such as \"{{ input.project_id }}\", or a fixed name".to_owned());
    } else if template::is_template(key) {
        match template::check(key, false) {
            Ok(vars) => {
                let beyond: Vec<&String> = vars
                    .iter()
                    .filter(|v| v.split('.').next() != Some("input"))
                    .collect();
                for var in &beyond {
                    cx.error(
                        raw.key.span(),
                        format!(
                            "[concurrency] key reads `{var}`, but it is rendered when the run is submitted, from `input` alone"
                        ),
                    );
                }
                if beyond.is_empty() {
                    check_template(
                        cx,
                        raw.key.span(),
                        key,
                        false,
                        input,
                        &BTreeSet::new(),
                        "[concurrency] key",
                    );
                }
            }
            Err(e) => cx.error(
                raw.key.span(),
                format!("[concurrency] key: bad template: {e}"),
            ),
        }
    }
    let limit = *raw.limit.get_ref();
    if !(1..=super::Concurrency::LIMIT_MAX).contains(&limit) {
        cx.error(
            raw.limit.span(),
            format!(
                "[concurrency] limit is how many runs of one key may hold a slot at once: 1 to {}, not {limit}",
                super::Concurrency::LIMIT_MAX
            ),
        );
    }
    (cx.diagnostics.len() == before).then(|| super::Concurrency {
        key: key.clone(),
        limit: limit as i32,
    })
}

/// `[[schedules]]`: each entry's expression, zone, policies and input are checked
/// now, so a bad schedule is a load-time error like a bad step.
fn parse_schedules(
    cx: &mut Ctx<'_>,
    workflow: &str,
    raw: &[Spanned<RawSchedule>],
    input: &[InputField],
) -> Vec<ScheduleSpec> {
    let mut names: HashMap<String, Range<usize>> = HashMap::new();
    let mut specs = Vec::new();
    for entry in raw {
        let at = entry.span().start..entry.span().start;
        let s = entry.get_ref();
        let name = match &s.name {
            Some(n) if !is_identifier(n.get_ref()) => {
                cx.error(
                    n.span(),
                    format!(
                        "schedule name `{}` must be letters, digits and underscores, not starting with a digit",
                        n.get_ref()
                    ),
                );
                continue;
            }
            Some(n) => format!("{workflow}.{}", n.get_ref()),
            None => workflow.to_owned(),
        };
        let name_span = s.name.as_ref().map_or(at.clone(), Spanned::span);
        if names.contains_key(&name) {
            cx.error(
                name_span,
                format!(
                    "schedule `{name}` is declared twice; give each [[schedules]] entry a distinct `name`"
                ),
            );
            continue;
        }
        names.insert(name.clone(), name_span);

        let timezone = s
            .timezone
            .as_ref()
            .map_or_else(|| "UTC".to_owned(), |t| t.get_ref().trim().to_owned());
        let mut ok = true;
        if let Some(t) = &s.timezone
            && let Err(e) = schedule::parse_timezone(t.get_ref())
        {
            cx.error(t.span(), format!("schedule `{name}`: {e}"));
            ok = false;
        }
        if ok && let Err(e) = CronSchedule::parse(s.cron.get_ref(), &timezone) {
            cx.error(s.cron.span(), format!("schedule `{name}`: {e}"));
        }
        let misfire_policy = match &s.misfire_policy {
            None => schedule::MisfirePolicy::FireOnce,
            Some(p) => p.get_ref().parse().unwrap_or_else(|e| {
                cx.error(p.span(), format!("schedule `{name}`: {e}"));
                schedule::MisfirePolicy::FireOnce
            }),
        };
        let overlap_policy = match &s.overlap_policy {
            None => schedule::OverlapPolicy::Allow,
            Some(p) => p.get_ref().parse().unwrap_or_else(|e| {
                cx.error(p.span(), format!("schedule `{name}`: {e}"));
                schedule::OverlapPolicy::Allow
            }),
        };
        let max_lateness = match &s.max_lateness {
            None => schedule::DEFAULT_MAX_LATENESS,
            Some(raw) => match cx.duration(raw, "max_lateness") {
                Some(d) if d < Duration::from_secs(1) => {
                    cx.error(
                        raw.span(),
                        format!("schedule `{name}`: max_lateness must be at least 1s"),
                    );
                    schedule::DEFAULT_MAX_LATENESS
                }
                Some(d) => d,
                None => schedule::DEFAULT_MAX_LATENESS,
            },
        };
        let input_value = s.input.as_ref().map_or_else(
            || Value::Object(Default::default()),
            |i| to_json(i.get_ref()),
        );
        if let Err(errors) = super::input::validate(input, &input_value) {
            let span = s.input.as_ref().map_or(at.clone(), Spanned::span);
            for e in errors {
                cx.error(span.clone(), format!("schedule `{name}`: input: {e}"));
            }
        }
        let priority = match &s.priority {
            None => 0,
            Some(p) if (0..=1000).contains(p.get_ref()) => *p.get_ref() as i16,
            Some(p) => {
                cx.error(
                    p.span(),
                    format!(
                        "schedule `{name}`: priority is 0 to 1000 (minutes of head start in the queue), not {}",
                        p.get_ref()
                    ),
                );
                0
            }
        };
        specs.push(ScheduleSpec {
            name,
            cron: s.cron.get_ref().trim().to_owned(),
            timezone,
            input: input_value,
            enabled: s.enabled.unwrap_or(true),
            misfire_policy,
            max_lateness_ms: max_lateness.as_millis() as u64,
            overlap_policy,
            priority,
        });
    }
    specs
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn errors(src: &str) -> Vec<String> {
        parse_workflow("wf", "wf.toml", src)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// A `map` step: `items` must be a template, `max_parallel` and `on_failure` are
    /// checked, and only its `input` may read `item` and `index`.
    #[test]
    fn map_steps_check_their_fields() {
        let wf = parse_workflow(
            "wf",
            "wf.toml",
            r#"
[[steps]]
id = "list"
kind = "pass"

[[steps]]
id = "each"
kind = "map"
needs = ["list"]
items = "{{ steps.list.output.rows }}"
workflow = "child"
input = { id = "{{ item.id }}", at = "{{ index }}" }
"#,
        )
        .expect("valid");
        let StepKind::Map(m) = &wf.steps[1].kind else {
            panic!("not a map step");
        };
        assert_eq!(m.max_parallel, MapStep::PARALLEL_DEFAULT);
        assert_eq!(m.on_failure, MapFailure::FailFast);
        assert_eq!(wf.steps[1].timeout(), crate::DEFAULT_CHILD_TIMEOUT);

        let errs = errors(
            r#"
[[steps]]
id = "each"
kind = "map"
items = "not a template"
workflow = "child"
max_parallel = 0
on_failure = "ignore"

[[steps]]
id = "other"
kind = "pass"
output = { x = "{{ item }}" }
"#,
        );
        for expected in [
            "items must be a template",
            "max_parallel is 1 to 1000, not 0",
            "on_failure is `fail_fast` or `collect`, not `ignore`",
            "step `other`: template reads unknown variable `item`",
        ] {
            assert!(
                errs.iter().any(|e| e.contains(expected)),
                "{expected}: {errs:?}"
            );
        }
    }

    /// An inline `step`: a step table without `id`, whose templates read `item`; its
    /// mistakes are found and reported at the table; not with `workflow` or `input`.
    #[test]
    fn map_steps_take_an_inline_step() {
        let wf = parse_workflow(
            "wf",
            "wf.toml",
            r#"
[[steps]]
id = "each"
kind = "map"
items = "{{ [1, 2] }}"

[steps.step]
kind = "pass"
output = { double = "{{ item * 2 }}", at = "{{ index }}" }
"#,
        )
        .expect("valid");
        let StepKind::Map(m) = &wf.steps[0].kind else {
            panic!("not a map step");
        };
        assert_eq!(m.workflow, None);
        let inline = m.step.as_deref().expect("the inline step");
        assert_eq!(inline.id, "each");
        let def = m.item_definition(&wf, "each").expect("a definition");
        assert_eq!(def.workflow.name, "wf.each");
        assert!(def.workflow.map_item);
        assert_eq!(
            def.workflow
                .validate_input(&serde_json::json!({ "item": [1], "index": 0 })),
            Ok(serde_json::json!({ "item": [1], "index": 0 }))
        );

        let errs = errors(
            r#"
[[steps]]
id = "each"
kind = "map"
items = "{{ [1] }}"
workflow = "child"

[steps.step]
id = "x"
kind = "http"
url = "{{ input.nope }}"
"#,
        );
        for expected in [
            "give either `workflow`",
            "the inline step takes no `id`",
            "its inline step: template reads `input.nope`",
        ] {
            assert!(
                errs.iter().any(|e| e.contains(expected)),
                "{expected}: {errs:?}"
            );
        }
        let errs = errors(
            r#"
[[steps]]
id = "each"
kind = "map"
items = "{{ [1] }}"

[steps.step]
kind = "sleep"
duration = "1s"
"#,
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("an inline step calls something")),
            "{errs:?}"
        );
    }

    /// A step's `concurrency`: a key (a template) and a limit, on steps that call
    /// something.
    #[test]
    fn step_concurrency_is_checked() {
        let wf = parse_workflow(
            "wf",
            "wf.toml",
            "[[steps]]\nid = \"s\"\nkind = \"pass\"\nconcurrency = { key = \"k-{{ run.id }}\", limit = 3 }\n",
        )
        .expect("valid");
        assert_eq!(
            wf.steps[0].concurrency,
            Some(crate::Concurrency {
                key: "k-{{ run.id }}".into(),
                limit: 3
            })
        );
        let errs = errors(
            "[[steps]]\nid = \"a\"\nkind = \"sleep\"\nduration = \"1s\"\nconcurrency = { key = \"k\", limit = 1 }\n\n[[steps]]\nid = \"b\"\nkind = \"pass\"\nconcurrency = { key = \"\", limit = 0 }\n",
        );
        for expected in [
            "concurrency applies to steps that call something",
            "concurrency.key is empty",
            "concurrency.limit is how many attempts of the key may run at once: 1 to 10000, not 0",
        ] {
            assert!(
                errs.iter().any(|e| e.contains(expected)),
                "{expected}: {errs:?}"
            );
        }
    }

    #[test]
    fn allowed_hosts_and_response_limits() {
        let wf = parse_workflow(
            "wf",
            "wf.toml",
            r#"
[[steps]]
id = "call"
kind = "http"
url = "https://API.example.com/x"
allowed_hosts = ["API.Example.com.", "*.example.org", "10.0.0.1", "[::1]"]
max_response_bytes = "1MiB"

[[steps]]
id = "ask"
kind = "llm"
prompt = "hi"
max_response_bytes = 2048
"#,
        )
        .unwrap();
        let StepKind::Http(h) = &wf.steps[0].kind else {
            panic!("http")
        };
        assert_eq!(
            h.allowed_hosts,
            ["api.example.com", "*.example.org", "10.0.0.1", "::1"]
        );
        assert_eq!(h.max_response_bytes, Some(1024 * 1024));
        let StepKind::Llm(l) = &wf.steps[1].kind else {
            panic!("llm")
        };
        assert_eq!(l.max_response_bytes, Some(2048));

        let e = errors(
            r#"
[[steps]]
id = "call"
kind = "http"
url = "https://example.com/"
allowed_hosts = ["https://example.com/", "*.10.0.0.1", "a b", "example.com:443"]
max_response_bytes = 0

[[steps]]
id = "q"
kind = "sql"
query = "select 1"
allowed_hosts = ["example.com"]
max_response_bytes = "lots"
"#,
        );
        for bad in [
            "https://example.com/",
            "*.10.0.0.1",
            "a b",
            "example.com:443",
        ] {
            assert!(
                e.iter()
                    .any(|m| m.contains(&format!("`{bad}` in allowed_hosts"))),
                "{bad}: {e:?}"
            );
        }
        assert!(
            e.iter()
                .any(|m| m.contains("max_response_bytes: give a positive number")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("field `allowed_hosts` does not apply to kind `sql`")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("field `max_response_bytes` does not apply to kind `sql`")),
            "{e:?}"
        );
        assert_eq!(super::super::parse_size("4MiB"), Ok(4 * 1024 * 1024));
        assert_eq!(super::super::parse_size(" 512 KiB "), Ok(512 * 1024));
        assert_eq!(super::super::parse_size("1000"), Ok(1000));
        assert_eq!(super::super::parse_size("2MB"), Ok(2_000_000));
        assert!(super::super::parse_size("4 parsecs").is_err());
        assert!(super::super::parse_size("-1").is_err());
    }

    const GOOD: &str = r#"
description = "demo"

[input]
project_id = { type = "integer" }
depth = { type = "string", default = "standard", enum = ["quick", "standard"] }

[defaults]
timeout = "10s"
retry = { max_attempts = 5, initial_delay = "1s", max_delay = "1m", multiplier = 2, jitter = 0.1 }

[[steps]]
id = "load"
kind = "sql"
query = "select $1::bigint as id"
params = ["{{ input.project_id }}"]

[[steps]]
id = "notify"
kind = "http"
needs = ["load"]
if = "{{ input.depth != 'quick' }}"
method = "post"
url = "http://localhost/x/{{ steps.load.output.rows[0].id }}"
body = { id = "{{ steps.load.output.rows[0].id }}" }
retry = { max_attempts = 2 }
"#;

    #[test]
    fn parses_a_good_workflow() {
        let wf = parse_workflow("wf", "wf.toml", GOOD).unwrap();
        assert_eq!(wf.steps.len(), 2);
        assert_eq!(wf.steps[0].timeout_ms, 10_000);
        assert_eq!(wf.steps[1].retry.max_attempts, 2);
        assert_eq!(wf.steps[1].retry.initial_delay_ms, 1_000);
        assert_eq!(wf.steps[0].retry.max_attempts, 5);
        assert!(matches!(&wf.steps[1].kind, StepKind::Http(h) if h.method == "POST"));
        assert_eq!(wf.input.len(), 2);
        assert!(wf.input[0].required && !wf.input[1].required);
    }

    #[test]
    fn unknown_field_is_located() {
        let e = errors("[[steps]]\nid = \"a\"\nkind = \"sleep\"\nduration = \"1s\"\nbogus = 1\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("wf.toml:5:1:"), "{e:?}");
        assert!(e[0].contains("unknown field `bogus`"), "{e:?}");
    }

    #[test]
    fn cycle_is_reported() {
        let src = "[[steps]]\nid = \"a\"\nkind = \"sleep\"\nduration = \"1s\"\nneeds = [\"b\"]\n\n[[steps]]\nid = \"b\"\nkind = \"sleep\"\nduration = \"1s\"\nneeds = [\"a\"]\n";
        let e = errors(src);
        assert!(e.iter().any(|m| m.contains("cycle: a -> b -> a")), "{e:?}");
        assert!(e[0].starts_with("wf.toml:2:6:"), "{e:?}");
    }

    #[test]
    fn non_upstream_reference_unknown_need_bad_duration_unknown_kind() {
        let src = r#"[[steps]]
id = "a"
kind = "sleep"
duration = "soon"

[[steps]]
id = "b"
kind = "http"
url = "http://x/{{ steps.c.output }}"
needs = ["nope"]

[[steps]]
id = "c"
kind = "teleport"
"#;
        let e = errors(src);
        assert!(
            e.iter()
                .any(|m| m.starts_with("wf.toml:4:12:") && m.contains("bad duration `soon`")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("wf.toml:9:7:")
                    && m.contains("`steps.c`, which is not upstream")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("wf.toml:10:10:") && m.contains("unknown step `nope`")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("wf.toml:14:8:") && m.contains("unknown kind `teleport`")),
            "{e:?}"
        );
    }

    #[test]
    fn fields_of_another_kind_and_undeclared_input() {
        let src = "[[steps]]\nid = \"a\"\nkind = \"sleep\"\nduration = \"1s\"\nquery = \"select 1\"\n\n[[steps]]\nid = \"b\"\nkind = \"sql\"\nquery = \"select $1\"\nparams = [\"{{ input.x }}\"]\n";
        let e = errors(src);
        assert!(
            e.iter()
                .any(|m| m.contains("field `query` does not apply to kind `sleep`")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("`input.x`, which [input] does not declare")),
            "{e:?}"
        );
    }

    #[test]
    fn delivery_keys_exist_for_wait_steps_only() {
        let src = r#"[[steps]]
id = "ask"
kind = "pass"
output = { key = "{{ run.deliveries.reply.key }}", attempt = "{{ run.deliveries.reply.attempt }}" }

[[steps]]
id = "reply"
kind = "wait"
needs = ["ask"]
"#;
        assert!(parse_workflow("wf", "wf.toml", src).is_ok());
        let e = errors(&src.replace("deliveries.reply.key", "deliveries.ask.key"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("wf.toml:4:")
                && e[0].contains("`run.deliveries.ask`, but only `wait` steps have delivery keys"),
            "{e:?}"
        );
    }

    #[test]
    fn concurrency_keys_come_from_the_input_and_limits_are_positive() {
        let steps = "[[steps]]\nid = \"s\"\nkind = \"pass\"\n";
        let input = "[input]\nproject = { type = \"string\" }\n\n";
        let ok = parse_workflow(
            "wf",
            "wf.toml",
            &format!(
                "{input}[concurrency]\nkey = \"{{{{ input.project }}}}\"\nlimit = 2\n\n{steps}"
            ),
        )
        .expect("a key of the input parses");
        let c = ok.concurrency.clone().expect("a limit");
        assert_eq!((c.key.as_str(), c.limit), ("{{ input.project }}", 2));
        assert_eq!(
            ok.concurrency_for(&serde_json::json!({ "project": "p7" }))
                .expect("a key"),
            Some(("p7".to_owned(), 2))
        );
        let fixed = parse_workflow(
            "wf",
            "wf.toml",
            &format!("[concurrency]\nkey = \"openai\"\nlimit = 60\n\n{steps}"),
        )
        .expect("a fixed key parses");
        assert_eq!(
            fixed
                .concurrency_for(&serde_json::json!({}))
                .expect("a key"),
            Some(("openai".to_owned(), 60))
        );

        let e = errors(&format!(
            "{input}[concurrency]\nkey = \"{{{{ steps.s.output }}}}\"\nlimit = 2\n\n{steps}"
        ));
        assert!(
            e.len() == 1
                && e[0].starts_with("wf.toml:5:")
                && e[0].contains("rendered when the run is submitted, from `input` alone"),
            "{e:?}"
        );
        let e = errors(&format!(
            "{input}[concurrency]\nkey = \"{{{{ input.nope }}}}\"\nlimit = 2\n\n{steps}"
        ));
        assert!(e.iter().any(|e| e.contains("`input.nope`")), "{e:?}");
        let e = errors(&format!("[concurrency]\nkey = \"k\"\nlimit = 0\n\n{steps}"));
        assert!(
            e.iter()
                .any(|e| e.starts_with("wf.toml:3:") && e.contains("1 to 10000, not 0")),
            "{e:?}"
        );
        let e = errors(&format!(
            "[concurrency]\nkey = \"k\"\nlimit = 1\nper = 3\n\n{steps}"
        ));
        assert!(e.iter().any(|e| e.contains("per")), "{e:?}");
    }

    #[test]
    fn rate_limits_are_checked_where_they_are_written() {
        let ok = parse_workflow(
            "wf",
            "wf.toml",
            "[[steps]]\nid = \"s\"\nkind = \"pass\"\nrate_limit = { key = \"openai\", per_minute = 60 }\n",
        )
        .expect("a rate limit parses");
        let limit = ok.steps[0].rate_limit.clone().expect("a limit");
        assert_eq!(limit.key, "openai");
        assert_eq!(limit.interval(), std::time::Duration::from_secs(1));
        let e = errors(
            "[[steps]]\nid = \"s\"\nkind = \"pass\"\nrate_limit = { key = \"k\", per_minute = 0 }\n",
        );
        assert!(
            e.iter()
                .any(|e| e.starts_with("wf.toml:4:")
                    && e.contains("per_minute is 1 to 60000, not 0")),
            "{e:?}"
        );
        let e = errors(
            "[[steps]]\nid = \"s\"\nkind = \"sleep\"\nduration = \"1s\"\nrate_limit = { key = \"k\", per_minute = 5 }\n",
        );
        assert!(
            e.iter().any(|e| e.contains("not to `sleep` steps")),
            "{e:?}"
        );
        let e = errors(
            "[[steps]]\nid = \"s\"\nkind = \"pass\"\nrate_limit = { key = \"{{ steps.nope.output }}\", per_minute = 5 }\n",
        );
        assert!(e.iter().any(|e| e.contains("`steps.nope`")), "{e:?}");
    }

    #[test]
    fn pass_steps_take_a_templated_output_or_none() {
        let src = r#"[input]
n = { type = "integer" }

[[steps]]
id = "shape"
kind = "pass"
output = { total = "{{ input.n }}", tags = ["a", "b"] }

[[steps]]
id = "join"
kind = "pass"
needs = ["shape"]
"#;
        let wf = parse_workflow("wf", "wf.toml", src).unwrap();
        let StepKind::Pass(shape) = &wf.steps[0].kind else {
            panic!("{:?}", wf.steps[0].kind);
        };
        assert_eq!(
            shape.output,
            serde_json::json!({ "total": "{{ input.n }}", "tags": ["a", "b"] })
        );
        let StepKind::Pass(join) = &wf.steps[1].kind else {
            panic!("{:?}", wf.steps[1].kind);
        };
        assert_eq!(join.output, serde_json::json!({}));

        let e = errors(
            "[[steps]]\nid = \"p\"\nkind = \"pass\"\noutput = \"{{ input.missing }}\"\nquery = \"select 1\"\n",
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e.iter().any(|m| m.contains("missing")), "{e:?}");
        assert!(e.iter().any(|m| m.contains("query")), "{e:?}");
    }

    #[test]
    fn bad_toml_is_located() {
        let e = errors("description = \"x\"\n[[steps]\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("wf.toml:2:"), "{e:?}");
    }

    #[test]
    fn retain_forever_pins_runs_and_nothing_else_is_accepted() {
        let steps = "\n[[steps]]\nid = \"a\"\nkind = \"pass\"\n";
        let kept = parse_workflow("wf", "wf.toml", &format!("retain = \"forever\"\n{steps}"))
            .expect("retain = forever parses");
        assert!(kept.pins_runs());
        let plain = parse_workflow("wf", "wf.toml", steps).expect("no retain parses");
        assert!(!plain.pins_runs());
        // Stored as JSON and read back (the engine reads child definitions so).
        let json = serde_json::to_value(&kept).unwrap();
        assert_eq!(json["retain"], "forever");
        assert!(
            serde_json::to_value(&plain)
                .unwrap()
                .get("retain")
                .is_none()
        );
        let back: super::super::Workflow = serde_json::from_value(json).unwrap();
        assert!(back.pins_runs());

        let e = errors(&format!("retain = \"30d\"\n{steps}"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("wf.toml:1:10:"), "{e:?}");
        assert!(e[0].contains("\"forever\" or absent"), "{e:?}");
    }

    #[test]
    fn schedules_are_parsed_with_defaults_and_names() {
        let src = r#"[input]
project_id = { type = "integer" }

[[steps]]
id = "a"
kind = "sleep"
duration = "1s"

[[schedules]]
cron = "0 6 * * *"
timezone = "Europe/Berlin"
input = { project_id = 1 }

[[schedules]]
name = "fast"
cron = "*/5 * * * * *"
misfire_policy = "skip"
max_lateness = "10s"
overlap_policy = "cancel_previous"
enabled = false
input = { project_id = 2 }
"#;
        let wf = parse_workflow("wf", "wf.toml", src).unwrap();
        assert_eq!(wf.schedules.len(), 2);
        let (daily, fast) = (&wf.schedules[0], &wf.schedules[1]);
        assert_eq!(daily.name, "wf");
        assert_eq!(daily.timezone, "Europe/Berlin");
        assert_eq!(daily.input, serde_json::json!({ "project_id": 1 }));
        assert!(daily.enabled);
        assert_eq!(daily.misfire_policy, schedule::MisfirePolicy::FireOnce);
        assert_eq!(daily.overlap_policy, schedule::OverlapPolicy::Allow);
        assert_eq!(daily.max_lateness(), schedule::DEFAULT_MAX_LATENESS);
        assert_eq!(fast.name, "wf.fast");
        assert_eq!(fast.timezone, "UTC");
        assert!(!fast.enabled);
        assert_eq!(fast.misfire_policy, schedule::MisfirePolicy::Skip);
        assert_eq!(fast.overlap_policy, schedule::OverlapPolicy::CancelPrevious);
        assert_eq!(fast.max_lateness_ms, 10_000);
    }

    #[test]
    fn bad_schedules_are_located() {
        let src = r#"[input]
n = { type = "integer" }

[[steps]]
id = "a"
kind = "sleep"
duration = "1s"

[[schedules]]
cron = "61 * * * *"
input = { n = 1 }

[[schedules]]
name = "tz"
cron = "* * * * *"
timezone = "Mars/Base"
input = { n = 1 }

[[schedules]]
name = "policies"
cron = "* * * * *"
overlap_policy = "queue"
misfire_policy = "later"
max_lateness = "10ms"
input = { n = "one" }

[[schedules]]
name = "tz"
cron = "* * * * *"
input = { n = 1 }

[[schedules]]
name = "no_input"
cron = "0 0 30 2 *"
"#;
        let e = errors(src);
        let has = |prefix: &str, text: &str| {
            assert!(
                e.iter().any(|m| m.starts_with(prefix) && m.contains(text)),
                "{prefix} {text}: {e:#?}"
            )
        };
        has(
            "wf.toml:10:8:",
            "schedule `wf`: bad cron expression `61 * * * *`",
        );
        has("wf.toml:16:12:", "unknown time zone `Mars/Base`");
        has(
            "wf.toml:22:18:",
            "unknown overlap policy `queue`; expected one of: allow, skip, cancel_previous",
        );
        has("wf.toml:23:18:", "unknown misfire policy `later`");
        has("wf.toml:24:16:", "max_lateness must be at least 1s");
        has("wf.toml:25:9:", "schedule `wf.policies`: input: ");
        has("wf.toml:28:8:", "schedule `wf.tz` is declared twice");
        has("wf.toml:34:8:", "never fires");
        has("wf.toml:32:1:", "schedule `wf.no_input`: input: ");
        assert_eq!(e.len(), 9, "{e:#?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn never_panics_on_arbitrary_text(src in "\\PC{0,400}") {
            let _ = parse_workflow("wf", "wf.toml", &src);
        }

        #[test]
        fn never_panics_on_mutated_workflows(cut in 0usize..GOOD.len(), insert in "[\\[\\]{}=\"a-z0-9 .,\n#]{0,12}") {
            let mut src = GOOD.as_bytes()[..cut].to_vec();
            src.extend_from_slice(insert.as_bytes());
            src.extend_from_slice(&GOOD.as_bytes()[cut..]);
            if let Ok(src) = String::from_utf8(src) {
                let _ = parse_workflow("wf", "wf.toml", &src);
            }
        }
    }
}
