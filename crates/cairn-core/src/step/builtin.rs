//! Built-in agent steps that need no model and no network: `analyze` (a project's facts
//! from the database, with findings) and `summarize` (a deterministic extractive summary).

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{StepContext, StepError};
use crate::store;
use crate::workflow::{AnalyzeStep, SummarizeStep};

pub(super) async fn analyze(step: &AnalyzeStep, cx: &StepContext<'_>) -> Result<Value, StepError> {
    let id = match cx.render(&step.project)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| StepError::fatal("`project` must be a project id"))?;
    let facts = store::projects::project_facts(cx.pool, id)
        .await
        .map_err(|e| StepError::retryable(format!("reading the project: {e}")))?
        .ok_or_else(|| StepError::fatal(format!("there is no project {id}")))?;
    let mut findings = Vec::new();
    let finished = facts.succeeded + facts.dead;
    if facts.total == 0 {
        findings.push("No workflow runs yet: this is the project's first analysis.".to_owned());
    } else if finished > 0 {
        let rate = 100.0 * facts.succeeded as f64 / finished as f64;
        findings.push(format!(
            "{rate:.0}% of {finished} finished runs succeeded ({} succeeded, {} dead).",
            facts.succeeded, facts.dead
        ));
        if rate < 80.0 {
            findings.push("Reliability is below 80%: look at the dead letters.".to_owned());
        }
    }
    if facts.active > 0 {
        findings.push(match facts.active {
            1 => "1 run is in progress.".to_owned(),
            n => format!("{n} runs are in progress."),
        });
    }
    findings.push(match facts.last_7_days {
        1 => "1 run in the last 7 days.".to_owned(),
        n => format!("{n} runs in the last 7 days."),
    });
    if let Some((error, n)) = facts.top_errors.first() {
        findings.push(format!("Most common failure ({n}×): {error}"));
    }
    if facts.description.trim().is_empty() {
        findings.push("The project has no description.".to_owned());
    }
    let success_rate = (finished > 0).then(|| facts.succeeded as f64 / finished as f64);
    let summary = format!("{}: {}", facts.name, findings.join(" "));
    Ok(json!({
        "project": { "id": facts.id, "name": facts.name, "description": facts.description },
        "runs": {
            "total": facts.total, "succeeded": facts.succeeded, "dead": facts.dead,
            "cancelled": facts.cancelled, "active": facts.active, "last7Days": facts.last_7_days,
        },
        "successRate": success_rate,
        "topErrors": facts.top_errors.iter().map(|(e, n)| json!({ "error": e, "count": n })).collect::<Vec<_>>(),
        "recent": facts.recent,
        "findings": findings,
        "summary": summary,
    }))
}

const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "been", "but", "by", "for", "from", "has", "have",
    "he", "her", "his", "i", "in", "is", "it", "its", "of", "on", "or", "she", "that", "the",
    "their", "them", "there", "they", "this", "to", "was", "we", "were", "which", "will", "with",
    "you", "your", "not", "so", "if", "than", "then", "these", "those", "our", "can", "also",
];

fn words(s: &str) -> impl Iterator<Item = String> + '_ {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// Splits after `.`, `!` or `?` followed by whitespace, and at blank lines.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        current.push(c);
        let next = chars.get(i + 1).copied();
        let ends = matches!(c, '.' | '!' | '?') && next.is_none_or(char::is_whitespace);
        let paragraph = c == '\n' && next == Some('\n');
        if ends || paragraph {
            let s = current.split_whitespace().collect::<Vec<_>>().join(" ");
            if !s.is_empty() {
                out.push(s);
            }
            current.clear();
        }
    }
    let s = current.split_whitespace().collect::<Vec<_>>().join(" ");
    if !s.is_empty() {
        out.push(s);
    }
    out
}

/// The `n` sentences with the most frequent content words, in their original order.
pub fn summarize_text(text: &str, n: usize) -> Value {
    let all = sentences(text);
    let mut freq: HashMap<String, f64> = HashMap::new();
    for w in words(text).filter(|w| !STOPWORDS.contains(&w.as_str())) {
        *freq.entry(w).or_default() += 1.0;
    }
    let mut scored: Vec<(usize, f64)> = all
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let ws: Vec<String> = words(s).collect();
            let score = ws.iter().filter_map(|w| freq.get(w)).sum::<f64>()
                / (ws.len().max(1) as f64).sqrt();
            (i, score)
        })
        .collect();
    // Highest score first; ties go to the earlier sentence, so the result is stable.
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut picked: Vec<usize> = scored.into_iter().take(n).map(|(i, _)| i).collect();
    picked.sort_unstable();
    let chosen: Vec<&String> = picked.iter().map(|&i| &all[i]).collect();
    let mut keywords: Vec<(&String, &f64)> = freq.iter().collect();
    keywords.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
    json!({
        "summary": chosen.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" "),
        "sentences": chosen,
        "keywords": keywords.into_iter().take(8).map(|(w, _)| w).collect::<Vec<_>>(),
        "sentenceCount": all.len(),
        "wordCount": words(text).count(),
    })
}

pub(super) async fn summarize(
    step: &SummarizeStep,
    cx: &StepContext<'_>,
) -> Result<Value, StepError> {
    let text = match cx.render(&step.text)? {
        Value::String(s) => s,
        Value::Null => return Err(StepError::fatal("`text` is empty")),
        other => other.to_string(),
    };
    if text.trim().is_empty() {
        return Err(StepError::fatal("`text` is empty"));
    }
    Ok(summarize_text(&text, step.sentences as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_deterministic_and_in_order() {
        let text = "Cairn runs workflows on Postgres. The weather was nice. Workflows in Cairn retry \
                    failed steps with backoff. Postgres stores every checkpoint of every workflow.";
        let a = summarize_text(text, 2);
        assert_eq!(a, summarize_text(text, 2));
        let picked = a["sentences"].as_array().unwrap();
        assert_eq!(picked.len(), 2);
        assert!(!a["summary"].as_str().unwrap().contains("weather"));
        assert_eq!(a["sentenceCount"], 4);
        assert_eq!(sentences("One. Two!\n\nThree"), ["One.", "Two!", "Three"]);
    }
}
