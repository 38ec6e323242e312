//! `chaos load`: the load generator on its own.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use faultline_controller::load::{
    HttpRequest, HttpTransport, LoadConfig, LoadReport, Mode, Quantiles, start,
};
use faultline_controller::slo::client::ClientMeasurements;
use tokio_util::sync::CancellationToken;

use crate::cli::Format;
use crate::exit::InvalidInput;

/// Arguments of `chaos load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Target URL, `http://host:port/path` (loopback or a host you are allowed to load).
    #[arg(value_name = "URL")]
    pub url: String,
    /// Arrival rate, like `500/s` or `1200/m`. Requests are sent on schedule whatever the
    /// responses do (open model). Required unless `--closed-loop`.
    #[arg(long, required_unless_present = "closed_loop")]
    pub rate: Option<faultline_spec::Rate>,
    /// How long to schedule requests, like `10s` or `2m`.
    #[arg(long, default_value = "10s")]
    pub duration: faultline_spec::Duration,
    /// Keep-alive connections opened up front, each with at most one request in flight.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Open model: the most connections to open when a request is due and every open
    /// one is busy (default `max(connections, min(ceil(rate × timeout), 512))`, as
    /// `load.maxConnections`). Past it requests wait inside the generator, and the
    /// report says how long.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// HTTP method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Request body.
    #[arg(long)]
    pub body: Option<String>,
    /// Extra header `Name: value`; repeat for more.
    #[arg(long = "header", value_name = "K:V")]
    pub headers: Vec<String>,
    /// Per-request timeout counted from the scheduled send time; a timeout is an error.
    #[arg(long, default_value = "5s")]
    pub timeout: faultline_spec::Duration,
    /// Ignore `--rate`: every connection sends its next request as soon as the last one
    /// ends, to find the maximum throughput (like `wrk`).
    #[arg(long)]
    pub closed_loop: bool,
    /// `human` prints a summary; `json` prints the full report with the per-second series.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

/// Splits `http://authority/path?query` into the base and the path.
fn split_url(url: &str) -> Result<(&str, &str), InvalidInput> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| InvalidInput(format!("URL {url:?} must start with http://")))?;
    let at = rest.find('/').map_or(url.len(), |i| "http://".len() + i);
    let (base, path) = url.split_at(at);
    if base.len() == "http://".len() {
        return Err(InvalidInput(format!("URL {url:?} has no host")));
    }
    Ok((base, if path.is_empty() { "/" } else { path }))
}

fn parse_header(h: &str) -> Result<(String, String), InvalidInput> {
    let (k, v) = h
        .split_once(':')
        .ok_or_else(|| InvalidInput(format!("header {h:?} must look like `Name: value`")))?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

/// Runs the load and prints its summary. Ctrl-C stops it early and still prints what
/// was measured.
pub fn run(args: &LoadArgs) -> anyhow::Result<ExitCode> {
    let (base, path) = split_url(&args.url)?;
    let headers = args
        .headers
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    let request = HttpRequest::new(&args.method, base, path, headers, args.body.clone())
        .map_err(|e| InvalidInput(e.to_string()))?;
    let mode = match (args.closed_loop, args.rate) {
        (true, _) => Mode::Closed,
        (false, Some(rate)) => Mode::Open {
            rate: rate.as_per_second(),
            spells: Vec::new(),
        },
        (false, None) => return Err(InvalidInput("--rate is required".into()).into()),
    };
    let max_connections = match (args.max_connections, args.rate) {
        (Some(max), _) => max,
        (None, Some(rate)) if !args.closed_loop => {
            let connections = u32::try_from(args.connections).unwrap_or(u32::MAX);
            faultline_spec::default_max_connections(connections, rate, args.timeout) as usize
        }
        (None, _) => args.connections,
    };
    let config = LoadConfig {
        mode,
        duration: args.duration.0,
        connections: args.connections,
        max_connections,
        timeout: args.timeout.0,
        weights: vec![1],
    };
    // Pinned to one CPU (`taskset`), a current-thread runtime avoids the work-stealing
    // overhead; otherwise use every CPU we may run on.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .context("starting the tokio runtime")?;
    let report = runtime.block_on(async {
        let transport = HttpTransport::new(vec![request], max_connections.max(args.connections));
        let measurements =
            std::sync::Arc::new(std::sync::RwLock::new(ClientMeasurements::new("target")));
        let cancel = CancellationToken::new();
        let run = start(config, transport, measurements, cancel.clone())
            .map_err(|e| InvalidInput(e.to_string()))?;
        let stop_on_ctrl_c = {
            let cancel = cancel.clone();
            async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    cancel.cancel();
                }
            }
        };
        let wait = run.wait();
        tokio::pin!(wait);
        let report = tokio::select! {
            r = &mut wait => r,
            () = stop_on_ctrl_c => wait.await,
        };
        anyhow::Ok(report?)
    })?;
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
        Format::Human => print_human(&mut out, args, &report)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn quantiles(q: &Quantiles) -> String {
    format!(
        "p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms",
        q.p50, q.p90, q.p99, q.p999, q.max
    )
}

