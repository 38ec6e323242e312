//! `chaos run FILE|DIR...`: run every experiment the files hold, in order, each in a
//! fresh environment (DESIGN.md §4, `docs/running.md`). One experiment is a run; several
//! are a suite ([`suite`]), summarised by one table, one JUnit document and an index.
//!
//! Exit codes: 0 every SLO held (or the experiment was skipped because this mode cannot
//! run it), 1 an SLO was violated or the run aborted (also after Ctrl-C or SIGTERM, which
//! revert every fault and stop what the run started), 2 invalid input (also a skip under
//! `--strict`), 3 infrastructure failure; a suite exits with the highest. `chaos
//! controller` and the operator re-run this command on one file as a child and rely on
//! exactly this contract.

pub mod local;
pub mod plan;
mod suite;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use faultline_controller::compose::{ComposeEnvironment, ComposeOptions};
use faultline_controller::report::terminal::ProgressMode;
use faultline_controller::report::{RunMode, RunReport};
use faultline_controller::run::{self as runner, Environment, Interrupt, RunConfig, RunError};
use faultline_controller::schedule::process::TARGETS_ENV;
use faultline_controller::schedule::{PlacedEnvironment, PlacedOptions};
use faultline_controller::slo::SloBackend;
use faultline_controller::slo::prometheus::PrometheusBackend;
use faultline_spec::Experiment;

use crate::commands::files::{self, Loaded};
use crate::exit::InvalidInput;

/// Where the run happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EnvKind {
    /// The reference fleet as local processes, the agent in-process, the embedded
    /// scraper. Needs no root, Docker or Prometheus.
    Local,
    /// `deploy/compose/compose.yaml` with the agent container.
    Compose,
}

/// Arguments of `chaos run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Experiment files, or directories searched recursively for `*.yaml` and `*.yml`.
    /// Every document of every file runs, in order (files sorted within a directory).
    #[arg(required = true, value_name = "FILE|DIR")]
    pub paths: Vec<PathBuf>,
    /// Where to run.
    #[arg(long = "env", value_enum, default_value_t = EnvKind::Local)]
    pub env: EnvKind,
    /// Evaluate server-side SLOs on this Prometheus server (`http://host:9090`) instead
    /// of the embedded scraper; needed by raw `promql` SLOs.
    #[arg(long, value_name = "URL")]
    pub prometheus: Option<String>,
    /// Write the JSON report here; with several experiments, the suite index (each
    /// experiment's report goes beside it as `<stem>-<experiment>.json`).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the JUnit XML report here: one `<testsuite>` per experiment.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write the HTML report here; with several experiments, the suite index page
    /// linking each experiment's report (`<stem>-<experiment>.html` beside it).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Validate, resolve targets and preflight the agents; inject nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Stop at the first experiment that does not pass; the rest are reported as not run.
    #[arg(long)]
    pub fail_fast: bool,
    /// Exit 2 when an experiment is skipped because this mode cannot run it.
    #[arg(long)]
    pub strict: bool,
    /// Run an experiment that ended inconclusive (no verdict earned: a late revert, a
    /// stalled controller, a fault that did not bite) up to N more times; the last
    /// attempt's verdict counts and the earlier ones are kept in its report. A pass or
    /// a failure is never run again.
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=5))]
    pub rerun_inconclusive: u32,
    /// Environment override for every fleet service, e.g. `FL_RESILIENCE=off` or
    /// `FL_DISABLE=retries,breaker-payments` (one policy removed at a time: see
    /// docs/fleet.md); repeat for more. `FL_RESILIENCE` from the environment is honoured too.
    #[arg(long = "set-env", value_name = "K=V")]
    pub set_env: Vec<String>,
    /// No live progress line (the summary is still printed).
    #[arg(long)]
    pub no_progress: bool,
    /// `--env compose`: the compose project of the stack (docker-compose's own
    /// COMPOSE_PROJECT_NAME is honoured).
    #[arg(long, env = "COMPOSE_PROJECT_NAME", value_name = "NAME",
          default_value = faultline_controller::compose::DEFAULT_PROJECT)]
    pub compose_project: String,
}

fn parse_set_env(items: &[String]) -> Result<Vec<(String, String)>, InvalidInput> {
    items
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| InvalidInput(format!("--set-env {kv:?} must look like KEY=VALUE")))
        })
        .collect()
}

/// Reads and validates every file, plans every experiment, then runs them in order;
/// see the module docs for the exit codes.
pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let placed = std::env::var_os(TARGETS_ENV).map(PathBuf::from);
    // Local and compose modes run the reference fleet, so its names are the only ones;
    // placed (Kubernetes) runs name the cluster's services.
    let loaded = files::load(
        &args.paths,
        &files::validate_options(false, placed.is_none()),
    )?;
    if !loaded.errors.is_empty() {
        for d in &loaded.errors {
            eprintln!("{d}");
        }
        return Err(InvalidInput(format!(
            "{} error(s) in the experiment files; nothing ran",
            loaded.errors.len()
        ))
        .into());
    }
    if loaded.experiments.is_empty() {
        return Err(InvalidInput("the files hold no experiment".into()).into());
    }
    let fleet_env = parse_set_env(&args.set_env)?;
    faultline_fleet::config::check_overrides(&fleet_env)
        .map_err(|e| InvalidInput(format!("the fleet's environment: {e}")))?;
    if placed.is_some() && loaded.experiments.len() > 1 {
        return Err(InvalidInput(format!(
            "{TARGETS_ENV} places the targets of one experiment; run one experiment with it"
        ))
        .into());
    }
    let mode = match (&placed, args.env) {
        (Some(_), _) => RunMode::Kubernetes,
        (None, EnvKind::Local) => RunMode::Local,
        (None, EnvKind::Compose) => RunMode::Compose,
    };
    let planned = plan::plan(loaded.experiments, mode, args.prometheus.is_some())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let invocation = Invocation {
        args,
        mode,
        placed,
        fleet_env,
    };
    let code = runtime.block_on(suite::run(&invocation, planned))?;
    Ok(ExitCode::from(code))
}

