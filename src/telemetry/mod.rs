//! Logging, metrics, traces and process identity: `tracing` to stderr, human-readable or
//! JSON (`CAIRN_LOG_JSON=true`), filtered by `RUST_LOG` (default [`DEFAULT_FILTER`]); the
//! Prometheus metrics each process counts for itself are in [`metrics`]; the same spans
//! exported over OTLP when asked ([`traces`]).
//!
//! Colours only on a terminal (and never with `NO_COLOR` set): logs written to a file or
//! a pipe are read with tools that do not expect escape codes.

pub mod metrics;
pub mod traces;

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// `info`, without PostgreSQL's notices: every start applies migrations, whose
/// `create … if not exists` statements each answer "already exists, skipping".
pub const DEFAULT_FILTER: &str = "info,sqlx::postgres::notice=warn";

/// Whether to colour what goes to stderr.
fn ansi() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

/// Installs the global subscriber (calling it twice is harmless), with the trace
/// exporter when the environment sets one up; keep what it returns until the process
/// ends, which sends the last spans.
pub fn init(json: bool) -> Option<traces::Exporter> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi())
        .with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    // `RUST_LOG` says what is logged; the exported spans are Cairn's own at `info`
    // whatever it says (an operator who logs warnings only still wants traces).
    let (otel, exporter) = match traces::layer() {
        Ok(Some((layer, exporter))) => (
            Some(layer.with_filter(EnvFilter::new(traces::FILTER))),
            Some(exporter),
        ),
        Ok(None) => (None, None),
        Err(e) => {
            eprintln!("traces will not be exported: {e}");
            (None, None)
        }
    };
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init();
    exporter
}

/// A unique id for this process, as workers and schedulers record themselves: host, pid
/// and a ULID (a restarted process with the same pid is still another).
pub fn process_id() -> String {
    format!(
        "{}-{}-{}",
        hostname(),
        std::process::id(),
        ulid::Ulid::generate()
    )
}

/// This machine's (or container's) host name; `localhost` when none can be read.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
