//! The SLO engine: evaluates the experiment's SLO kinds at a point in time.
//!
//! Every backend answers the same question through [`SloBackend::evaluate`]: "what is
//! this SLI over `window` ending at `at`, and does it hold?". The answer is an
//! [`Evaluation`] that carries the measured value, the threshold, a status and the
//! query (or description) that produced it, so every verdict has its evidence.
//! Missing data is its own status ([`SloStatus::NoData`]) and is never a pass.

pub mod client;
pub mod embedded;
pub mod eval;
pub mod prometheus;
pub mod promql;
pub mod reactions;
pub mod tsdb;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use faultline_spec::SloKind;
use serde::{Deserialize, Serialize};

/// A boxed future, so backends can sit behind `dyn SloBackend`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Errors of the SLO engine. A backend that *answers* with no data is not an error
/// (that is [`SloStatus::NoData`]); these are failures to get an answer at all, or
/// questions a backend cannot answer.
#[derive(Debug, thiserror::Error)]
pub enum SloError {
    /// The backend cannot evaluate this kind (e.g. raw PromQL without a Prometheus server).
    #[error("the {backend} backend cannot evaluate this SLO: {reason}")]
    Unsupported {
        /// Backend name.
        backend: &'static str,
        /// Why.
        reason: String,
    },
    /// The Prometheus server could not be reached or answered with an HTTP error.
    #[error("prometheus request to {url} failed: {message}")]
    Http {
        /// The request URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The Prometheus server rejected the query (`status: error`).
    #[error("prometheus rejected `{query}`: {error_type}: {message}")]
    Query {
        /// The PromQL expression.
        query: String,
        /// Prometheus' `errorType`.
        error_type: String,
        /// Prometheus' `error`.
        message: String,
    },
    /// The answer did not have the documented shape.
    #[error("unexpected prometheus response for `{query}`: {message}")]
    Decode {
        /// The PromQL expression.
        query: String,
        /// What was wrong.
        message: String,
    },
    /// The Prometheus base URL does not parse.
    #[error("invalid prometheus URL `{url}`: {message}")]
    InvalidUrl {
        /// As given.
        url: String,
        /// Why.
        message: String,
    },
    /// A scrape target URL or label matcher is invalid.
    #[error("invalid scrape configuration: {0}")]
    InvalidConfig(String),
}

/// The note for a query that returned no series.
pub(crate) const EMPTY: &str = "empty result: no series matched (missing data is not a pass)";

/// Combines the values several series returned at one time into the one the SLO is
/// judged by: the worst non-NaN value (both the Prometheus and the embedded engine). Returns the value and a note for the evidence.
pub(crate) fn worst(threshold: &Threshold, values: &[f64]) -> (Option<f64>, Option<String>) {
    if values.is_empty() {
        return (None, Some(EMPTY.to_string()));
    }
    let numbers: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    let nan = values.len() - numbers.len();
    if numbers.is_empty() {
        return (
            Some(f64::NAN),
            Some(format!("all {} series were NaN", values.len())),
        );
    }
    let pick = if threshold.max.is_none() && threshold.min.is_some() {
        numbers.iter().copied().fold(f64::INFINITY, f64::min)
    } else {
        numbers.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    };
    let note = match (values.len(), nan) {
        (1, _) => None,
        (n, 0) => Some(format!("{n} series; the worst is reported")),
        (n, nan) => Some(format!(
            "{n} series ({nan} NaN, ignored); the worst is reported"
        )),
    };
    (Some(pick), note)
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SloStatus {
    /// The value is within the threshold.
    Ok,
    /// The value breaks the threshold.
    Violated,
    /// No value could be measured: no samples, an empty result or NaN. Never a pass.
    NoData,
    /// A client-side value was measured but not judged: the load generator itself
    /// delayed or dropped requests of the window beyond its tolerance, so the value
    /// describes the generator. Neither a pass nor a violation.
    Inconclusive,
}

/// What the SLI's value measures, for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Unit {
    /// A fraction in [0, 1] (error rates), shown as a percentage.
    Ratio,
    /// Seconds (latency quantiles), shown in milliseconds.
    Seconds,
    /// Events per second (throughput).
    PerSecond,
    /// Whatever a raw PromQL expression returns.
    Number,
}

impl Unit {
    /// Formats a value of this unit for people: `0.42%`, `812.3ms`, `199.8/s`.
    pub fn format(self, value: f64) -> String {
        if value.is_nan() {
            return "NaN".to_string();
        }
        match self {
            Unit::Ratio => format!("{:.3}%", value * 100.0),
            Unit::Seconds => format!("{:.1}ms", value * 1000.0),
            Unit::PerSecond => format!("{value:.1}/s"),
            Unit::Number => format!("{value:.4}"),
        }
    }
}

/// Inclusive bounds an SLI must stay within.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Threshold {
    /// Upper bound, inclusive.
    pub max: Option<f64>,
    /// Lower bound, inclusive.
    pub min: Option<f64>,
    /// Unit of the bounds and of the measured value.
    pub unit: Unit,
}

