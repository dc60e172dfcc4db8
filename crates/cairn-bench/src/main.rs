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

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let _traces = cairn::telemetry::init(cli.log_json);
    match cairn_bench::run(cli.args).await {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
