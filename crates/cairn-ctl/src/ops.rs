//! `ctl` commands that change runs and dead letters (one or by filter), the
//! confirmations they ask for, and following a run's events.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::client::{Client, SseError};
use super::output::Out;
use super::run_id;
use cairn_workflow::state::{RunStatus, Status};

/// A flag that takes one state of a machine (`--status`, `--state`): its words are
/// listed in `--help` and completions.
pub fn status_parser<S: Status>() -> impl clap::builder::TypedValueParser<Value = S> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(S::ALL.iter().map(|s| s.as_str()))
        .try_map(|s| s.parse::<S>())
}

/// Which runs (or dead letters) a bulk command applies to.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Runs with this status.
    #[arg(long, value_parser = status_parser::<RunStatus>())]
    pub status: Option<RunStatus>,
    /// Runs of this workflow.
    #[arg(long)]
    pub workflow: Option<String>,
    /// Created within this long (e.g. 1h).
    #[arg(long)]
    pub since: Option<String>,
    /// Created before this long ago (e.g. 10m).
    #[arg(long)]
    pub until: Option<String>,
    /// Show how many and which, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (needed when standard input is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

impl FilterArgs {
    fn is_empty(&self) -> bool {
        self.status.is_none()
            && self.workflow.is_none()
            && self.since.is_none()
            && self.until.is_none()
    }

    fn body(&self, with_status: bool, dry_run: bool) -> Value {
        let mut filter =
            json!({ "workflow": self.workflow, "since": self.since, "until": self.until });
        if with_status {
            filter["status"] = json!(self.status);
        }
        json!({ "filter": filter, "dryRun": dry_run })
    }
}

/// Asks "verb N things?" on a terminal; refuses without one unless `--yes`.
fn confirm(verb: &str, n: u64, noun: &str, yes: bool) -> Result<bool> {
    ask(
        &format!("{verb} {n} {noun}"),
        "pass --yes (or --dry-run to look first)",
        yes,
    )
}

/// Asks "verb this thing?" before a change that deletes or stops one item (`what` is
/// e.g. "cancel run 01J…"); refuses without a terminal unless `--yes`. Answers whether
/// to go ahead.
pub fn confirm_one(what: &str, yes: bool) -> Result<bool> {
    ask(what, "pass --yes", yes)
}

