//! `tapwire`: the agent binary. Parses the command line, sets up logging, runs.

use std::process::ExitCode;

use clap::Parser;
use tapwire::cli::{Cli, Command};
use tapwire::{agent, capture, check, config};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_level.as_deref());
    match &cli.command {
        Some(Command::CheckConfig { file }) => match config::load_file(file) {
            Ok(config) => {
                print!("{}", check::summary(&file.display().to_string(), &config));
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("{}", err_chain(&err));
                ExitCode::from(2)
            }
        },
        // Until the data plane consumes capture, `TAPWIRE_DEBUG_CAPTURE=1`
        // prints every captured record as NDJSON instead of running the stores.
        None if std::env::var_os(capture::debug::ENV_DEBUG_CAPTURE).is_some() => {
            match capture::debug::run(&cli.pids, &cli.exes, &cli.cgroups) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("tapwire: {err:#}");
                    ExitCode::from(1)
                }
            }
        }
        None => match agent::run(&cli) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("tapwire: {}", err_chain(&err));
                ExitCode::from(err.exit_code())
            }
        },
    }
}

/// The error with its causes, for one line on stderr.
fn err_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Logs to stderr; stdout belongs to the stdout stores.
fn init_logging(level: Option<&str>) {
    let filter = match level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