impl Threshold {
    /// The threshold an SLO kind states, in the unit its SLI is measured in.
    pub fn of(kind: &SloKind) -> Threshold {
        match kind {
            SloKind::ErrorRate { max, .. } => Threshold {
                max: Some(max.fraction()),
                min: None,
                unit: Unit::Ratio,
            },
            SloKind::Latency { max, .. } => Threshold {
                max: Some(max.0.as_secs_f64()),
                min: None,
                unit: Unit::Seconds,
            },
            SloKind::Throughput { min, .. } => Threshold {
                max: None,
                min: Some(min.as_per_second()),
                unit: Unit::PerSecond,
            },
            SloKind::Promql { max, min, .. } => Threshold {
                max: *max,
                min: *min,
                unit: Unit::Number,
            },
        }
    }

    /// Judges a measured value. `None` and NaN are [`SloStatus::NoData`].
    pub fn judge(&self, value: Option<f64>) -> SloStatus {
        match value {
            None => SloStatus::NoData,
            Some(v) if v.is_nan() => SloStatus::NoData,
            Some(v) => {
                let over = self.max.is_some_and(|max| v > max);
                let under = self.min.is_some_and(|min| v < min);
                if over || under {
                    SloStatus::Violated
                } else {
                    SloStatus::Ok
                }
            }
        }
    }

    /// `≤ 0.500%`, `≥ 150.0/s`, `between 1.0000 and 2.0000`.
    pub fn describe(&self) -> String {
        match (self.min, self.max) {
            (Some(min), Some(max)) => format!(
                "between {} and {}",
                self.unit.format(min),
                self.unit.format(max)
            ),
            (None, Some(max)) => format!("<= {}", self.unit.format(max)),
            (Some(min), None) => format!(">= {}", self.unit.format(min)),
            (None, None) => "no bound".to_string(),
        }
    }
}

/// How a value was obtained: which backend ran which query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// `embedded`, `prometheus` or `client`.
    pub backend: String,
    /// The PromQL expression that was run, or its exact equivalent evaluated natively
    /// (embedded), or a description of the computation (client).
    pub query: String,
    /// Extra facts: why there is no data, how many series were combined, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Client SLOs: what the load generator did to the window's requests, when that
    /// made the evaluation [`SloStatus::Inconclusive`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<client::GeneratorTaint>,
}

/// One SLI measurement, judged against its threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    /// The evaluation time, Unix milliseconds.
    pub at_ms: i64,
    /// The measured value; `None` when there was no data.
    pub value: Option<f64>,
    /// The bounds it was judged against.
    pub threshold: Threshold,
    /// The judgement.
    pub status: SloStatus,
    /// How the value was obtained.
    pub evidence: Evidence,
}

impl Evaluation {
    /// Builds an evaluation and judges `value` against the kind's threshold. A NaN
    /// value is kept out of `value` (JSON has no NaN) and noted in the evidence.
    pub fn judged(
        kind: &SloKind,
        at: SystemTime,
        value: Option<f64>,
        mut evidence: Evidence,
    ) -> Self {
        let threshold = Threshold::of(kind);
        let status = threshold.judge(value);
        let value = match value {
            Some(v) if v.is_nan() => {
                evidence
                    .detail
                    .get_or_insert_with(|| "the query returned NaN".to_string());
                None
            }
            other => other,
        };
        Evaluation {
            at_ms: unix_ms(at),
            value,
            threshold,
            status,
            evidence,
        }
    }
}

/// The SLO engine's interface: one trait, several backends.
pub trait SloBackend: Send + Sync {
    /// Short backend name used in evidence (`embedded`, `prometheus`, `client`).
    fn name(&self) -> &'static str;

    /// Checks, before a run starts, that this backend can evaluate `kind` at all.
    fn supports(&self, kind: &SloKind) -> Result<(), SloError>;

    /// Evaluates `kind` over `window` ending at `at`.
    fn evaluate<'a>(
        &'a self,
        kind: &'a SloKind,
        window: Duration,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<Evaluation, SloError>>;

