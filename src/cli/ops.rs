//! `ctl` commands that change runs and dead letters (one or by filter), follow logs,
//! and show workflows and workers.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use super::client::Client;
use super::output::Out;

/// Which runs (or dead letters) a bulk command applies to.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Runs with this status.
    #[arg(long)]
    pub status: Option<String>,
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
    /// Do not ask for confirmation.
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
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "refusing to {verb} {n} {noun} without confirmation: pass --yes (or --dry-run to look first)"
        );
    }
    eprint!("{verb} {n} {noun}? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// A single-run action (`retry`, `cancel`) or its bulk form over a filter.
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
        eprintln!("nothing changed");
        return Ok(1);
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

/// Prints a run's events; with `follow`, keeps streaming until the run finishes.
pub async fn logs(client: &Client, out: &mut Out<'_>, id: &str, follow: bool) -> Result<u8> {
    let body = client.get(&format!("/api/tasks/{id}/events")).await?;
    let mut last = 0;
    for e in body["items"].as_array().into_iter().flatten() {
        out.event(e)?;
        last = e["id"].as_i64().unwrap_or(last);
    }
    if !follow {
        return Ok(0);
    }
    let run = client.get(&format!("/api/tasks/{id}")).await?;
    if matches!(
        run["status"].as_str(),
        Some("succeeded" | "dead" | "cancelled")
    ) {
        return Ok(0);
    }
    // The API ends a stream after a while (and when the token stops being valid): open
    // another from the last event seen until the run finishes (or the API refuses).
    loop {
        let mut stream = client
            .sse(&format!("/api/events?runId={id}&after={last}"))
            .await?;
        while let Some(data) = stream.next_event().await? {
            let e: Value = serde_json::from_str(&data)?;
            out.event(&e)?;
            last = e["id"].as_i64().unwrap_or(last);
            if matches!(
                e["kind"].as_str(),
                Some("run_succeeded" | "run_dead" | "run_cancelled")
            ) {
                return Ok(0);
            }
        }
    }
}
