//! `tapwire`: the agent binary. Parses the command line, sets up logging, runs.

use std::process::ExitCode;

use tapwire::cli::{Cli, Command};
use tapwire::{agent, capture, check, config, logging};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse_with_aliases();
    logging::init(cli.log_level.as_deref(), cli.log_encoding);
    match &cli.command {
        Some(Command::CheckConfig { file }) => match config::load_file(file) {
            Ok(config) => {
                print!("{}", check::summary(&file.display().to_string(), &config));
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("{}", tapwire::capture::loader::error_chain(&err));
                ExitCode::from(2)
            }
        },
        Some(Command::ReloadConfig) => {
            let addr = cli.httpd_listen.unwrap_or_default();
            match tapwire::status::client::reload(addr) {
                Ok(message) => {
                    print!("{message}");
                    ExitCode::SUCCESS
                }
                Err(message) => {
                    eprint!("tapwire: {message}");
                    ExitCode::from(1)
                }
            }
        }
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
                eprintln!("tapwire: {}", tapwire::capture::loader::error_chain(&err));
                ExitCode::from(err.exit_code())
            }
        },
    }
}
