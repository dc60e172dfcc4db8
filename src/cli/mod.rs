//! `ctl`: the operator CLI. Every command but `workflow validate` talks to the API
//! (`--api-url` / `CAIRN_API_URL`, bearer token from `CAIRN_TOKEN`); output goes to an
//! injected writer as a table or, with `-o json`, one JSON document.
//!
//! Exit codes: 0 success, 1 failure (including a run that did not succeed under
//! `--wait`, and invalid workflows), 2 usage errors.

mod client;
mod output;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::workflow::{Registry, WorkflowError, toml_files};
use client::Client;
pub use output::Format;
use output::Out;

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
        /// Wait until the run finishes; exit 1 unless it succeeded.
        #[arg(long)]
        wait: bool,
    },
    /// List runs, newest first.
    #[command(
        after_help = "Examples:\n  ctl task list --status dead --since 1h\n  ctl task list --workflow analyze_project -o json"
    )]
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        workflow: Option<String>,
        /// Only runs created within this long (e.g. 30m, 1h, 2d).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show a run: steps, attempts, errors, outputs and events.
    Show { id: String },
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
        Command::Task { command } => {
            let client = Client::new(&cli.global)?;
            task(command, &client, &mut out).await
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
            wait,
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
                    &json!({ "workflow": workflow, "input": input }),
                    idempotency_key.as_deref(),
                )
                .await?;
            let id = body["taskId"].as_str().unwrap_or_default().to_owned();
            if !wait {
                out.submitted(&body)?;
                return Ok(0);
            }
            let run = wait_for(client, &id).await?;
            out.task(&run)?;
            Ok(if run["status"] == "succeeded" { 0 } else { 1 })
        }
        TaskCommand::List {
            status,
            workflow,
            since,
            limit,
        } => {
            let mut query: Vec<(&str, String)> = vec![("limit", limit.to_string())];
            if let Some(s) = status {
                query.push(("status", s));
            }
            if let Some(w) = workflow {
                query.push(("workflow", w));
            }
            if let Some(s) = since {
                query.push(("since", s));
            }
            let body = client.get_query("/api/tasks", &query).await?;
            out.tasks(&body)?;
            Ok(0)
        }
        TaskCommand::Show { id } => {
            let body = client.get(&format!("/api/tasks/{id}")).await?;
            out.task(&body)?;
            Ok(0)
        }
    }
}

async fn wait_for(client: &Client, id: &str) -> Result<Value> {
    loop {
        let run = client.get(&format!("/api/tasks/{id}")).await?;
        if matches!(
            run["status"].as_str(),
            Some("succeeded" | "dead" | "cancelled")
        ) {
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
