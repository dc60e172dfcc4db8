//! The documentation's commands exist: every `cairn …` and `ctl …` command line in the
//! shell code blocks of README.md and docs/*.md, and every inline code span that starts
//! with `cairn ` or `ctl `, names subcommands and flags that the real binaries' `--help`
//! lists for that subcommand (e.g. `cairn dev --help` must list `--data-dir`). Commands
//! written as `cargo run --bin X -- …` count as `X …`.
//!
//! The checker is itself checked on a made-up snippet: it must refuse an unknown flag
//! and an unknown subcommand.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace's binaries whose command lines the docs may show.
const BINARIES: [&str; 3] = ["cairn", "ctl", "cairn-bench"];

/// What `--help` says of one subcommand path.
#[derive(Debug, Default, Clone)]
struct Help {
    subcommands: Vec<String>,
    flags: Vec<String>,
}

fn parse_help(text: &str) -> Help {
    let mut help = Help::default();
    let mut section = "";
    for line in text.lines() {
        if !line.starts_with(' ') && line.trim_end().ends_with(':') {
            section = line.trim_end();
            continue;
        }
        let t = line.trim_start();
        if section == "Commands:" && line.starts_with("  ") && !line.starts_with("      ") {
            if let Some(name) = t.split_whitespace().next() {
                help.subcommands.push(name.trim_end_matches(',').to_owned());
            }
        } else if t.starts_with('-') {
            // `-o, --output <OUTPUT>  text` or `--data-dir <DATA_DIR>`.
            for word in t.split_whitespace().take(3) {
                let word = word.trim_end_matches(',');
                let name: String = word
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                if name.starts_with('-') && name.len() > 1 {
                    help.flags.push(name);
                }
            }
        }
    }
    help
}

struct Binaries {
    paths: HashMap<&'static str, PathBuf>,
    cache: HashMap<Vec<String>, Help>,
}

impl Binaries {
    fn new() -> Binaries {
        Binaries {
            paths: HashMap::from([
                ("cairn", PathBuf::from(env!("CARGO_BIN_EXE_cairn"))),
                ("ctl", common::ctl_bin()),
                ("cairn-bench", common::workspace_bin("cairn-bench")),
            ]),
            cache: HashMap::new(),
        }
    }

    fn help(&mut self, path: &[String]) -> Help {
        if let Some(h) = self.cache.get(path) {
            return h.clone();
        }
        let out = Command::new(&self.paths[path[0].as_str()])
            .args(&path[1..])
            .arg("--help")
            .env_remove("DATABASE_URL")
            .output()
            .expect("the binary runs");
        assert!(
            out.status.success(),
            "{} --help failed: {}",
            path.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        let help = parse_help(&String::from_utf8_lossy(&out.stdout));
        self.cache.insert(path.to_vec(), help.clone());
        help
    }

    /// The problems with one command line (`cairn …` or `ctl …`, as words).
    fn check(&mut self, words: &[String]) -> Vec<String> {
        let mut path = vec![words[0].clone()];
        let mut help = self.help(&path);
        let mut positional = false;
        let mut problems = Vec::new();
        for w in &words[1..] {
            if w == "--" {
                break;
            }
            if w.starts_with('-') && w.len() > 1 && !w.starts_with("-$") {
                let name = w.split('=').next().unwrap_or(w);
                // `-o json` and `-abc` alike: only the first letter of a short flag.
                let name = if name.starts_with("--") {
                    name.to_owned()
                } else {
                    name.chars().take(2).collect()
                };
                if !help.flags.contains(&name) {
                    problems.push(format!("`{}` has no flag {name}", path.join(" ")));
                }
                continue;
            }
            // `…`, `<id>`, `[ARGS]`, `$VAR`: a placeholder, for whatever comes next.
            let placeholder =
                w.contains('…') || w.contains("...") || w.starts_with(['<', '[', '{', '$']);
            if positional || placeholder || help.subcommands.is_empty() {
                positional = true;
                continue;
            }
            if help.subcommands.contains(w) {
                path.push(w.clone());
                help = self.help(&path);
            } else {
                problems.push(format!("`{}` has no subcommand {w}", path.join(" ")));
                positional = true;
            }
        }
        problems
    }
}

/// Shell words, roughly: quotes keep spaces, a `#` outside quotes starts a comment.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut started = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (None, '#') if !started => break,
            (None, c) if c.is_whitespace() => {
                if started {
                    out.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            (None, c) => {
                cur.push(c);
                started = true;
            }
        }
    }
    if started {
        out.push(cur);
    }
    out
}

