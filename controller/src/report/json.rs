//! The JSON report: the [`RunReport`] model as documented in `docs/report.md`.

use super::{ReportError, RunReport, SCHEMA_VERSION};

/// Serializes a report as pretty JSON.
pub fn to_json(report: &RunReport) -> Result<String, ReportError> {
    Ok(serde_json::to_string_pretty(report)?)
}

/// Reads a report written by [`to_json`], refusing other schema versions.
pub fn from_json(text: &str) -> Result<RunReport, ReportError> {
    let value: serde_json::Value = serde_json::from_str(text)?;
    let found = value
        .get("schemaVersion")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    if found != u64::from(SCHEMA_VERSION) {
        return Err(ReportError::UnsupportedVersion {
            found: u32::try_from(found).unwrap_or(u32::MAX),
        });
    }
    Ok(serde_json::from_value(value)?)
}
