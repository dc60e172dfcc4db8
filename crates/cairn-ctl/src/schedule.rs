//! `ctl schedule …`: list (with the next three fire times), show, add, update, pause,
//! resume, trigger, backfill and remove schedules through `/api/schedules`. A schedule
//! is named by its id or its name.

use std::io::Write;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde_json::{Value, json};

use super::client::Client;
use super::ops;
use super::output::{Format, Out, relative, table, text};

/// An instant as RFC 3339 (`2026-01-01T00:00:00Z`, `2026-01-01T06:00:00+01:00`).
fn instant(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("not an RFC 3339 time such as 2026-01-01T00:00:00Z: {e}"))
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Schedules, with their next three fire times.
    List,
    /// A schedule and its latest ticks (fired, skipped, failed).
    Show {
        /// Id or name.
        schedule: String,
    },
    /// Create a schedule (workflow files declare theirs with `[[schedules]]`).
    #[command(
        after_help = "Examples:\n  ctl schedule add nightly-report --workflow run_report --cron '0 6 * * *' --timezone Europe/Berlin\n  ctl schedule add greet --workflow hello --cron '*/10 * * * * *' --input '{\"name\": \"Ada\"}' --overlap-policy skip"
    )]
    Add {
        /// Unique name: letters, digits, `_`, `-` and `.`.
        name: String,
        #[arg(long)]
        workflow: String,
        /// 5 fields (`0 6 * * *`), or 6 with seconds first (`*/10 * * * * *`).
        #[arg(long)]
        cron: String,
        /// IANA time zone the expression is read in.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// Input of every run, as a JSON object.
        #[arg(long)]
        input: Option<String>,
        /// What missed ticks do: one late run (`fire_once`) or nothing (`skip`).
        #[arg(long, default_value = "fire_once", value_parser = ["fire_once", "skip"])]
        misfire_policy: String,
        /// When the previous run is still active: `allow`, `skip`, `cancel_previous`.
        #[arg(long, default_value = "allow", value_parser = ["allow", "skip", "cancel_previous"])]
        overlap_policy: String,
        /// How late a tick may start and still be on time (e.g. 30s, 5m).
        #[arg(long, default_value = "1m")]
        max_lateness: String,
        /// Priority of the runs it starts: 0 to 1000 minutes of head start in the queue.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..=1000))]
        priority: i64,
        /// Create it paused.
        #[arg(long)]
        paused: bool,
    },
    /// Change a schedule's settings; what is not given stays (the name cannot change). A
    /// new expression or zone takes effect from the next tick from now.
    #[command(
        after_help = "Examples:\n  ctl schedule update nightly --cron '0 7 * * *'\n  ctl schedule update nightly --timezone America/New_York --input '{\"hours\": 48}'"
    )]
    Update {
        /// Id or name.
        schedule: String,
        #[arg(long)]
        workflow: Option<String>,
        /// 5 fields (`0 6 * * *`), or 6 with seconds first (`*/10 * * * * *`).
        #[arg(long)]
        cron: Option<String>,
        /// IANA time zone the expression is read in.
        #[arg(long)]
        timezone: Option<String>,
        /// Input of every run, as a JSON object.
        #[arg(long)]
        input: Option<String>,
        /// What missed ticks do: one late run (`fire_once`) or nothing (`skip`).
        #[arg(long, value_parser = ["fire_once", "skip"])]
        misfire_policy: Option<String>,
        /// When the previous run is still active: `allow`, `skip`, `cancel_previous`.
        #[arg(long, value_parser = ["allow", "skip", "cancel_previous"])]
        overlap_policy: Option<String>,
        /// How late a tick may start and still be on time (e.g. 30s, 5m).
        #[arg(long)]
        max_lateness: Option<String>,
        /// Priority of the runs it starts: 0 to 1000 minutes of head start in the queue.
        #[arg(long, value_parser = clap::value_parser!(i64).range(0..=1000))]
        priority: Option<i64>,
    },
    /// Start one run for every fire time in [--from, --to) not handled yet (at most
    /// 1,000); repeating it starts nothing twice.
    #[command(
        after_help = "Examples:\n  ctl schedule backfill nightly --from 2026-01-01T00:00:00Z --to 2026-01-08T00:00:00Z"
    )]
    Backfill {
        /// Id or name.
        schedule: String,
        /// First instant of the range, included (RFC 3339).
        #[arg(long, value_parser = instant)]
        from: DateTime<Utc>,
        /// End of the range, excluded (RFC 3339).
        #[arg(long, value_parser = instant)]
        to: DateTime<Utc>,
    },
    /// Stop a schedule firing until it is resumed.
    Pause { schedule: String },
    /// Resume a paused schedule from its next tick (the paused ticks never fire).
    Resume { schedule: String },
    /// Start a run of the schedule now.
    Trigger { schedule: String },
    /// Remove a schedule created with `add` (a file's schedule is removed from its
    /// file). Asks first (or pass --yes).
    Remove {
        schedule: String,
        /// Do not ask for confirmation (needed when standard input is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

fn path(schedule: &str) -> String {
    format!("/api/schedules/{schedule}")
}

/// Runs a `ctl schedule` command.
pub async fn run(command: ScheduleCommand, client: &Client, out: &mut Out<'_>) -> Result<u8> {
    let (w, format) = out.parts();
    match command {
        ScheduleCommand::List => {
            let body = client.get("/api/schedules").await?;
            list(w, format, &body)?;
        }
        ScheduleCommand::Show { schedule } => {
            let body = client.get(&path(&schedule)).await?;
            show(w, format, &body)?;
        }
        ScheduleCommand::Add {
            name,
            workflow,
            cron,
            timezone,
            input,
            misfire_policy,
            overlap_policy,
            max_lateness,
            priority,
            paused,
        } => {
            let input: Value = match input {
                Some(s) => serde_json::from_str(&s).context("--input is not valid JSON")?,
                None => json!({}),
            };
            let body = json!({
                "name": name,
                "workflow": workflow,
                "cron": cron,
                "timezone": timezone,
                "input": input,
                "enabled": !paused,
                "misfirePolicy": misfire_policy,
                "overlapPolicy": overlap_policy,
                "maxLateness": max_lateness,
                "priority": priority,
            });
            let created = client.post("/api/schedules", &body, None).await?;
            one(w, format, &created)?;
        }
        ScheduleCommand::Update {
            schedule,
            workflow,
            cron,
            timezone,
            input,
            misfire_policy,
            overlap_policy,
            max_lateness,
            priority,
        } => {
            let mut body = serde_json::Map::new();
            if let Some(p) = priority {
                body.insert("priority".into(), json!(p));
            }
            let mut set = |k: &str, v: Option<String>| {
                if let Some(v) = v {
                    body.insert(k.to_owned(), Value::String(v));
                }
            };
            set("workflow", workflow);
            set("cron", cron);
            set("timezone", timezone);
            set("misfirePolicy", misfire_policy);
            set("overlapPolicy", overlap_policy);
            set("maxLateness", max_lateness);
            if let Some(s) = input {
                let v: Value = serde_json::from_str(&s).context("--input is not valid JSON")?;
                body.insert("input".into(), v);
            }
            if body.is_empty() {
                bail!(
                    "nothing to change: give at least one of --workflow, --cron, --timezone, --input, --misfire-policy, --overlap-policy, --max-lateness, --priority"
                );
            }
            let updated = client.patch(&path(&schedule), &Value::Object(body)).await?;
            show(w, format, &updated)?;
        }
        ScheduleCommand::Backfill { schedule, from, to } => {
            let body = client
                .post(
                    &format!("{}/backfill", path(&schedule)),
                    &json!({ "from": from, "to": to }),
                    None,
                )
                .await?;
            if format == Format::Json {
                json_out(w, &body)?;
            } else {
                writeln!(
                    w,
                    "started {} run(s) for the {} fire time(s) in [{}, {}); {} handled before",
                    text(&body["count"]),
                    text(&body["fireTimes"]),
                    from.to_rfc3339(),
                    to.to_rfc3339(),
                    text(&body["alreadyHandled"])
                )?;
                for id in body["runs"].as_array().into_iter().flatten() {
                    writeln!(w, "  {}", text(id))?;
                }
            }
        }
        ScheduleCommand::Pause { schedule } => {
            let body = client
                .post(&format!("{}/pause", path(&schedule)), &json!({}), None)
                .await?;
            one(w, format, &body)?;
        }
        ScheduleCommand::Resume { schedule } => {
            let body = client
                .post(&format!("{}/resume", path(&schedule)), &json!({}), None)
                .await?;
            one(w, format, &body)?;
        }
        ScheduleCommand::Trigger { schedule } => {
            let body = client
                .post(&format!("{}/trigger", path(&schedule)), &json!({}), None)
                .await?;
            if format == Format::Json {
                json_out(w, &body)?;
            } else {
                writeln!(w, "{}  {}", text(&body["taskId"]), text(&body["status"]))?;
            }
        }
        ScheduleCommand::Remove { schedule, yes } => {
            if !ops::confirm_one(&format!("remove schedule {schedule}"), yes)? {
                return Ok(ops::declined());
            }
            client.delete(&path(&schedule)).await?;
            if format == Format::Json {
                json_out(w, &json!({ "removed": schedule }))?;
            } else {
                writeln!(w, "removed schedule {schedule}")?;
            }
        }
    }
    Ok(0)
}

fn json_out(w: &mut dyn Write, v: &Value) -> Result<()> {
    serde_json::to_writer_pretty(&mut *w, v)?;
    writeln!(w)?;
    Ok(())
}

/// `next` for a schedule: its fire times, or why there are none.
fn next_times(s: &Value) -> String {
    let times: Vec<String> = s["nextFireTimes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    if s["enabled"] == false {
        "paused".into()
    } else if times.is_empty() {
        "never".into()
    } else {
        times.join(", ")
    }
}

fn list(w: &mut dyn Write, format: Format, body: &Value) -> Result<()> {
    if format == Format::Json {
        return json_out(w, body);
    }
    let items = body["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        writeln!(w, "no schedules")?;
        return Ok(());
    }
    let now = Utc::now();
    let mut t = table(
        &[
            "NAME",
            "WORKFLOW",
            "CRON",
            "TIMEZONE",
            "SOURCE",
            "LAST FIRED",
            "NEXT FIRE TIMES",
        ],
        true,
    );
    for s in &items {
        t.add_row(vec![
            text(&s["name"]),
            text(&s["workflow"]),
            text(&s["cron"]),
            text(&s["timezone"]),
            text(&s["source"]),
            relative(&s["lastFiredAt"], now),
            next_times(s),
        ]);
    }
    writeln!(w, "{t}")?;
    Ok(())
}

fn one(w: &mut dyn Write, format: Format, s: &Value) -> Result<()> {
    if format == Format::Json {
        return json_out(w, s);
    }
    let now = Utc::now();
    writeln!(w, "Schedule  {} ({})", text(&s["name"]), text(&s["id"]))?;
    writeln!(w, "Workflow  {}", text(&s["workflow"]))?;
    writeln!(
        w,
        "Cron      {}  in {}",
        text(&s["cron"]),
        text(&s["timezone"])
    )?;
    writeln!(w, "Input     {}", s["input"])?;
    writeln!(
        w,
        "Policies  misfire {} (max lateness {}), overlap {}",
        text(&s["misfirePolicy"]),
        text(&s["maxLateness"]),
        text(&s["overlapPolicy"])
    )?;
    writeln!(w, "Source    {}", text(&s["source"]))?;
    writeln!(w, "Last      {}", relative(&s["lastFiredAt"], now))?;
    writeln!(w, "Next      {}", next_times(s))?;
    Ok(())
}

fn show(w: &mut dyn Write, format: Format, s: &Value) -> Result<()> {
    if format == Format::Json {
        return json_out(w, s);
    }
    one(w, format, s)?;
    let ticks = s["recentTicks"].as_array().cloned().unwrap_or_default();
    if ticks.is_empty() {
        writeln!(w, "\nno ticks handled yet")?;
        return Ok(());
    }
    let mut t = table(
        &["TICK", "KIND", "OUTCOME", "TASK", "MISSED", "BY", "ERROR"],
        true,
    );
    for k in &ticks {
        t.add_row(vec![
            text(&k["tickAt"]),
            text(&k["kind"]),
            text(&k["outcome"]),
            text(&k["taskId"]),
            text(&k["missed"]),
            text(&k["handledBy"]),
            text(&k["error"]),
        ]);
    }
    writeln!(w, "\nLatest ticks\n{t}")?;
    Ok(())
}
