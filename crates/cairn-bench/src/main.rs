//! `cairn-bench`: see the `cairn_bench` library.

use clap::Parser;

/// Measure Cairn's throughput, latency and memory on a fresh database with real
/// worker and API processes, next to a raw-SQL floor (docs/BENCHMARKS.md).
#[derive(Debug, Parser)]
#[command(name = "cairn-bench", version)]
struct Cli {
    #[command(flatten)]
    args: cairn_bench::BenchArgs,
    /// Log as JSON lines instead of text (on stderr, with the bench's progress).
    #[arg(long, env = "CAIRN_LOG_JSON")]
    log_json: bool,
}

/// The bench's progress on stderr, filtered by `RUST_LOG` (default `info`).
fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_json);
    match cairn_bench::run(cli.args).await {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
