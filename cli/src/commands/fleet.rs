//! `chaos fleet serve <service>` and `chaos fleet up`: the reference fleet from the command
//! line. All logic lives in `faultline-fleet`; this module parses arguments and prints.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use faultline_fleet::config::Disabled;
use faultline_fleet::serve::ServeError;
use faultline_fleet::{ChildLogs, Fleet, LaunchOptions, Service};
use faultline_telemetry::LogFormat;

use crate::exit::InvalidInput;

/// Arguments of `chaos fleet`.
#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// What to do with the fleet.
    #[command(subcommand)]
    pub command: FleetCommand,
}

/// The `chaos fleet` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum FleetCommand {
    /// Run one service in the foreground. Prints one JSON line with its bound address on
    /// stdout, logs on stderr, and drains gracefully on SIGTERM or Ctrl-C. Configuration comes
    /// from FL_* environment variables (see docs/fleet.md).
    Serve {
        /// gateway, orders, inventory, payments or notifications.
        service: String,
        /// Listen address; port 0 picks a free port.
        #[arg(long, env = "FL_BIND", default_value = "127.0.0.1:0")]
        bind: SocketAddr,
        /// Log format: pretty or json.
        #[arg(long, env = "FL_LOG_FORMAT", default_value = "pretty")]
        log_format: String,
    },
    /// Start all five services on loopback with free ports, wired together; print their
    /// URLs; restart crashed services with back-off; stop everything on Ctrl-C or SIGTERM.
    Up {
        /// Turn every resilience policy off (timeouts, retries, breakers, rate limit,
        /// degradation), to see what the fleet does without them.
        #[arg(long, conflicts_with = "disable")]
        no_resilience: bool,
        /// Remove these resilience policies, and only these (comma-separated; `FL_DISABLE`):
        /// a fragile variant of the fleet. `docs/fleet.md` lists the names.
        #[arg(long, value_name = "POLICY,...")]
        disable: Option<String>,
        /// Write each service's log to DIR/SERVICE.log instead of this terminal.
        #[arg(long, value_name = "DIR")]
        log_dir: Option<PathBuf>,
        /// Run N replicas of SERVICE (repeatable), each with its own address; its
        /// dependants balance over them. One replica of each service otherwise.
        #[arg(long, value_name = "SERVICE=N", value_parser = parse_replicas)]
        replicas: Vec<(Service, u32)>,
    },
    /// Print the names `FL_DISABLE` and `--disable` accept, one per line: every resilience
    /// policy the fleet can run without (for scripts such as scripts/kill-matrix.sh).
    Policies,
}

/// Runs `chaos fleet ...`.
pub fn run(args: FleetArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        FleetCommand::Serve {
            service,
            bind,
            log_format,
        } => serve(&service, bind, &log_format),
        FleetCommand::Up {
            no_resilience,
            disable,
            log_dir,
            replicas,
        } => {
            let disabled = if no_resilience {
                Disabled::all()
            } else {
                Disabled::parse(disable.as_deref().unwrap_or_default())
                    .map_err(|e| InvalidInput(e.to_string()))?
            };
            up(&disabled, log_dir, &replicas)
        }
        FleetCommand::Policies => {
            for p in faultline_fleet::config::Policy::ALL {
                println!("{}", p.name());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `SERVICE=N` of `--replicas`: a fleet service and 1 to [`faultline_spec::MAX_REPLICAS`].
fn parse_replicas(arg: &str) -> Result<(Service, u32), String> {
    let (service, n) = arg
        .split_once('=')
        .ok_or_else(|| format!("expected SERVICE=N, e.g. inventory=2, found `{arg}`"))?;
    let service: Service = service.parse().map_err(|e| format!("{e}"))?;
    let max = faultline_spec::MAX_REPLICAS;
    match n.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok((service, n)),
        _ => Err(format!("expected 1 to {max} replicas, found `{n}`")),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

fn serve(service: &str, bind: SocketAddr, log_format: &str) -> anyhow::Result<ExitCode> {
    let service: Service = service
        .parse()
        .map_err(|e: faultline_fleet::UnknownService| InvalidInput(e.to_string()))?;
    let format: LogFormat = log_format
        .parse()
        .map_err(|e: faultline_telemetry::TelemetryError| InvalidInput(e.to_string()))?;
    faultline_telemetry::init_tracing(format, "info").context("setting up logging")?;
    let mut config = faultline_fleet::ServiceConfig::from_env(service)
        .map_err(|e| InvalidInput(format!("{service}: {e}")))?;
    config.bind = bind;
    runtime()?.block_on(async move {
        let shutdown = faultline_fleet::serve::install_shutdown_signal()
            .context("installing the SIGTERM handler")?;
        faultline_fleet::serve::run_with(config, shutdown)
            .await
            .map_err(|e| match e {
                ServeError::Config(c) => anyhow::Error::new(InvalidInput(c.to_string())),
                other => anyhow::Error::new(other),
            })
    })?;
    Ok(ExitCode::SUCCESS)
}

fn up(
    disabled: &Disabled,
    log_dir: Option<PathBuf>,
    replicas: &[(Service, u32)],
) -> anyhow::Result<ExitCode> {
    faultline_telemetry::init_tracing(LogFormat::Pretty, "info").context("setting up logging")?;
    let mut options = LaunchOptions::current_exe()?.disable(disabled);
    for (service, n) in replicas {
        options = options.replicas(*service, *n);
    }
    if let Some(dir) = log_dir {
        options = options.logs(ChildLogs::Dir(dir));
    }
    runtime()?.block_on(async move {
        let shutdown = faultline_fleet::serve::install_shutdown_signal()
            .context("installing the SIGTERM handler")?;
        let fleet = Fleet::start(options).await.context("starting the fleet")?;
        print_table(&fleet, disabled)?;
        shutdown.await;
        eprintln!("stopping the fleet...");
        fleet.stop().await;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

fn print_table(fleet: &Fleet, disabled: &Disabled) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<14} {:<28} {:>8}", "SERVICE", "URL", "PID")?;
    for service in Service::START_ORDER.iter().rev() {
        for replica in fleet.replicas(*service) {
            let pid = replica
                .pid
                .map_or_else(|| "-".to_string(), |p| p.to_string());
            writeln!(
                out,
                "{:<14} {:<28} {:>8}",
                replica.name,
                format!("http://{}", replica.addr),
                pid
            )?;
        }
    }
    writeln!(out)?;
    if disabled.is_empty() {
        writeln!(out, "resilience: on")?;
    } else if *disabled == Disabled::all() {
        writeln!(out, "resilience: off")?;
    } else {
        writeln!(out, "resilience: on, without {disabled}")?;
    }
    writeln!(
        out,
        "try:     curl -s -X POST {}/api/orders -d '{{\"sku\":\"A-1\",\"qty\":1}}'",
        fleet.url(Service::Gateway)
    )?;
    writeln!(
        out,
        "         curl -s {}/api/orders/1",
        fleet.url(Service::Gateway)
    )?;
    writeln!(
        out,
        "metrics: curl -s {}",
        fleet.metrics_url(Service::Orders)
    )?;
    writeln!(out, "Press Ctrl-C to stop.")?;
    out.flush()
}