/// The `cairn`/`ctl` invocations of one shell line, each as its words from the binary's
/// name on.
fn commands(line: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for segment in line.split(['|', ';', '&', '(', ')', '`']) {
        let mut w = words(segment);
        // Leading `NAME=value` assignments.
        let assignments = w
            .iter()
            .take_while(|x| x.contains('=') && !x.starts_with('-'))
            .count();
        w.drain(..assignments);
        // `cargo run [--release] --bin X -- args`
        if w.first().map(String::as_str) == Some("cargo") {
            if let Some(i) = w.iter().position(|x| x == "--bin")
                && let Some(bin) = w.get(i + 1)
                && BINARIES.contains(&bin.as_str())
            {
                let rest = w
                    .iter()
                    .skip_while(|x| *x != "--")
                    .skip(1)
                    .cloned()
                    .collect::<Vec<_>>();
                found.push([vec![bin.clone()], rest].concat());
            }
            continue;
        }
        // After wrappers such as `docker compose exec -T api`.
        if let Some(i) = w.iter().position(|x| {
            let base = x.rsplit('/').next().unwrap_or(x);
            BINARIES.contains(&base)
        }) {
            let leading_ok = w[..i].iter().all(|x| {
                x.contains('=')
                    || [
                        "docker", "compose", "exec", "-T", "api", "sudo", "env", "echo",
                    ]
                    .contains(&x.as_str())
            });
            if leading_ok {
                let mut cmd = vec![w[i].rsplit('/').next().unwrap().to_owned()];
                cmd.extend(w[i + 1..].iter().cloned());
                found.push(cmd);
            }
        }
    }
    found
}

/// Every command line of a Markdown text: in ```sh/bash/shell/console blocks (lines
/// joined at a trailing `\`), and inline spans that start with `cairn ` or `ctl `.
fn command_lines(markdown: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut shell: Option<bool> = None;
    let mut pending = String::new();
    for line in markdown.lines() {
        let t = line.trim_start();
        if let Some(lang) = t.strip_prefix("```") {
            shell = match shell {
                Some(_) => None,
                None => Some(matches!(lang.trim(), "sh" | "bash" | "shell" | "console")),
            };
            continue;
        }
        match shell {
            Some(true) => {
                let l = t.strip_prefix("$ ").unwrap_or(t);
                if let Some(head) = l.strip_suffix('\\') {
                    pending.push_str(head);
                    pending.push(' ');
                } else {
                    pending.push_str(l);
                    lines.push(std::mem::take(&mut pending));
                }
            }
            Some(false) => {}
            None => {
                for (i, span) in line.split('`').enumerate() {
                    if i % 2 == 1 && BINARIES.iter().any(|b| span.starts_with(&format!("{b} "))) {
                        lines.push(span.to_owned());
                    }
                }
            }
        }
    }
    lines
}

fn problems_in(bins: &mut Binaries, name: &str, markdown: &str) -> (usize, Vec<String>) {
    let mut checked = 0;
    let mut problems = Vec::new();
    for line in command_lines(markdown) {
        for cmd in commands(&line) {
            checked += 1;
            for p in bins.check(&cmd) {
                problems.push(format!("{name}: {p}, in: {}", line.trim()));
            }
        }
    }
    (checked, problems)
}

#[test]
fn the_checker_refuses_a_made_up_flag_and_subcommand() {
    let mut bins = Binaries::new();
    let snippet = "```sh\ncairn dev --data-dir /tmp/x --made-up-flag\n\
                   cargo run --bin ctl -- task frobnicate 1\n\
                   DATABASE_URL=… cargo run --bin cairn -- admin create-user --email a@b --password-stdin\n\
                   echo x | ctl login --email a@b --password-stdin  # fine\n```\n\
                   Inline: `ctl task list --status dead --no-such-thing`.\n";
    let (checked, problems) = problems_in(&mut bins, "snippet", snippet);
    assert_eq!(checked, 5, "{problems:?}");
    assert_eq!(
        problems,
        [
            "snippet: `cairn dev` has no flag --made-up-flag, in: cairn dev --data-dir /tmp/x --made-up-flag",
            "snippet: `ctl task` has no subcommand frobnicate, in: cargo run --bin ctl -- task frobnicate 1",
            "snippet: `ctl task list` has no flag --no-such-thing, in: ctl task list --status dead --no-such-thing",
        ]
    );
}

#[test]
fn every_documented_command_and_flag_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut bins = Binaries::new();
    let mut checked = 0;
    let mut problems = Vec::new();
    for file in &files {
        let name = file.strip_prefix(root).unwrap().display().to_string();
        let (n, p) = problems_in(&mut bins, &name, &std::fs::read_to_string(file).unwrap());
        checked += n;
        problems.extend(p);
    }
    assert!(
        checked >= 20,
        "only {checked} commands found: is the parser broken?"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    eprintln!(
        "{checked} documented commands checked in {} files",
        files.len()
    );
}