fn ask(what: &str, how: &str, yes: bool) -> Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!("refusing to {what} without confirmation (standard input is not a terminal): {how}");
    }
    eprint!("{what}? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// What a declined confirmation prints; its exit code is 1.
pub fn declined() -> u8 {
    eprintln!("nothing changed");
    1
}

/// A single-run action (`retry`, `cancel`, `terminate`) or its bulk form over a filter.
pub async fn run_action(
    client: &Client,
    out: &mut Out<'_>,
    action: &str,
    id: Option<String>,
    filter: &FilterArgs,
) -> Result<u8> {
    match id {
        Some(id) => {
            if !filter.is_empty() {
                bail!("give either a run id or a filter, not both");
            }
            if filter.dry_run {
                bail!("--dry-run previews a filter; `ctl task show {id}` shows one run");
            }
            let id = run_id::resolve(client, &id).await?;
            if matches!(action, "cancel" | "terminate")
                && !confirm_one(&format!("{action} run {id}"), filter.yes)?
            {
                return Ok(declined());
            }
            let body = client
                .post(&format!("/api/tasks/{id}/{action}"), &json!({}), None)
                .await?;
            out.task_state(&body)?;
            Ok(0)
        }
        None => {
            if filter.is_empty() {
                bail!("give a run id, or a filter such as --status dead --since 1h");
            }
            bulk(
                client,
                out,
                &format!("/api/tasks/bulk/{action}"),
                action,
                "runs",
                filter,
                true,
            )
            .await
        }
    }
}

/// Dry run, confirmation, then the bulk call.
pub async fn bulk(
    client: &Client,
    out: &mut Out<'_>,
    path: &str,
    verb: &str,
    noun: &str,
    filter: &FilterArgs,
    with_status: bool,
) -> Result<u8> {
    let preview = client
        .post(path, &filter.body(with_status, true), None)
        .await?;
    let matched = preview["matched"].as_u64().unwrap_or(0);
    if filter.dry_run || matched == 0 {
        out.bulk(&preview)?;
        return Ok(0);
    }
    if !confirm(verb, matched, noun, filter.yes)? {
        return Ok(declined());
    }
    let done = client
        .post(path, &filter.body(with_status, false), None)
        .await?;
    out.bulk(&done)?;
    Ok(0)
}

pub async fn replay(
    client: &Client,
    out: &mut Out<'_>,
    id: &str,
    from_step: Option<String>,
    input: Option<String>,
    latest_definition: bool,
) -> Result<u8> {
    let id = &run_id::resolve(client, id).await?;
    let input: Option<Value> = match input {
        Some(s) => Some(
            serde_json::from_str(&s)
                .map_err(|e| anyhow::anyhow!("--input is not valid JSON: {e}"))?,
        ),
        None => None,
    };
    let body = client
        .post(
            &format!("/api/tasks/{id}/replay"),
            &json!({ "fromStep": from_step, "input": input, "latestDefinition": latest_definition }),
            None,
        )
        .await?;
    out.task_state(&body)?;
    Ok(0)
}

/// How `logs --follow` reconnects: the first wait, doubled after each failure up to the
/// last.
const RECONNECT_FIRST: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Whether an event ends its run.
fn is_final(e: &Value) -> bool {
    matches!(
        e["kind"].as_str(),
        Some("run_succeeded" | "run_dead" | "run_cancelled")
    )
}

/// Prints a run's events; with `follow`, keeps streaming until the run finishes. A
/// stream that drops is opened again after the last event seen (`Last-Event-ID`), so
/// nothing is printed twice or missed; after `reconnects` failed attempts in a row it
/// gives up with an error.
pub async fn logs(
    client: &Client,
    out: &mut Out<'_>,
    id: &str,
    follow: bool,
    reconnects: u32,
) -> Result<u8> {
    let id = run_id::resolve(client, id).await?;
    let body = client.get(&format!("/api/tasks/{id}/events")).await?;
    let mut last: Option<String> = None;
    let mut finished = false;
    for e in body["items"].as_array().into_iter().flatten() {
        out.event(e)?;
        last = e["id"].as_i64().map(|n| n.to_string()).or(last);
        finished |= is_final(e);
    }
    if !follow || finished {
        return Ok(0);
    }
    let path = format!("/api/events?runId={id}");
    // Events before the stream starts were printed: resume after them (the API starts a
    // run's stream at its first event otherwise).
    let mut last = Some(last.unwrap_or_else(|| "0".into()));
    let mut failures: u32 = 0;
    let mut wait = RECONNECT_FIRST;
    loop {
        let mut heard = false;
        let ended: anyhow::Error = match client.sse(&path, last.as_deref()).await {
            Err(SseError::Refused(e)) => return Err(e),
            Err(SseError::Unavailable(e)) => e,
            Ok(mut stream) => loop {
                match stream.next_message().await {
                    Ok(Some(m)) => {
                        heard = true;
                        if let Some(data) = m.data {
                            let e: Value = serde_json::from_str(&data)
                                .context("the API sent an event that is not JSON")?;
                            out.event(&e)?;
                            if is_final(&e) {
                                return Ok(0);
                            }
                        }
                        if m.id.is_some() {
                            last = m.id;
                        }
                    }
                    Ok(None) => break anyhow::anyhow!("the API closed the event stream"),
                    Err(e) => break e,
                }
            },
        };
        if heard {
            // The connection worked: the API ends streams after a while (its last
            // message is the cursor), and a drop after events is a first failure.
            failures = 0;
            wait = RECONNECT_FIRST;
            continue;
        }
        failures += 1;
        if failures > reconnects {
            bail!(
                "gave up following run {id} after {reconnects} failed reconnects: {ended:#}\nthe run goes on; `ctl task logs {id} --follow` picks up again"
            );
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RECONNECT_MAX);
    }
}
