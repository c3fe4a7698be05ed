//! `tapwire`: the agent binary.

use clap::Parser;
use tapwire::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = cli
        .log_level
        .as_deref()
        .map(EnvFilter::new)
        .unwrap_or_else(|| {
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Some(Command::CheckConfig { .. }) => Ok(()),
        None => tapwire::capture::debug::run(&cli.pids, &cli.exes, &cli.cgroups),
    }
}
