//! The `peer` binary: parse arguments, run the command, report errors in one line.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = peer::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            // RUST_LOG, else the profile's `log`, else warn; a bad filter falls back to warn.
            tracing_subscriber::EnvFilter::try_new(peer::commands::log_filter(&cli))
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("peer: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(peer::commands::run(cli));
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peer: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line. Error types that already print their source
/// (`"cannot reach the directory: {0}"`) would otherwise repeat it, so a cause whose text
/// is already in the line is left out.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string().replace('\n', " ");
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
