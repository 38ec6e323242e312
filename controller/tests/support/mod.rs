//! A realistic run report for the rendering tests: a gateway error-rate SLO that is
//! violated while payments is slowed, a latency SLO that holds, a client-side
//! throughput SLO with a gap in its data, a raw PromQL SLO, one fault that worked
//! and one that failed with a message full of markup.

#![allow(dead_code)]

pub mod chromium;
pub mod prometheus;

use std::collections::BTreeMap;
use std::time::Duration;

use faultline_controller::effect::{EffectCheck, EffectVerdict};
use faultline_controller::report::{
    CheckResult, ExperimentInfo, FaultApplication, FaultStatus, Outcome, Phase, PhaseRecord,
    ReactionSeries, RecoveryResult, RunMode, RunReport, SCHEMA_VERSION, SloReport, SloVerdict,
    Verdict,
};
use faultline_controller::slo::client::LoadSummary;
use faultline_controller::slo::reactions::ReactionKind;
use faultline_controller::slo::{Evaluation, Evidence, from_unix_ms};
use faultline_spec::wire::{ObservedEffect, ResolvedTarget};
use faultline_spec::{
    CpuFault, FaultKind, Latency, NetworkAction, NetworkFault, Percent, Rate, Slo, SloKind,
    SloSource,
};

pub const START_MS: i64 = 1_795_000_000_000;

fn spec_duration(ms: u64) -> faultline_spec::Duration {
    faultline_spec::Duration(Duration::from_millis(ms))
}

fn series(slo: &Slo, backend: &str, value_at: impl Fn(i64) -> Option<f64>) -> Vec<Evaluation> {
    (1..=60)
        .map(|s| {
            let at = START_MS + s * 1000;
            Evaluation::judged(
                &slo.kind,
                from_unix_ms(at),
                value_at(s),
                Evidence {
                    backend: backend.into(),
                    query: if backend == "client" {
                        "successful requests per second of client-measured requests to gateway"
                            .into()
                    } else {
                        faultline_controller::slo::promql::query_text(&slo.kind, slo.window.0)
                    },
                    detail: None,
                    generator: None,
                },
            )
        })
        .collect()
}

