//! `chaos controller`: scheduled experiments from a directory, or the Kubernetes
//! operator. The logic lives in `faultline_controller::{schedule, operator}`; this
//! module parses flags and wires the pieces together.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use faultline_controller::operator::agent::HttpAgentApi;
use faultline_controller::operator::leader::LeaderElector;
use faultline_controller::operator::targets::{AgentLocator, NamespacePolicy};
use faultline_controller::operator::{self, Context, OperatorConfig};
use faultline_controller::schedule::serve::serve_metrics;
use faultline_controller::schedule::{
    Clock, ControllerMetrics, DirSource, HistoryStore, InProcessRunner, LockPolicy, ProcessRunner,
    Scheduler, SchedulerConfig, SourceDocs,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::exit::InvalidInput;

/// What the second experiment does when a target it needs is already under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnLocked {
    /// Wait for the target to be free, then run.
    Wait,
    /// Skip the run (recorded with verdict `skipped`).
    Skip,
}

/// Arguments of `chaos controller`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["experiments", "kubernetes", "print_crd"])))]
pub struct ControllerArgs {
    /// Run the scheduled experiments (`spec.schedule`) found in this directory;
    /// changed files are picked up without a restart.
    #[arg(long, value_name = "DIR")]
    pub experiments: Option<PathBuf>,
    /// Run as the Kubernetes operator for `Experiment` resources.
    #[arg(long)]
    pub kubernetes: bool,
    /// Print the `Experiment` CRD as YAML and exit.
    #[arg(long)]
    pub print_crd: bool,
    /// Log format: `pretty` or `json` (filter with RUST_LOG).
    #[arg(long, default_value = "pretty")]
    pub log_format: faultline_telemetry::LogFormat,
    /// Address of the controller's own /metrics.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,
    /// Where run history (the last --keep run records per experiment) is written.
    #[arg(long, default_value = ".faultline/history")]
    pub history_dir: PathBuf,
    /// Run records kept per experiment.
    #[arg(long, default_value_t = 10)]
    pub keep: usize,
    /// When an experiment's targets are locked by another one.
    #[arg(long, value_enum, default_value_t = OnLocked::Wait)]
    pub on_locked: OnLocked,
    /// How often the experiments directory is re-read.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub reload_interval: Duration,
    /// Where runs write their experiment file and reports.
    #[arg(long, default_value = ".faultline/runs")]
    pub work_dir: PathBuf,
    /// How long a cancelled run may take to revert before it is killed.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub grace: Duration,
    /// Prometheus server (`http://host:9090`) that evaluates server-side SLOs. Without
    /// it, experiments directory runs use the embedded scraper and Kubernetes runs can
    /// check only `source: client` SLOs.
    #[arg(long, value_name = "URL")]
    pub prometheus: Option<String>,
    /// Kubernetes: the controller's own namespace (denied as a target).
    #[arg(long, env = "POD_NAMESPACE", default_value = "faultline-system")]
    pub namespace: String,
    /// Kubernetes: this replica's identity in the leader Lease.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Kubernetes: name of the leader-election Lease.
    #[arg(long, default_value = "faultline-controller")]
    pub lease_name: String,
    /// Kubernetes: further namespaces experiments may not target.
    #[arg(long = "deny-namespace", value_name = "NS")]
    pub deny_namespaces: Vec<String>,
    /// Kubernetes: lift the default denial of a namespace (kube-system, own namespace).
    #[arg(long = "allow-namespace", value_name = "NS")]
    pub allow_namespaces: Vec<String>,
    /// Kubernetes: namespace of the agent DaemonSet.
    #[arg(long, default_value = "faultline-system")]
    pub agent_namespace: String,
    /// Kubernetes: port of the agent API.
    #[arg(long, default_value_t = 7070)]
    pub agent_port: u16,
    /// Kubernetes: file holding the agents' bearer token (mounted from a Secret).
    #[arg(long, default_value = "/var/run/faultline/token")]
    pub agent_token_file: PathBuf,
    /// Kubernetes: lease TTL of faults the operator re-injects.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub fault_ttl: Duration,
    /// Kubernetes: results kept in each Experiment's status.
    #[arg(long, default_value_t = 5)]
    pub keep_results: usize,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    s.parse::<faultline_spec::units::Duration>()
        .map(|d| d.0)
        .map_err(|e| e.to_string())
}

/// Runs `chaos controller`.
pub fn run(args: &ControllerArgs) -> anyhow::Result<ExitCode> {
    if args.print_crd {
        print!("{}", operator::crd::crd_yaml());
        return Ok(ExitCode::SUCCESS);
    }
    faultline_telemetry::init_tracing(args.log_format, "info").context("cannot set up logging")?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        spawn_signal_handler(shutdown.clone());
        let metrics = Arc::new(ControllerMetrics::new());
        let listener = tokio::net::TcpListener::bind(args.metrics_addr)
            .await
            .with_context(|| format!("cannot listen on {}", args.metrics_addr))?;
        tracing_log(&format!(
            "metrics on http://{}/metrics",
            listener.local_addr()?
        ));
        let server = tokio::spawn(serve_metrics(listener, metrics.clone(), shutdown.clone()));
        let result = match &args.experiments {
            Some(dir) => run_scheduler(args, dir, metrics, shutdown.clone()).await,
            None => run_operator(args, metrics, shutdown.clone()).await,
        };
        shutdown.cancel();
        let _ = server.await;
        result.map(|()| ExitCode::SUCCESS)
    })
}

