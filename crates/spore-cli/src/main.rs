//! The `spore` binary: parses the command line, runs it, and decides the exit
//! code. The work itself lives in the library crates.

mod args;
mod client;
mod commands;
mod network;
mod progress;
mod search;
mod transfer;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let daemon = matches!(
        cli.command,
        args::Command::Network(args::NetworkCommand::Node(_))
    );
    init_logging(cli.verbose, daemon);
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `spore cat x | head` closes our stdout early; that is not an error.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The daemon logs its own progress at info; one-shot commands stay quiet.
/// libp2p's own warnings (such as "no known peers" on a lone node) are noise
/// unless asked for with -v or RUST_LOG.
fn init_logging(verbose: u8, daemon: bool) {
    let default = match (verbose, daemon) {
        (0, false) => "warn,libp2p=error,libp2p_kad=error,libp2p_swarm=error",
        (0, true) => "info,libp2p=error,libp2p_kad=error,libp2p_swarm=error",
        (1, _) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
