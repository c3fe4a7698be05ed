//! `tapwire`: the agent binary. Parses the command line, sets up logging, runs.

use std::process::ExitCode;

use tapwire::capture::loader::error_chain;
use tapwire::cli::{Cli, Command};
use tapwire::{agent, capture, config, logging, plan};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    no_huge_pages();
    let cli = Cli::parse_with_aliases();
    logging::init(cli.log_level.as_deref(), cli.log_encoding);
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
                    eprintln!("{}", error_chain(&err));
                    ExitCode::from(2)
                }
            }
        }
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
        None if cli.print_records => {
            let result = plan::Plan::build(&cli)
                .map_err(|e| anyhow::anyhow!(error_chain(&e)))
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
                eprintln!("tapwire: {}", error_chain(&err));
                ExitCode::from(err.exit_code())
            }
        },
    }
}

/// Turns transparent huge pages off for the agent. mimalloc asks for them on
/// its arenas, and the kernel then backs every touched 2 MiB of heap with a
/// whole huge page: most of an idle agent's heap was such pages, resident
/// for a few small buffers each. The data path streams through buffers it
/// reuses, where huge pages save little.
fn no_huge_pages() {
    // SAFETY: a process-wide flag for this process's own memory; no pointers.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}
