//! `chaos schema`: print the experiment JSON Schema.

use std::io::Write;
use std::process::ExitCode;

use crate::cli::SchemaArgs;

/// Prints the schema generated from the spec crate's raw types.
pub fn run(args: &SchemaArgs) -> anyhow::Result<ExitCode> {
    let schema = faultline_spec::json_schema();
    let text = if args.compact {
        serde_json::to_string(&schema)?
    } else {
        serde_json::to_string_pretty(&schema)?
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    Ok(ExitCode::SUCCESS)
}