    /// The fleet's own reactions at `at` (breaker states, retries, degradation, 429s;
    /// see [`reactions`]). Backends that do not read fleet metrics have none.
    fn reactions(
        &self,
        _at: SystemTime,
    ) -> BoxFuture<'_, Result<Vec<reactions::ReactionSample>, SloError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Evaluates `kind` at every `step` from `start` to `end` inclusive. Backends with a
    /// range API (Prometheus' `query_range`) override this with one request.
    fn evaluate_range<'a>(
        &'a self,
        kind: &'a SloKind,
        window: Duration,
        start: SystemTime,
        end: SystemTime,
        step: Duration,
    ) -> BoxFuture<'a, Result<Vec<Evaluation>, SloError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            if step.is_zero() {
                return Ok(out);
            }
            let mut at = start;
            while at <= end {
                out.push(self.evaluate(kind, window, at).await?);
                at += step;
            }
            Ok(out)
        })
    }
}

/// Unix milliseconds of a wall-clock time (negative before 1970).
pub fn unix_ms(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// A server-side backend for a run that has none: the preflight rejects every SLO that
/// needs it with `reason`, before anything is injected.
#[derive(Debug, Clone)]
pub struct NoBackend {
    reason: &'static str,
}

impl NoBackend {
    /// A backend refusing every SLO, explaining why with `reason`.
    pub const fn new(reason: &'static str) -> Self {
        NoBackend { reason }
    }

    fn error(&self) -> SloError {
        SloError::Unsupported {
            backend: "none",
            reason: self.reason.into(),
        }
    }
}

impl SloBackend for NoBackend {
    fn name(&self) -> &'static str {
        "none"
    }

    fn supports(&self, _kind: &SloKind) -> Result<(), SloError> {
        Err(self.error())
    }

    fn evaluate<'a>(
        &'a self,
        _kind: &'a SloKind,
        _window: Duration,
        _at: SystemTime,
    ) -> BoxFuture<'a, Result<Evaluation, SloError>> {
        Box::pin(async { Err(self.error()) })
    }
}

/// The wall-clock time of Unix milliseconds.
pub fn from_unix_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_value_depends_on_the_bound_and_nan_is_never_a_pass() {
        let max = Threshold {
            max: Some(1.0),
            min: None,
            unit: Unit::Number,
        };
        let min = Threshold {
            max: None,
            min: Some(1.0),
            unit: Unit::Number,
        };
        assert_eq!(worst(&max, &[0.5, 2.0, f64::NAN]).0, Some(2.0));
        assert_eq!(worst(&min, &[0.5, 2.0]).0, Some(0.5));
        assert_eq!(worst(&max, &[]), (None, Some(EMPTY.to_string())));
        assert!(worst(&max, &[f64::NAN]).0.unwrap().is_nan());
    }
    use faultline_spec::Percent;

    #[test]
    fn threshold_treats_missing_and_nan_as_no_data_never_ok() {
        let kind = SloKind::ErrorRate {
            service: "gateway".into(),
            max: Percent::from_fraction(0.005).unwrap(),
            route: None,
        };
        let t = Threshold::of(&kind);
        assert_eq!(t.judge(None), SloStatus::NoData);
        assert_eq!(t.judge(Some(f64::NAN)), SloStatus::NoData);
        assert_eq!(t.judge(Some(0.005)), SloStatus::Ok);
        assert_eq!(t.judge(Some(0.0051)), SloStatus::Violated);
    }

    #[test]
    fn promql_threshold_checks_both_bounds() {
        let kind = SloKind::Promql {
            expr: "x".into(),
            max: Some(2.0),
            min: Some(1.0),
        };
        let t = Threshold::of(&kind);
        assert_eq!(t.judge(Some(0.5)), SloStatus::Violated);
        assert_eq!(t.judge(Some(1.5)), SloStatus::Ok);
        assert_eq!(t.judge(Some(2.5)), SloStatus::Violated);
    }

    #[test]
    fn nan_evaluation_serializes_as_null_with_a_reason() {
        let kind = SloKind::Promql {
            expr: "x".into(),
            max: Some(1.0),
            min: None,
        };
        let e = Evaluation::judged(
            &kind,
            UNIX_EPOCH,
            Some(f64::NAN),
            Evidence {
                backend: "prometheus".into(),
                query: "x".into(),
                detail: None,
                generator: None,
            },
        );
        assert_eq!(e.status, SloStatus::NoData);
        let json = serde_json::to_value(&e).unwrap();
        assert!(json["value"].is_null());
        assert_eq!(json["evidence"]["detail"], "the query returned NaN");
    }
}