fn tracing_log(msg: &str) {
    eprintln!("chaos controller: {msg}");
}

fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing_log(&format!("cannot watch SIGTERM: {e}"));
                    let _ = tokio::signal::ctrl_c().await;
                    shutdown.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing_log("stopping: active runs are cancelled and revert their faults");
        shutdown.cancel();
    });
}

fn process_runner(args: &ControllerArgs, docs: SourceDocs) -> anyhow::Result<Arc<ProcessRunner>> {
    Ok(Arc::new(ProcessRunner {
        program: std::env::current_exe().context("cannot find the chaos binary")?,
        docs,
        work_dir: args.work_dir.clone(),
        grace: args.grace,
        prometheus: args.prometheus.clone(),
    }))
}

async fn run_scheduler(
    args: &ControllerArgs,
    dir: &std::path::Path,
    metrics: Arc<ControllerMetrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if !dir.is_dir() {
        return Err(InvalidInput(format!("{} is not a directory", dir.display())).into());
    }
    let source = DirSource::with_spec_parser(dir, args.reload_interval);
    let runner = process_runner(args, source.documents())?;
    let config = SchedulerConfig {
        lock_policy: match args.on_locked {
            OnLocked::Wait => LockPolicy::Wait,
            OnLocked::Skip => LockPolicy::Skip,
        },
        history: HistoryStore::new(&args.history_dir, args.keep),
        clock: Clock::System,
        report_dir: Some(args.work_dir.clone()),
    };
    let (tx, rx) = mpsc::channel(4);
    let watcher = tokio::spawn(source.run(tx, shutdown.clone()));
    tracing_log(&format!(
        "watching {} for scheduled experiments",
        dir.display()
    ));
    Scheduler::new(runner, config, metrics)
        .run(rx, shutdown)
        .await;
    let _ = watcher.await;
    Ok(())
}

async fn run_operator(
    args: &ControllerArgs,
    metrics: Arc<ControllerMetrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("cannot reach the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let identity = match &args.identity {
        Some(i) => i.clone(),
        // A pod's hostname is its name.
        None => std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "faultline-controller".into()),
    };
    let mut namespaces = NamespacePolicy::new(&args.namespace, args.deny_namespaces.clone());
    for ns in &args.allow_namespaces {
        namespaces.allow(ns);
    }
    let config = OperatorConfig {
        namespaces,
        agents: AgentLocator {
            namespace: args.agent_namespace.clone(),
            port: args.agent_port,
        },
        fault_ttl: args.fault_ttl,
        keep_results: args.keep_results,
        poll: Duration::from_secs(5),
        report_dir: Some(args.work_dir.clone()),
    };
    let agents = Arc::new(HttpAgentApi::new(&args.agent_token_file)?);
    // In-process: the runner reports every apply and revert to the reconciler (active
    // faults in the status, re-injection after a pod restart) and kills pods through
    // the API, which a child `chaos run` could not.
    let runner = Arc::new(InProcessRunner {
        agent_token_file: args.agent_token_file.clone(),
        prometheus: args.prometheus.clone(),
        work_dir: args.work_dir.clone(),
        lease_ttl: args.fault_ttl,
    });
    let ctx = Arc::new(Context::new(
        client.clone(),
        runner,
        agents,
        config,
        Clock::System,
        metrics,
        Some(identity.clone()),
    ));

    // Only the Lease holder reconciles; losing the Lease stops this process so that
    // Kubernetes restarts it as a follower.
    let (lead_tx, mut lead_rx) = watch::channel(false);
    let elector = LeaderElector::new(
        client,
        &args.namespace,
        &args.lease_name,
        &identity,
        Duration::from_secs(15),
        Clock::System,
    );
    let election = tokio::spawn(elector.run(lead_tx, shutdown.clone()));
    tracing_log(&format!(
        "{identity}: waiting for the leader Lease {}",
        args.lease_name
    ));
    tokio::select! {
        _ = shutdown.cancelled() => { let _ = election.await; return Ok(()); }
        r = lead_rx.wait_for(|l| *l) => { r.context("leader election stopped")?; }
    }
    tracing_log(&format!("{identity}: leading; reconciling Experiments"));
    let operator_stop = shutdown.child_token();
    let op = tokio::spawn(operator::run(ctx, operator_stop.clone()));
    let lost = tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = lead_rx.wait_for(|l| !*l) => true,
    };
    operator_stop.cancel();
    let _ = op.await;
    shutdown.cancel();
    let _ = election.await;
    if lost {
        anyhow::bail!("lost the leader Lease; exiting so that another replica leads");
    }
    Ok(())
}
