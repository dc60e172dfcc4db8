//! `ctl`: the operator CLI. Every command but `workflow validate` talks to the API
//! (`--api-url` / `CAIRN_API_URL`, bearer token from `CAIRN_TOKEN`); output goes to an
//! injected writer as a table or, with `-o json`, one JSON document. A crate of its own,
//! on `cairn-workflow` alone, so that it builds without the server's database, HTTP
//! server and queue stacks.
//!
//! Run ids may be shortened to any unique prefix of at least four characters, as git
//! takes commit hashes. Commands that delete or stop one thing ask first on a terminal
//! and need `--yes` elsewhere.
//!
//! Exit codes: 0 success, 1 failure (including a run that did not succeed under
//! `--wait`, invalid workflows, and a declined confirmation), 2 usage errors.

mod client;
mod ops;
mod output;
mod run_id;
mod schedule;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use cairn_workflow::state::{NotificationState, RunStatus};
use cairn_workflow::{Registry, WorkflowError, toml_files};
use client::Client;
pub use output::Format;
use output::{List, Out, Page};

#[derive(Debug, Parser)]
#[command(
    name = "ctl",
    version,
    about = "Operate Cairn: submit, inspect and fix workflow runs."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Base URL of the Cairn API.
    #[arg(
        long,
        env = "CAIRN_API_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub api_url: String,
    /// API token (sent as a bearer token).
    #[arg(long, env = "CAIRN_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table, global = true)]
    pub output: Format,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Workflow runs ("tasks").
    Task {
        #[command(subcommand)]
        command: TaskCommand,
    },
    /// Workflow definitions.
    Workflow {
        #[command(subcommand)]
        command: WorkflowCommand,
    },
    /// Schedules: recurring runs of a workflow.
    Schedule {
        #[command(subcommand)]
        command: schedule::ScheduleCommand,
    },
    /// Dead letters: runs whose step failed for good.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Worker processes.
    Worker {
        #[command(subcommand)]
        command: WorkerCommand,
    },
    /// Retention: how long finished runs are kept, and what the reaper deleted.
    #[command(
        after_help = "Runs are pinned (kept whatever their age) with `ctl task pin ID`.\n\nExamples:\n  ctl retention\n  ctl retention --limit 50 -o json"
    )]
    Retention {
        /// The latest passes to show (1 to 1,000).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Notifications: the alerts sent about dead runs, and how their delivery went.
    Notify {
        #[command(subcommand)]
        command: NotifyCommand,
    },
    /// Your API tokens: list and revoke them.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Sign in and save a personal token for this API (used when CAIRN_TOKEN is unset).
    Login {
        #[arg(long)]
        email: String,
        /// Read the password from standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Print shell completions.
    #[command(after_help = "Example:\n  ctl completions bash > /etc/bash_completion.d/ctl")]
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Recent notifications, newest first, with their delivery state.
    #[command(
        after_help = "Notifications are sent by the notifier in `cairn scheduler` (and `cairn dev`) to CAIRN_NOTIFY_URL or a workflow's [notify] url.\n\nExamples:\n  ctl notify list\n  ctl notify list --state failed\n  ctl notify list --task 01J... -o json"
    )]
    List {
        /// Only this state.
        #[arg(long, value_parser = ops::status_parser::<NotificationState>())]
        state: Option<NotificationState>,
        /// Only the notifications about this run.
        #[arg(long)]
        task: Option<String>,
        /// Only this workflow's.
        #[arg(long)]
        workflow: Option<String>,
        /// At most this many (1 to 500).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=500))]
        limit: u32,
    },
    /// Send a notification that was given up (failed) or skipped again, with a fresh
    /// round of attempts: after its target was fixed.
    #[command(after_help = "Examples:\n  ctl notify list --state failed\n  ctl notify resend 42")]
    Resend {
        /// The notification's id (the ID column of `ctl notify list`).
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Queue a run of a workflow.
    #[command(
        after_help = "Examples:\n  ctl task submit analyze_project --input '{\"project_id\": 1}'\n  ctl task submit nightly --input-file input.json --idempotency-key nightly-2026-11-26 --wait"
    )]
    Submit {
        /// Workflow name (its file stem).
        workflow: String,
        /// Input as a JSON object.
        #[arg(long, conflicts_with = "input_file")]
        input: Option<String>,
        /// Read the input from a JSON file.
        #[arg(long)]
        input_file: Option<PathBuf>,
        /// Submitting again with the same key returns the same run.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// 0 to 1000: the run is queued as if that many minutes earlier, so it starts
        /// before the runs queued less than that before it.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..=1000))]
        priority: i64,
        /// Wait until the run finishes; exit 1 unless it succeeded.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long (e.g. 30s, 10m), exiting 1 and saying
        /// the run's state; the run goes on.
        #[arg(long, requires = "wait", value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
    },
    /// List runs, newest first.
    #[command(
        after_help = "Examples:\n  ctl task list --status dead --since 1h\n  ctl task list --workflow analyze_project -o json\n  ctl task list --status dead --all"
    )]
    List {
        /// Only runs in this state.
        #[arg(long, value_parser = ops::status_parser::<RunStatus>())]
        status: Option<RunStatus>,
        /// Only runs of this workflow (`ctl workflow list` names them).
        #[arg(long)]
        workflow: Option<String>,
        /// Only runs created within this long (e.g. 30m, 1h, 2d).
        #[arg(long)]
        since: Option<String>,
        /// At most this many (1 to 500).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=500))]
        limit: u32,
        /// Continue a list: the cursor the previous page printed.
        #[arg(long)]
        cursor: Option<String>,
        /// Every page, one after another (--limit runs a page).
        #[arg(long)]
        all: bool,
    },
    /// Show a run: steps, attempts, errors, outputs and events.
    Show {
        /// Run id, or a unique prefix of it (at least 4 characters).
        id: String,
    },
    /// Resume dead runs from their failed step (one, or all matching a filter).
    #[command(
        after_help = "Examples:\n  ctl task retry 01J…\n  ctl task retry --status dead --workflow analyze_project --since 1h --dry-run\n  ctl task retry --status dead --since 1h --yes"
    )]
    Retry {
        /// Run id, or a unique prefix of it (at least 4 characters).
        id: Option<String>,
        #[command(flatten)]
        filter: ops::FilterArgs,
    },
    /// Start a new run from this one, optionally from a step and with another input.
    #[command(
        after_help = "Examples:\n  ctl task replay 01J… --from-step analyze\n  ctl task replay 01J… --input '{\"depth\": \"deep\"}' --latest-definition"
    )]
    Replay {
        /// Run id, or a unique prefix of it (at least 4 characters).
        id: String,
        /// Re-execute this step and everything downstream; keep the other checkpoints.
        #[arg(long)]
        from_step: Option<String>,
        /// A different input (JSON).
        #[arg(long)]
        input: Option<String>,
        /// Use the workflow's current definition.
        #[arg(long)]
        latest_definition: bool,
    },
    /// Replay every run matching a filter.
    ReplayAll {
        #[command(flatten)]
        filter: ops::FilterArgs,
    },
    /// Cancel runs: queued and parked at once, running at the next step boundary (with
    /// --now: at once, stopping the running step). Asks first (or pass --yes).
    #[command(
        after_help = "Examples:\n  ctl task cancel 01J…\n  ctl task cancel 01JAB7 --yes\n  ctl task cancel 01JAB7 --now --yes\n  ctl task cancel --status queued --workflow nightly --dry-run"
    )]
    Cancel {
        /// Run id, or a unique prefix of it (at least 4 characters).
        id: Option<String>,
        /// Terminate: stop the running step at once instead of at its end (its attempt
        /// is recorded `terminated`); child runs are terminated too. One run id only.
        #[arg(long)]
        now: bool,
        #[command(flatten)]
        filter: ops::FilterArgs,
    },
    /// Keep a run (and its child runs) whatever its age: retention never deletes a
    /// pinned run.
    #[command(after_help = "Examples:\n  ctl task pin 01JAB7\n  ctl task unpin 01JAB7")]
    Pin {
        /// Run id, or a unique prefix of it (at least 4 characters).
        id: String,
    },
    /// Let retention delete a run (and its child runs) again once it is past its
    /// window.
    Unpin {
        /// Run id, or a unique prefix of it (at least 4 characters).
        id: String,
    },
    /// A run's events; --follow streams them until the run finishes.
    #[command(
        after_help = "A dropped stream is reopened after the last event printed (Last-Event-ID): nothing\nis printed twice or skipped. After --reconnects failed attempts in a row, ctl gives up\nand exits 1.\n\nExamples:\n  ctl task logs 01JAB7\n  ctl task logs 01JAB7 --follow"
    )]
    Logs {
        /// Run id, or a unique prefix of it (at least 4 characters).
        id: String,
        /// Keep streaming new events until the run finishes.
        #[arg(long, short = 'f')]
        follow: bool,
        /// With --follow: give up after this many failed reconnects in a row.
        #[arg(long, default_value_t = 10, requires = "follow")]
        reconnects: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Dead letters, newest first.
    List {
        /// Only dead letters of this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// Only runs dead within this long (e.g. 30m, 1h, 2d).
        #[arg(long)]
        since: Option<String>,
        /// At most this many (1 to 500).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=500))]
        limit: u32,
        /// Continue a list: the cursor the previous page printed.
        #[arg(long)]
        cursor: Option<String>,
        /// Every page, one after another (--limit runs a page).
        #[arg(long)]
        all: bool,
    },
    /// One dead letter: the failed step, its error, every attempt and the input.
    Show { id: i64 },
    /// Resume dead runs from the failed step (one, or all matching a filter).
    #[command(
        after_help = "Examples:\n  ctl dlq redrive 42\n  ctl dlq redrive --workflow analyze_project --since 1h --dry-run"
    )]
    Redrive {
        id: Option<i64>,
        #[command(flatten)]
        filter: ops::FilterArgs,
    },
    /// Remove dead letters (the runs stay dead). Asks first (or pass --yes).
    #[command(
        after_help = "Examples:\n  ctl dlq purge 42\n  ctl dlq purge 42 --yes\n  ctl dlq purge --workflow analyze_project --until 30d --dry-run"
    )]
    Purge {
        id: Option<i64>,
        #[command(flatten)]
        filter: ops::FilterArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Your tokens (with --all, an admin's view of every token); never their secrets.
    List {
        /// Every token of every user and service (admins).
        #[arg(long)]
        all: bool,
    },
    /// Revoke a token by its id; it stops working at once. Asks first (or pass --yes).
    #[command(after_help = "Examples:\n  ctl token revoke 12\n  ctl token revoke 12 --all --yes")]
    Revoke {
        id: i64,
        /// Revoke any token, not only yours (admins).
        #[arg(long)]
        all: bool,
        /// Do not ask for confirmation (needed when standard input is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkerCommand {
    /// Live workers (heartbeat age, runs in flight, version) and stuck runs.
    List,
}

#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Check workflow files without a database; exit 1 if any is invalid.
    #[command(
        after_help = "Examples:\n  ctl workflow validate\n  ctl workflow validate workflows/analyze_project.toml"
    )]
    Validate {
        /// Files or directories (default: $CAIRN_WORKFLOWS_DIR or ./workflows).
        paths: Vec<PathBuf>,
    },
    /// List the workflows the API serves.
    List,
    /// A workflow's definition.
    Show { name: String },
    /// A workflow's DAG as Mermaid or DOT.
    Graph {
        name: String,
        #[arg(long, default_value = "mermaid", value_parser = ["mermaid", "dot"])]
        format: String,
    },
}

