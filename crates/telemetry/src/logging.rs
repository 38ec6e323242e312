//! The `tracing` setup every Faultline process uses.

use std::str::FromStr;

use tracing_subscriber::EnvFilter;

use crate::TelemetryError;

/// The environment variable holding the log filter (`RUST_LOG` syntax).
pub const LOG_ENV: &str = "RUST_LOG";

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable, coloured unless `NO_COLOR` is set.
    #[default]
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

impl FromStr for LogFormat {
    type Err = TelemetryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "pretty" | "text" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            _ => Err(TelemetryError::UnknownLogFormat(s.to_string())),
        }
    }
}

/// Builds the filter: `RUST_LOG` when set, otherwise `default_directive` (e.g. `info`).
pub fn env_filter(default_directive: &str) -> Result<EnvFilter, TelemetryError> {
    let directive = std::env::var(LOG_ENV).unwrap_or_else(|_| default_directive.to_string());
    EnvFilter::try_new(&directive).map_err(|e| TelemetryError::InvalidFilter {
        directive,
        message: e.to_string(),
    })
}

/// Installs the global subscriber: logs to stderr in `format`, filtered by
/// [`env_filter`]. Fails if a subscriber is already installed.
pub fn init_tracing(format: LogFormat, default_directive: &str) -> Result<(), TelemetryError> {
    // Colour only for a terminal: escape codes in a redirected log file are noise.
    let ansi = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    install(format, default_directive, std::io::stderr, ansi, true)
}

/// [`init_tracing`] for a process that must outlive whoever reads its stderr (the agent's
/// watchdog, whose stderr is a dead container's log pipe once the agent is killed): every
/// line also goes to `file`, and a failed write to either is dropped. With plain
/// [`init_tracing`], the subscriber reports a failed write with `eprintln!`, which panics
/// on a broken stderr.
pub fn init_tracing_with_file(
    format: LogFormat,
    default_directive: &str,
    file: std::fs::File,
) -> Result<(), TelemetryError> {
    let file = std::sync::Arc::new(file);
    let tee = move || Tee(file.clone());
    install(format, default_directive, tee, false, false)
}

/// Writes to stderr and a file, ignoring the failures of both.
struct Tee(std::sync::Arc<std::fs::File>);

impl std::io::Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        let _ = (&*self.0).write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn install<W>(
    format: LogFormat,
    default_directive: &str,
    writer: W,
    ansi: bool,
    log_internal_errors: bool,
) -> Result<(), TelemetryError>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter(default_directive)?)
        .with_writer(writer)
        .log_internal_errors(log_internal_errors);
    let result = match format {
        LogFormat::Pretty => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
    result.map_err(|_| TelemetryError::AlreadyInitialized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_parses_known_names_and_rejects_others() {
        assert_eq!("JSON".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!("pretty".parse::<LogFormat>().unwrap(), LogFormat::Pretty);
        assert!(matches!(
            "yaml".parse::<LogFormat>(),
            Err(TelemetryError::UnknownLogFormat(_))
        ));
    }

    #[test]
    fn second_init_reports_already_initialized() {
        // Both calls may race with other tests in this binary; whichever wins, the
        // second of *these* calls must see a subscriber in place.
        let _ = init_tracing(LogFormat::Json, "warn");
        assert!(matches!(
            init_tracing(LogFormat::Pretty, "warn"),
            Err(TelemetryError::AlreadyInitialized)
        ));
    }
}
