//! The high-level SLO kinds as queries: one structured form ([`Sli`]) that the
//! embedded engine evaluates natively and that prints as the PromQL a Prometheus
//! server runs. Because both come from the same value, the evidence an embedded
//! evaluation shows is exactly the query Prometheus would have run.

use std::fmt;
use std::time::Duration;

use faultline_spec::SloKind;
use faultline_telemetry::names;

/// How a label is matched, as in PromQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~` (fully anchored regular expression)
    Regex,
    /// `!~`
    NotRegex,
}

impl MatchOp {
    fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

/// One label matcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    /// Label name.
    pub label: String,
    /// Operator.
    pub op: MatchOp,
    /// Value or regular expression.
    pub value: String,
}

impl Matcher {
    /// `label="value"`.
    pub fn equal(label: &str, value: &str) -> Self {
        Matcher {
            label: label.to_string(),
            op: MatchOp::Equal,
            value: value.to_string(),
        }
    }

    /// `label=~"regex"`.
    pub fn regex(label: &str, regex: &str) -> Self {
        Matcher {
            label: label.to_string(),
            op: MatchOp::Regex,
            value: regex.to_string(),
        }
    }
}

/// A series selector: metric name and label matchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// Series name (`http_server_requests_total`, `..._bucket`).
    pub metric: String,
    /// All must match.
    pub matchers: Vec<Matcher>,
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.metric)?;
        if !self.matchers.is_empty() {
            f.write_str("{")?;
            for (i, m) in self.matchers.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(
                    f,
                    "{}{}\"{}\"",
                    m.label,
                    m.op.as_str(),
                    escape_string(&m.value)
                )?;
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

/// Escapes a PromQL double-quoted string literal.
fn escape_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A service level indicator over a window.
#[derive(Debug, Clone, PartialEq)]
pub enum Sli {
    /// `(sum(rate(num[w])) or vector(0)) / sum(rate(den[w]))`: a share of events. The
    /// numerator counts as 0 when it has no series (no 5xx ever happened); an empty
    /// denominator means no data.
    Ratio {
        /// Counted events (errors).
        numerator: Selector,
        /// All events.
        denominator: Selector,
    },
    /// `histogram_quantile(q, sum by (le) (rate(buckets[w])))`.
    Quantile {
        /// The quantile in (0, 1).
        q: f64,
        /// The `_bucket` series.
        buckets: Selector,
    },
    /// `sum(rate(sel[w]))`: events per second.
    Rate {
        /// The counter.
        selector: Selector,
    },
}

impl Sli {
    /// The PromQL expression for this SLI over `window`.
    pub fn to_promql(&self, window: Duration) -> String {
        let w = faultline_spec::promql::format_range(window);
        match self {
            Sli::Ratio {
                numerator,
                denominator,
            } => format!(
                "(sum(rate({numerator}[{w}])) or vector(0)) / sum(rate({denominator}[{w}]))"
            ),
            Sli::Quantile { q, buckets } => {
                format!("histogram_quantile({q}, sum by (le) (rate({buckets}[{w}])))")
            }
            Sli::Rate { selector } => format!("sum(rate({selector}[{w}]))"),
        }
    }
}

/// Status codes that count as server errors for `errorRate`.
pub const ERROR_CODES: &str = "5..";
/// Status codes that count as successful for `throughput`.
pub const SUCCESS_CODES: &str = "2..|3..";

/// The SLI behind a high-level SLO kind over server metrics, or `None` for raw PromQL.
pub fn compile(kind: &SloKind) -> Option<Sli> {
    match kind {
        SloKind::ErrorRate { service, route, .. } => {
            let mut base = vec![Matcher::equal(names::LABEL_SERVICE, service)];
            if let Some(route) = route {
                base.push(Matcher::equal(names::LABEL_ROUTE, route));
            }
            let mut errors = base.clone();
            errors.push(Matcher::regex(names::LABEL_CODE, ERROR_CODES));
            Some(Sli::Ratio {
                numerator: Selector {
                    metric: names::HTTP_SERVER_REQUESTS_TOTAL.to_string(),
                    matchers: errors,
                },
                denominator: Selector {
                    metric: names::HTTP_SERVER_REQUESTS_TOTAL.to_string(),
                    matchers: base,
                },
            })
        }
        SloKind::Latency {
            service, quantile, ..
        } => Some(Sli::Quantile {
            q: *quantile,
            buckets: Selector {
                metric: format!("{}_bucket", names::HTTP_SERVER_REQUEST_DURATION_SECONDS),
                matchers: vec![Matcher::equal(names::LABEL_SERVICE, service)],
            },
        }),
        SloKind::Throughput { service, .. } => Some(Sli::Rate {
            selector: Selector {
                metric: names::HTTP_SERVER_REQUESTS_TOTAL.to_string(),
                matchers: vec![
                    Matcher::equal(names::LABEL_SERVICE, service),
                    Matcher::regex(names::LABEL_CODE, SUCCESS_CODES),
                ],
            },
        }),
        SloKind::Promql { .. } => None,
    }
}

/// The query text an SLO kind runs as over `window`: compiled PromQL, or the raw
/// expression with its `$window` bound.
pub fn query_text(kind: &SloKind, window: Duration) -> String {
    match (kind, compile(kind)) {
        (SloKind::Promql { expr, .. }, _) => faultline_spec::promql::bind_window(expr, window),
        (_, Some(sli)) => sli.to_promql(window),
        (_, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_spec::{Percent, Rate};

    #[test]
    fn error_rate_compiles_to_a_ratio_that_treats_missing_errors_as_zero() {
        let kind = SloKind::ErrorRate {
            service: "gateway".into(),
            max: Percent::from_fraction(0.005).unwrap(),
            route: Some("/api/orders/:id".into()),
        };
        assert_eq!(
            query_text(&kind, Duration::from_secs(10)),
            r#"(sum(rate(http_server_requests_total{service="gateway",route="/api/orders/:id",code=~"5.."}[10s])) or vector(0)) / sum(rate(http_server_requests_total{service="gateway",route="/api/orders/:id"}[10s]))"#
        );
    }

    #[test]
    fn latency_compiles_to_histogram_quantile_over_summed_bucket_rates() {
        let kind = SloKind::Latency {
            service: "gateway".into(),
            quantile: 0.99,
            max: faultline_spec::Duration(Duration::from_millis(800)),
        };
        assert_eq!(
            query_text(&kind, Duration::from_millis(1500)),
            r#"histogram_quantile(0.99, sum by (le) (rate(http_server_request_duration_seconds_bucket{service="gateway"}[1500ms])))"#
        );
    }

    #[test]
    fn throughput_counts_only_successful_codes() {
        let kind = SloKind::Throughput {
            service: "orders".into(),
            min: Rate::per_second(100.0).unwrap(),
        };
        assert_eq!(
            query_text(&kind, Duration::from_secs(5)),
            r#"sum(rate(http_server_requests_total{service="orders",code=~"2..|3.."}[5s]))"#
        );
    }

    #[test]
    fn label_values_are_escaped_in_string_literals() {
        let s = Selector {
            metric: "m".into(),
            matchers: vec![Matcher::equal("route", r#"a"b\c"#)],
        };
        assert_eq!(s.to_string(), r#"m{route="a\"b\\c"}"#);
    }
}