/// Runs a parsed command line; returns the process exit code.
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<u8> {
    let mut out = Out::new(out, cli.global.output);
    match cli.command {
        Command::Workflow {
            command: WorkflowCommand::Validate { paths },
        } => validate(paths, &mut out),
        Command::Workflow {
            command: WorkflowCommand::List,
        } => {
            let client = Client::new(&cli.global)?;
            let body = client.get("/api/workflows").await?;
            out.workflows(&body)?;
            Ok(0)
        }
        Command::Workflow {
            command: WorkflowCommand::Show { name },
        } => {
            let client = Client::new(&cli.global)?;
            let body = client.get(&format!("/api/workflows/{name}")).await?;
            out.workflow(&body)?;
            Ok(0)
        }
        Command::Workflow {
            command: WorkflowCommand::Graph { name, format },
        } => {
            let client = Client::new(&cli.global)?;
            let text = client
                .get_text(&format!("/api/workflows/{name}/graph?format={format}"))
                .await?;
            out.text(&text)?;
            Ok(0)
        }
        Command::Task { command } => {
            let client = Client::new(&cli.global)?;
            task(command, &client, &mut out).await
        }
        Command::Schedule { command } => {
            let client = Client::new(&cli.global)?;
            schedule::run(command, &client, &mut out).await
        }
        Command::Dlq { command } => {
            let client = Client::new(&cli.global)?;
            dlq(command, &client, &mut out).await
        }
        Command::Worker {
            command: WorkerCommand::List,
        } => {
            let client = Client::new(&cli.global)?;
            let body = client.get("/api/workers").await?;
            out.workers(&body)?;
            Ok(0)
        }
        Command::Retention { limit } => {
            let client = Client::new(&cli.global)?;
            let body = client
                .get_query("/api/retention", &[("limit", limit.to_string())])
                .await?;
            out.retention(&body)?;
            Ok(0)
        }
        Command::Notify {
            command:
                NotifyCommand::List {
                    state,
                    task,
                    workflow,
                    limit,
                },
        } => {
            let client = Client::new(&cli.global)?;
            let mut query = vec![("limit", limit.to_string())];
            query.extend(state.map(|s| ("state", s.to_string())));
            query.extend(task.map(|t| ("taskId", t)));
            query.extend(workflow.map(|w| ("workflow", w)));
            let body = client.get_query("/api/notifications", &query).await?;
            out.notifications(&body)?;
            Ok(0)
        }
        Command::Notify {
            command: NotifyCommand::Resend { id },
        } => {
            let client = Client::new(&cli.global)?;
            let body = client
                .post(&format!("/api/notifications/{id}/resend"), &json!({}), None)
                .await?;
            out.notification_resent(&body)?;
            Ok(0)
        }
        Command::Token {
            command: TokenCommand::List { all },
        } => {
            let client = Client::new(&cli.global)?;
            let body = client
                .get(if all {
                    "/api/tokens"
                } else {
                    "/api/auth/tokens"
                })
                .await?;
            out.tokens(&body)?;
            Ok(0)
        }
        Command::Token {
            command: TokenCommand::Revoke { id, all, yes },
        } => {
            let client = Client::new(&cli.global)?;
            if !ops::confirm_one(&format!("revoke token {id}"), yes)? {
                return Ok(ops::declined());
            }
            let path = if all {
                format!("/api/tokens/{id}")
            } else {
                format!("/api/auth/tokens/{id}")
            };
            client.delete(&path).await?;
            out.text(&format!("revoked token {id}\n"))?;
            Ok(0)
        }
        Command::Login {
            email,
            password_stdin,
        } => {
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                line.trim_end_matches(['\n', '\r']).to_owned()
            } else {
                rpassword::prompt_password("Password: ")?
            };
            let client = Client::new(&cli.global)?;
            let session = client.login(&email, &password).await?;
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            let token = client
                .personal_token(&session, &format!("ctl on {}", host.trim()))
                .await?;
            let path =
                client::config_path().context("cannot tell where to save the login (no HOME)")?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let saved = json!({ "apiUrl": client.base(), "token": token["token"] });
            write_private(&path, &serde_json::to_string_pretty(&saved)?)?;
            let expires = match token["expiresAt"].as_str() {
                Some(at) => format!("expires {at}"),
                None => "never expires".to_owned(),
            };
            out.text(&format!(
                "signed in as {email} ({}); token saved to {} ({expires}; `ctl token list` shows it)\n",
                text_of(&token["role"]),
                path.display()
            ))?;
            Ok(0)
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "ctl", &mut buf);
            out.text(&String::from_utf8_lossy(&buf))?;
            Ok(0)
        }
    }
}

