//! The command line: one `Command` enum so each issue's subcommand slots in as a variant.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Faultline: chaos engineering and resilience verification.
///
/// Runs YAML experiments that send traffic to a service fleet, inject faults and
/// judge SLOs. Exit codes: 0 success, 1 an SLO was violated or the run aborted,
/// 2 invalid input, 3 infrastructure failure.
#[derive(Debug, Parser)]
#[command(name = "chaos", version, about, long_about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `chaos`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check experiment files: every mistake at once, with file:line:col, field path
    /// and what was expected. Exits 0 when all are valid, 2 otherwise.
    Validate(ValidateArgs),
    /// Print the JSON Schema of experiment files (for editors through
    /// yaml-language-server, and for CI checks).
    Schema(SchemaArgs),
    /// Run scheduled experiments from a directory (`--experiments DIR`), or the
    /// Kubernetes operator (`--kubernetes`); serves its own /metrics.
    Controller(Box<crate::commands::controller::ControllerArgs>),
    /// Run the node agent: inject faults under leases, serve the agent API.
    Agent(crate::commands::agent::AgentArgs),
    /// The agent's dead man's switch, started by `chaos agent` itself: reverts the
    /// agent's faults at their lease deadlines if the agent dies (docs/agent.md).
    #[command(hide = true)]
    AgentWatchdog(crate::commands::agent::WatchdogArgs),
    /// Run the reference fleet: `fleet up` starts all five services, `fleet serve` one.
    Fleet(crate::commands::fleet::FleetArgs),
    /// Send open-model HTTP load at a constant rate and print the achieved rate, errors
    /// by class and latency percentiles measured from the scheduled send time.
    Load(crate::commands::load::LoadArgs),
    /// Run experiments: for each one in order, start a fresh environment (the fleet in
    /// local mode), inject its faults under leases, judge its SLOs and write JSON, JUnit
    /// and HTML reports. Several files, directories or multi-document files run as a
    /// suite; what this mode cannot run is skipped with the reason. Exit 0 pass (or
    /// skipped), 1 fail or aborted, 2 invalid input, 3 infrastructure failure; a suite
    /// exits with the worst.
    Run(Box<crate::commands::run::RunArgs>),
}

/// Arguments of `chaos validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Experiment files, or directories searched recursively for `*.yaml` and `*.yml`.
    #[arg(required = true, value_name = "FILE|DIR")]
    pub paths: Vec<PathBuf>,
    /// Output format: `human` lists experiments on stdout and errors on stderr;
    /// `json` prints one JSON object with `valid`, `experiments` and `errors` on stdout.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Skip the rule that a CPU fault must not ask for more CPU than this host has
    /// (use it when validating for a bigger target machine).
    #[arg(long)]
    pub no_host_check: bool,
    /// The environment the files are meant for: `local` and `compose` run the
    /// reference fleet, so a service name outside it is an error with the closest
    /// name; `kubernetes` leaves service names to the cluster, which only a run sees.
    #[arg(long = "env", value_enum, default_value_t = ValidateEnv::Local)]
    pub env: ValidateEnv,
}

/// What `chaos validate --env` checks service names against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ValidateEnv {
    /// The reference fleet, as `chaos run` starts it.
    Local,
    /// The reference fleet in docker compose.
    Compose,
    /// Any service: a cluster's are not known before a run.
    Kubernetes,
}

/// Arguments of `chaos schema`.
#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    /// Print the schema on one line instead of indented.
    #[arg(long)]
    pub compact: bool,
}

/// Output format of commands that report results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Lines for people.
    Human,
    /// JSON for machines.
    Json,
}
