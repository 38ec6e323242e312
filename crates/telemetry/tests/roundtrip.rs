//! Every metric family, with hostile label input, survives a round trip through the
//! embedded scraper's parser (`prometheus-parse`) without losing a sample.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use faultline_telemetry::names::{self, MetricKind};
use faultline_telemetry::{
    BreakerStateValue, ClientOutcome, DURATION_BUCKETS, ServiceMetrics, encode,
};
use prometheus_client::registry::Registry;
use prometheus_parse::{Scrape, Value};

/// Sample lines of an exposition, as `(series name, raw label block)`.
fn sample_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let name_end = l.find(['{', ' ']).expect("sample line has a name");
            let labels = if l[name_end..].starts_with('{') {
                let close = l.rfind('}').expect("label block closes");
                l[name_end + 1..close].to_string()
            } else {
                String::new()
            };
            (l[..name_end].to_string(), labels)
        })
        .collect()
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("exposition parses")
}

/// Counts parsed samples the way the exposition counts lines: one per histogram bucket.
fn parsed_line_count(scrape: &Scrape) -> usize {
    scrape
        .samples
        .iter()
        .map(|s| match &s.value {
            Value::Histogram(buckets) => buckets.len(),
            Value::Summary(q) => q.len(),
            _ => 1,
        })
        .sum()
}

#[test]
fn every_family_round_trips_through_prometheus_parse_without_losing_samples() {
    let mut registry = Registry::default();
    let metrics = ServiceMetrics::register("orders", &mut registry);
    // Hostile input: braces, commas, equals signs, quotes, backslashes and a newline.
    let hostile_routes = [
        "/api/orders/{id}",
        "/api/orders",
        r#"/x/{a,b}="q"\z"#,
        "/line\nbreak",
    ];
    for (i, route) in hostile_routes.iter().enumerate() {
        for code in [200u16, 201, 404, 503] {
            metrics.observe_server_request(
                route,
                "post",
                code,
                Duration::from_millis(3 * i as u64 + 1),
            );
        }
        metrics.observe_server_request(route, "BREW", 405, Duration::from_micros(300));
    }
    for upstream in ["payments", "inventory", "weird=up,stream}"] {
        for outcome in ClientOutcome::ALL {
            let elapsed = matches!(outcome, ClientOutcome::Success | ClientOutcome::Timeout)
                .then_some(Duration::from_millis(40));
            metrics.observe_client_request(upstream, outcome, elapsed);
        }
        metrics.register_breaker(upstream);
        metrics.breaker_transition(upstream, BreakerStateValue::Open);
        metrics.breaker_transition(upstream, BreakerStateValue::HalfOpen);
        metrics.retry(upstream);
    }
    metrics.set_degradation_level(2);
    metrics.double_charges(1);
    metrics.declare_notification_queue();
    metrics.notification_queued();
    metrics.notification_queued();
    metrics.notification_delivered(std::time::Duration::from_millis(1500));

    let text = encode(&registry).unwrap();
    let lines = sample_lines(&text);
    let scrape = parse(&text);

    // 1. Nothing lost: every sample line is one parsed sample (or histogram bucket).
    let bucket_lines = lines.iter().filter(|(n, _)| n.ends_with("_bucket")).count();
    assert!(bucket_lines > 0);
    assert_eq!(
        parsed_line_count(&scrape),
        lines.len(),
        "samples lost in:\n{text}"
    );

    // 2. Every family of the catalog is present, with exactly its declared labels.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for sample in &scrape.samples {
        *seen.entry(sample.metric.clone()).or_default() += 1;
    }
    for def in names::FLEET {
        let expected: BTreeSet<&str> = def.labels.iter().copied().collect();
        let series = match def.kind {
            MetricKind::Histogram => vec![
                def.name.to_string(),
                format!("{}_sum", def.name),
                format!("{}_count", def.name),
            ],
            _ => vec![def.name.to_string()],
        };
        for name in series {
            assert!(seen.contains_key(&name), "{name} missing from:\n{text}");
            for sample in scrape.samples.iter().filter(|s| s.metric == name) {
                let got: BTreeSet<&str> = sample.labels.keys().map(String::as_str).collect();
                assert_eq!(got, expected, "labels of {name}");
                assert!(
                    sample
                        .labels
                        .values()
                        .all(|v| !v.contains(['"', '\\', ',', '=', '}']))
                );
            }
        }
        if def.kind == MetricKind::Histogram {
            for sample in scrape.samples.iter().filter(|s| s.metric == def.name) {
                let Value::Histogram(buckets) = &sample.value else {
                    panic!("{} parsed as {:?}", def.name, sample.value)
                };
                // Standard buckets plus +Inf.
                assert_eq!(buckets.len(), DURATION_BUCKETS.len() + 1);
                assert!(buckets.last().unwrap().less_than.is_infinite());
            }
        }
    }

    // 3. Values are intact: the hostile route kept its own series and counts.
    let hostile = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == names::HTTP_SERVER_REQUESTS_TOTAL
                && s.labels.get("route") == Some("/x/_a_b___q__z")
                && s.labels.get("code") == Some("503")
        })
        .expect("sanitized hostile route present");
    assert!(matches!(hostile.value, Value::Untyped(v) | Value::Counter(v) if v == 1.0));
    let degradation = scrape
        .samples
        .iter()
        .find(|s| s.metric == names::DEGRADATION_LEVEL)
        .unwrap();
    assert!(matches!(degradation.value, Value::Gauge(v) if v == 2.0));
    let open_transitions = scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == names::BREAKER_TRANSITIONS_TOTAL && s.labels.get("to") == Some("open")
        })
        .count();
    assert_eq!(open_transitions, 3);
}

/// The control experiment: the same parser *does* lose or corrupt samples when a
/// label value is not sanitized, so the round-trip test above can fail.
#[test]
fn unsanitized_label_values_break_prometheus_parse() {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    let mut registry = Registry::default();
    let family: Family<Vec<(String, String)>, Counter> = Family::default();
    registry.register("raw_requests", "raw", family.clone());
    family
        .get_or_create(&vec![("route".into(), "/x/{a,b}".into())])
        .inc();
    let text = encode(&registry).unwrap();
    let scrape = parse(&text);
    let routes: Vec<_> = scrape
        .samples
        .iter()
        .filter_map(|s| s.labels.get("route").map(str::to_string))
        .collect();
    assert_ne!(
        routes,
        vec!["/x/{a,b}".to_string()],
        "parser unexpectedly coped:\n{text}"
    );
}

/// A declared upstream exposes every outcome's counter at 0 before its first call, so
/// `increase` over the first burst of timeouts counts all of it.
#[test]
fn a_registered_upstream_exposes_every_outcome_at_zero_before_any_call() {
    let mut registry = Registry::default();
    let metrics = ServiceMetrics::register("orders", &mut registry);
    metrics.register_upstream("notifications");
    let scrape = parse(&encode(&registry).unwrap());
    let outcomes: BTreeMap<String, f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == names::HTTP_CLIENT_REQUESTS_TOTAL)
        .map(|s| {
            assert_eq!(s.labels.get("upstream"), Some("notifications"));
            // prometheus-parse reads an OpenMetrics `_total` sample as untyped.
            let (Value::Counter(v) | Value::Untyped(v)) = s.value else {
                panic!("{s:?}")
            };
            (s.labels.get("outcome").unwrap_or_default().to_string(), v)
        })
        .collect();
    let expected: BTreeMap<String, f64> = ClientOutcome::ALL
        .iter()
        .map(|o| (o.as_str().to_string(), 0.0))
        .collect();
    assert_eq!(outcomes, expected);
}
