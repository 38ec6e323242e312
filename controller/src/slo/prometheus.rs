//! The Prometheus server backend: high-level SLO kinds compile to PromQL
//! ([`super::promql`]), raw `promql` SLOs run as written, both through the HTTP API
//! (`/api/v1/query`, `/api/v1/query_range`).
//!
//! Empty results and NaN are [`SloStatus::NoData`](super::SloStatus::NoData), never a
//! pass. When a query returns several series, every one is judged and the worst is
//! reported (the highest against a `max`, the lowest against a `min`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use faultline_spec::SloKind;
use serde::Deserialize;

use super::promql::query_text;
use super::reactions::{ReactionKind, ReactionSample};
use super::tsdb::parse_float;
use super::{
    BoxFuture, Evaluation, Evidence, SloBackend, SloError, Threshold, from_unix_ms, unix_ms,
};

/// One series of a query answer: its labels and `(Unix ms, value)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct QuerySeries {
    /// The series' labels.
    pub labels: BTreeMap<String, String>,
    /// Points, oldest first (one point for instant queries).
    pub points: Vec<(i64, f64)>,
}

/// A Prometheus server reached over its HTTP API.
#[derive(Debug, Clone)]
pub struct PrometheusBackend {
    base: reqwest::Url,
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct ApiData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct ApiSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(default)]
    value: Option<(f64, String)>,
    #[serde(default)]
    values: Option<Vec<(f64, String)>>,
}

fn secs(at: SystemTime) -> String {
    format!("{:.3}", unix_ms(at) as f64 / 1000.0)
}

impl PrometheusBackend {
    /// A backend for the server at `url` (e.g. `http://127.0.0.1:9090`), with a
    /// per-request timeout.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, SloError> {
        let invalid = |message: String| SloError::InvalidUrl {
            url: url.to_string(),
            message,
        };
        let mut base = reqwest::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
        if base.scheme() != "http" && base.scheme() != "https" {
            return Err(invalid("scheme must be http or https".into()));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(PrometheusBackend { base, client })
    }

    async fn call(
        &self,
        endpoint: &str,
        params: &[(&str, String)],
        query: &str,
    ) -> Result<ApiData, SloError> {
        let mut url = self.base.join(endpoint).map_err(|e| SloError::InvalidUrl {
            url: self.base.to_string(),
            message: e.to_string(),
        })?;
        url.query_pairs_mut()
            .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())));
        let http_err = |message: String| SloError::Http {
            url: url.to_string(),
            message,
        };
        let response = self
            .client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| http_err(e.to_string()))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| http_err(e.to_string()))?;
        // Query errors come back as 400/422/503 with a JSON body worth reporting.
        let parsed: ApiResponse = serde_json::from_str(&body).map_err(|_| {
            http_err(format!(
                "HTTP {status}: {}",
                body.chars().take(200).collect::<String>()
            ))
        })?;
        if parsed.status != "success" {
            return Err(SloError::Query {
                query: query.to_string(),
                error_type: parsed.error_type.unwrap_or_default(),
                message: parsed.error.unwrap_or_default(),
            });
        }
        parsed.data.ok_or_else(|| SloError::Decode {
            query: query.to_string(),
            message: "success without data".into(),
        })
    }

    fn decode(query: &str, data: ApiData) -> Result<Vec<QuerySeries>, SloError> {
        let decode_err = |message: String| SloError::Decode {
            query: query.to_string(),
            message,
        };
        let point = |(t, v): (f64, String)| -> Result<(i64, f64), SloError> {
            let value = parse_float(&v)
                .ok_or_else(|| decode_err(format!("value `{v}` is not a number")))?;
            Ok(((t * 1000.0).round() as i64, value))
        };
        match data.result_type.as_str() {
            "scalar" => {
                let p: (f64, String) =
                    serde_json::from_value(data.result).map_err(|e| decode_err(e.to_string()))?;
                Ok(vec![QuerySeries {
                    labels: BTreeMap::new(),
                    points: vec![point(p)?],
                }])
            }
            "vector" | "matrix" => {
                let series: Vec<ApiSeries> =
                    serde_json::from_value(data.result).map_err(|e| decode_err(e.to_string()))?;
                series
                    .into_iter()
                    .map(|s| {
                        let raw = match (s.value, s.values) {
                            (Some(v), _) => vec![v],
                            (None, Some(vs)) => vs,
                            (None, None) => Vec::new(),
                        };
                        Ok(QuerySeries {
                            labels: s.metric,
                            points: raw.into_iter().map(point).collect::<Result<_, _>>()?,
                        })
                    })
                    .collect()
            }
            other => Err(decode_err(format!(
                "result type `{other}`; an SLO query must return a number or an instant vector"
            ))),
        }
    }

    /// Runs an instant query at `at` (`/api/v1/query`).
    pub async fn query(&self, expr: &str, at: SystemTime) -> Result<Vec<QuerySeries>, SloError> {
        let data = self
            .call(
                "api/v1/query",
                &[("query", expr.to_string()), ("time", secs(at))],
                expr,
            )
            .await?;
        if data.result_type == "matrix" {
            return Err(SloError::Decode {
                query: expr.to_string(),
                message:
                    "the expression returns a range vector; wrap it in a function such as rate()"
                        .into(),
            });
        }
        Self::decode(expr, data)
    }

    /// Runs a range query (`/api/v1/query_range`) from `start` to `end` every `step`.
    pub async fn query_range(
        &self,
        expr: &str,
        start: SystemTime,
        end: SystemTime,
        step: Duration,
    ) -> Result<Vec<QuerySeries>, SloError> {
        let data = self
            .call(
                "api/v1/query_range",
                &[
                    ("query", expr.to_string()),
                    ("start", secs(start)),
                    ("end", secs(end)),
                    ("step", format!("{:.3}", step.as_secs_f64())),
                ],
                expr,
            )
            .await?;
        Self::decode(expr, data)
    }
}

