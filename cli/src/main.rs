//! The `chaos` binary: parses the command line and dispatches to a subcommand.
//! All logic lives in the libraries and in `commands/`.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod commands;
mod exit;

fn run() -> anyhow::Result<ExitCode> {
    let cli = cli::Cli::parse();
    commands::dispatch(cli)
}

fn main() -> ExitCode {
    // The agent re-executes this binary as its memory-stress helper (see
    // faultline_agent::cgroup::memory); that is not a user-facing subcommand.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(faultline_agent::cgroup::memory::HELPER_ARG) {
        let code = faultline_agent::cgroup::memory::helper_main(&args[1..]);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::code_for(&e)
        }
    }
}