async fn task(command: TaskCommand, client: &Client, out: &mut Out<'_>) -> Result<u8> {
    match command {
        TaskCommand::Submit {
            workflow,
            input,
            input_file,
            idempotency_key,
            priority,
            wait,
            timeout,
        } => {
            let input: Value = match (input, input_file) {
                (Some(s), _) => serde_json::from_str(&s).context("--input is not valid JSON")?,
                (None, Some(f)) => {
                    let text = std::fs::read_to_string(&f)
                        .with_context(|| format!("cannot read {}", f.display()))?;
                    serde_json::from_str(&text)
                        .with_context(|| format!("{} is not valid JSON", f.display()))?
                }
                (None, None) => json!({}),
            };
            let body = client
                .post(
                    "/api/tasks",
                    &json!({ "workflow": workflow, "input": input, "priority": priority }),
                    idempotency_key.as_deref(),
                )
                .await?;
            let id = body["taskId"].as_str().unwrap_or_default().to_owned();
            if !wait {
                out.submitted(&body)?;
                return Ok(0);
            }
            let run = match timeout {
                None => wait_for(client, &id).await?,
                Some(limit) => match tokio::time::timeout(limit, wait_for(client, &id)).await {
                    Ok(run) => run?,
                    Err(_) => {
                        let run = client.get(&format!("/api/tasks/{id}")).await?;
                        anyhow::bail!(
                            "run {id} is still {} after {}; it goes on (`ctl task show {id}`)",
                            text_of(&run["status"]),
                            humantime::format_duration(limit)
                        );
                    }
                },
            };
            out.task(&run)?;
            Ok(if status_of(&run) == Some(RunStatus::Succeeded) {
                0
            } else {
                1
            })
        }
        TaskCommand::List {
            status,
            workflow,
            since,
            limit,
            cursor,
            all,
        } => {
            let mut query: Vec<(&str, String)> = vec![("limit", limit.to_string())];
            if let Some(c) = cursor {
                query.push(("cursor", c));
            }
            if let Some(s) = status {
                query.push(("status", s.to_string()));
            }
            if let Some(w) = workflow {
                query.push(("workflow", w));
            }
            if let Some(s) = since {
                query.push(("since", s));
            }
            list(client, out, "/api/tasks", query, List::Tasks, all).await
        }
        TaskCommand::Show { id } => {
            let id = run_id::resolve(client, &id).await?;
            let body = client.get(&format!("/api/tasks/{id}")).await?;
            out.task(&body)?;
            Ok(0)
        }
        TaskCommand::Pin { id } => pin(client, out, &id, "pin").await,
        TaskCommand::Unpin { id } => pin(client, out, &id, "unpin").await,
        TaskCommand::Retry { id, filter } => {
            ops::run_action(client, out, "retry", id, &filter).await
        }
        TaskCommand::Cancel { id, now, filter } => {
            if now && id.is_none() {
                anyhow::bail!(
                    "--now terminates one run: give its id (a filter cancels at step boundaries)"
                );
            }
            let action = if now { "terminate" } else { "cancel" };
            ops::run_action(client, out, action, id, &filter).await
        }
        TaskCommand::Replay {
            id,
            from_step,
            input,
            latest_definition,
        } => ops::replay(client, out, &id, from_step, input, latest_definition).await,
        TaskCommand::ReplayAll { filter } => {
            ops::bulk(
                client,
                out,
                "/api/tasks/bulk/replay",
                "replay",
                "runs",
                &filter,
                true,
            )
            .await
        }
        TaskCommand::Logs {
            id,
            follow,
            reconnects,
        } => ops::logs(client, out, &id, follow, reconnects).await,
    }
}

