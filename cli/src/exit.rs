//! Exit codes shared by every subcommand (DESIGN.md §4).

use std::process::ExitCode;

/// Every SLO held / the input was valid.
pub const OK: u8 = 0;
/// Invalid input: a bad experiment file, a missing file, bad arguments.
pub const INVALID_INPUT: u8 = 2;
/// Infrastructure failure: agent unreachable, fault could not be applied.
pub const INFRASTRUCTURE: u8 = 3;

/// An error caused by what the user gave us, so `main` exits with 2 instead of 3.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

/// The exit code for an error that reached `main`.
pub fn code_for(e: &anyhow::Error) -> ExitCode {
    if e.chain().any(|c| c.is::<InvalidInput>()) {
        ExitCode::from(INVALID_INPUT)
    } else {
        ExitCode::from(INFRASTRUCTURE)
    }
}
