//! `tapwire`: the agent binary.

use clap::Parser;
use tapwire::cli::Cli;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let _cli = Cli::parse();
}
