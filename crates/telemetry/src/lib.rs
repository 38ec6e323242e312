//! `faultline-telemetry`: the metric names every Faultline component and SLO uses, one
//! standard set of histogram buckets, Prometheus text exposition on `prometheus-client`,
//! label values that are bounded and parse cleanly, and the `tracing` setup.
//!
//! The fleet registers its RED metrics through [`ServiceMetrics`]; the SLO engine and the
//! dashboards refer to the same names through [`names`], so a renamed metric breaks the
//! build instead of silently breaking an SLO.

pub mod buckets;
pub mod exposition;
pub mod labels;
pub mod logging;
pub mod metrics;
pub mod names;

pub use buckets::DURATION_BUCKETS;
pub use exposition::{CONTENT_TYPE, encode};
pub use labels::{LabelValue, code_label, method_label, route_label, sanitize_label_value};
pub use logging::{LogFormat, init_tracing};
pub use metrics::{BreakerStateValue, ClientOutcome, DeadlineAction, ServiceMetrics};
pub use names::{CATALOG, MetricDef, MetricKind};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// Writing the exposition text failed (only a broken `fmt::Write` can cause this).
    #[error("encoding the metrics exposition failed")]
    Encode(#[from] std::fmt::Error),
    /// The log format name is not `pretty` or `json`.
    #[error("unknown log format `{0}`: expected `pretty` or `json`")]
    UnknownLogFormat(String),
    /// The log filter directive does not parse.
    #[error("invalid log filter `{directive}`: {message}")]
    InvalidFilter {
        /// The directive as given.
        directive: String,
        /// What the parser said.
        message: String,
    },
    /// A global tracing subscriber is already installed.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInitialized,
}
