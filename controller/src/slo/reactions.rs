//! The fleet's own reactions: what its resilience policies did while the faults ran.
//!
//! A report that only says an SLO held leaves the reader guessing why. These four
//! readings of the fleet's own metrics (DESIGN.md §5, `faultline-telemetry`) show it:
//! breaker state per upstream, retries per second per upstream, degradation level per
//! service, and rate-limit rejections (429s) per second per service. The runner samples
//! them once per tick from the same backend that judges server-side SLOs, and the
//! report draws them on the SLI timeline.

use std::collections::BTreeMap;
use std::time::Duration;

use faultline_telemetry::names::{
    BREAKER_STATE, DEGRADATION_LEVEL, HTTP_SERVER_REQUESTS_TOTAL, LABEL_CODE, LABEL_SERVICE,
    LABEL_UPSTREAM, RETRIES_TOTAL,
};
use serde::{Deserialize, Serialize};

use super::SloError;
use super::promql::{MatchOp, Matcher, Selector};
use super::tsdb::{CompiledSelector, Labels, Store};

/// The range rates are taken over, and how far back a gauge's last value may lie.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Which policy a reading shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ReactionKind {
    /// Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open.
    Breaker,
    /// Retry attempts per second per upstream.
    Retries,
    /// Degradation level per service: 0 normal, 1 cached fallback, 2 non-critical shed,
    /// 3 lightweight path.
    Degradation,
    /// Requests answered 429 (rate limit) per second per service.
    RateLimited,
}

impl ReactionKind {
    /// Every kind, in the order reports list them.
    pub const ALL: [ReactionKind; 4] = [
        ReactionKind::Breaker,
        ReactionKind::Degradation,
        ReactionKind::Retries,
        ReactionKind::RateLimited,
    ];

    /// The reading as a person names it.
    pub fn as_str(self) -> &'static str {
        match self {
            ReactionKind::Breaker => "breaker",
            ReactionKind::Retries => "retries/s",
            ReactionKind::Degradation => "degradation",
            ReactionKind::RateLimited => "429/s",
        }
    }

    /// The PromQL that reads it from a Prometheus server, one series per instance.
    pub fn promql(self) -> String {
        let w = WINDOW.as_secs();
        match self {
            ReactionKind::Breaker => {
                format!("max by ({LABEL_SERVICE}, {LABEL_UPSTREAM}) ({BREAKER_STATE})")
            }
            ReactionKind::Retries => {
                format!("sum by ({LABEL_SERVICE}, {LABEL_UPSTREAM}) (rate({RETRIES_TOTAL}[{w}s]))")
            }
            ReactionKind::Degradation => {
                format!("max by ({LABEL_SERVICE}) ({DEGRADATION_LEVEL})")
            }
            ReactionKind::RateLimited => format!(
                "sum by ({LABEL_SERVICE}) (rate({HTTP_SERVER_REQUESTS_TOTAL}{{{LABEL_CODE}=\"429\"}}[{w}s]))"
            ),
        }
    }

    fn selector(self) -> Selector {
        let (metric, matchers) = match self {
            ReactionKind::Breaker => (BREAKER_STATE, vec![]),
            ReactionKind::Retries => (RETRIES_TOTAL, vec![]),
            ReactionKind::Degradation => (DEGRADATION_LEVEL, vec![]),
            ReactionKind::RateLimited => (
                HTTP_SERVER_REQUESTS_TOTAL,
                vec![Matcher {
                    label: LABEL_CODE.into(),
                    op: MatchOp::Equal,
                    value: "429".into(),
                }],
            ),
        };
        Selector {
            metric: metric.into(),
            matchers,
        }
    }

    /// Whether the series is one per upstream (else one per service).
    fn per_upstream(self) -> bool {
        matches!(self, ReactionKind::Breaker | ReactionKind::Retries)
    }
}

/// One reading: which policy, where, and its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReactionSample {
    /// The policy.
    pub kind: ReactionKind,
    /// The service whose policy it is.
    pub service: String,
    /// The upstream it guards, for breakers and retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// The value (see [`ReactionKind`]).
    pub value: f64,
}

