//! `chaos agent`: the node agent as a process, serving the agent API (DESIGN.md §3).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use faultline_agent::api::{Api, Token};
use faultline_agent::protect::{AllowRule, Protection};
use faultline_agent::watchdog::WatchdogCommand;
use faultline_agent::{Agent, AgentConfig};

use crate::exit::InvalidInput;

/// Arguments of `chaos agent`.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Address the API listens on; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// File holding the bearer token (at least 16 characters) every `/v1` call must carry.
    #[arg(long, value_name = "FILE")]
    pub token_file: PathBuf,
    /// Directory for the crash journal; leftovers found there are reverted at start.
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Address the agent's userspace proxies listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub proxy_bind: IpAddr,
    /// PEM certificate chain: serve the API over TLS (the token is still required).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `--tls-cert`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: require client certificates that chain to them (mTLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Log format: `pretty` or `json`.
    #[arg(long, default_value = "pretty")]
    pub log_format: String,
    /// Process names (as in `/proc/PID/comm`) of this node's critical services, which no
    /// fault may target; replaces the default list (an empty value protects none).
    #[arg(
        long,
        value_name = "NAMES",
        value_delimiter = ',',
        default_values = faultline_agent::protect::DEFAULT_CRITICAL
    )]
    pub critical_processes: Vec<String>,
    /// Refuse every process of a pod in this Kubernetes namespace (repeatable).
    #[arg(long, value_name = "NAMESPACE")]
    pub protect_namespace: Vec<String>,
    /// Accept only targets matching one of these rules (repeatable): `cgroup:/PATH`,
    /// `container:ID` or `namespace:NAME`. Without any, every unprotected process is a
    /// valid target.
    #[arg(long, value_name = "RULE")]
    pub allow: Vec<AllowRule>,
    /// The kubelet's pod log directory, where a pod's namespace is read from
    /// (`<namespace>_<pod>_<uid>`).
    #[arg(long, value_name = "DIR", default_value = faultline_agent::protect::POD_LOG_DIR)]
    pub pod_log_dir: PathBuf,
    /// The host's cgroup tree (e.g. `/sys/fs/cgroup`): the watchdog moves into its root
    /// cgroups, so it survives the agent's container being killed. Give it in a container
    /// (compose, the DaemonSet); a host agent's watchdog stays in the agent's cgroup.
    #[arg(long, value_name = "DIR")]
    pub watchdog_leave_cgroups: Option<PathBuf>,
}

impl AgentArgs {
    /// The protection these flags ask for; the agent's own descendants are protected.
    fn protection(&self) -> Result<Protection, InvalidInput> {
        if let Some(bad) = self
            .protect_namespace
            .iter()
            .find(|ns| !faultline_spec::is_dns_label(ns))
        {
            return Err(InvalidInput(format!(
                "--protect-namespace {bad:?} is not a Kubernetes namespace name"
            )));
        }
        Ok(Protection {
            critical: self
                .critical_processes
                .iter()
                .filter(|n| !n.is_empty())
                .cloned()
                .collect(),
            protected_namespaces: self.protect_namespace.clone(),
            allow: self.allow.clone(),
            own_descendants: true,
            pod_log_dir: self.pod_log_dir.clone(),
            ..Protection::default()
        })
    }
}

/// Arguments of `chaos agent-watchdog` (started by `chaos agent`, not by people).
#[derive(Debug, clap::Args)]
pub struct WatchdogArgs {
    /// The agent's state directory: its journal.
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// The agent to watch.
    #[arg(long)]
    pub agent_pid: u32,
    /// Its start time (`/proc/PID/stat` field 22), so a recycled PID is not watched.
    #[arg(long)]
    pub agent_start_time: u64,
    /// Move into the root cgroups under this directory first (see `chaos agent`).
    #[arg(long, value_name = "DIR")]
    pub leave_cgroups: Option<PathBuf>,
    /// Log format: `pretty` or `json`.
    #[arg(long, default_value = "pretty")]
    pub log_format: String,
}

fn log_format(name: &str) -> Result<faultline_telemetry::LogFormat, InvalidInput> {
    name.parse()
        .map_err(|e: faultline_telemetry::TelemetryError| InvalidInput(e.to_string()))
}

/// Watches an agent and reverts its faults at their deadlines if it dies.
pub fn watchdog(args: &WatchdogArgs) -> anyhow::Result<ExitCode> {
    let format = log_format(&args.log_format)?;
    // Its stderr dies with the agent's container; the state directory keeps its log.
    let path = args.state_dir.join(faultline_agent::watchdog::LOG_FILE);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    // Each watchdog writes a handful of lines; a log past 1 MiB starts over.
    if log.metadata().is_ok_and(|m| m.len() > 1 << 20) {
        log.set_len(0)
            .with_context(|| format!("truncate {}", path.display()))?;
    }
    faultline_telemetry::logging::init_tracing_with_file(format, "info", log)?;
    if let Some(root) = &args.leave_cgroups {
        faultline_agent::watchdog::leave_cgroups(root)?;
    }
    faultline_agent::watchdog::run(&args.state_dir, args.agent_pid, args.agent_start_time)?;
    Ok(ExitCode::SUCCESS)
}

/// Runs the agent until SIGTERM or Ctrl-C, then reverts every fault.
pub fn run(args: &AgentArgs) -> anyhow::Result<ExitCode> {
    faultline_telemetry::init_tracing(log_format(&args.log_format)?, "info")?;
    let token = Token::from_file(&args.token_file).map_err(|e| InvalidInput(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    runtime.block_on(async {
        let mut watchdog_args = vec![format!("--log-format={}", args.log_format)];
        if let Some(root) = &args.watchdog_leave_cgroups {
            watchdog_args.push(format!("--leave-cgroups={}", root.display()));
        }
        let (agent, report) = Agent::start(AgentConfig {
            state_dir: Some(args.state_dir.clone()),
            proxy_bind: args.proxy_bind,
            protection: args.protection()?,
            watchdog: Some(WatchdogCommand {
                program: std::env::current_exe().context("find this executable")?,
                args: watchdog_args,
            }),
        })
        .await
        .context("start the agent")?;
        for line in report
            .reverted
            .iter()
            .chain(&report.failed)
            .chain(&report.problems)
        {
            eprintln!("journal: {line}");
        }
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let api = Api::new(agent, token);
        match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => {
                let files = faultline_agent::tls::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: args.tls_client_ca.clone(),
                };
                // Fail on bad certificate files before announcing the address.
                files
                    .server_config()
                    .map_err(|e| InvalidInput(e.to_string()))?;
                println!("listening on https://{addr}");
                faultline_agent::tls::serve(
                    listener,
                    api,
                    &files,
                    faultline_http::shutdown_signal(),
                )
                .await
                .context("serve the agent API over TLS")?;
            }
            _ => {
                println!("listening on http://{addr}");
                faultline_agent::api::serve(listener, api, faultline_http::shutdown_signal())
                    .await
                    .context("serve the agent API")?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