fn print_human(out: &mut impl Write, args: &LoadArgs, r: &LoadReport) -> std::io::Result<()> {
    let c = &r.counts;
    let pace = match r.target_rate {
        Some(rate) => format!("open model at {rate}/s"),
        None => "closed loop".to_string(),
    };
    writeln!(
        out,
        "target     {} {}, {pace} for {:?}, {} connections, timeout {:?}{}",
        args.method.to_ascii_uppercase(),
        args.url,
        args.duration.0,
        args.connections,
        args.timeout.0,
        if r.cancelled { " (stopped early)" } else { "" }
    )?;
    let scheduled = r
        .scheduled
        .map_or(String::new(), |s| format!("{s} scheduled, "));
    writeln!(
        out,
        "requests   {scheduled}{} started, {} finished in {:.2} s",
        r.started, c.requests, r.elapsed_secs
    )?;
    match r.target_rate {
        Some(target) => writeln!(
            out,
            "rate       {:.1} req/s achieved ({:.2}% of the target)",
            r.achieved_rate,
            100.0 * r.achieved_rate / target
        )?,
        None => writeln!(out, "rate       {:.1} req/s", r.achieved_rate)?,
    }
    let error_rate = if c.requests > 0 {
        100.0 * r.errors as f64 / c.requests as f64
    } else {
        0.0
    };
    writeln!(
        out,
        "outcomes   ok {}  4xx {}  5xx {}  timeouts {}  transport errors {}  (error rate {error_rate:.2}%)",
        c.ok, c.client_error_4xx, c.server_error_5xx, c.timeouts, c.transport_errors
    )?;
    writeln!(out, "latency    {}", quantiles(&r.latency_ms))?;
    writeln!(out, "send lag   {}", quantiles(&r.send_lag_ms))?;
    if r.target_rate.is_some() {
        writeln!(out, "generator  delay {}", quantiles(&r.generator_delay_ms))?;
        writeln!(
            out,
            "           {} delayed > 10 ms, {} waited over 10% of the timeout, {} expired unsent; connections {} up front, up to {}, peak {}",
            r.delayed,
            r.waited_long,
            r.expired,
            r.connections,
            r.max_connections,
            r.peak_connections
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_base_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/a?b=1").unwrap(),
            ("http://127.0.0.1:8080", "/a?b=1")
        );
        assert_eq!(
            split_url("http://127.0.0.1:8080").unwrap(),
            ("http://127.0.0.1:8080", "/")
        );
        assert!(split_url("https://x/").is_err());
        assert!(split_url("http:///x").is_err());
    }

    #[test]
    fn headers_need_a_colon() {
        assert_eq!(
            parse_header("X-Test: a:b").unwrap(),
            ("X-Test".to_string(), "a:b".to_string())
        );
        assert!(parse_header("nocolon").is_err());
    }
}
