//! `ctl`, Cairn's operator CLI: see the `cairn_ctl` library for its commands.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cairn_ctl::Cli::parse();
    let mut stdout = std::io::stdout();
    match cairn_ctl::run(cli, &mut stdout).await {
        Ok(code) => std::process::ExitCode::from(code),
        // Whoever reads the output stopped reading (`ctl task list | head`): nothing
        // went wrong that is worth saying.
        Err(e) if broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
