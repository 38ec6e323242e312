//! Prometheus text exposition.

use prometheus_client::registry::Registry;

use crate::TelemetryError;

/// The `Content-Type` of [`encode`]'s output. `prometheus-client` writes OpenMetrics
/// text (counters typed without their `_total`, a final `# EOF`); Prometheus must be
/// told so, or it parses the body as the classic format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Encodes every family in `registry` as the body of a `/metrics` response.
pub fn encode(registry: &Registry) -> Result<String, TelemetryError> {
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, registry)?;
    Ok(body)
}