/// `ctl task pin|unpin`: `action` is the endpoint's last segment.
async fn pin(client: &Client, out: &mut Out<'_>, id: &str, action: &str) -> Result<u8> {
    let id = run_id::resolve(client, id).await?;
    let body = client
        .post(&format!("/api/tasks/{id}/{action}"), &json!({}), None)
        .await?;
    out.pinned(&body)?;
    Ok(0)
}

async fn dlq(command: DlqCommand, client: &Client, out: &mut Out<'_>) -> Result<u8> {
    match command {
        DlqCommand::List {
            workflow,
            since,
            limit,
            cursor,
            all,
        } => {
            let mut query: Vec<(&str, String)> = vec![("limit", limit.to_string())];
            if let Some(c) = cursor {
                query.push(("cursor", c));
            }
            if let Some(w) = workflow {
                query.push(("workflow", w));
            }
            if let Some(s) = since {
                query.push(("since", s));
            }
            list(
                client,
                out,
                "/api/dead-letters",
                query,
                List::DeadLetters,
                all,
            )
            .await
        }
        DlqCommand::Show { id } => {
            let body = client.get(&format!("/api/dead-letters/{id}")).await?;
            out.dead_letter(&body)?;
            Ok(0)
        }
        DlqCommand::Redrive { id, filter } | DlqCommand::Purge { id, filter }
            if filter.status.is_some() =>
        {
            let _ = (id, filter);
            bail!(
                "dead letters are filtered by --workflow, --since and --until (they are all dead)"
            )
        }
        DlqCommand::Redrive {
            id: Some(id),
            filter,
        }
        | DlqCommand::Purge {
            id: Some(id),
            filter,
        } if filter.dry_run => {
            bail!("--dry-run previews a filter; `ctl dlq show {id}` shows one dead letter")
        }
        DlqCommand::Redrive { id: Some(id), .. } => {
            let body = client
                .post(&format!("/api/dead-letters/{id}/redrive"), &json!({}), None)
                .await?;
            out.task_state(&body)?;
            Ok(0)
        }
        DlqCommand::Purge {
            id: Some(id),
            filter,
        } => {
            if !ops::confirm_one(&format!("purge dead letter {id}"), filter.yes)? {
                return Ok(ops::declined());
            }
            client
                .post(&format!("/api/dead-letters/{id}/purge"), &json!({}), None)
                .await?;
            out.text(&format!("purged dead letter {id}\n"))?;
            Ok(0)
        }
        DlqCommand::Redrive { id: None, filter } => {
            ops::bulk(
                client,
                out,
                "/api/dead-letters/bulk/redrive",
                "redrive",
                "dead letters",
                &filter,
                false,
            )
            .await
        }
        DlqCommand::Purge { id: None, filter } => {
            ops::bulk(
                client,
                out,
                "/api/dead-letters/bulk/purge",
                "purge",
                "dead letters",
                &filter,
                false,
            )
            .await
        }
    }
}

