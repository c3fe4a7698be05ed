//! `tapwire`: the agent binary. Parses the command line, sets up logging, runs.

use std::process::ExitCode;

use clap::Parser;
use tapwire::cli::{Cli, Command};
use tapwire::{agent, capture, config, plan};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_level.as_deref());
    match &cli.command {
        Some(Command::CheckConfig { file }) => {
            let loaded = config::load_file(file).map_err(plan::PlanError::from);
            match loaded.and_then(|c| plan::Plan::from_config(file.display().to_string(), c, &cli))
            {
                Ok(plan) => {
                    print!("{}", plan.summary());
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("{}", err_chain(&err));
                    ExitCode::from(2)
                }
            }
        }
        None if cli.print_records => {
            let result = plan::Plan::build(&cli)
                .map_err(|e| anyhow::anyhow!(err_chain(&e)))
                .and_then(|plan| capture::records::run(&plan));
            match result {
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
