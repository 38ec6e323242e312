//! The controller's own Prometheus metrics (`chaos controller` serves them on /metrics).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use super::runner::{RunOutcome, Verdict};

use faultline_telemetry::names::{
    CONTROLLER, FAULTLINE_LAST_RUN_TIMESTAMP_SECONDS, FAULTLINE_RUN_DURATION_SECONDS,
    FAULTLINE_RUNS_TOTAL, FAULTLINE_SLO_VIOLATIONS_TOTAL, LABEL_EXPERIMENT, LABEL_SLO,
    LABEL_VERDICT, MetricDef,
};

type Labels = Vec<(String, String)>;

/// The metric families, registered in their own registry.
#[derive(Debug)]
pub struct ControllerMetrics {
    registry: Registry,
    runs: Family<Labels, Counter>,
    violations: Family<Labels, Counter>,
    last_run: Family<Labels, Gauge<f64, AtomicU64>>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
}

fn duration_histogram() -> Histogram {
    // 1 s .. ~9 h: chaos runs last from seconds to hours.
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ControllerMetrics {
    /// Fresh metrics with every family registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let runs = Family::<Labels, Counter>::default();
        let violations = Family::<Labels, Counter>::default();
        let last_run = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        let duration = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        let def = |name: &str| -> &'static MetricDef {
            CONTROLLER
                .iter()
                .find(|d| d.name == name)
                .unwrap_or(&CONTROLLER[0])
        };
        let (r, v, l, d) = (
            def(FAULTLINE_RUNS_TOTAL),
            def(FAULTLINE_SLO_VIOLATIONS_TOTAL),
            def(FAULTLINE_LAST_RUN_TIMESTAMP_SECONDS),
            def(FAULTLINE_RUN_DURATION_SECONDS),
        );
        registry.register(r.registration_name(), r.help, runs.clone());
        registry.register(v.registration_name(), v.help, violations.clone());
        registry.register(l.registration_name(), l.help, last_run.clone());
        registry.register(d.registration_name(), d.help, duration.clone());
        Self {
            registry,
            runs,
            violations,
            last_run,
            duration,
        }
    }

    /// Count one run of `experiment` that ended at `ended_unix` after `seconds`.
    pub fn observe(&self, experiment: &str, outcome: &RunOutcome, seconds: f64, ended_unix: f64) {
        let exp = (LABEL_EXPERIMENT.to_owned(), experiment.to_owned());
        self.runs
            .get_or_create(&vec![
                exp.clone(),
                ("verdict".into(), outcome.verdict.as_str().into()),
            ])
            .inc();
        for slo in &outcome.failing_slos {
            self.violations
                .get_or_create(&vec![exp.clone(), (LABEL_SLO.into(), slo.clone())])
                .inc();
        }
        if outcome.verdict != Verdict::Skipped {
            self.last_run
                .get_or_create(&vec![exp.clone()])
                .set(ended_unix);
            self.duration.get_or_create(&vec![exp]).observe(seconds);
        }
    }

    /// How many runs of `experiment` ended with `verdict`.
    pub fn runs(&self, experiment: &str, verdict: Verdict) -> u64 {
        self.runs
            .get_or_create(&vec![
                (LABEL_EXPERIMENT.into(), experiment.into()),
                (LABEL_VERDICT.into(), verdict.as_str().into()),
            ])
            .get()
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_runs_violations_timestamp_and_duration() {
        let m = ControllerMetrics::new();
        let fail = RunOutcome {
            verdict: Verdict::Fail,
            failing_slos: vec!["gateway-p99".into()],
            report_path: None,
            report: None,
        };
        m.observe("nightly", &fail, 61.0, 1_767_232_861.0);
        let text = m.encode();
        assert!(
            text.contains(r#"faultline_runs_total{experiment="nightly",verdict="fail"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"faultline_slo_violations_total{experiment="nightly",slo="gateway-p99"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"faultline_last_run_timestamp_seconds{experiment="nightly"} 1767232861"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"faultline_run_duration_seconds_count{experiment="nightly"} 1"#),
            "{text}"
        );
        assert_eq!(m.runs("nightly", Verdict::Fail), 1);
        // Every family in telemetry's catalog is exposed.
        for def in CONTROLLER {
            assert!(
                text.contains(&format!("# TYPE {} ", def.registration_name())),
                "{}",
                def.name
            );
        }
    }
}