/// What every experiment of one invocation shares.
struct Invocation<'a> {
    args: &'a RunArgs,
    mode: RunMode,
    placed: Option<PathBuf>,
    fleet_env: Vec<(String, String)>,
}

/// Runs one experiment in a fresh environment: start (or connect to) it, run, shut it
/// down. Every failure is a report, never an error.
async fn run_one(
    cx: &Invocation<'_>,
    loaded: &Loaded,
    log_dir: Option<PathBuf>,
    interrupt: &Interrupt,
) -> RunReport {
    let Loaded { experiment, file } = loaded;
    let args = cx.args;
    let early = |e: RunError| runner::early_report(Some(experiment), Some(file), cx.mode, &e);
    let env = match (&cx.placed, args.env) {
        (Some(targets), _) => placed_env(args, experiment, targets, &cx.fleet_env),
        (None, EnvKind::Local) => {
            start_local(args, experiment, cx.fleet_env.clone(), log_dir, interrupt).await
        }
        (None, EnvKind::Compose) => connect_compose(args, &cx.fleet_env, interrupt).await,
    };
    let env: Arc<dyn Environment> = match env {
        Ok(env) => env,
        Err(e) => return early(e),
    };
    let config = RunConfig {
        file: Some(file.clone()),
        dry_run: args.dry_run,
        progress: if args.no_progress {
            ProgressMode::Hidden
        } else {
            ProgressMode::detect()
        },
        ..RunConfig::default()
    };
    let report = runner::run(experiment, Arc::clone(&env), &config, interrupt).await;
    env.shutdown().await;
    report
}

/// Starts the local environment: the fleet as child processes, the in-process agent.
async fn start_local(
    args: &RunArgs,
    experiment: &Experiment,
    fleet_env: Vec<(String, String)>,
    log_dir: Option<PathBuf>,
    interrupt: &Interrupt,
) -> Result<Arc<dyn Environment>, RunError> {
    let server_backend = match &args.prometheus {
        Some(url) => match PrometheusBackend::new(url, Duration::from_secs(5)) {
            Ok(b) => Some(Arc::new(b) as Arc<dyn SloBackend>),
            Err(e) => return Err(RunError::InvalidInput(format!("--prometheus: {e}"))),
        },
        None => None,
    };
    let options = local::LocalOptions {
        fleet_env,
        log_dir,
        server_backend,
    };
    tokio::select! {
        env = local::LocalEnvironment::start(experiment, options) => {
            env.map(|e| Arc::new(e) as Arc<dyn Environment>)
        }
        () = interrupted(interrupt) => Err(RunError::Infrastructure("interrupted while starting the fleet".into())),
    }
}

/// Targets the caller placed (`FAULTLINE_TARGETS_FILE`): remote agents over HTTP with
/// the token in `FAULTLINE_AGENT_TOKEN_FILE`, server-side SLOs on `--prometheus`.
fn placed_env(
    args: &RunArgs,
    experiment: &Experiment,
    targets: &Path,
    fleet_env: &[(String, String)],
) -> Result<Arc<dyn Environment>, RunError> {
    if !fleet_env.is_empty() {
        return Err(RunError::InvalidInput(format!(
            "--set-env configures the local fleet; {TARGETS_ENV} runs on targets placed elsewhere"
        )));
    }
    let options = PlacedOptions {
        agent_token_file: std::env::var_os(TOKEN_FILE_ENV)
            .map_or_else(|| PathBuf::from(DEFAULT_TOKEN_FILE), PathBuf::from),
        prometheus: args.prometheus.clone(),
        prometheus_timeout: Duration::from_secs(5),
        namespace: experiment.namespace.clone(),
        observer: None,
        pods: None,
    };
    PlacedEnvironment::from_file(targets, options).map(|e| Arc::new(e) as Arc<dyn Environment>)
}

/// Names the agents' token file for runs on placed targets.
const TOKEN_FILE_ENV: &str = "FAULTLINE_AGENT_TOKEN_FILE";
/// Where the Kubernetes manifests mount the agents' token.
const DEFAULT_TOKEN_FILE: &str = "/var/run/faultline/token";

/// Connects to the running compose stack (docs/compose.md); starts nothing.
async fn connect_compose(
    args: &RunArgs,
    fleet_env: &[(String, String)],
    interrupt: &Interrupt,
) -> Result<Arc<dyn Environment>, RunError> {
    if !fleet_env.is_empty() {
        return Err(RunError::InvalidInput(
            "--set-env configures the local fleet; in compose mode the fleet's environment is set when the stack starts, e.g. `FL_RESILIENCE=off docker-compose up -d` (see docs/compose.md)".into(),
        ));
    }
    if let Some(url) = &args.prometheus {
        PrometheusBackend::new(url, Duration::from_secs(5))
            .map_err(|e| RunError::InvalidInput(format!("--prometheus: {e}")))?;
    }
    let options = ComposeOptions {
        project: args.compose_project.clone(),
        prometheus: args.prometheus.clone(),
        ..ComposeOptions::default()
    };
    tokio::select! {
        env = ComposeEnvironment::connect(options) => {
            env.map(|e| Arc::new(e) as Arc<dyn Environment>)
        }
        () = interrupted(interrupt) => Err(RunError::Infrastructure("interrupted while connecting to the compose stack".into())),
    }
}

async fn interrupted(interrupt: &Interrupt) {
    while !interrupt.is_triggered() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
