//! `chaos run FILE`: run one experiment to a verdict (DESIGN.md §4, `docs/running.md`).
//!
//! Exit codes: 0 every SLO held, 1 an SLO was violated or the run aborted (also after
//! Ctrl-C or SIGTERM, which revert every fault and stop what the run started), 2 invalid
//! input, 3 infrastructure failure. `chaos controller` and the operator re-run this
//! command as a child and rely on exactly this contract.

pub mod local;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use faultline_controller::compose::{ComposeEnvironment, ComposeOptions};
use faultline_controller::report::terminal::{ProgressMode, color_enabled, summary};
use faultline_controller::report::{RunMode, RunReport, exit_code, html, json, junit};
use faultline_controller::run::{self as runner, Environment, Interrupt, RunConfig, RunError};
use faultline_controller::schedule::process::TARGETS_ENV;
use faultline_controller::schedule::{PlacedEnvironment, PlacedOptions};
use faultline_controller::slo::SloBackend;
use faultline_controller::slo::prometheus::PrometheusBackend;
use faultline_spec::{Experiment, ValidateOptions};

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
    /// The experiment file (one experiment).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Where to run.
    #[arg(long = "env", value_enum, default_value_t = EnvKind::Local)]
    pub env: EnvKind,
    /// Evaluate server-side SLOs on this Prometheus server (`http://host:9090`) instead
    /// of the embedded scraper; needed by raw `promql` SLOs.
    #[arg(long, value_name = "URL")]
    pub prometheus: Option<String>,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the JUnit XML report here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write the HTML report here.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Validate, resolve targets and preflight the agents; inject nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Environment override for every fleet service, e.g. `FL_RESILIENCE=off`; repeat
    /// for more. `FL_RESILIENCE` from the environment is honoured too.
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

/// Where the reports go.
struct Outputs {
    json: Option<PathBuf>,
    junit: Option<PathBuf>,
    html: Option<PathBuf>,
    dir: PathBuf,
}

fn outputs(args: &RunArgs, experiment: &str) -> Outputs {
    if args.json.is_none() && args.junit.is_none() && args.html.is_none() {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        let dir = PathBuf::from("faultline-reports").join(format!("{experiment}-{stamp}"));
        return Outputs {
            json: Some(dir.join("report.json")),
            junit: Some(dir.join("junit.xml")),
            html: Some(dir.join("report.html")),
            dir,
        };
    }
    let dir = [&args.json, &args.junit, &args.html]
        .into_iter()
        .flatten()
        .next()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    Outputs {
        json: args.json.clone(),
        junit: args.junit.clone(),
        html: args.html.clone(),
        dir,
    }
}

fn load_experiment(file: &Path) -> Result<Experiment, InvalidInput> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| InvalidInput(format!("cannot read {}: {e}", file.display())))?;
    let opts = ValidateOptions {
        host_cpus: std::thread::available_parallelism().ok().map(|n| n.get()),
    };
    let name = file.display().to_string();
    let mut experiments = faultline_spec::parse_str(&text, &name, &opts).map_err(|d| {
        let lines: Vec<String> = d.iter().map(|x| x.to_string()).collect();
        InvalidInput(format!("invalid experiment:\n{}", lines.join("\n")))
    })?;
    match experiments.len() {
        1 => Ok(experiments.remove(0)),
        0 => Err(InvalidInput(format!("{name} holds no experiment"))),
        n => Err(InvalidInput(format!(
            "{name} holds {n} experiments; `chaos run` runs one (split the file)"
        ))),
    }
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

/// Runs the experiment; see the module docs for the exit codes.
pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let experiment = load_experiment(&args.file)?;
    let fleet_env = parse_set_env(&args.set_env)?;
    let out = outputs(args, &experiment.name);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let report = runtime.block_on(run_async(args, experiment, fleet_env, &out));
    write_reports(&report, &out)?;
    let color = color_enabled() && std::io::IsTerminal::is_terminal(&std::io::stdout());
    println!("{}", summary(&report, color));
    for p in [&out.json, &out.junit, &out.html].into_iter().flatten() {
        println!("report: {}", p.display());
    }
    Ok(ExitCode::from(exit_code(report.verdict.outcome)))
}

async fn run_async(
    args: &RunArgs,
    experiment: Experiment,
    fleet_env: Vec<(String, String)>,
    out: &Outputs,
) -> RunReport {
    let file = args.file.display().to_string();
    let placed = std::env::var_os(TARGETS_ENV).map(PathBuf::from);
    let mode = match (&placed, args.env) {
        (Some(_), _) => RunMode::Kubernetes,
        (None, EnvKind::Local) => RunMode::Local,
        (None, EnvKind::Compose) => RunMode::Compose,
    };
    let early = |e: RunError| runner::early_report(Some(&experiment), Some(&file), mode, &e);
    let interrupt = Interrupt::new();
    let signals = spawn_signal_handler(interrupt.clone());
    let env = match (placed, args.env) {
        (Some(targets), _) => placed_env(args, &experiment, &targets, &fleet_env),
        (None, EnvKind::Local) => start_local(args, &experiment, fleet_env, out, &interrupt).await,
        (None, EnvKind::Compose) => connect_compose(args, &fleet_env, &interrupt).await,
    };
    let env: Arc<dyn Environment> = match env {
        Ok(env) => env,
        Err(e) => {
            signals.abort();
            return early(e);
        }
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
    let report = runner::run(&experiment, Arc::clone(&env), &config, &interrupt).await;
    env.shutdown().await;
    signals.abort();
    report
}

/// Starts the local environment: the fleet as child processes, the in-process agent.
async fn start_local(
    args: &RunArgs,
    experiment: &Experiment,
    fleet_env: Vec<(String, String)>,
    out: &Outputs,
    interrupt: &Interrupt,
) -> Result<Arc<dyn Environment>, RunError> {
    local::check(experiment)?;
    let server_backend = match &args.prometheus {
        Some(url) => match PrometheusBackend::new(url, Duration::from_secs(5)) {
            Ok(b) => Some(Arc::new(b) as Arc<dyn SloBackend>),
            Err(e) => return Err(RunError::InvalidInput(format!("--prometheus: {e}"))),
        },
        None => None,
    };
    let log_dir = (!out.dir.as_os_str().is_empty()).then(|| out.dir.join("fleet-logs"));
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

/// SIGINT and SIGTERM trigger the interrupt: the runner reverts every fault, stops the
/// load and the fleet, and writes a report marked aborted.
fn spawn_signal_handler(interrupt: Interrupt) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        loop {
            tokio::select! {
                _ = int.recv() => interrupt.trigger("interrupted (SIGINT)"),
                _ = term.recv() => interrupt.trigger("interrupted (SIGTERM)"),
            }
        }
    })
}

fn write_reports(report: &RunReport, out: &Outputs) -> anyhow::Result<()> {
    let write = |path: &Option<PathBuf>, text: String| -> anyhow::Result<()> {
        if let Some(p) = path {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
        }
        Ok(())
    };
    write(&out.json, json::to_json(report)?)?;
    write(&out.junit, junit::to_junit(report)?)?;
    write(&out.html, html::to_html(report)?)?;
    Ok(())
}
