//! The load generator: open-model HTTP traffic at a constant arrival rate, measured
//! without coordinated omission.
//!
//! - Request `k` is due `k / rate` after the start, whatever happened to earlier
//!   requests ([`schedule::Schedule`]). One dispatcher task sleeps until the next due time
//!   and, on each wake-up, releases every request due so far; at high rates tokio's
//!   millisecond timer makes that a batch per millisecond instead of one timer per
//!   request.
//! - `connections` worker tasks (connections) are opened up front; each owns at most one
//!   request in flight. When requests are released and no worker is idle, the
//!   dispatcher opens more, up to `max_connections` (k6's `preAllocatedVUs` and
//!   `maxVUs`). Only past that does a released request wait for a free worker; its
//!   latency still counts from its *scheduled* time, so a stalled server shows up as
//!   high latency rather than as fewer samples. A request whose deadline (scheduled
//!   time + timeout) passes before a worker is free is recorded as a timeout without
//!   being sent (expired, k6's `dropped_iterations`), which also bounds the backlog to
//!   `rate * timeout`.
//! - Every open-model request's *generator delay* (scheduled time until a worker took
//!   it) is recorded per second next to its latency, so client SLOs can refuse to judge
//!   windows the generator itself distorted ([`crate::slo::client`]).
//! - The mix entry of request `k` is fixed by smooth weighted round-robin
//!   ([`schedule::RequestMix`]).
//! - Results go, live, into the SLO engine's
//!   [`ClientMeasurements`](crate::slo::client::ClientMeasurements) (requests, errors and
//!   an HDR latency histogram per Unix second, read by `source: client` SLOs) and into
//!   [`LoadStats`] (outcomes by class per second, run-wide HDR histograms).
//! - `--closed-loop` mode instead has every connection send back to back, to measure
//!   the maximum throughput of a server (and of the generator).
//!
//! Everything runs under one [`CancellationToken`]; the tasks belong to a `JoinSet`
//! owned by the run's driver task, and a run ends at most one timeout after its
//! duration.
//!
//! ```no_run
//! # async fn demo() -> Result<(), faultline_controller::load::LoadError> {
//! use std::time::Duration;
//! use faultline_controller::load::{HttpRequest, HttpTransport, LoadConfig, Mode, start};
//! use faultline_controller::slo::client::ClientBackend;
//! use tokio_util::sync::CancellationToken;
//!
//! let request = HttpRequest::new("GET", "http://127.0.0.1:8080", "/", vec![], None)?;
//! let transport = HttpTransport::new(vec![request], 256);
//! let config = LoadConfig {
//!     mode: Mode::Open { rate: 500.0, spells: Vec::new() },
//!     duration: Duration::from_secs(10),
//!     connections: 16,
//!     max_connections: 256,
//!     timeout: Duration::from_secs(2),
//!     weights: vec![1],
//! };
//! let backend = ClientBackend::new("gateway"); // the SLO engine reads this one
//! let run = start(config, transport, backend.measurements(), CancellationToken::new())?;
//! let live = run.stats().clone(); // read every second by the runner
//! let report = run.wait().await?;
//! println!("{} req/s, p99 {} ms", report.achieved_rate, report.latency_ms.p99);
//! # let _ = live; Ok(()) }
//! ```

mod generator;
pub mod schedule;
pub mod stats;
pub mod transport;

pub use generator::{LoadConfig, LoadHandle, Mode, start};
pub use schedule::Spell;
pub use stats::{
    GeneratorDelay, LoadReport, LoadStats, Outcome, OutcomeCounts, Quantiles, SecondReport,
};
pub use transport::{HttpRequest, HttpTransport, Transport};

#[cfg(doc)]
use tokio_util::sync::CancellationToken;

/// Why a load run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The configuration is not usable (rate, duration, connections, mix, URL, header).
    #[error("invalid load configuration: {0}")]
    InvalidConfig(String),
    /// [`start`] was called outside a tokio runtime.
    #[error("the load generator must be started inside a tokio runtime")]
    NoRuntime,
    /// A generator task panicked or was aborted; the report would be incomplete.
    #[error("a load generator task failed: {0}")]
    TaskFailed(String),
}

#[cfg(test)]
mod tests;
