//! A real Prometheus server for the agreement tests, shared with the CLI's tests
//! (`#[path]`-included there).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result};

/// The `prometheus` binary on PATH, or `None` after printing that `skipped` (what the test
/// leaves undone) when there is none. Under `CI=true` a missing binary fails the test.
pub fn prometheus_or_skip(skipped: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("prometheus"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        faultline_testkit::skip(format_args!(
            "`prometheus` not on PATH (apt-get install -y prometheus); {skipped}"
        ));
    }
    found
}

/// Starts `bin` on a free loopback port with its config and storage under `dir`,
/// scraping `targets` (`host:port`) as job `job` every second; its stderr goes to
/// `stderr`. Returns the process, killed on drop, and the server's base URL.
pub fn start(
    bin: &Path,
    dir: &Path,
    job: &str,
    targets: &[String],
    stderr: Stdio,
) -> Result<(tokio::process::Child, String)> {
    let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = tokio::process::Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .context("starting prometheus")?;
    Ok((child, format!("http://127.0.0.1:{port}")))
}
