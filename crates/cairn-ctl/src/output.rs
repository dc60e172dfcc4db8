//! Rendering for `ctl`: aligned tables with relative times (status coloured on a
//! terminal only), or one JSON document with `-o json`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Result;
use chrono::{DateTime, Utc};
use comfy_table::{Table, presets};
use serde_json::Value;

use cairn_workflow::Diagnostic;
use cairn_workflow::state::{RunStatus, StepStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

pub struct Out<'a> {
    w: &'a mut dyn Write,
    format: Format,
    color: bool,
}

/// Which page of a list is printed: the only one (with the hint to the next), or one of
/// the pages `--all` prints one after another as they arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Only,
    /// The first of `--all`'s pages: table header, or the JSON document's opening.
    First,
    /// A later page: more rows, or more items of the same JSON document.
    Next,
}

/// A list whose pages [`Out::page`] prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    Tasks,
    DeadLetters,
}

/// A borderless table, with `header` as its first row when `with_header`.
pub(super) fn table(header: &[&str], with_header: bool) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    if with_header {
        t.set_header(header.iter().map(|h| h.to_string()));
    }
    t
}

/// A JSON value as a table cell: strings bare, null as `-`.
pub(super) fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// "3s ago", "5m ago", "in 2h".
pub fn relative(v: &Value, now: DateTime<Utc>) -> String {
    let Some(at) = v
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
    else {
        return "-".into();
    };
    let secs = (now - at.with_timezone(&Utc)).num_seconds();
    let (n, future) = (secs.unsigned_abs(), secs < 0);
    let span = match n {
        0..=59 => format!("{n}s"),
        60..=3599 => format!("{}m", n / 60),
        3600..=86_399 => format!("{}h", n / 3600),
        _ => format!("{}d", n / 86_400),
    };
    if future {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

fn duration(start: &Value, end: &Value) -> String {
    let parse = |v: &Value| {
        v.as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
    };
    match (parse(start), parse(end)) {
        (Some(s), Some(e)) => {
            let ms = (e - s).num_milliseconds();
            if ms < 1000 {
                format!("{ms}ms")
            } else {
                format!("{:.1}s", ms as f64 / 1000.0)
            }
        }
        (Some(_), None) => "…".into(),
        _ => "-".into(),
    }
}

/// Seconds as the largest whole unit: `7d`, `36h`, `90m`, `45s`.
fn span(secs: u64) -> String {
    match secs {
        0 => "0s".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn truncate(s: &str, n: usize) -> String {
    let one_line = s.replace('\n', " ");
    if one_line.chars().count() <= n {
        one_line
    } else {
        format!("{}…", one_line.chars().take(n - 1).collect::<String>())
    }
}

impl<'a> Out<'a> {
    pub fn new(w: &'a mut dyn Write, format: Format) -> Out<'a> {
        Out {
            w,
            format,
            color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    /// The writer and the format, for renderers kept with their command group.
    pub(super) fn parts(&mut self) -> (&mut dyn Write, Format) {
        (&mut *self.w, self.format)
    }

    fn json(&mut self, v: &Value) -> Result<()> {
        serde_json::to_writer_pretty(&mut *self.w, v)?;
        writeln!(self.w)?;
        Ok(())
    }

    fn status(&self, s: &Value) -> String {
        let s = text(s);
        if !self.color {
            return s;
        }
        // Runs' states first, then steps' (an attempt's are a subset of a step's).
        let code = match (s.parse::<RunStatus>(), s.parse::<StepStatus>()) {
            (Ok(RunStatus::Succeeded), _) | (_, Ok(StepStatus::Succeeded)) => "32",
            (Ok(RunStatus::Dead), _) | (_, Ok(StepStatus::Failed)) => "31",
            (Ok(RunStatus::Running | RunStatus::Queued), _) | (_, Ok(StepStatus::Running)) => "36",
            (Ok(RunStatus::Retrying | RunStatus::Sleeping | RunStatus::Waiting), _)
            | (_, Ok(StepStatus::RetryScheduled | StepStatus::Waiting)) => "33",
            _ => "2",
        };
        format!("\x1b[{code}m{s}\x1b[0m")
    }

    pub fn submitted(&mut self, body: &Value) -> Result<()> {
        if self.format == Format::Json {
            let mut v = body.clone();
            v["id"] = body["taskId"].clone();
            return self.json(&v);
        }
        writeln!(
            self.w,
            "{}  {}",
            text(&body["taskId"]),
            self.status(&body["status"])
        )?;
        Ok(())
    }

    /// A page of a list (see [`Page`]); `--all` ends with [`Out::end_pages`].
    pub fn page(&mut self, list: List, body: &Value, page: Page) -> Result<()> {
        if self.format == Format::Json {
            return match page {
                Page::Only => self.json(body),
                Page::First | Page::Next => self.json_items(body, page == Page::First),
            };
        }
        let items = body["items"].as_array().cloned().unwrap_or_default();
        if items.is_empty() && page != Page::Next {
            let none = match list {
                List::Tasks => "no runs",
                List::DeadLetters => "no dead letters",
            };
            writeln!(self.w, "{none}")?;
            return Ok(());
        }
        // Later pages continue the first one's table: no header again.
        let header = page != Page::Next;
        let t = match list {
            List::Tasks => self.tasks_table(&items, header),
            List::DeadLetters => self.dead_letters_table(&items, header),
        };
        if !items.is_empty() {
            writeln!(self.w, "{t}")?;
        }
        if page == Page::Only
            && let Some(c) = body["nextCursor"].as_str()
        {
            writeln!(self.w, "(more: add --cursor {c})")?;
        }
        self.w.flush()?;
        Ok(())
    }

    /// `--all` in JSON: the items of every page as one document, `{ "items": [...] }`,
    /// written as they arrive (one item a line).
    fn json_items(&mut self, body: &Value, first: bool) -> Result<()> {
        let mut any = !first;
        if first {
            write!(self.w, "{{\n\"items\": [")?;
        }
        for item in body["items"].as_array().into_iter().flatten() {
            writeln!(self.w, "{}", if any { "," } else { "" })?;
            serde_json::to_writer(&mut *self.w, item)?;
            any = true;
        }
        self.w.flush()?;
        Ok(())
    }

    /// Closes what `--all` printed (the JSON document; nothing for tables).
    pub fn end_pages(&mut self) -> Result<()> {
        if self.format == Format::Json {
            writeln!(self.w, "\n],\n\"nextCursor\": null\n}}")?;
        }
        Ok(())
    }

    fn tasks_table(&self, items: &[Value], header: bool) -> Table {
        let now = Utc::now();
        let mut t = table(
            &["ID", "WORKFLOW", "STATUS", "CREATED", "UPDATED", "ERROR"],
            header,
        );
        for r in items {
            t.add_row(vec![
                text(&r["id"]),
                text(&r["workflow"]),
                self.status(&r["status"]),
                relative(&r["createdAt"], now),
                relative(&r["updatedAt"], now),
                truncate(&text(&r["error"]), 60),
            ]);
        }
        t
    }

    pub fn task(&mut self, run: &Value) -> Result<()> {
        if self.format == Format::Json {
            return self.json(run);
        }
        let now = Utc::now();
        writeln!(self.w, "Run       {}", text(&run["id"]))?;
        writeln!(self.w, "Workflow  {}", text(&run["workflow"]))?;
        writeln!(self.w, "Status    {}", self.status(&run["status"]))?;
        writeln!(
            self.w,
            "Created   {} ({})",
            text(&run["createdAt"]),
            relative(&run["createdAt"], now)
        )?;
        if !run["worker"].is_null() {
            writeln!(
                self.w,
                "Worker    {} (lease expires {})",
                text(&run["worker"]),
                relative(&run["leaseExpiresAt"], now)
            )?;
        }
        if !run["wakeAt"].is_null() {
            writeln!(self.w, "Wakes     {}", relative(&run["wakeAt"], now))?;
        }
        if !run["error"].is_null() {
            writeln!(self.w, "Error     {}", text(&run["error"]))?;
        }
        if run["pinned"] == true {
            writeln!(
                self.w,
                "Pinned    yes: retention keeps it (`ctl task unpin` lets it go)"
            )?;
        }
        if !run["schedule"].is_null() {
            let s = &run["schedule"];
            let name = if s["name"].is_null() {
                &s["id"]
            } else {
                &s["name"]
            };
            writeln!(
                self.w,
                "Schedule  {} (tick {}, {})",
                text(name),
                text(&s["tickAt"]),
                text(&s["kind"])
            )?;
        }
        writeln!(self.w, "Input     {}", run["input"])?;
        if !run["output"].is_null() {
            writeln!(
                self.w,
                "Output    {}",
                truncate(&run["output"].to_string(), 200)
            )?;
        }
        writeln!(self.w)?;
        let mut t = table(
            &["STEP", "KIND", "STATUS", "ATTEMPTS", "DURATION", "ERROR"],
            true,
        );
        for s in run["steps"].as_array().into_iter().flatten() {
            t.add_row(vec![
                text(&s["id"]),
                text(&s["kind"]),
                self.status(&s["status"]),
                text(&s["attemptCount"]),
                duration(&s["startedAt"], &s["finishedAt"]),
                truncate(&text(&s["error"]), 60),
            ]);
        }
        writeln!(self.w, "{t}")?;
        let mut attempts = table(
            &[
                "STEP", "#", "STATUS", "WORKER", "STARTED", "DURATION", "ERROR",
            ],
            true,
        );
        let mut any = false;
        for s in run["steps"].as_array().into_iter().flatten() {
            for a in s["attempts"].as_array().into_iter().flatten() {
                any = true;
                attempts.add_row(vec![
                    text(&s["id"]),
                    text(&a["attempt"]),
                    self.status(&a["status"]),
                    truncate(&text(&a["worker"]), 28),
                    relative(&a["startedAt"], now),
                    duration(&a["startedAt"], &a["finishedAt"]),
                    truncate(&text(&a["error"]), 50),
                ]);
            }
        }
        if any {
            writeln!(self.w, "\nAttempts\n{attempts}")?;
        }
        let events = run["events"].as_array().cloned().unwrap_or_default();
        if !events.is_empty() {
            let mut t = table(&["AT", "EVENT", "STEP", "DETAIL"], true);
            let skip = events.len().saturating_sub(30);
            for e in &events[skip..] {
                t.add_row(vec![
                    text(&e["at"]),
                    text(&e["kind"]),
                    text(&e["stepId"]),
                    truncate(&e["data"].to_string(), 70),
                ]);
            }
            writeln!(
                self.w,
                "\nEvents{}\n{t}",
                if skip > 0 { " (latest 30)" } else { "" }
            )?;
        }
        Ok(())
    }

    pub fn workflows(&mut self, body: &Value) -> Result<()> {
        if self.format == Format::Json {
            return self.json(body);
        }
        let mut t = table(&["NAME", "STEPS", "DESCRIPTION"], true);
        for w in body["items"].as_array().into_iter().flatten() {
            t.add_row(vec![
                text(&w["name"]),
                text(&w["steps"]),
                truncate(&text(&w["description"]), 70),
            ]);
        }
        writeln!(self.w, "{t}")?;
        Ok(())
    }

    pub fn validation(&mut self, files: &[PathBuf], diagnostics: &[Diagnostic]) -> Result<()> {
        if self.format == Format::Json {
            let v = serde_json::json!({
                "valid": diagnostics.is_empty(),
                "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
                "errors": diagnostics,
            });
            return self.json(&v);
        }
        for d in diagnostics {
            writeln!(self.w, "{d}")?;
        }
        if diagnostics.is_empty() {
            writeln!(self.w, "{} workflow file(s) valid", files.len())?;
        } else {
            writeln!(
                self.w,
                "{} error(s) in {} file(s)",
                diagnostics.len(),
                files.len()
            )?;
        }
        Ok(())
    }

    pub fn text(&mut self, t: &str) -> Result<()> {
        write!(self.w, "{t}")?;
        if !t.ends_with('\n') {
            writeln!(self.w)?;
        }
        Ok(())
    }

    pub fn task_state(&mut self, body: &Value) -> Result<()> {
        if self.format == Format::Json {
            let mut v = body.clone();
            v["id"] = body["taskId"].clone();
            return self.json(&v);
        }
        let status = self.status(&body["status"]);
        match body["replayOf"].as_str() {
            Some(of) => writeln!(
                self.w,
                "{}  {status}  (replay of {of})",
                text(&body["taskId"])
            )?,
            None => writeln!(self.w, "{}  {status}", text(&body["taskId"]))?,
        }
        Ok(())
    }

    pub fn bulk(&mut self, body: &Value) -> Result<()> {
        if self.format == Format::Json {
            return self.json(body);
        }
        let matched = body["matched"].as_u64().unwrap_or(0);
        if body["dryRun"] == true {
            writeln!(self.w, "{matched} matched (dry run: nothing changed)")?;
            for id in body["ids"].as_array().into_iter().flatten() {
                writeln!(self.w, "  {}", text(id))?;
            }
            if matched > 100 {
                writeln!(self.w, "  … and {} more", matched - 100)?;
            }
        } else {
            writeln!(
                self.w,
                "{} of {matched} matched changed",
                text(&body["processed"])
            )?;
        }
        Ok(())
    }

    pub fn event(&mut self, e: &Value) -> Result<()> {
        if self.format == Format::Json {
            serde_json::to_writer(&mut *self.w, e)?;
            writeln!(self.w)?;
            return Ok(());
        }
        let step = e["stepId"]
            .as_str()
            .map(|s| format!(" [{s}]"))
            .unwrap_or_default();
        let data = if e["data"].as_object().is_some_and(|m| m.is_empty()) {
            String::new()
        } else {
            format!("  {}", truncate(&e["data"].to_string(), 160))
        };
        writeln!(
            self.w,
            "{}  {}{step}{data}",
            text(&e["at"]),
            text(&e["kind"])
        )?;
        self.w.flush()?;
        Ok(())
    }

    fn dead_letters_table(&self, items: &[Value], header: bool) -> Table {
        let now = Utc::now();
        let mut t = table(
            &["ID", "RUN", "WORKFLOW", "STEP", "ATTEMPTS", "DIED", "ERROR"],
            header,
        );
        for d in items {
            t.add_row(vec![
                text(&d["id"]),
                text(&d["runId"]),
                text(&d["workflow"]),
                text(&d["stepId"]),
                d["attempts"].as_array().map_or(0, Vec::len).to_string(),
                relative(&d["createdAt"], now),
                truncate(&text(&d["error"]), 60),
            ]);
        }
        t
    }

    pub fn dead_letter(&mut self, d: &Value) -> Result<()> {
        if self.format == Format::Json {
            return self.json(d);
        }
        let now = Utc::now();
        writeln!(self.w, "Dead letter {}", text(&d["id"]))?;
        writeln!(self.w, "Run       {}", text(&d["runId"]))?;
        writeln!(self.w, "Workflow  {}", text(&d["workflow"]))?;
        writeln!(self.w, "Step      {}", text(&d["stepId"]))?;
        writeln!(
            self.w,
            "Died      {} ({})",
            text(&d["createdAt"]),
            relative(&d["createdAt"], now)
        )?;
        writeln!(self.w, "Error     {}", text(&d["error"]))?;
        writeln!(self.w, "Input     {}", d["input"])?;
        let mut t = table(
            &["#", "STATUS", "STARTED", "DURATION", "RETRY IN", "ERROR"],
            true,
        );
        for a in d["attempts"].as_array().into_iter().flatten() {
            t.add_row(vec![
                text(&a["attempt"]),
                self.status(&a["status"]),
                text(&a["startedAt"]),
                duration(&a["startedAt"], &a["finishedAt"]),
                a["retryDelayMs"]
                    .as_i64()
                    .map_or("-".into(), |ms| format!("{ms}ms")),
                truncate(&text(&a["error"]), 70),
            ]);
        }
        writeln!(self.w, "\nAttempts\n{t}")?;
        Ok(())
    }

    pub fn tokens(&mut self, body: &Value) -> Result<()> {
        if self.format == Format::Json {
            return self.json(body);
        }
        let now = Utc::now();
        let mut t = table(
            &[
                "ID",
                "NAME",
                "ROLE",
                "USER",
                "CREATED",
                "LAST USED",
                "EXPIRES",
                "STATUS",
            ],
            true,
        );
        for k in body["items"].as_array().into_iter().flatten() {
            let expired = k["expiresAt"]
                .as_str()
                .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
                .is_some_and(|at| at < now);
            let status = if k["revoked"].as_bool() == Some(true) {
                "revoked"
            } else if expired {
                "expired"
            } else {
                "active"
            };
            t.add_row(vec![
                text(&k["id"]),
                truncate(&text(&k["name"]), 40),
                text(&k["role"]),
                text(&k["userId"]),
                relative(&k["createdAt"], now),
                relative(&k["lastUsedAt"], now),
                if k["expiresAt"].is_null() {
                    "never".to_owned()
                } else {
                    relative(&k["expiresAt"], now)
                },
                status.to_owned(),
            ]);
        }
        writeln!(self.w, "{t}")?;
        Ok(())
    }

    pub fn workers(&mut self, body: &Value) -> Result<()> {
        if self.format == Format::Json {
            return self.json(body);
        }
        let mut t = table(
            &[
                "WORKER",
                "HOST",
                "PID",
                "VERSION",
                "CONCURRENCY",
                "IN FLIGHT",
                "HEARTBEAT",
            ],
            true,
        );
        for w in body["items"].as_array().into_iter().flatten() {
            let age = w["heartbeatAgeMs"].as_i64().unwrap_or(0);
            t.add_row(vec![
                text(&w["id"]),
                text(&w["hostname"]),
                text(&w["pid"]),
                text(&w["version"]),
                text(&w["concurrency"]),
                text(&w["inFlight"]),
                format!("{:.1}s ago", age as f64 / 1000.0),
            ]);
        }
        writeln!(self.w, "{t}")?;
        let stuck = body["stuck"].as_array().cloned().unwrap_or_default();
        if !stuck.is_empty() {
            let mut t = table(&["STUCK RUN", "WORKFLOW", "WORKER", "LEASE EXPIRED"], true);
            for s in &stuck {
                let ms = s["leaseExpiredAgoMs"].as_i64().unwrap_or(0);
                t.add_row(vec![
                    text(&s["runId"]),
                    text(&s["workflow"]),
                    text(&s["worker"]),
                    if ms >= 0 {
                        format!("{:.1}s ago", ms as f64 / 1000.0)
                    } else {
                        "not yet (worker silent)".into()
                    },
                ]);
            }
            writeln!(self.w, "\n{t}")?;
        }
        Ok(())
    }

    /// `ctl task pin|unpin`.
    pub fn pinned(&mut self, body: &Value) -> Result<()> {
        if self.format == Format::Json {
            return self.json(body);
        }
        let id = text(&body["taskId"]);
        let what = if body["pinned"] == true {
            "pinned: retention keeps it"
        } else {
            "unpinned: retention deletes it once it is past its window"
        };
        let changed = body["changed"].as_array().map_or(0, Vec::len);
        let children = changed.saturating_sub(1);
        let note = match (changed, children) {
            (0, _) => " (it already was)".to_owned(),
            (_, 0) => String::new(),
            (_, 1) => " (with 1 child run)".to_owned(),
            (_, n) => format!(" (with {n} child runs)"),
        };
        writeln!(
            self.w,
            "{id}  {}  {what}{note}",
            self.status(&body["status"])
        )?;
        Ok(())
    }

    /// `ctl retention`.
    pub fn retention(&mut self, body: &Value) -> Result<()> {
        if self.format == Format::Json {
            return self.json(body);
        }
        let s = &body["settings"];
        if s.is_null() {
            writeln!(
                self.w,
                "No reaper pass recorded yet. The reaper runs in {}; is one running?",
                text(&body["reaperRunsIn"])
            )?;
            return Ok(());
        }
        let window = |v: &Value| match v.as_u64() {
            None => "kept forever".to_owned(),
            Some(secs) => format!("deleted {} after", span(secs)),
        };
        writeln!(
            self.w,
            "Retention, as the latest pass applied it (the reaper runs in {}):",
            text(&body["reaperRunsIn"])
        )?;
        let mut t = table(&[], false);
        t.add_row(vec![
            "succeeded runs".to_owned(),
            format!("{} they finished", window(&s["succeeded"])),
        ]);
        t.add_row(vec![
            "cancelled runs".to_owned(),
            format!("{} they finished", window(&s["cancelled"])),
        ]);
        t.add_row(vec![
            "dead runs".to_owned(),
            format!("{} they died, with their dead letters", window(&s["dead"])),
        ]);
        t.add_row(vec![
            "ticks that started no run".to_owned(),
            format!("{} they were handled", window(&s["ticks"])),
        ]);
        t.add_row(vec![
            "workers".to_owned(),
            format!("{} their last heartbeat", window(&s["workers"])),
        ]);
        t.add_row(vec![
            "sessions and API tokens".to_owned(),
            "deleted once expired".to_owned(),
        ]);
        t.add_row(vec![
            "passes".to_owned(),
            format!(
                "every {}, {} rows a transaction; pinned runs are always kept",
                s["interval"].as_u64().map_or("-".to_owned(), span),
                text(&s["batch"])
            ),
        ]);
        writeln!(self.w, "{t}\n")?;
        let now = Utc::now();
        let mut t = table(
            &[
                "PASS",
                "STARTED",
                "DURATION",
                "RUNS",
                "SUCCEEDED",
                "CANCELLED",
                "DEAD",
                "ROWS",
                "REAPER",
                "RESULT",
            ],
            true,
        );
        for p in body["passes"].as_array().into_iter().flatten() {
            let result = match (&p["error"], p["complete"].as_bool()) {
                (Value::String(e), _) => format!("failed: {}", truncate(e, 60)),
                (_, Some(false)) => "stopped part-way".to_owned(),
                _ => "complete".to_owned(),
            };
            t.add_row(vec![
                text(&p["id"]),
                relative(&p["startedAt"], now),
                p["durationMs"]
                    .as_i64()
                    .map_or("-".to_owned(), |ms| format!("{ms}ms")),
                text(&p["runsDeleted"]),
                text(&p["runs"]["succeeded"]),
                text(&p["runs"]["cancelled"]),
                text(&p["runs"]["dead"]),
                text(&p["rowsDeleted"]),
                text(&p["reaper"]),
                result,
            ]);
        }
        writeln!(self.w, "{t}")?;
        Ok(())
    }

    pub fn notifications(&mut self, body: &Value) -> Result<()> {
        if self.format == Format::Json {
            return self.json(body);
        }
        let items = body["items"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            writeln!(self.w, "No notifications.")?;
            return Ok(());
        }
        let now = Utc::now();
        let mut t = table(
            &[
                "ID",
                "CREATED",
                "EVENT",
                "TASK",
                "WORKFLOW",
                "STEP",
                "STATE",
                "TRIES",
                "DELIVERED",
                "LAST ERROR",
            ],
            true,
        );
        for n in &items {
            let state = match text(&n["state"]).as_str() {
                "pending" => format!("pending (next {})", relative(&n["nextAttemptAt"], now)),
                s => s.to_owned(),
            };
            t.add_row(vec![
                text(&n["id"]),
                relative(&n["createdAt"], now),
                text(&n["event"]),
                text(&n["taskId"]),
                text(&n["workflow"]),
                text(&n["step"]),
                state,
                text(&n["deliveries"]),
                match &n["deliveredAt"] {
                    Value::Null => "-".to_owned(),
                    d => relative(d, now),
                },
                match &n["lastError"] {
                    Value::String(e) => truncate(e, 60),
                    _ => "-".to_owned(),
                },
            ]);
        }
        writeln!(self.w, "{t}")?;
        Ok(())
    }

    /// A notification an operator sent again.
    pub fn notification_resent(&mut self, body: &Value) -> Result<()> {
        if self.format == Format::Json {
            return self.json(body);
        }
        writeln!(
            self.w,
            "notification {} ({}, task {}) is pending again: the notifier sends it now (resent {} time(s), {} POST(s) so far)",
            text(&body["id"]),
            text(&body["event"]),
            text(&body["taskId"]),
            text(&body["resends"]),
            text(&body["deliveries"]),
        )?;
        Ok(())
    }

    pub fn workflow(&mut self, body: &Value) -> Result<()> {
        if self.format == Format::Json {
            return self.json(body);
        }
        writeln!(
            self.w,
            "# {} ({})",
            text(&body["name"]),
            text(&body["hash"])
        )?;
        write!(self.w, "{}", text(&body["source"]))?;
        Ok(())
    }
}