pub fn sample_report() -> RunReport {
    let errors = Slo {
        name: "gateway-errors".into(),
        window: spec_duration(10_000),
        source: SloSource::Server,
        kind: SloKind::ErrorRate {
            service: "gateway".into(),
            max: Percent::from_fraction(0.005).unwrap(),
            route: None,
        },
    };
    let p99 = Slo {
        name: "gateway-p99".into(),
        window: spec_duration(10_000),
        source: SloSource::Server,
        kind: SloKind::Latency {
            service: "gateway".into(),
            quantile: 0.99,
            max: spec_duration(800),
        },
    };
    let throughput = Slo {
        name: "client-throughput".into(),
        window: spec_duration(5_000),
        source: SloSource::Client,
        kind: SloKind::Throughput {
            service: "gateway".into(),
            min: Rate::per_second(150.0).unwrap(),
        },
    };
    let promql = Slo {
        name: "notifications-5xx <raw> & \"quoted\"".into(),
        window: spec_duration(30_000),
        source: SloSource::Server,
        kind: SloKind::Promql {
            expr: r#"sum(rate(http_server_requests_total{service="notifications",code=~"5.."}[30s])) / sum(rate(http_server_requests_total{service="notifications"}[30s]))"#.into(),
            max: Some(0.005),
            min: None,
        },
    };
    // Error rate climbs while the fault is active (+10 s .. +40 s).
    let error_samples = series(&errors, "embedded", |s| {
        Some(if (14..42).contains(&s) {
            0.012 + 0.0004 * (s - 14) as f64
        } else {
            0.001
        })
    });
    let p99_samples = series(&p99, "embedded", |s| {
        Some(if (10..40).contains(&s) {
            0.31 + 0.002 * (s % 7) as f64
        } else {
            0.12
        })
    });
    let throughput_samples = series(&throughput, "client", |s| {
        if (30..33).contains(&s) {
            None
        } else {
            Some(196.0 + (s % 5) as f64)
        }
    });
    let promql_samples = series(&promql, "prometheus", |_| Some(0.0));
    let slos = vec![
        SloReport::from_slo(&errors, error_samples),
        SloReport::from_slo(&p99, p99_samples),
        SloReport::from_slo(&throughput, throughput_samples),
        SloReport::from_slo(&promql, promql_samples),
    ];
    let latency = FaultKind::Network(NetworkFault {
        action: NetworkAction::Latency(Latency {
            delay: spec_duration(100),
            jitter: spec_duration(20),
            correlation: None,
            distribution: Default::default(),
        }),
        direction: Default::default(),
        peers: vec![],
        ports: vec![],
        backend: Default::default(),
    });
    let faults = vec![
        FaultApplication {
            name: "payments-latency".into(),
            id: "run-1/payments-latency/payments".into(),
            target: ResolvedTarget {
                name: "payments".into(),
                pid: Some(4242),
                proxies: vec!["orders->payments".into()],
                ..Default::default()
            },
            fault: latency,
            planned_start_ms: 10_000,
            planned_end_ms: 40_000,
            applied_ms: Some(START_MS + 10_040),
            reverted_ms: Some(START_MS + 40_020),
            status: FaultStatus::Reverted,
            backend: Some("proxy".into()),
            error: None,
            effect_check: Some(EffectCheck {
                verdict: EffectVerdict::Held,
                required: true,
                asked: "added delay 100ms (jitter 0s)".into(),
                measured: "mean added delay 100.3 ms over 5912 delayed chunks".into(),
                rule: "mean 90.0-110.0 ms over at least 20 delayed chunks (tolerance 10%)".into(),
            }),
            effect: ObservedEffect {
                summary: "delayed 5 912 chunks, mean added delay 100.3 ms".into(),
                metrics: BTreeMap::from([
                    ("delayed_chunks".to_string(), 5912.0),
                    ("mean_added_delay_ms".to_string(), 100.3),
                ]),
                ..Default::default()
            },
        },
        FaultApplication {
            name: "payments-cpu".into(),
            id: "run-1/payments-cpu/payments".into(),
            target: ResolvedTarget {
                name: "payments".into(),
                pid: Some(4242),
                ..Default::default()
            },
            fault: FaultKind::Cpu(CpuFault {
                load: "80%".parse().unwrap(),
                workers: None,
            }),
            planned_start_ms: 10_000,
            planned_end_ms: 40_000,
            applied_ms: None,
            reverted_ms: None,
            status: FaultStatus::Failed,
            backend: None,
            error: Some("cgroup </sys/fs/cgroup> not writable & \"EPERM\" \u{1}".into()),
            effect: ObservedEffect::default(),
            effect_check: None,
        },
    ];
    let phases = [
        (Phase::Validate, 0, 5),
        (Phase::Preflight, 5, 200),
        (Phase::SteadyState, 200, 10_000),
        (Phase::Inject, 10_000, 40_000),
        (Phase::Revert, 40_000, 40_050),
        (Phase::Recovery, 40_050, 60_000),
        (Phase::Verdict, 60_000, 60_100),
    ]
    .into_iter()
    .map(|(phase, a, b)| PhaseRecord {
        phase,
        started_ms: START_MS + a,
        ended_ms: START_MS + b,
    })
    .collect();
    assert_eq!(slos[0].verdict, SloVerdict::Fail);
    RunReport {
        schema_version: SCHEMA_VERSION,
        experiment: ExperimentInfo {
            name: "payments-latency-cpu".into(),
            description: Some(
                "Payments gets 100ms±20ms latency & 80% CPU; customers must not <notice>.".into(),
            ),
            file: Some("experiments/quickstart.yaml".into()),
            duration_ms: 60_000,
            labels: BTreeMap::from([("team".to_string(), "payments".to_string())]),
        },
        mode: RunMode::Local,
        slo_backend: "embedded".into(),
        started_ms: START_MS,
        ended_ms: START_MS + 60_100,
        phases,
        verdict: Verdict {
            outcome: Outcome::Fail,
            reason: "SLO gateway-errors violated: 2.280% > 0.500% at +41.0s".into(),
        },
        slos,
        steady_state: Some(CheckResult {
            passed: true,
            window_ms: 10_000,
            slos: BTreeMap::from([
                ("gateway-errors".to_string(), SloVerdict::Pass),
                ("gateway-p99".to_string(), SloVerdict::Pass),
            ]),
            reason: None,
            inconclusive: vec![],
        }),
        recovery: Some(RecoveryResult {
            passed: true,
            within_ms: 5_000,
            last_fault_ended_ms: START_MS + 40_020,
            recovered_after_ms: Some(1_980),
            not_recovered: vec![],
            inconclusive: vec![],
            unjudged: None,
        }),
        abort: None,
        faults,
        load: Some(LoadSummary {
            requests: 11_940,
            errors: 88,
            seconds: 60,
            achieved_rate: 199.0,
            latency_ms: BTreeMap::from([
                ("p50".to_string(), 11.2),
                ("p90".to_string(), 140.5),
                ("p99".to_string(), 352.0),
            ]),
            ..Default::default()
        }),
        reactions: reactions(),
        reruns: vec![],
    }
}

/// The fleet's reactions of the sample run: orders' breaker to notifications opens
/// under the fault and closes after it, the gateway degrades to level 2 meanwhile, and
/// orders retries payments while it is slow.
fn reactions() -> Vec<ReactionSeries> {
    let per_second = |f: &dyn Fn(i64) -> f64| -> Vec<(i64, f64)> {
        (1..=60).map(|s| (START_MS + s * 1000, f(s))).collect()
    };
    let breaker = |s: i64| match s {
        12..=39 if s % 6 == 5 => 1.0,
        12..=39 => 2.0,
        40..=41 => 1.0,
        _ => 0.0,
    };
    vec![
        ReactionSeries {
            kind: ReactionKind::Breaker,
            service: "orders".into(),
            upstream: Some("notifications".into()),
            points: per_second(&breaker),
        },
        ReactionSeries {
            kind: ReactionKind::Degradation,
            service: "gateway".into(),
            upstream: None,
            points: per_second(&|s| if (12..=41).contains(&s) { 2.0 } else { 0.0 }),
        },
        ReactionSeries {
            kind: ReactionKind::Retries,
            service: "orders".into(),
            upstream: Some("payments".into()),
            points: per_second(&|s| if (10..=40).contains(&s) { 3.5 } else { 0.0 }),
        },
    ]
}
