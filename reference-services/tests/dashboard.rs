//! `dashboards/fleet.json` uses only metrics that `faultline-telemetry` defines, with labels
//! those metrics carry, and covers RED per service, breakers, retries and degradation.

use std::collections::BTreeSet;
use std::path::PathBuf;

use faultline_telemetry::names::{self, MetricDef, MetricKind};

fn dashboard() -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dashboards/fleet.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every PromQL expression of the dashboard: panel targets and templating queries.
fn expressions(d: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in d["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            out.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    for var in d["templating"]["list"].as_array().expect("templating") {
        if let Some(q) = var["query"]["query"].as_str() {
            // Grafana's `label_values(metric, label)` is not PromQL: check it as the selector
            // `metric{label=""}`, which needs the same metric and label.
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
                .unwrap_or_else(|| panic!("unsupported template query {q:?}"));
            let (metric, label) = inner.split_once(',').expect("label_values(metric, label)");
            out.push(format!("{}{{{}=\"\"}}", metric.trim(), label.trim()));
        }
    }
    out
}

/// Keywords and aggregation operators (which may be followed by `by (...)` rather than `(`).
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "and",
    "or",
    "unless",
    "le",
];

/// A referenced series: its name and the label names its selector matches on.
#[derive(Debug)]
struct Selector {
    name: String,
    labels: Vec<String>,
}

/// The metric selectors of a PromQL expression: identifiers that are not functions (followed by
/// `(`), keywords, grouping labels (inside `by (...)`), numbers or range durations.
fn selectors(expr: &str) -> Vec<Selector> {
    let bytes = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut grouping_depth: Option<usize> = None;
    let mut depth = 0usize;
    while i < bytes.len() {
        let c = bytes[i] as char;
        match c {
            '"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '[' => {
                while i < bytes.len() && bytes[i] != b']' {
                    i += 1;
                }
                i += 1;
            }
            '(' => {
                depth += 1;
                i += 1;
            }
            ')' => {
                if grouping_depth == Some(depth) {
                    grouping_depth = None;
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < bytes.len()
                    && ((bytes[i] as char).is_ascii_alphanumeric()
                        || bytes[i] == b'_'
                        || bytes[i] == b':')
                {
                    i += 1;
                }
                let ident = &expr[start..i];
                let rest = expr[i..].trim_start();
                if ident == "by" || ident == "without" {
                    grouping_depth = Some(depth + 1);
                    continue;
                }
                if grouping_depth.is_some() || rest.starts_with('(') || KEYWORDS.contains(&ident) {
                    continue;
                }
                let mut labels = Vec::new();
                if rest.starts_with('{') {
                    let open = expr.len() - rest.len();
                    let close = expr[open..].find('}').expect("selector closes") + open;
                    for matcher in expr[open + 1..close].split(',') {
                        let name: String = matcher
                            .trim()
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        if !name.is_empty() {
                            labels.push(name);
                        }
                    }
                    i = close + 1;
                }
                out.push(Selector {
                    name: ident.to_string(),
                    labels,
                });
            }
            _ => i += 1,
        }
    }
    out
}

/// The telemetry family a series name belongs to (`x_bucket` belongs to histogram `x`).
fn family(series: &str) -> Option<&'static MetricDef> {
    if let Some(def) = names::lookup(series) {
        return Some(def);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = series.strip_suffix(suffix)?;
        names::lookup(base).filter(|d| d.kind == MetricKind::Histogram)
    })
}

#[test]
fn every_metric_the_dashboard_uses_is_a_telemetry_constant_with_its_labels() {
    let d = dashboard();
    let mut used = BTreeSet::new();
    for expr in expressions(&d) {
        let sels = selectors(&expr);
        assert!(!sels.is_empty(), "no metric found in {expr:?}");
        for sel in sels {
            let def = family(&sel.name)
                .unwrap_or_else(|| panic!("{:?} in {expr:?} is not a telemetry metric", sel.name));
            for label in &sel.labels {
                let is_bucket = def.kind == MetricKind::Histogram && label == "le";
                assert!(
                    def.labels.contains(&label.as_str()) || is_bucket,
                    "{} has no label {label:?} (in {expr:?})",
                    def.name
                );
            }
            used.insert(def.name);
        }
    }
    // RED per service, breakers, retries and degradation are all on the dashboard.
    for required in [
        names::HTTP_SERVER_REQUESTS_TOTAL,
        names::HTTP_SERVER_REQUEST_DURATION_SECONDS,
        names::HTTP_CLIENT_REQUESTS_TOTAL,
        names::BREAKER_STATE,
        names::BREAKER_TRANSITIONS_TOTAL,
        names::RETRIES_TOTAL,
        names::DEGRADATION_LEVEL,
    ] {
        assert!(used.contains(required), "dashboard lacks {required}");
    }
}

#[test]
fn the_selector_scanner_rejects_an_unknown_metric() {
    let sels = selectors(r#"sum by (service) (rate(http_requests_total{code=~"5.."}[1m]))"#);
    assert_eq!(sels.len(), 1);
    assert_eq!(sels[0].name, "http_requests_total");
    assert_eq!(sels[0].labels, ["code"]);
    assert!(family(&sels[0].name).is_none());
    let hist = selectors(
        "histogram_quantile(0.99, sum by (le) (rate(http_server_request_duration_seconds_bucket[1m])))",
    );
    assert_eq!(hist.len(), 1);
    assert!(family(&hist[0].name).is_some());
}

#[test]
fn panels_have_unique_ids_and_do_not_overlap() {
    let d = dashboard();
    let panels = d["panels"].as_array().unwrap();
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len());
    let rects: Vec<(u64, u64, u64, u64)> = panels
        .iter()
        .map(|p| {
            let g = &p["gridPos"];
            let f = |k: &str| g[k].as_u64().unwrap();
            (f("x"), f("y"), f("w"), f("h"))
        })
        .collect();
    for (i, a) in rects.iter().enumerate() {
        assert!(a.0 + a.2 <= 24, "panel {i} wider than the grid");
        for b in &rects[i + 1..] {
            let overlap = a.0 < b.0 + b.2 && b.0 < a.0 + a.2 && a.1 < b.1 + b.3 && b.1 < a.1 + a.3;
            assert!(!overlap, "panels overlap: {a:?} {b:?}");
        }
    }
}
