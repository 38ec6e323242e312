//! One module per subcommand; `dispatch` routes the parsed command line.

use std::process::ExitCode;

use crate::cli::{Cli, Command};

pub mod agent;
pub mod controller;
mod files;
pub mod fleet;
pub mod load;
pub mod run;
mod schema;
mod validate;

/// Runs the chosen subcommand and returns its exit code.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Schema(args) => schema::run(&args),
        Command::Controller(args) => controller::run(&args),
        Command::Agent(args) => agent::run(&args),
        Command::AgentWatchdog(args) => agent::watchdog(&args),
        Command::Fleet(args) => fleet::run(args),
        Command::Load(args) => load::run(&args),
        Command::Run(args) => run::run(&args),
    }
}