impl SloBackend for PrometheusBackend {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn supports(&self, _kind: &SloKind) -> Result<(), SloError> {
        Ok(())
    }

    fn evaluate<'a>(
        &'a self,
        kind: &'a SloKind,
        window: Duration,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<Evaluation, SloError>> {
        Box::pin(async move {
            let query = query_text(kind, window);
            let series = self.query(&query, at).await?;
            let values: Vec<f64> = series
                .iter()
                .filter_map(|s| s.points.first().map(|p| p.1))
                .collect();
            let (value, detail) = super::worst(&Threshold::of(kind), &values);
            Ok(Evaluation::judged(
                kind,
                at,
                value,
                Evidence {
                    backend: "prometheus".into(),
                    query,
                    detail,
                    generator: None,
                },
            ))
        })
    }

    fn reactions(&self, at: SystemTime) -> BoxFuture<'_, Result<Vec<ReactionSample>, SloError>> {
        Box::pin(async move {
            let queries = ReactionKind::ALL.map(|kind| async move {
                let series = self.query(&kind.promql(), at).await?;
                Ok::<_, SloError>(
                    series
                        .into_iter()
                        .filter_map(|s| {
                            let value = s.points.first()?.1;
                            ReactionSample::from_labels(kind, &s.labels, value)
                        })
                        .collect::<Vec<_>>(),
                )
            });
            let mut out = Vec::new();
            for got in futures_util::future::join_all(queries).await {
                out.extend(got?);
            }
            Ok(out)
        })
    }

    fn evaluate_range<'a>(
        &'a self,
        kind: &'a SloKind,
        window: Duration,
        start: SystemTime,
        end: SystemTime,
        step: Duration,
    ) -> BoxFuture<'a, Result<Vec<Evaluation>, SloError>> {
        Box::pin(async move {
            let query = query_text(kind, window);
            let series = self.query_range(&query, start, end, step).await?;
            let threshold = Threshold::of(kind);
            let mut out = Vec::new();
            if step.is_zero() {
                return Ok(out);
            }
            // One evaluation per step, including steps where no series had a point.
            let mut at = start;
            while at <= end {
                let t = unix_ms(at);
                let values: Vec<f64> = series
                    .iter()
                    .filter_map(|s| {
                        s.points
                            .iter()
                            .find(|(pt, _)| (pt - t).abs() < 1)
                            .map(|p| p.1)
                    })
                    .collect();
                let (value, detail) = super::worst(&threshold, &values);
                out.push(Evaluation::judged(
                    kind,
                    from_unix_ms(t),
                    value,
                    Evidence {
                        backend: "prometheus".into(),
                        query: query.clone(),
                        detail,
                        generator: None,
                    },
                ));
                at += step;
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_reads_vectors_scalars_and_special_floats() {
        let data: ApiData = serde_json::from_str(
            r#"{"resultType":"vector","result":[{"metric":{"a":"b"},"value":[1700000000.5,"NaN"]},{"metric":{},"value":[1700000000.5,"+Inf"]}]}"#,
        )
        .unwrap();
        let s = PrometheusBackend::decode("q", data).unwrap();
        assert!(s[0].points[0].1.is_nan());
        assert_eq!(s[0].points[0].0, 1_700_000_000_500);
        assert_eq!(s[1].points[0].1, f64::INFINITY);
        let data: ApiData =
            serde_json::from_str(r#"{"resultType":"scalar","result":[1.0,"0.25"]}"#).unwrap();
        assert_eq!(
            PrometheusBackend::decode("q", data).unwrap()[0].points[0].1,
            0.25
        );
        let data: ApiData =
            serde_json::from_str(r#"{"resultType":"string","result":[1.0,"x"]}"#).unwrap();
        assert!(PrometheusBackend::decode("q", data).is_err());
    }

    #[tokio::test]
    async fn unreachable_server_is_an_error_not_a_pass_or_no_data() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let backend =
            PrometheusBackend::new(&format!("http://{addr}"), Duration::from_secs(2)).unwrap();
        let kind = SloKind::Promql {
            expr: "up".into(),
            max: Some(1.0),
            min: None,
        };
        let err = backend
            .evaluate(&kind, Duration::from_secs(10), SystemTime::now())
            .await;
        assert!(matches!(err, Err(SloError::Http { .. })), "{err:?}");
    }

    #[test]
    fn invalid_urls_are_rejected() {
        assert!(PrometheusBackend::new("not a url", Duration::from_secs(1)).is_err());
        assert!(PrometheusBackend::new("ftp://x", Duration::from_secs(1)).is_err());
        assert!(
            PrometheusBackend::new("http://127.0.0.1:9090/prom", Duration::from_secs(1)).is_ok()
        );
    }
}