impl ReactionSample {
    /// Builds a reading from a series' labels, `None` when it names no service.
    pub fn from_labels(kind: ReactionKind, labels: &Labels, value: f64) -> Option<Self> {
        Some(ReactionSample {
            kind,
            service: labels.get(LABEL_SERVICE)?.clone(),
            upstream: kind
                .per_upstream()
                .then(|| labels.get(LABEL_UPSTREAM).cloned())
                .flatten(),
            value,
        })
    }
}

/// Every reading the embedded store holds at `at_ms`, with PromQL's semantics: a
/// gauge's last sample inside [`WINDOW`] (max over series of one instance), a counter's
/// rate over it (summed).
pub fn from_store(store: &Store, at_ms: i64) -> Result<Vec<ReactionSample>, SloError> {
    let mut out = Vec::new();
    for kind in ReactionKind::ALL {
        let selector = CompiledSelector::new(&kind.selector())?;
        let per_series: Vec<(Labels, f64)> = match kind {
            ReactionKind::Breaker | ReactionKind::Degradation => store
                .range(&selector, WINDOW, at_ms)
                .into_iter()
                .filter_map(|(labels, samples)| Some((labels.clone(), samples.last()?.1)))
                .collect(),
            ReactionKind::Retries | ReactionKind::RateLimited => {
                store.rate(&selector, WINDOW, at_ms)
            }
        };
        let mut grouped: BTreeMap<(String, Option<String>), f64> = BTreeMap::new();
        for (labels, value) in per_series {
            let Some(s) = ReactionSample::from_labels(kind, &labels, value) else {
                continue;
            };
            let slot = grouped
                .entry((s.service, s.upstream))
                .or_insert(match kind {
                    ReactionKind::Breaker | ReactionKind::Degradation => f64::MIN,
                    _ => 0.0,
                });
            *slot = match kind {
                ReactionKind::Breaker | ReactionKind::Degradation => slot.max(value),
                _ => *slot + value,
            };
        }
        out.extend(
            grouped
                .into_iter()
                .map(|((service, upstream), value)| ReactionSample {
                    kind,
                    service,
                    upstream,
                    value,
                }),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slo::tsdb::labels;

    #[test]
    fn the_store_yields_breaker_states_retry_rates_degradation_and_429_rates() {
        let mut store = Store::new(Duration::from_secs(60));
        let up = labels(&[("service", "orders"), ("upstream", "payments")]);
        for t in 0..=10 {
            let ms = 1_000_000 + t * 1000;
            store.append(
                BREAKER_STATE,
                up.clone(),
                ms,
                if t >= 5 { 2.0 } else { 0.0 },
            );
            store.append(RETRIES_TOTAL, up.clone(), ms, (t * 4) as f64);
            store.append(
                DEGRADATION_LEVEL,
                labels(&[("service", "gateway")]),
                ms,
                1.0,
            );
            store.append(
                HTTP_SERVER_REQUESTS_TOTAL,
                labels(&[
                    ("service", "gateway"),
                    ("code", "429"),
                    ("route", "/api/orders"),
                ]),
                ms,
                (t * 10) as f64,
            );
            store.append(
                HTTP_SERVER_REQUESTS_TOTAL,
                labels(&[
                    ("service", "gateway"),
                    ("code", "200"),
                    ("route", "/api/orders"),
                ]),
                ms,
                (t * 100) as f64,
            );
        }
        let got = from_store(&store, 1_010_000).unwrap();
        let find = |kind| got.iter().find(|s| s.kind == kind).unwrap();
        let b = find(ReactionKind::Breaker);
        assert_eq!(
            (b.service.as_str(), b.upstream.as_deref(), b.value),
            ("orders", Some("payments"), 2.0)
        );
        assert!((find(ReactionKind::Retries).value - 4.0).abs() < 0.01);
        assert_eq!(find(ReactionKind::Degradation).value, 1.0);
        let limited = find(ReactionKind::RateLimited);
        assert!((limited.value - 10.0).abs() < 0.01, "{limited:?}");
        assert_eq!(limited.upstream, None);
    }
}
