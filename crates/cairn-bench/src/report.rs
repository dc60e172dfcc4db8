//! The bench's output: a JSON line per figure as it is measured, and a Markdown table
//! of them all at the end.

use std::io::Write;

use serde::Serialize;

/// What `-o` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Json,
    Table,
    Both,
}

/// One measured figure. `value` is `None` for a figure that cannot be measured yet (it
/// prints as `null` with a `note` saying why) — never a made-up number.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub scenario: &'static str,
    pub figure: &'static str,
    pub value: Option<f64>,
    pub unit: &'static str,
    /// `value` divided by the raw-SQL floor's rows/s (throughput figures only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// `value` divided by the keep-history floor's rows/s: the same claim, handle and
    /// mark-done loop that keeps its finished rows, as Cairn keeps its runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_ratio: Option<f64>,
    /// The goal set for it, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<&'static str>,
    /// The scenario's size (runs, submissions or requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Figure {
    pub fn new(
        scenario: &'static str,
        figure: &'static str,
        value: f64,
        unit: &'static str,
    ) -> Figure {
        Figure {
            scenario,
            figure,
            value: Some(value),
            unit,
            ratio: None,
            history_ratio: None,
            target: None,
            n: None,
            note: None,
        }
    }

    pub fn absent(
        scenario: &'static str,
        figure: &'static str,
        unit: &'static str,
        why: &str,
    ) -> Figure {
        Figure {
            value: None,
            note: Some(why.to_owned()),
            ..Figure::new(scenario, figure, 0.0, unit)
        }
    }

    pub fn ratio(mut self, floor: Option<f64>) -> Figure {
        self.ratio = match (self.value, floor) {
            (Some(v), Some(f)) if f > 0.0 => Some(round(v / f, 5)),
            _ => None,
        };
        self
    }

    pub fn history_ratio(mut self, floor: Option<f64>) -> Figure {
        self.history_ratio = match (self.value, floor) {
            (Some(v), Some(f)) if f > 0.0 => Some(round(v / f, 5)),
            _ => None,
        };
        self
    }

    pub fn target(mut self, target: &'static str) -> Figure {
        self.target = Some(target);
        self
    }

    pub fn n(mut self, n: u64) -> Figure {
        self.n = Some(n);
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Figure {
        self.note = Some(note.into());
        self
    }
}

/// Rounds to `places` decimals (JSON stays readable; the precision is noise anyway).
pub fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

/// Collects figures and prints them.
pub(super) struct Output {
    format: OutputFormat,
    figures: Vec<Figure>,
}

impl Output {
    pub(super) fn new(format: OutputFormat) -> Output {
        Output {
            format,
            figures: Vec::new(),
        }
    }

    /// Records a figure and prints its JSON line at once.
    pub(super) fn emit(&mut self, figure: Figure) {
        if self.format != OutputFormat::Table {
            let line = serde_json::to_string(&figure).unwrap_or_default();
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{line}");
            let _ = stdout.flush();
        }
        self.figures.push(figure);
    }

    /// Prints the table (unless `-o json`).
    pub(super) fn finish(&self) {
        if self.format != OutputFormat::Json && !self.figures.is_empty() {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "\n{}", table(&self.figures));
            let _ = stdout.flush();
        }
    }

    pub(super) fn into_figures(self) -> Vec<Figure> {
        self.figures
    }
}

/// The figures as a Markdown table.
pub fn table(figures: &[Figure]) -> String {
    let mut s = String::from(
        "| scenario | figure | value | unit | × floor | × keep-history floor | target | n | note |\n|---|---|--:|---|--:|--:|---|--:|---|\n",
    );
    for f in figures {
        let value = match f.value {
            Some(v) => format_value(v),
            None => "absent".to_owned(),
        };
        let ratio = f.ratio.map(format_ratio).unwrap_or_default();
        let history = f.history_ratio.map(format_ratio).unwrap_or_default();
        let n = f.n.map(thousands).unwrap_or_default();
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            f.scenario,
            f.figure,
            value,
            f.unit,
            ratio,
            history,
            f.target.unwrap_or(""),
            n,
            f.note.as_deref().unwrap_or("").replace('|', "\\|"),
        ));
    }
    s
}

fn format_value(v: f64) -> String {
    if v.abs() >= 100.0 || (v.fract() == 0.0 && v >= 0.0) {
        thousands(v.round() as u64)
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Small ratios keep two significant digits (0.0014), others three decimals.
fn format_ratio(r: f64) -> String {
    if r.abs() < 0.1 {
        format!("{r:.4}")
    } else {
        format!("{r:.3}")
    }
}

pub(super) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_print_as_json_and_markdown() {
        let f = Figure::new("drain", "runs_per_s", 1234.5678, "runs/s")
            .ratio(Some(50_000.0))
            .history_ratio(Some(2_000.0))
            .target("≥ 0.5× floor")
            .n(50_000);
        let json: serde_json::Value = serde_json::to_value(&f).unwrap();
        assert_eq!(json["scenario"], "drain");
        assert_eq!(json["ratio"], 0.02469);
        assert_eq!(json["history_ratio"], 0.61728);
        assert_eq!(json["n"], 50_000);
        assert!(json.get("note").is_none());
        let absent = Figure::absent("submit_http", "batch_runs_per_s", "runs/s", "no endpoint");
        let json = serde_json::to_value(&absent).unwrap();
        assert!(json["value"].is_null());
        let t = table(&[f, absent]);
        assert!(t.contains(
            "| drain | runs_per_s | 1,235 | runs/s | 0.0247 | 0.617 | ≥ 0.5× floor | 50,000 |  |"
        ));
        assert!(t.contains("| absent |"));
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(format_value(1.234), "1.23");
        assert_eq!(format_value(0.0), "0");
        assert_eq!(format_ratio(0.87), "0.870");
    }
}