/// A list: one page (with the cursor of the next), or with `all` every page, following
/// the cursor to the end and printing each page as it arrives.
async fn list(
    client: &Client,
    out: &mut Out<'_>,
    path: &str,
    mut query: Vec<(&str, String)>,
    kind: List,
    all: bool,
) -> Result<u8> {
    let body = client.get_query(path, &query).await?;
    if !all {
        out.page(kind, &body, Page::Only)?;
        return Ok(0);
    }
    out.page(kind, &body, Page::First)?;
    let mut next = body["nextCursor"].as_str().map(str::to_owned);
    while let Some(cursor) = next {
        query.retain(|(k, _)| *k != "cursor");
        query.push(("cursor", cursor));
        let body = client.get_query(path, &query).await?;
        out.page(kind, &body, Page::Next)?;
        next = body["nextCursor"].as_str().map(str::to_owned);
    }
    out.end_pages()?;
    Ok(0)
}

fn text_of(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// Writes a file only its owner can read.
fn write_private(path: &std::path::Path, contents: &str) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

/// A run's status as the API answered it.
fn status_of(run: &Value) -> Option<RunStatus> {
    run["status"].as_str().and_then(|s| s.parse().ok())
}

async fn wait_for(client: &Client, id: &str) -> Result<Value> {
    loop {
        let run = client.get(&format!("/api/tasks/{id}")).await?;
        if status_of(&run).is_some_and(RunStatus::is_final) {
            return Ok(run);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn validate(paths: Vec<PathBuf>, out: &mut Out<'_>) -> Result<u8> {
    let paths = if paths.is_empty() {
        vec![PathBuf::from(
            std::env::var("CAIRN_WORKFLOWS_DIR").unwrap_or_else(|_| "./workflows".into()),
        )]
    } else {
        paths
    };
    let mut files = Vec::new();
    for p in &paths {
        if p.is_dir() {
            files.extend(toml_files(p)?);
        } else if p.exists() {
            files.push(p.clone());
        } else {
            bail!("{} does not exist", p.display());
        }
    }
    let result = Registry::load_files(&files);
    let ok = match &result {
        Ok(_) => true,
        Err(WorkflowError::Invalid(_)) => false,
        Err(e) => bail!("{e}"),
    };
    let diagnostics = result
        .as_ref()
        .err()
        .map(WorkflowError::diagnostics)
        .unwrap_or(&[]);
    out.validation(&files, diagnostics)?;
    Ok(if ok { 0 } else { 1 })
}
